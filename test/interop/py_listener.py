"""amqp-fabric's keep-alive listener, written from the wire spec alone (aiormq only).

Usage: py_listener.py AMQP_URL DOMAIN TYPE ID SECONDS
Listens on msc.discovery for SECONDS with amqp-fabric's queue and binding, caches beats as its
TTLCache does (json.loads of a non-empty body; a beat it cannot read is rejected), and prints the
services its list_services() would return, as JSON.
"""
import asyncio
import json
import sys
import time

import aiormq
from aiormq.abc import DeliveredMessage

TTL = 5.0


async def main(url: str, domain: str, stype: str, sid: str, seconds: str) -> list:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.exchange_declare("msc.discovery", exchange_type="headers", durable=True, auto_delete=False)
    queue = f"{domain}.{stype}.{sid}.subscriber"
    await ch.queue_declare(queue, durable=False, auto_delete=True, exclusive=False)
    await ch.queue_bind(queue, "msc.discovery", routing_key="", arguments={"x-match": "all", "msg_type": "keep_alive"})
    cache: dict = {}
    rejected: list = []

    async def on_beat(msg: DeliveredMessage) -> None:
        h = msg.header.properties.headers or {}
        try:
            key = f"{h['service_domain']}.{h['service_type']}.{h['service_id']}"
            cache[key] = (json.loads(msg.body) if msg.body else "", time.monotonic())
            await ch.basic_ack(msg.delivery.delivery_tag)
        except Exception as e:  # noqa: BLE001 - as amqp-fabric: log and reject
            rejected.append(repr(e))
            await ch.basic_reject(msg.delivery.delivery_tag, requeue=False)

    await ch.basic_consume(queue, on_beat)
    await asyncio.sleep(float(seconds))  # the scenario: listen for this long, as a caching listener would
    await conn.close()
    now = time.monotonic()
    services = []
    for key, (_, at) in cache.items():
        if now - at > TTL:
            continue
        d, t, i = key.split(".")[:3]
        if d.startswith(domain):  # amqp-fabric's domain filter is a prefix
            services.append({"domain": d, "type": t, "id": i})
    return {"services": services, "rejected": rejected}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:6]))), flush=True)
