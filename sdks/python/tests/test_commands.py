"""Every command, publishing and direct messages, against a real server."""

from __future__ import annotations

import re

import pytest

import arqonbus
from arqonbus import (
    ArqonBus,
    ChannelDeleted,
    ChannelExists,
    ChannelNotEmpty,
    ChannelNotFound,
    Forbidden,
    InvalidArgument,
    Message,
    NotSubscribed,
    RoomNotFound,
    ServerErrorEvent,
    TargetNotFound,
    UnknownCommand,
)

from .conftest import WAIT, Connect, messages, nothing_more
from .servers import BusServer

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_welcome_and_ping(server: BusServer, clients: Connect) -> None:
    bus = await clients(server.url)
    assert bus.state is arqonbus.ConnectionState.CONNECTED
    assert bus.client_id is not None and re.fullmatch(r"arq_client_[0-9a-f]{32}", bus.client_id)
    assert bus.welcome is not None and bus.welcome.protocol == "1.0"
    assert bus.welcome.limits.max_message_size > 0
    pong = await bus.ping()
    assert pong.pong is True
    assert RFC3339_MS.match(pong.server_time)


async def test_status_counts_clients_by_type(server: BusServer, clients: Connect) -> None:
    agent = await clients(server.url, client_type="ai-agent", screen_name="Ada")
    status = await agent.status()
    assert status.server["protocol"] == "1.0"
    assert status.active_clients >= 1
    assert status.clients["by_type"]["ai-agent"] >= 1
    assert status.storage["backend"] == "memory"


async def test_identify_updates_the_client_record(
    server: BusServer, clients: Connect, room: str
) -> None:
    bus = await clients(server.url, screen_name="before")
    record = await bus.identify(client_type="service", screen_name="after", personality="terse")
    assert record.client_id == bus.client_id
    assert (record.client_type, record.screen_name, record.personality) == (
        "service",
        "after",
        "terse",
    )
    await bus.join(room, "general")
    info = await bus.channel_info(room, "general")
    assert [(p.client_id, p.screen_name) for p in info.participants] == [
        (bus.client_id, "after")
    ]


async def test_join_leave_and_subscription_end(
    server: BusServer, clients: Connect, room: str
) -> None:
    bus = await clients(server.url)
    sub = await bus.join(room, "lobby")
    assert sub.joined is not None
    assert (sub.joined.room, sub.joined.channel, sub.joined.participant_count) == (room, "lobby", 1)
    assert sub.joined.seq == 0 and sub.joined.epoch
    assert await bus.join(room, "lobby") is sub, "joining again returns the same subscription"
    left = await sub.leave()
    assert left.was_member is True
    assert sub.closed
    assert [event async for event in sub] == []
    assert (await bus.leave(room, "lobby")).was_member is False
    with pytest.raises(ChannelNotFound):
        await bus.leave(room, "never-created")


async def test_leave_does_not_wait_for_a_full_queue(
    server: BusServer, clients: Connect, room: str
) -> None:
    """A subscription nobody reads stalls the connection once its queue is
    full; leaving it releases the connection at once."""
    bus = await clients(server.url, queue_size=1)
    sub = await bus.join(room, "stalled")
    publisher = await clients(server.url)
    await publisher.join(room, "stalled")
    for n in range(200):
        await publisher.publish(room, "stalled", {"n": n})
    await publisher.ping()
    left = await bus.leave(room, "stalled", timeout=WAIT)
    assert left.was_member and sub.closed
    assert (await bus.ping()).pong


async def test_list_channels_and_channel_info(
    server: BusServer, clients: Connect, room: str
) -> None:
    bus = await clients(server.url, screen_name="lister")
    await bus.join(room, "a")
    await bus.join(room, "b")
    listing = await bus.list_channels(room)
    assert listing.total == 2
    assert [(c.room, c.channel, c.participant_count) for c in listing.channels] == [
        (room, "a", 1),
        (room, "b", 1),
    ]
    assert all(c.auto_created and c.type == "general" for c in listing.channels)
    everything = await bus.list_channels()
    names = {(c.room, c.channel) for c in everything.channels}
    assert ("integriguard", "dashboard-events") in names
    with pytest.raises(RoomNotFound):
        await bus.list_channels(f"{room}-missing")

    await bus.publish(room, "a", {"n": 1}, ack=True)
    info = await bus.channel_info(room, "a")
    assert (info.record.room, info.record.channel) == (room, "a")
    assert info.last_seq == 1 and info.messages_stored == 1 and info.epoch
    assert [p.screen_name for p in info.participants] == ["lister"]
    with pytest.raises(ChannelNotFound):
        await bus.channel_info(room, "missing")


