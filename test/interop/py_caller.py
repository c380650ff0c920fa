"""amqp-fabric's caller side, written from the wire spec alone (aiormq only, no aio-pika).

Usage: py_caller.py AMQP_URL DOMAIN TYPE ID
Calls the service DOMAIN.TYPE.ID the way an amqp-fabric proxy does and prints one JSON object
with what came back for each scenario.
"""
import asyncio
import json
import math
import pydoc
import sys
import time
from datetime import datetime, timezone
from uuid import uuid4

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec


async def main(url: str, domain: str, stype: str, sid: str) -> dict:
    conn = await aiormq.connect(url)
    ch = await conn.channel()  # publisher confirms, as aio-pika channels
    exchange = f"{domain}.api.{stype}.{sid}"
    # amqp-fabric's proxy declares the target's exchange, then its reply queue bound to rpc.dlx.
    await ch.exchange_declare(exchange, exchange_type="direct", durable=False, auto_delete=True)
    reply = "amq_" + uuid4().hex
    await ch.queue_declare(reply, durable=False, auto_delete=True, exclusive=False)
    await ch.exchange_declare("rpc.dlx", exchange_type="headers", durable=False, auto_delete=True)
    await ch.queue_bind(reply, "rpc.dlx", routing_key="", arguments={"From": reply, "x-match": "any"})
    waiting: dict = {}

    async def on_reply(msg: DeliveredMessage) -> None:
        fut = waiting.pop(msg.header.properties.correlation_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    await ch.basic_consume(reply, on_reply, no_ack=True, exclusive=True)

    async def call(method: str, kwargs: dict, expiration: float = None, sent: asyncio.Event = None) -> dict:
        cid = str(uuid4())
        props = spec.Basic.Properties(
            content_type="application/json",
            correlation_id=cid,
            reply_to=reply,
            headers={"From": reply},
            message_type="call",
            delivery_mode=1,
            priority=5,
            timestamp=datetime.now(timezone.utc),
            expiration=str(int(expiration * 1000)) if expiration else None,
        )
        fut = asyncio.get_running_loop().create_future()
        waiting[cid] = fut
        t0 = time.monotonic()
        body = json.dumps(kwargs, ensure_ascii=False).encode()
        try:
            await ch.basic_publish(body, exchange=exchange, routing_key=f"{exchange}::{method}", properties=props, mandatory=True)
            if sent is not None:
                sent.set()
        except aiormq.exceptions.PublishError as e:
            waiting.pop(cid, None)
            frame = e.message.delivery  # the basic.return
            return {"outcome": "returned", "reply_code": frame.reply_code, "reply_text": frame.reply_text, "ms": round((time.monotonic() - t0) * 1000)}
        msg = await asyncio.wait_for(fut, 10)
        ms = round((time.monotonic() - t0) * 1000)
        p = msg.header.properties
        if p.message_type == "result":
            return {"outcome": "result", "value": json.loads(msg.body), "content_type": p.content_type, "ms": ms}
        if p.message_type == "error":
            err = json.loads(msg.body)["error"]
            # What amqp-fabric does with the type: pydoc.locate. Only built-in exceptions may come back.
            located = pydoc.locate(err["type"])
            native = isinstance(located, type) and issubclass(located, BaseException)
            return {"outcome": "error", "error": err, "native_exception": native, "ms": ms}
        if p.message_type == "call":
            return {"outcome": "dead-lettered", "reason": (p.headers or {}).get("x-first-death-reason"), "ms": ms}
        return {"outcome": "unknown", "type": p.message_type}

    out = {}
    out["multiply"] = await call("multiply", {"x": 5, "y": 7})
    out["no_args"] = await call("health_check", {})
    numbers = await call("numbers", {})
    v = numbers["value"]
    numbers["value"] = {"nan": math.isnan(v["nan"]), "inf": v["inf"] == math.inf, "big": v["big"] == 12345678901234567890123}
    out["numbers"] = numbers
    out["fail"] = await call("fail", {})
    out["missing_args"] = await call("multiply", {"x": 1})
    out["unknown"] = await call("no_such_method", {})
    # A busy service (one call at a time): the second call expires in the queue and comes back via rpc.dlx.
    # The second call is published once the first is confirmed in the queue, so it waits behind it.
    sent = asyncio.Event()
    busy = asyncio.ensure_future(call("slow", {"ms": 1500}, sent=sent))
    await sent.wait()
    out["expired"] = await call("slow", {"ms": 1}, expiration=0.3)
    out["busy"] = await busy
    await conn.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))), flush=True)
