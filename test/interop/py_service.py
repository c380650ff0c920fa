"""amqp-fabric's service side, written from the wire spec alone (aiormq only, no aio-pika).

Usage: py_service.py AMQP_URL DOMAIN TYPE ID
Serves multiply, fail, numbers and health_check like an amqp-fabric service (prefetch 1 per
method, reply then ack), sends keep-alives every second with an empty body, prints `ready`, and
stops when stdin closes (its parent went away) or after 60 s at most.
"""
import asyncio
import json
import sys
from datetime import datetime, timezone

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec


class Api:
    def multiply(self, x, y):
        return x * y

    def fail(self):
        raise ValueError("interop: fail() was called")

    def numbers(self):
        return {"nan": float("nan"), "inf": float("inf"), "big": 12345678901234567890123}

    def health_check(self):
        return True


def error_type(e: BaseException) -> str:
    cls = type(e)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


async def main(url: str, domain: str, stype: str, sid: str) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.basic_qos(prefetch_count=1)
    exchange = f"{domain}.api.{stype}.{sid}"
    await ch.exchange_declare(exchange, exchange_type="direct", durable=False, auto_delete=True)
    await ch.exchange_declare("rpc.dlx", exchange_type="headers", durable=False, auto_delete=True)
    api = Api()

    def handler(method):
        async def on_call(msg: DeliveredMessage) -> None:
            p = msg.header.properties
            try:
                kwargs = json.loads(msg.body)
                body = json.dumps(getattr(api, method)(**kwargs), ensure_ascii=False, default=repr)
                kind = "result"
            except Exception as e:  # noqa: BLE001 - every error goes back to the caller
                kind = "error"
                body = json.dumps({"error": {"type": error_type(e), "message": repr(e), "args": list(e.args)}}, ensure_ascii=False, default=repr)
            if p.reply_to:
                await ch.basic_publish(
                    body.encode(),
                    exchange="",
                    routing_key=p.reply_to,
                    mandatory=False,
                    properties=spec.Basic.Properties(
                        content_type="application/json",
                        correlation_id=p.correlation_id,
                        delivery_mode=p.delivery_mode,
                        message_type=kind,
                        timestamp=datetime.now(timezone.utc),
                        priority=0,
                        headers={},
                    ),
                )
            await ch.basic_ack(msg.delivery.delivery_tag)

        return on_call

    for method in ["multiply", "fail", "numbers", "health_check"]:
        q = f"{exchange}::{method}"
        await ch.queue_declare(q, durable=False, auto_delete=True, exclusive=False, arguments={"x-dead-letter-exchange": "rpc.dlx"})
        await ch.queue_bind(q, exchange, routing_key=q)
        await ch.basic_consume(q, handler(method))

    kch = await conn.channel()
    await kch.exchange_declare("msc.discovery", exchange_type="headers", durable=True, auto_delete=False)
    headers = {"msg_type": "keep_alive", "service_domain": domain, "service_type": stype, "service_id": sid}

    async def keep_alive() -> None:
        while True:
            await kch.basic_publish(b"", exchange="msc.discovery", routing_key="", properties=spec.Basic.Properties(delivery_mode=1, priority=0, headers=headers))
            await asyncio.sleep(1)  # the keep-alive interval (the scenario)

    ka = asyncio.ensure_future(keep_alive())
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([stdin_closed], timeout=60)
    ka.cancel()
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
