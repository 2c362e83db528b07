"""Reconnection, recovery and permanent refusals, across real restarts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest

import arqonbus
from arqonbus import (
    ArqonBus,
    Connected,
    Disconnected,
    Gap,
    HandshakeRefused,
    Message,
    Position,
    ReconnectPolicy,
    Resynced,
)

from .conftest import FAST, WAIT, Connect, StartServer, messages, nothing_more, wait_for_event

async def test_exactly_once_across_a_restart_with_redis(
    start_server: StartServer, redis_url: str, clients: Connect, room: str
) -> None:
    """Messages published while the subscriber is away are recovered, live
    ones published during the recovery are not duplicated, and nothing is
    lost or reordered."""
    server = start_server(args=["--storage", "redis", "--redis-url", redis_url])
    gate = asyncio.Event()
    gate.set()
    token_calls = 0

    async def gated_token() -> str | None:
        # Called before every connection attempt: holds the subscriber back
        # while the publisher publishes what it must recover.
        nonlocal token_calls
        token_calls += 1
        await gate.wait()
        return None

    sub_events: list[arqonbus.BusEvent] = []
    subscriber = await clients(
        server.url, token=gated_token, reconnect=FAST, on_event=sub_events.append
    )
    publisher = await clients(server.url, reconnect=FAST)
    sub = await subscriber.join(room, "feed")
    await publisher.join(room, "feed")
    first_id = subscriber.client_id

    for n in range(1, 6):
        await publisher.publish(room, "feed", {"n": n}, ack=True)
    before = await messages(sub, 5)
    epoch = before[0].epoch

    gate.clear()
    await server.restart_async()
    await wait_for_event(sub_events, Disconnected)
    # The publisher reconnects (its calls wait for the connection) and
    # publishes while the subscriber is held back.
    for n in range(6, 11):
        ack = await publisher.publish(room, "feed", {"n": n}, ack=True)
        assert ack.stored
    gate.set()
    # Published while the subscriber re-joins and catches up.
    for n in range(11, 16):
        await publisher.publish(room, "feed", {"n": n}, ack=True)

    after = await messages(sub, 10)
    got = before + after
    assert [m.payload["n"] for m in got] == list(range(1, 16))
    assert [m.seq for m in got] == list(range(1, 16))
    assert {m.epoch for m in got} == {epoch}, "Redis keeps the epoch across the restart"
    assert [m.replayed for m in after[:5]] == [True] * 5
    assert subscriber.client_id != first_id
    await nothing_more(sub)
    assert token_calls >= 2
    resynced = [e for e in sub_events if isinstance(e, Resynced)]
    assert len(resynced) == 1
    assert resynced[0].filled and resynced[0].reason == "reconnect"
    assert resynced[0].via in ("server", "history")
    assert resynced[0].recovered >= 5
    assert not any(isinstance(e, Gap) for e in got)
    assert any(isinstance(e, Connected) and e.attempts >= 1 for e in sub_events)


async def test_memory_restart_reports_a_gap(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    """With memory storage a restart loses the history: the subscription
    gets a Gap with epoch_changed, then live messages again."""
    server = start_server()
    events: list[arqonbus.BusEvent] = []
    subscriber = await clients(server.url, reconnect=FAST, on_event=events.append)
    publisher = await clients(server.url, reconnect=FAST)
    sub = await subscriber.join(room, "mem")
    await publisher.join(room, "mem")
    await publisher.publish(room, "mem", {"n": 1}, ack=True)
    (first,) = await messages(sub, 1)

    await server.restart_async()
    await wait_for_event(events, Resynced)
    gap = await sub.get(WAIT)
    assert isinstance(gap, Gap)
    assert gap.epoch_changed and gap.reason == "reconnect"
    assert gap.old_epoch == first.epoch and gap.new_epoch != first.epoch
    assert gap.from_seq == 2 and gap.missed == 0
    await publisher.publish(room, "mem", {"n": 2}, ack=True)
    (second,) = await messages(sub, 1)
    assert second.payload == {"n": 2} and second.seq == 1 and second.epoch == gap.new_epoch
    assert [type(e) for e in events if isinstance(e, (Connected, Disconnected))] == [
        Connected,
        Disconnected,
        Connected,
    ]


async def test_calls_wait_for_the_reconnection(
    start_server: StartServer, clients: Connect
) -> None:
    server = start_server()
    events: list[arqonbus.BusEvent] = []
    bus = await clients(
        server.url,
        reconnect=ReconnectPolicy(initial_delay=0.3, max_delay=0.3),
        on_event=events.append,
    )
    await server.stop_async()
    await wait_for_event(events, Disconnected)
    assert bus.state is arqonbus.ConnectionState.RECONNECTING
    ping = asyncio.ensure_future(bus.ping(timeout=WAIT))
    await asyncio.sleep(0.1)
    assert not ping.done()
    await asyncio.to_thread(server.start, server.port)
    assert (await ping).pong


async def test_ping_times_out_when_the_server_stalls(
    start_server: StartServer, clients: Connect
) -> None:
    server = start_server()
    bus = await clients(server.url)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(arqonbus.RequestTimeout) as timed_out:
            await bus.ping(timeout=0.3)
        assert isinstance(timed_out.value, TimeoutError)
        assert time.monotonic() - started < WAIT
    finally:
        server.resume()
    assert (await bus.ping()).pong


async def test_close_fails_calls_in_flight(start_server: StartServer) -> None:
    server = start_server()
    bus = ArqonBus(server.url)
    await bus.connect()
    server.pause()
    try:
        ping = asyncio.ensure_future(bus.ping(timeout=WAIT))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(bus.close())
        with pytest.raises(arqonbus.ClientClosed):
            await ping
    finally:
        server.resume()
    await closing
    assert bus.state is arqonbus.ConnectionState.CLOSED


async def test_recover_position_on_join(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    """A new client resumes from a saved position: what came after it is
    delivered first (replayed), then live messages, each once."""
    server = start_server()
    publisher = await clients(server.url)
    await publisher.join(room, "jobs")
    first = await clients(server.url)
    sub = await first.join(room, "jobs")
    for n in range(1, 6):
        await publisher.publish(room, "jobs", {"n": n}, ack=True)
    got = await messages(sub, 2)
    saved = got[-1].position
    assert saved is not None and saved.seq == 2
    await first.close()

    events: list[arqonbus.BusEvent] = []
    second = await clients(server.url, on_event=events.append)
    resumed = await second.join(room, "jobs", recover=saved)
    await publisher.publish(room, "jobs", {"n": 6}, ack=True)
    rest = await messages(resumed, 4)
    assert [m.seq for m in rest] == [3, 4, 5, 6]
    assert [m.replayed for m in rest] == [True, True, True, False]
    await nothing_more(resumed)
    (resynced,) = [e for e in events if isinstance(e, Resynced)]
    assert resynced.reason == "recover" and resynced.filled and resynced.recovered == 3


async def test_recover_from_another_epoch_is_a_gap(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    server = start_server()
    bus = await clients(server.url)
    sub = await bus.join(room, "x", recover=Position(7, "an-old-epoch"))
    gap = await sub.get(WAIT)
    assert isinstance(gap, Gap)
    assert gap.epoch_changed and gap.reason == "recover" and gap.old_epoch == "an-old-epoch"


async def test_server_side_recovery_is_used(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    """SPEC §14: the join reply itself carries the missed messages."""
    server = start_server()
    publisher = await clients(server.url)
    await publisher.join(room, "r")
    for n in range(1, 4):
        ack = await publisher.publish(room, "r", {"n": n}, ack=True)
    assert ack.seq == 3
    epoch = (await publisher.channel_info(room, "r")).epoch
    assert epoch is not None
    events: list[arqonbus.BusEvent] = []
    bus = await clients(server.url, on_event=events.append)
    sub = await bus.join(room, "r", recover=Position(1, epoch))
    assert sub.joined is not None
    if sub.joined.recovered is None:
        pytest.skip("server lacks §14 (join_channel ignores recover)")
    assert sub.joined.recovered is True
    assert [m.seq for m in sub.joined.publications] == [2, 3]
    assert [m.seq for m in await messages(sub, 2)] == [2, 3]
    (resynced,) = [e for e in events if isinstance(e, Resynced)]
    assert resynced.via == "server"


async def test_token_callable_refreshes_the_token(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    """A token rotated by the server is picked up by the async callable
    before the reconnect; the admin rights come back with it."""
    tokens = {"current": "first-secret"}
    server = start_server(env={"ARQONBUS_AUTH": "token", "ARQONBUS_ADMIN_TOKEN": "first-secret"})
    calls: list[str] = []

    async def token() -> str:
        calls.append(tokens["current"])
        return tokens["current"]

    events: list[arqonbus.BusEvent] = []
    bus = await clients(server.url, token=token, reconnect=FAST, on_event=events.append)
    await bus.create_channel(room, "admin-only")
    server.env["ARQONBUS_ADMIN_TOKEN"] = tokens["current"] = "second-secret"
    await server.restart_async()
    await wait_for_event(events, Connected, count=2)
    await bus.create_channel(room, "admin-again")
    # Attempts made while the server was down also asked for the token.
    assert calls[0] == "first-secret" and set(calls[1:]) == {"second-secret"}


async def test_permanent_refusal_stops_reconnecting(
    start_server: StartServer, room: str
) -> None:
    """HTTP 401 at a reconnect is final: the client closes and says why."""
    server = start_server(env={"ARQONBUS_AUTH": "token", "ARQONBUS_ADMIN_TOKEN": "old"})
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return "old"

    events: list[arqonbus.BusEvent] = []
    bus = ArqonBus(server.url, token=token, reconnect=FAST, on_event=events.append)
    async with bus:
        sub = await bus.join(room, "c")
        server.env["ARQONBUS_ADMIN_TOKEN"] = "new"
        await server.restart_async()
        with pytest.raises(HandshakeRefused) as refused:
            await asyncio.wait_for(bus.wait_closed(), WAIT)
        assert refused.value.status == 401 and refused.value.permanent
        assert bus.state is arqonbus.ConnectionState.CLOSED
        assert bus.error is refused.value
        with pytest.raises(HandshakeRefused):
            await sub.get(WAIT)
        with pytest.raises(HandshakeRefused):
            await bus.ping()
        attempts = calls
        await asyncio.sleep(0.3)
    assert attempts >= 2 and calls == attempts, "no attempt after the refusal"
    closed = [e for e in events if isinstance(e, arqonbus.Closed)]
    assert len(closed) == 1 and closed[0].error is refused.value


async def test_gives_up_after_max_attempts(start_server: StartServer) -> None:
    server = start_server()
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3)
    async with ArqonBus(server.url, reconnect=policy) as bus:
        await server.stop_async()
        with pytest.raises(arqonbus.ReconnectFailed) as failed:
            await asyncio.wait_for(bus.wait_closed(), WAIT)
        assert failed.value.attempts == 3
        assert isinstance(failed.value.last_error, arqonbus.ConnectFailed)


async def test_no_reconnect_when_disabled(start_server: StartServer) -> None:
    server = start_server()
    async with ArqonBus(server.url, reconnect=ReconnectPolicy.disabled()) as bus:
        await server.stop_async()
        with pytest.raises(arqonbus.ConnectionLost):
            await asyncio.wait_for(bus.wait_closed(), WAIT)


def _jwt(secret: str, claims: dict[str, object]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


async def test_replaced_connection_does_not_reconnect(start_server: StartServer) -> None:
    secret = "jwt-test-secret"
    server = start_server(env={"ARQONBUS_AUTH": "jwt", "ARQONBUS_JWT_SECRET": secret})
    token = _jwt(secret, {"sub": "agent-7", "exp": int(time.time()) + 600})
    async with ArqonBus(server.url, token=token, reconnect=FAST) as first:
        assert first.client_id == "agent-7"
        async with ArqonBus(server.url, token=token) as second:
            with pytest.raises(arqonbus.Replaced):
                await asyncio.wait_for(first.wait_closed(), WAIT)
            assert (await second.ping()).pong


async def test_live_messages_during_recovery_are_buffered_not_lost(
    start_server: StartServer, redis_url: str, clients: Connect, room: str
) -> None:
    """Many messages published while the subscriber re-joins: each arrives
    once, in order (recovered ones first, then buffered live ones)."""
    server = start_server(args=["--storage", "redis", "--redis-url", redis_url])
    subscriber = await clients(server.url, reconnect=FAST)
    publisher = await clients(server.url, reconnect=FAST)
    sub = await subscriber.join(room, "busy")
    await publisher.join(room, "busy")
    await publisher.publish(room, "busy", {"n": 1}, ack=True)
    await messages(sub, 1)

    await server.restart_async()

    async def flood() -> None:
        for n in range(2, 302):
            await publisher.publish(room, "busy", {"n": n})
        await publisher.ping()

    await flood()
    got = await messages(sub, 300)
    assert [m.payload["n"] for m in got] == list(range(2, 302))
    assert [m.seq for m in got] == list(range(2, 302))
    await nothing_more(sub)
    assert not any(isinstance(m, Gap) for m in got)
    assert all(isinstance(m, Message) for m in got)


@pytest.mark.parametrize("recovery_max", [None, "5"])
async def test_recovery_too_big_for_one_reply_pages_through_truncated_history(
    start_server: StartServer, clients: Connect, room: str, recovery_max: str | None
) -> None:
    """More missed bytes than one reply may carry (SPEC §18): the join
    reply does not recover them all (§14), and the ``history`` pages are
    cut short with ``truncated: true``; the client pages on until it has
    every message, once, in order."""
    env = {"ARQONBUS_RATE_LIMIT_PER_SEC": "0", "ARQONBUS_HISTORY_SIZE": "1000",
           "ARQONBUS_HISTORY_MAX_BYTES": str(64 * 1024 * 1024)}  # fmt: skip
    if recovery_max is not None:
        env["ARQONBUS_RECOVERY_MAX"] = recovery_max
    server = start_server(env=env)
    publisher = await clients(server.url)
    await publisher.join(room, "big")
    epoch = (await publisher.channel_info(room, "big")).epoch
    assert epoch is not None
    blob = "y" * 16_384
    count = 200  # about 3.3 MB
    for n in range(1, count + 1):
        await publisher.publish(room, "big", {"n": n, "blob": blob}, ack=n == count)
    page = await publisher.history(room, "big", after_seq=0, limit=1000)
    assert page.truncated and 0 < len(page.messages) < count and page.last_seq == count

    events: list[arqonbus.BusEvent] = []
    bus = await clients(server.url, on_event=events.append)
    sub = await bus.join(room, "big", recover=Position(0, epoch))
    assert sub.joined is not None and sub.joined.seq == count
    got = await messages(sub, count)
    assert [m.seq for m in got] == list(range(1, count + 1))
    assert all(m.replayed and m.payload["n"] == m.seq for m in got)
    await publisher.publish(room, "big", {"n": count + 1}, ack=True)
    (live,) = await messages(sub, 1)
    assert (live.seq, live.replayed) == (count + 1, False)
    await nothing_more(sub)
    (resynced,) = [e for e in events if isinstance(e, Resynced)]
    assert resynced.filled and resynced.recovered == count
    if sub.joined.recovered is True:
        # Recovered by the server: the reply stayed within the size limit.
        assert resynced.via == "server"
    else:
        assert sub.joined.publications == () and resynced.via == "history"
