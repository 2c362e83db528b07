"""Client behaviour the real server cannot be made to show (yet), against
a scripted stand-in: SPEC §14 recovery in the join reply, §15 presence
envelopes and §16 lagged notices, exactly as the spec words them. The
same behaviour is tested against the real server elsewhere, skipped
while the server lacks the feature."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

import arqonbus
from arqonbus import ArqonBus, Gap, Lagged, Message, Presence, ReconnectPolicy, Resynced

from .conftest import WAIT, messages, nothing_more

EPOCH = "e1"


class Peer:
    """One client connection, seen from the scripted server."""

    def __init__(self, ws: ServerConnection, number: int) -> None:
        self.ws = ws
        self.number = number

    async def send(self, envelope: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"version": "1.0", "sender": "arqonbus", **envelope}))

    async def command(self, name: str) -> dict[str, Any]:
        """The next frame, which must be the command ``name``."""
        envelope = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
        assert (envelope["type"], envelope.get("command")) == ("command", name), envelope
        return dict(envelope)

    async def reply(self, request: dict[str, Any], payload: dict[str, Any]) -> None:
        await self.send(
            {
                "id": f"arq_r{request['id']}",
                "type": "response",
                "status": "success",
                "command": request["command"],
                "request_id": request["id"],
                "payload": payload,
            }
        )

    async def message(self, seq: int) -> None:
        await self.send(message(seq))


def message(seq: int) -> dict[str, Any]:
    return {
        "id": f"arq_m{seq}",
        "type": "message",
        "room": "r",
        "channel": "c",
        "sender": "arq_client_other",
        "seq": seq,
        "epoch": EPOCH,
        "payload": {"n": seq},
        "metadata": {},
    }


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[str]:
    """Runs ``script`` for every connection, after the welcome frame."""
    connections = 0

    async def handle(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        peer = Peer(ws, connections)
        await peer.send(
            {
                "id": f"arq_welcome{connections}",
                "type": "message",
                "payload": {"welcome": "hi", "client_id": f"arq_client_{connections}"},
            }
        )
        await script(peer)
        await ws.wait_closed()

    async with serve(handle, "127.0.0.1", 0) as server:
        host, port = server.sockets[0].getsockname()[:2]
        yield f"ws://{host}:{port}/"


async def test_lagged_notice_refills_from_history() -> None:
    history_args: list[dict[str, Any]] = []

    async def script(peer: Peer) -> None:
        join = await peer.command("join_channel")
        await peer.reply(join, {"room": "r", "channel": "c", "participant_count": 1, "seq": 0,
                                "epoch": EPOCH})  # fmt: skip
        await peer.message(1)
        await peer.message(2)
        # 3..5 were dropped for this client; 6 and 7 come live after the notice.
        await peer.send(
            {
                "id": "arq_lag",
                "type": "system",
                "payload": {
                    "event": "lagged",
                    "dropped": 3,
                    "channels": [{"room": "r", "channel": "c", "dropped": 3,
                                  "first_dropped_seq": 3}],
                },
            }
        )  # fmt: skip
        await peer.message(6)
        await peer.send(
            {
                "id": "arq_p",
                "type": "system",
                "room": "r",
                "channel": "c",
                "payload": {
                    "event": "join",
                    "client": {"client_id": "arq_client_z", "client_type": "ai-agent",
                               "screen_name": "Zed"},
                    "participant_count": 2,
                },
            }
        )  # fmt: skip
        await peer.message(7)
        history = await peer.command("history")
        history_args.append(history["args"])
        await peer.reply(
            history,
            {"room": "r", "channel": "c", "messages": [message(s) for s in range(3, 8)],
             "count": 5, "backend": "memory", "epoch": EPOCH, "last_seq": 7},
        )  # fmt: skip
        await peer.message(8)

    events: list[arqonbus.BusEvent] = []
    async with scripted_server(script) as url, ArqonBus(url, on_event=events.append) as bus:
        sub = await bus.join("r", "c")
        # Live delivery goes on while 3..5 are read from history; they
        # arrive once, marked replayed, after the live messages before them.
        got = await messages(sub, 3)
        assert [(m.seq, m.replayed) for m in got] == [(1, False), (2, False), (6, False)]
        presence = await sub.get(WAIT)
        assert isinstance(presence, Presence)
        assert (presence.event, presence.client.screen_name, presence.participant_count) == (
            "join",
            "Zed",
            2,
        )
        got = await messages(sub, 5)
        assert [(m.seq, m.replayed) for m in got] == [
            (7, False),
            (3, True),
            (4, True),
            (5, True),
            (8, False),
        ]
        await nothing_more(sub)
    assert history_args == [{"room": "r", "channel": "c", "after_seq": 2, "limit": 1000}]
    (lagged,) = [e for e in events if isinstance(e, Lagged)]
    assert lagged.dropped == 3 and lagged.channels[0].first_dropped_seq == 3
    (resynced,) = [e for e in events if isinstance(e, Resynced)]
    assert (resynced.reason, resynced.via, resynced.recovered, resynced.filled) == (
        "lagged",
        "history",
        3,
        True,
    )


async def test_rejoin_uses_server_recovery() -> None:
    """After a reconnect the client sends ``recover`` with its position and
    delivers the reply's ``publications`` without reading history."""
    joins: list[dict[str, Any]] = []

    async def script(peer: Peer) -> None:
        join = await peer.command("join_channel")
        joins.append(join["args"])
        if peer.number == 1:
            await peer.reply(join, {"room": "r", "channel": "c", "participant_count": 1,
                                    "seq": 0, "epoch": EPOCH})  # fmt: skip
            await peer.message(1)
            await peer.message(2)
            await asyncio.sleep(0.1)
            await peer.ws.close(1001, "going away")
            return
        await peer.reply(
            join,
            {"room": "r", "channel": "c", "participant_count": 1, "seq": 4, "epoch": EPOCH,
             "recovered": True, "publications": [message(3), message(4)]},
        )  # fmt: skip
        await peer.message(4)  # a duplicate of a recovered one: dropped
        await peer.message(5)

    events: list[arqonbus.BusEvent] = []
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05)
    async with scripted_server(script) as url, ArqonBus(
        url, reconnect=policy, on_event=events.append
    ) as bus:
        sub = await bus.join("r", "c")
        got = await messages(sub, 5)
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        assert [m.replayed for m in got] == [False, False, True, True, False]
        await nothing_more(sub)
    assert joins == [
        {"room": "r", "channel": "c"},
        {"room": "r", "channel": "c", "recover": {"seq": 2, "epoch": EPOCH}},
    ]
    (resynced,) = [e for e in events if isinstance(e, Resynced)]
    assert (resynced.via, resynced.recovered, resynced.filled) == ("server", 2, True)