async def test_publish_delivers_in_order_with_acks(
    server: BusServer, clients: Connect, room: str
) -> None:
    alice = await clients(server.url)
    bob = await clients(server.url)
    sub = await bob.join(room, "chat")
    await alice.join(room, "chat")
    acks = [await alice.publish(room, "chat", {"n": n}, ack=True) for n in range(1, 6)]
    assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
    assert all(a.delivered == 1 and a.stored for a in acks)
    got = await messages(sub, 5)
    assert [m.payload["n"] for m in got] == [1, 2, 3, 4, 5]
    assert [m.seq for m in got] == [1, 2, 3, 4, 5]
    first = got[0]
    assert first.sender == alice.client_id
    assert (first.room, first.channel, first.type, first.replayed) == (room, "chat", "message", False)
    assert first.epoch and first.position == arqonbus.Position(1, first.epoch)
    # Without ack: nothing comes back, the message still arrives.
    assert await alice.publish(room, "chat", {"n": 6}) is None
    assert (await messages(sub, 1))[0].payload == {"n": 6}


async def test_sender_gets_its_own_message_only_with_echo(
    server: BusServer, clients: Connect, room: str
) -> None:
    bus = await clients(server.url)
    sub = await bus.join(room, "echo")
    await bus.publish(room, "echo", {"quiet": True}, ack=True)
    await nothing_more(sub)
    await bus.publish(room, "echo", {"loud": True}, echo=True, metadata={"k": "v"})
    (msg,) = await messages(sub, 1)
    assert msg.payload == {"loud": True}
    assert msg.metadata == {"k": "v", "echo": True}


async def test_publish_errors(server: BusServer, clients: Connect, room: str) -> None:
    events: list[arqonbus.BusEvent] = []
    bus = await clients(server.url, on_event=events.append)
    other = await clients(server.url)
    await other.join(room, "exists")
    with pytest.raises(NotSubscribed) as not_subscribed:
        await bus.publish(room, "exists", {}, ack=True)
    assert not_subscribed.value.code == 403
    assert not_subscribed.value.error_code == "NOT_SUBSCRIBED"
    with pytest.raises(ChannelNotFound) as not_found:
        await bus.publish(room, "missing", {}, ack=True)
    assert not_found.value.code == 404
    # Without ack the error answers no call: it is reported as an event.
    await bus.publish(room, "missing", {})
    await bus.ping()  # replies come in order: the error came before this
    errors = [e.error for e in events if isinstance(e, ServerErrorEvent)]
    assert len(errors) == 1 and isinstance(errors[0], ChannelNotFound)
    with pytest.raises(TypeError):
        await bus.publish(room, "exists", ["not", "an", "object"])  # type: ignore[arg-type]


async def test_direct_messages(server: BusServer, clients: Connect) -> None:
    alice = await clients(server.url)
    bob = await clients(server.url)
    assert bob.client_id is not None
    ack = await alice.send(bob.client_id, {"text": "psst"}, ack=True)
    assert (ack.delivered, ack.seq, ack.stored) == (1, None, False)
    msg = await bob.inbox.get(WAIT)
    assert msg.payload == {"text": "psst"} and msg.sender == alice.client_id
    assert msg.type == "message"
    with pytest.raises(TargetNotFound) as missing:
        await alice.send("arq_client_" + "0" * 32, {}, ack=True)
    assert missing.value.code == 404


async def test_history(server: BusServer, clients: Connect, room: str) -> None:
    bus = await clients(server.url)
    await bus.join(room, "log")
    for n in range(1, 8):
        await bus.publish(room, "log", {"n": n}, ack=True)
    newest = await bus.history(room, "log", limit=3)
    assert [m.seq for m in newest.messages] == [5, 6, 7]
    assert (newest.count, newest.last_seq, newest.backend) == (3, 7, "memory")
    after = await bus.history(room, "log", after_seq=2, limit=2)
    assert [m.payload["n"] for m in after.messages] == [3, 4]
    assert after.epoch == newest.epoch
    with pytest.raises(InvalidArgument) as too_many:
        await bus.history(room, "log", limit=1001)
    assert too_many.value.code == 400
    assert any(d.get("field") == "limit" for d in too_many.value.details)
    with pytest.raises(ChannelNotFound):
        await bus.history(room, "missing")


