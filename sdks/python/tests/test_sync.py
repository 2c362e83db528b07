"""The blocking facade (arqonbus.sync), used from plain (non-async) tests."""

from __future__ import annotations

import threading

import pytest

import arqonbus
from arqonbus import Message
from arqonbus.sync import connect

from .conftest import WAIT
from .servers import BusServer


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arqonbus-loop"]


def test_sync_facade_end_to_end(server: BusServer, room: str) -> None:
    before = len(loop_threads())
    with connect(server.url, screen_name="script", request_timeout=WAIT) as alice, connect(
        server.url, request_timeout=WAIT
    ) as bob:
        assert len(loop_threads()) == before + 2
        assert alice.ping().pong
        assert alice.state is arqonbus.ConnectionState.CONNECTED
        sub = bob.join(room, "nb")
        alice.join(room, "nb")
        ack = alice.publish(room, "nb", {"n": 1}, ack=True)
        assert ack.seq == 1
        alice.publish(room, "nb", {"n": 2})
        got = [sub.get(WAIT), sub.get(WAIT)]
        assert all(isinstance(m, Message) for m in got)
        assert [m.payload["n"] for m in got if isinstance(m, Message)] == [1, 2]
        with pytest.raises(TimeoutError):
            sub.get(0.2)

        assert bob.client_id is not None
        alice.send(bob.client_id, {"dm": True}, ack=True)
        assert bob.receive(WAIT).payload == {"dm": True}

        info = alice.channel_info(room, "nb")
        assert info.last_seq == 2 and len(info.participants) == 2
        assert [m.seq for m in alice.history(room, "nb").messages] == [1, 2]
        assert alice.list_channels(room).total == 1
        assert alice.identify(screen_name="renamed").screen_name == "renamed"
        assert alice.status().active_clients >= 2
        with pytest.raises(arqonbus.ChannelNotFound):
            alice.channel_info(room, "missing")

        assert sub.leave().was_member
        assert list(sub) == [], "iteration stops once the subscription has ended"
    assert len(loop_threads()) == before, "close() stops the background thread"
    with pytest.raises(arqonbus.ClientClosed):
        bob.ping()


def test_sync_connect_failure_leaves_no_thread(server_bin: str) -> None:
    from .servers import free_port

    before = len(loop_threads())
    with pytest.raises(arqonbus.ConnectFailed):
        connect(f"ws://127.0.0.1:{free_port()}/", connect_timeout=2)
    assert len(loop_threads()) == before
