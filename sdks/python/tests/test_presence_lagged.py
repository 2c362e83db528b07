"""Presence (SPEC §15) and the lagged notice (SPEC §16) against the real
server. Each test first checks that the server has the feature and skips
("server lacks §N") when it does not, so they run once it does."""

from __future__ import annotations

import pytest

import arqonbus
from arqonbus import ArqonBus, Gap, Lagged, Message, Presence, UnknownCommand

from .conftest import FAST, WAIT, Connect, StartServer, messages, nothing_more, wait_for_event
from .servers import BusServer


async def require_presence(bus: ArqonBus, room: str, channel: str) -> None:
    """Skips unless the server knows the ``presence`` command (the channel
    must exist)."""
    try:
        await bus.presence(room, channel)
    except UnknownCommand:
        pytest.skip("server lacks §15 (no presence command)")


async def presence_event(sub: arqonbus.Subscription) -> Presence:
    event = await sub.get(WAIT)
    assert isinstance(event, Presence), f"expected a presence event, got {event!r}"
    return event


async def test_presence_events_on_the_subscription(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    server = start_server()
    events: list[arqonbus.BusEvent] = []
    watcher = await clients(
        server.url, reconnect=FAST, screen_name="watcher", on_event=events.append
    )
    sub = await watcher.join(room, "p", presence=True)
    await require_presence(watcher, room, "p")

    bea = await clients(server.url, screen_name="Bea", client_type="ai-agent")
    await bea.join(room, "p")
    await bea.publish(room, "p", {"hello": True})
    joined = await presence_event(sub)
    assert (joined.event, joined.room, joined.channel) == ("join", room, "p")
    assert joined.client.client_id == bea.client_id
    assert (joined.client.screen_name, joined.client.client_type) == ("Bea", "ai-agent")
    assert joined.participant_count == 2
    (hello,) = await messages(sub, 1)  # in order with the messages
    assert hello.payload == {"hello": True}

    await bea.leave(room, "p")
    left = await presence_event(sub)
    assert (left.event, left.client.client_id, left.participant_count) == (
        "leave",
        bea.client_id,
        1,
    )

    # A disconnect is a leave too.
    carl = await clients(server.url)
    await carl.join(room, "p")
    assert (await presence_event(sub)).event == "join"
    await carl.close()
    gone = await presence_event(sub)
    assert (gone.event, gone.client.client_id) == ("leave", carl.client_id)

    # Presence is asked for again when the client re-joins after a restart.
    await server.restart_async()
    await wait_for_event(events, arqonbus.Resynced)
    gap = await sub.get(WAIT)  # memory storage: the history restarted
    assert isinstance(gap, Gap) and gap.epoch_changed
    dana = await clients(server.url)
    await dana.join(room, "p")
    assert (await presence_event(sub)).client.client_id == dana.client_id

    # A join without presence turns the events off.
    await watcher.join(room, "p")
    eve = await clients(server.url)
    await eve.join(room, "p")
    await nothing_more(sub)


async def test_no_presence_events_without_presence(
    server: BusServer, clients: Connect, room: str
) -> None:
    quiet = await clients(server.url)
    sub = await quiet.join(room, "q")
    await require_presence(quiet, room, "q")
    other = await clients(server.url)
    await other.join(room, "q")
    await nothing_more(sub)


async def test_presence_command_pages_through_members(
    server: BusServer, clients: Connect, room: str
) -> None:
    first = await clients(server.url, screen_name="m0")
    await first.join(room, "crowd")
    await require_presence(first, room, "crowd")
    members = [first]
    for n in range(1, 5):
        bus = await clients(server.url, screen_name=f"m{n}")
        await bus.join(room, "crowd")
        members.append(bus)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await first.presence(room, "crowd", limit=2, cursor=cursor)
        pages += 1
        assert page.count == 5 and len(page.members) <= 2
        seen.extend(m.client_id for m in page.members)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 10, "paging does not end"
    assert sorted(seen) == sorted(b.client_id or "" for b in members)
    assert pages == 3
    with pytest.raises(arqonbus.InvalidArgument):
        await first.presence(room, "crowd", limit=0)
    with pytest.raises(arqonbus.ChannelNotFound):
        await first.presence(room, "nobody-here")


MESSAGES = 2500
PAYLOAD = {"blob": "x" * 8192}


async def test_lagged_notice_is_refilled_from_history(
    start_server: StartServer, clients: Connect, room: str
) -> None:
    """A subscriber that stops reading loses messages to the server's full
    queue (slow-consumer mode ``drop``); the lagged notice makes the client
    fetch them from history: every message arrives exactly once, and no gap
    is reported. Refilled messages are marked ``replayed`` and may come
    after live messages with a higher ``seq`` (live delivery does not wait
    for the refill)."""
    server = start_server(
        env={
            "ARQONBUS_SLOW_CONSUMER": "drop",
            "ARQONBUS_CLIENT_QUEUE_BYTES": "65536",
            "ARQONBUS_HISTORY_SIZE": str(MESSAGES * 2),
            "ARQONBUS_HISTORY_MAX_BYTES": str(256 * 1024 * 1024),
            "ARQONBUS_RATE_LIMIT_PER_SEC": "0",
        }
    )
    events: list[arqonbus.BusEvent] = []
    slow = await clients(server.url, queue_size=4, on_event=events.append)
    sub = await slow.join(room, "firehose")
    publisher = await clients(server.url)
    await publisher.join(room, "firehose")
    # The subscriber does not read: its queues and socket buffers fill up,
    # then the server drops what does not fit.
    for n in range(1, MESSAGES + 1):
        await publisher.publish(room, "firehose", {"n": n, **PAYLOAD})
    status = await publisher.status()
    assert status.dropped_messages > 0, "the test did not make the server drop anything"

    got: list[Message] = []
    gaps: list[Gap] = []
    while len(got) < MESSAGES:
        try:
            event = await sub.get(WAIT if any(isinstance(e, Lagged) for e in events) else 1.0)
        except TimeoutError:
            break
        if isinstance(event, Message):
            got.append(event)
        elif isinstance(event, Gap):
            gaps.append(event)
    if not any(isinstance(e, Lagged) for e in events):
        pytest.skip("server lacks §16 (messages were dropped, no lagged notice came)")

    lagged = [e for e in events if isinstance(e, Lagged)]
    assert sum(e.dropped for e in lagged) > 0
    assert any(c.room == room and c.channel == "firehose" for e in lagged for c in e.channels)
    assert gaps == []
    assert sorted(m.seq or 0 for m in got) == list(range(1, MESSAGES + 1))
    assert all(m.payload["n"] == m.seq for m in got)
    # Live messages keep their order.
    live = [m.seq or 0 for m in got if not m.replayed]
    replayed = [m.seq or 0 for m in got if m.replayed]
    assert replayed and live == sorted(live)
    await nothing_more(sub)
    resynced = [e for e in events if isinstance(e, arqonbus.Resynced) and e.reason == "lagged"]
    assert resynced and all(r.via == "history" for r in resynced)