async def test_unrecoverable_rejoin_reports_a_gap() -> None:
    """``recovered: false`` and a history that no longer has the oldest
    missed messages: what is left is delivered, then a Gap."""

    async def script(peer: Peer) -> None:
        join = await peer.command("join_channel")
        if peer.number == 1:
            await peer.reply(join, {"room": "r", "channel": "c", "participant_count": 1,
                                    "seq": 0, "epoch": EPOCH})  # fmt: skip
            await peer.message(1)
            await asyncio.sleep(0.1)
            await peer.ws.close(1001, "going away")
            return
        await peer.reply(
            join,
            {"room": "r", "channel": "c", "participant_count": 1, "seq": 5, "epoch": EPOCH,
             "recovered": False, "publications": []},
        )  # fmt: skip
        history = await peer.command("history")
        assert history["args"]["after_seq"] == 1
        await peer.reply(
            history,
            {"room": "r", "channel": "c", "messages": [message(4), message(5)], "count": 2,
             "backend": "memory", "epoch": EPOCH, "last_seq": 5},
        )  # fmt: skip
        await peer.message(6)

    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05)
    async with scripted_server(script) as url, ArqonBus(url, reconnect=policy) as bus:
        sub = await bus.join("r", "c")
        assert [m.seq for m in await messages(sub, 3)] == [1, 4, 5]
        gap = await sub.get(WAIT)
        assert isinstance(gap, Gap)
        assert (gap.from_seq, gap.to_seq, gap.recovered, gap.missed) == (2, 5, 2, 4)
        assert not gap.epoch_changed
        next_message = await sub.get(WAIT)
        assert isinstance(next_message, Message) and next_message.seq == 6


async def test_join_returns_before_recovered_messages_fit_the_queue() -> None:
    """More recovered messages than the subscription queue holds: join()
    returns anyway, and the consumer gets them all."""

    async def script(peer: Peer) -> None:
        join = await peer.command("join_channel")
        assert join["args"]["recover"] == {"seq": 0, "epoch": EPOCH}
        await peer.reply(
            join,
            {"room": "r", "channel": "c", "participant_count": 1, "seq": 6, "epoch": EPOCH,
             "recovered": True, "publications": [message(s) for s in range(1, 7)]},
        )  # fmt: skip

    async with scripted_server(script) as url, ArqonBus(url, queue_size=2) as bus:
        sub = await bus.join("r", "c", recover=arqonbus.Position(0, EPOCH), timeout=WAIT)
        assert [m.seq for m in await messages(sub, 6)] == [1, 2, 3, 4, 5, 6]


async def test_operator_close_code_stops_the_client() -> None:
    async def script(peer: Peer) -> None:
        await peer.ws.close(4003, "disconnected by an operator")

    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05)
    async with scripted_server(script) as url, ArqonBus(url, reconnect=policy) as bus:
        with pytest.raises(arqonbus.DisconnectedByOperator):
            await asyncio.wait_for(bus.wait_closed(), WAIT)
