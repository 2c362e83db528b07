"""An AI agent on ArqonBus.

It connects as ``client_type="ai-agent"``, joins a channel, answers every
message said there (and every direct message sent to it), and stops
cleanly on Ctrl-C or SIGTERM. Because it is an ``ai-agent``, the server
reports what it does (connect, join, message, disconnect) as
``agent_activity`` telemetry on the dashboard channel
``integriguard:dashboard-events``, so it shows up on the dashboard.

    python examples/agent.py --url ws://127.0.0.1:9100/ --channel lab:general --name Ada

Once connected it prints one JSON line, ``{"ready": true, "client_id": ...}``.
Replace :func:`think` with a call to your model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal

import arqonbus
from arqonbus import ArqonBus, Gap, Message, Presence, Subscription

log = logging.getLogger("agent")


def think(name: str, text: str) -> str:
    """The agent's "model": a canned answer."""
    words = len(text.split())
    return f"{name} here. You said {text!r} ({words} word{'s' if words != 1 else ''})."


async def answer_channel(bus: ArqonBus, sub: Subscription, name: str) -> None:
    """Answers every message on the channel that asks something."""
    async for event in sub:
        if isinstance(event, Message):
            text = event.payload.get("text")
            # Ignore its own echoes and other agents' answers (no loops).
            if event.sender == bus.client_id or "in_reply_to" in event.payload:
                continue
            # Only live questions: what was said while it was away (replayed
            # after a reconnect) has probably been answered by someone else.
            if isinstance(text, str) and not event.replayed:
                reply = {"text": think(name, text), "in_reply_to": event.id}
                await bus.publish(sub.room, sub.channel, reply, ack=True)
        elif isinstance(event, Presence):
            who = event.client.screen_name or event.client.client_id
            log.info("%s %s %s:%s", who, event.event, event.room, event.channel)
        elif isinstance(event, Gap):
            log.warning("missed %d messages on %s:%s", event.missed, event.room, event.channel)


async def answer_direct(bus: ArqonBus, name: str) -> None:
    """Answers direct messages, directly."""
    async for message in bus.inbox:
        text = message.payload.get("text")
        if message.sender and isinstance(text, str):
            reply = {"text": think(name, text), "in_reply_to": message.id}
            await bus.send(message.sender, reply)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    room, _, channel = args.channel.partition(":")
    async with ArqonBus(
        args.url,
        token=os.environ.get("ARQONBUS_TOKEN"),
        client_type="ai-agent",
        screen_name=args.name,
        personality=args.personality,
    ) as bus:
        sub = await bus.join(room, channel or "general", presence=True)
        print(json.dumps({"ready": True, "client_id": bus.client_id}), flush=True)
        tasks = [
            asyncio.create_task(answer_channel(bus, sub, args.name)),
            asyncio.create_task(answer_direct(bus, args.name)),
            asyncio.create_task(stop.wait()),
            asyncio.create_task(bus.wait_closed()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # a failure (e.g. the server refused us) is raised here
    log.info("stopped")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ARQONBUS_URL", arqonbus.DEFAULT_URL))
    parser.add_argument("--channel", default="agents:lobby", help="ROOM:CHANNEL to join")
    parser.add_argument("--name", default="Ada", help="screen name")
    parser.add_argument("--personality", default="helpful and brief")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(main(parse_args()))
    except arqonbus.ArqonBusError as exc:
        raise SystemExit(f"agent: {exc}") from None
