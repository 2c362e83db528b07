"""A backend service on ArqonBus: publishes a status report every few
seconds to a channel (with acknowledgements) and prints the agents'
activity from the dashboard channel.

    python examples/service.py --url ws://127.0.0.1:9100/ --channel ops:status --interval 5

Each report is also printed as a JSON line; ``--count N`` stops after N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import arqonbus
from arqonbus import ArqonBus, Message

DASHBOARD = ("integriguard", "dashboard-events")


async def report(bus: ArqonBus, room: str, channel: str, interval: float, count: int | None) -> None:
    sent = 0
    while count is None or sent < count:
        status = await bus.status()
        payload = {
            "clients": status.clients.get("by_type", {}),
            "channels": status.channels,
            "messages": status.messages,
        }
        ack = await bus.publish(room, channel, payload, ack=True)
        sent += 1
        print(json.dumps({"report": sent, "seq": ack.seq, "delivered": ack.delivered}), flush=True)
        if count is None or sent < count:
            await asyncio.sleep(interval)


async def watch_agents(bus: ArqonBus) -> None:
    sub = await bus.join(*DASHBOARD)
    async for event in sub:
        if isinstance(event, Message) and event.payload.get("eventType") == "agent_activity":
            p = event.payload
            print(json.dumps({"agent": p.get("screen_name"), "action": p.get("action")}), flush=True)


async def main(args: argparse.Namespace) -> None:
    room, _, channel = args.channel.partition(":")
    async with ArqonBus(
        args.url, token=os.environ.get("ARQONBUS_TOKEN"), client_type="service", screen_name="reporter"
    ) as bus:
        await bus.join(room, channel)
        watcher = asyncio.create_task(watch_agents(bus))
        try:
            await report(bus, room, channel, args.interval, args.count)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ARQONBUS_URL", arqonbus.DEFAULT_URL))
    parser.add_argument("--channel", default="ops:status", help="ROOM:CHANNEL to report to")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reports")
    parser.add_argument("--count", type=int, default=None, help="stop after this many reports")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except KeyboardInterrupt:
        pass
    except arqonbus.ArqonBusError as exc:
        raise SystemExit(f"service: {exc}") from None
