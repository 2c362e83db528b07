"""The examples, run as programs against a real server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import arqonbus
from arqonbus import Message

from .conftest import WAIT, Connect, messages
from .servers import BusServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@asynccontextmanager
async def program(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Runs an example; kills it if the test did not stop it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def json_line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
    assert line, "the program ended without printing"
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


async def agent_activity(sub: arqonbus.Subscription, client_id: str, action: str) -> dict[str, Any]:
    """The next ``agent_activity`` of ``client_id`` with ``action`` on the
    dashboard channel (other events are skipped)."""
    while True:
        event = await sub.get(WAIT)
        if (
            isinstance(event, Message)
            and event.payload.get("eventType") == "agent_activity"
            and event.payload.get("client_id") == client_id
            and event.payload.get("action") == action
        ):
            return event.payload


async def test_agent_answers_and_shows_on_the_dashboard(
    server: BusServer, clients: Connect, room: str
) -> None:
    dashboard = await clients(server.url, client_type="dashboard")
    feed = await dashboard.join("integriguard", "dashboard-events")
    name = f"Ada-{room}"
    async with program(
        str(EXAMPLES / "agent.py"), "--url", server.url, "--channel", f"{room}:lobby",
        "--name", name, "--personality", "curious",
    ) as agent:  # fmt: skip
        ready = await json_line(agent)
        agent_id = ready["client_id"]
        connect = await agent_activity(feed, agent_id, "connect")
        assert (connect["screen_name"], connect["personality"]) == (name, "curious")
        joined = await agent_activity(feed, agent_id, "join")
        assert (joined["room"], joined["channel"]) == (room, "lobby")

        human = await clients(server.url, screen_name="human")
        sub = await human.join(room, "lobby")
        await human.publish(room, "lobby", {"text": "hello there agent"}, ack=True)
        (answer,) = await messages(sub, 1)
        assert answer.sender == agent_id
        assert answer.payload["text"] == f"{name} here. You said 'hello there agent' (3 words)."
        assert answer.payload["in_reply_to"]
        await agent_activity(feed, agent_id, "message")

        await human.send(agent_id, {"text": "psst"}, ack=True)
        direct = await human.inbox.get(WAIT)
        assert direct.sender == agent_id and "psst" in direct.payload["text"]

        agent.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(agent.wait(), WAIT) == 0
        await agent_activity(feed, agent_id, "disconnect")


async def test_agent_reports_a_refused_connection(server: BusServer) -> None:
    async with program(
        str(EXAMPLES / "agent.py"), "--url", server.url, "--name", "x" * 100
    ) as agent:  # fmt: skip
        _, stderr = await asyncio.wait_for(agent.communicate(), WAIT)
        assert agent.returncode == 1
        assert b"HTTP 400" in stderr


async def test_service_reports_status(server: BusServer, clients: Connect, room: str) -> None:
    listener = await clients(server.url)
    sub = await listener.join(room, "status")
    async with program(
        str(EXAMPLES / "service.py"), "--url", server.url, "--channel", f"{room}:status",
        "--interval", "0.1", "--count", "2",
    ) as service:  # fmt: skip
        assert (await json_line(service))["report"] == 1
        assert (await json_line(service))["report"] == 2
        assert await asyncio.wait_for(service.wait(), WAIT) == 0
    reports = await messages(sub, 2)
    assert all("clients" in r.payload and "messages" in r.payload for r in reports)