async def test_create_and_delete_channel(server: BusServer, clients: Connect, room: str) -> None:
    admin = await clients(server.url)  # loopback peers are admins with auth none
    member = await clients(server.url)
    record = await admin.create_channel(
        room, "ops", description="pager", metadata={"team": "sre"}
    )
    assert (record.room, record.channel, record.description, record.metadata) == (
        room,
        "ops",
        "pager",
        {"team": "sre"},
    )
    assert record.created_by == admin.client_id and not record.auto_created
    with pytest.raises(ChannelExists) as exists:
        await admin.create_channel(room, "ops")
    assert exists.value.code == 409
    with pytest.raises(Forbidden):
        await admin.create_channel("integriguard", "telemetry-stream")
    with pytest.raises(Forbidden):
        await admin.delete_channel("integriguard", "dashboard-events")

    sub = await member.join(room, "ops")
    await admin.join(room, "ops")
    await admin.publish(room, "ops", {"last": True}, ack=True)
    with pytest.raises(ChannelNotEmpty):
        await admin.delete_channel(room, "ops")
    deleted = await admin.delete_channel(room, "ops", force=True)
    assert deleted.deleted and deleted.removed_members == 2
    # The member still gets what was sent before, then the deletion.
    (last,) = await messages(sub, 1)
    assert last.payload == {"last": True}
    with pytest.raises(ChannelDeleted) as gone:
        await sub.get(WAIT)
    assert (gone.value.room, gone.value.channel) == (room, "ops")
    with pytest.raises(ChannelNotFound):
        await admin.delete_channel(room, "ops")


async def test_raw_command_and_unknown_command(server: BusServer, clients: Connect) -> None:
    bus = await clients(server.url)
    assert (await bus.command("ping"))["pong"] is True
    with pytest.raises(UnknownCommand) as unknown:
        await bus.command("no_such_command")
    err = unknown.value
    assert (err.code, err.error_code, err.command) == (404, "UNKNOWN_COMMAND", "no_such_command")
    assert isinstance(err, arqonbus.ArqonError) and isinstance(err, arqonbus.ArqonBusError)


async def test_invalid_argument_names_the_field(server: BusServer, clients: Connect) -> None:
    bus = await clients(server.url)
    with pytest.raises(InvalidArgument) as invalid:
        await bus.command("join_channel", {"room": "ok"})
    assert [d.get("field") for d in invalid.value.details] == ["channel"]


async def test_calls_after_close_raise_client_closed(server: BusServer) -> None:
    bus = ArqonBus(server.url)
    with pytest.raises(arqonbus.ClientClosed):
        await bus.ping()  # never connected
    async with bus:
        sub = await bus.join("closing", "test")
    assert bus.state is arqonbus.ConnectionState.CLOSED
    with pytest.raises(arqonbus.ClientClosed):
        await bus.ping()
    assert [e async for e in sub] == []
    await bus.wait_closed()  # closed on request: no error


async def test_connect_failure_is_reported(server_bin: str) -> None:
    from .servers import free_port

    bus = ArqonBus(f"ws://127.0.0.1:{free_port()}/", connect_timeout=2)
    with pytest.raises(arqonbus.ConnectFailed):
        await bus.connect()
    with pytest.raises(ValueError):
        ArqonBus("http://127.0.0.1:9100/")


async def test_invalid_query_parameter_is_a_permanent_refusal(server: BusServer) -> None:
    bus = ArqonBus(server.url, screen_name="x" * 65)
    with pytest.raises(arqonbus.HandshakeRefused) as refused:
        await bus.connect()
    assert refused.value.status == 400 and refused.value.permanent
    assert "screen_name" in refused.value.body


async def test_telemetry_messages_on_the_system_channel(
    server: BusServer, clients: Connect, room: str
) -> None:
    watcher = await clients(server.url)
    sub = await watcher.join("integriguard", "telemetry-stream")
    bus = await clients(server.url)
    await bus.join(room, "t")
    # The stats event comes every second; joins are reported too.
    while True:
        event = await sub.get(WAIT)
        assert isinstance(event, Message)
        assert event.type == "telemetry" and event.sender == "arqonbus"
        if event.payload.get("eventType") == "channel_joined" and event.payload.get("room") == room:
            break
