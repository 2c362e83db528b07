"""Typed replies (SPEC §5) and what a connection delivers.

Every reply type is a frozen dataclass with a ``from_payload`` constructor
that is lenient: fields a server omits get a default, unknown fields are
ignored, so a newer server does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = [
    "Ack",
    "BusEvent",
    "ChannelInfo",
    "ChannelList",
    "ChannelRecord",
    "ClientRecord",
    "ClientSummary",
    "ClientType",
    "Closed",
    "Connected",
    "Deleted",
    "DirectMessage",
    "Disconnected",
    "Gap",
    "History",
    "Joined",
    "Lagged",
    "LaggedChannel",
    "Left",
    "Limits",
    "Message",
    "Participant",
    "Pong",
    "Position",
    "Presence",
    "PresencePage",
    "Resynced",
    "ServerErrorEvent",
    "Status",
    "SubscriptionEvent",
    "SystemNotice",
    "Welcome",
]

#: The kinds of client the server knows (SPEC §2).
ClientType = Literal["human", "ai-agent", "dashboard", "service"]

JsonObject = dict[str, Any]


def _obj(value: Any) -> JsonObject:
    return dict(value) if isinstance(value, Mapping) else {}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def _list_of_obj(value: Any) -> list[JsonObject]:
    return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Limits announced in the welcome frame."""

    max_message_size: int = 0
    rate_limit_per_sec: int = 0
    max_subscriptions: int = 0

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Limits:
        return cls(
            max_message_size=_int(p.get("max_message_size")),
            rate_limit_per_sec=_int(p.get("rate_limit_per_sec")),
            max_subscriptions=_int(p.get("max_subscriptions")),
        )


@dataclass(frozen=True)
class Welcome:
    """The first frame of every connection (SPEC §2)."""

    client_id: str
    server_version: str = ""
    protocol: str = ""
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Welcome:
        return cls(
            client_id=_str(p.get("client_id")),
            server_version=_str(p.get("server_version")),
            protocol=_str(p.get("protocol")),
            limits=Limits.from_payload(_obj(p.get("limits"))),
        )


@dataclass(frozen=True)
class Position:
    """Where a subscriber stands in a channel: the last ``seq`` it saw and
    that seq's ``epoch``. Pass it as ``recover=`` to resume (SPEC §14)."""

    seq: int
    epoch: str

    def to_args(self) -> JsonObject:
        return {"seq": self.seq, "epoch": self.epoch}


# --------------------------------------------------------------------------
# Command replies
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pong:
    """``ping`` reply."""

    pong: bool
    server_time: str

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Pong:
        return cls(pong=_bool(p.get("pong")), server_time=_str(p.get("server_time")))


@dataclass(frozen=True)
class ChannelRecord:
    """A channel as ``list_channels``/``create_channel`` describe it."""

    room: str
    channel: str
    type: str = "general"
    created_at: str = ""
    created_by: str | None = None
    hardcoded: bool = False
    auto_created: bool = False
    description: str | None = None
    metadata: JsonObject = field(default_factory=dict)
    participant_count: int = 0

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ChannelRecord:
        return cls(
            room=_str(p.get("room")),
            channel=_str(p.get("channel")),
            type=_str(p.get("type"), "general"),
            created_at=_str(p.get("created_at")),
            created_by=_opt_str(p.get("created_by")),
            hardcoded=_bool(p.get("hardcoded")),
            auto_created=_bool(p.get("auto_created")),
            description=_opt_str(p.get("description")),
            metadata=_obj(p.get("metadata")),
            participant_count=_int(p.get("participant_count")),
        )


@dataclass(frozen=True)
class ClientRecord:
    """A client as ``identify`` and ``presence`` describe it."""

    client_id: str
    client_type: str = "human"
    screen_name: str | None = None
    avatar: str | None = None
    personality: str | None = None
    connected_at: str = ""
    last_activity: str = ""

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ClientRecord:
        return cls(
            client_id=_str(p.get("client_id")),
            client_type=_str(p.get("client_type"), "human"),
            screen_name=_opt_str(p.get("screen_name")),
            avatar=_opt_str(p.get("avatar")),
            personality=_opt_str(p.get("personality")),
            connected_at=_str(p.get("connected_at")),
            last_activity=_str(p.get("last_activity")),
        )


@dataclass(frozen=True)
class Participant:
    """A member listed by ``channel_info``."""

    client_id: str
    client_type: str = "human"
    screen_name: str | None = None
    connected_at: str = ""
    last_activity: str = ""

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Participant:
        return cls(
            client_id=_str(p.get("client_id")),
            client_type=_str(p.get("client_type"), "human"),
            screen_name=_opt_str(p.get("screen_name")),
            connected_at=_str(p.get("connected_at")),
            last_activity=_str(p.get("last_activity")),
        )


@dataclass(frozen=True)
class Joined:
    """``join_channel`` reply.

    ``recovered`` is ``None`` when no recovery was asked for, or when the
    server does not implement SPEC §14; then ``publications`` is empty.
    """

    room: str
    channel: str
    participant_count: int = 0
    seq: int = 0
    epoch: str | None = None
    recovered: bool | None = None
    publications: tuple[Message, ...] = ()

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Joined:
        recovered = p.get("recovered")
        room, channel = _str(p.get("room")), _str(p.get("channel"))
        return cls(
            room=room,
            channel=channel,
            participant_count=_int(p.get("participant_count")),
            seq=_int(p.get("seq")),
            epoch=_opt_str(p.get("epoch")),
            recovered=recovered if isinstance(recovered, bool) else None,
            publications=tuple(
                Message.from_envelope(m, room=room, channel=channel, replayed=True)
                for m in _list_of_obj(p.get("publications"))
            ),
        )


@dataclass(frozen=True)
class Left:
    """``leave_channel`` reply."""

    room: str
    channel: str
    was_member: bool

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Left:
        return cls(
            room=_str(p.get("room")),
            channel=_str(p.get("channel")),
            was_member=_bool(p.get("was_member")),
        )


@dataclass(frozen=True)
class ChannelList:
    """``list_channels`` reply. ``next_cursor`` is set when more pages follow
    (servers implementing SPEC §18 paging)."""

    channels: tuple[ChannelRecord, ...]
    total: int
    next_cursor: str | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ChannelList:
        return cls(
            channels=tuple(ChannelRecord.from_payload(c) for c in _list_of_obj(p.get("channels"))),
            total=_int(p.get("total")),
            next_cursor=_opt_str(p.get("next_cursor")),
        )


@dataclass(frozen=True)
class ChannelInfo:
    """``channel_info`` reply: the channel record plus members and history."""

    record: ChannelRecord
    participants: tuple[Participant, ...] = ()
    messages_stored: int = 0
    last_seq: int = 0
    epoch: str | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ChannelInfo:
        return cls(
            record=ChannelRecord.from_payload(p),
            participants=tuple(
                Participant.from_payload(x) for x in _list_of_obj(p.get("participants"))
            ),
            messages_stored=_int(p.get("messages_stored")),
            last_seq=_int(p.get("last_seq")),
            epoch=_opt_str(p.get("epoch")),
        )


@dataclass(frozen=True)
class Deleted:
    """``delete_channel`` reply."""

    room: str
    channel: str
    deleted: bool
    removed_members: int = 0

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Deleted:
        return cls(
            room=_str(p.get("room")),
            channel=_str(p.get("channel")),
            deleted=_bool(p.get("deleted")),
            removed_members=_int(p.get("removed_members")),
        )


@dataclass(frozen=True)
class History:
    """``history`` reply; ``messages`` are oldest first."""

    room: str
    channel: str
    messages: tuple[Message, ...]
    count: int = 0
    backend: str = ""
    epoch: str | None = None
    last_seq: int = 0
    truncated: bool = False

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> History:
        room, channel = _str(p.get("room")), _str(p.get("channel"))
        return cls(
            room=room,
            channel=channel,
            messages=tuple(
                Message.from_envelope(m, room=room, channel=channel, replayed=True)
                for m in _list_of_obj(p.get("messages"))
            ),
            count=_int(p.get("count")),
            backend=_str(p.get("backend")),
            epoch=_opt_str(p.get("epoch")),
            last_seq=_int(p.get("last_seq")),
            truncated=_bool(p.get("truncated")),
        )


@dataclass(frozen=True)
class PresencePage:
    """``presence`` reply (SPEC §15): one page of a channel's members."""

    room: str
    channel: str
    members: tuple[ClientRecord, ...]
    count: int
    next_cursor: str | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> PresencePage:
        return cls(
            room=_str(p.get("room")),
            channel=_str(p.get("channel")),
            members=tuple(ClientRecord.from_payload(m) for m in _list_of_obj(p.get("members"))),
            count=_int(p.get("count")),
            next_cursor=_opt_str(p.get("next_cursor")),
        )


@dataclass(frozen=True)
class Status:
    """``status`` reply (SPEC §5). The nested sections are kept as dicts
    (their exact fields vary between server versions); the common figures
    have properties."""

    server: JsonObject
    clients: JsonObject
    rooms: int
    channels: int
    subscriptions: int
    participants: JsonObject
    messages: JsonObject
    storage: JsonObject

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Status:
        return cls(
            server=_obj(p.get("server")),
            clients=_obj(p.get("clients")),
            rooms=_int(p.get("rooms")),
            channels=_int(p.get("channels")),
            subscriptions=_int(p.get("subscriptions")),
            participants=_obj(p.get("participants")),
            messages=_obj(p.get("messages")),
            storage=_obj(p.get("storage")),
        )

    @property
    def active_clients(self) -> int:
        return _int(self.clients.get("active"))

    @property
    def dropped_messages(self) -> int:
        """Messages dropped for slow consumers (``messages.dropped``)."""
        return _int(self.messages.get("dropped"))


@dataclass(frozen=True)
class Ack:
    """The acknowledgement of a publish (SPEC §4.3)."""

    delivered: int
    seq: int | None = None
    stored: bool = False

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Ack:
        return cls(
            delivered=_int(p.get("delivered")),
            seq=_opt_int(p.get("seq")),
            stored=_bool(p.get("stored")),
        )


# --------------------------------------------------------------------------
# What a subscription yields
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message received on a joined channel.

    ``type`` is ``"message"`` usually, ``"telemetry"`` on the system
    channels, or ``"response"``/``"error"`` when another client routed one
    to the channel. ``replayed`` is true for messages recovered after a
    reconnect (from the server's recovery or from history), or refilled
    from history after a lagged notice (SPEC §16), rather than received
    live. Refilled messages may arrive after live messages with a higher
    ``seq``; every message is still delivered once.
    """

    room: str
    channel: str
    id: str
    payload: JsonObject
    sender: str | None = None
    seq: int | None = None
    epoch: str | None = None
    timestamp: str = ""
    type: str = "message"
    metadata: JsonObject | None = None
    replayed: bool = False

    @classmethod
    def from_envelope(
        cls,
        env: Mapping[str, Any],
        *,
        room: str | None = None,
        channel: str | None = None,
        replayed: bool = False,
    ) -> Message:
        metadata = env.get("metadata")
        return cls(
            room=_str(env.get("room"), room or ""),
            channel=_str(env.get("channel"), channel or ""),
            id=_str(env.get("id")),
            payload=_obj(env.get("payload")),
            sender=_opt_str(env.get("sender")),
            seq=_opt_int(env.get("seq")),
            epoch=_opt_str(env.get("epoch")),
            timestamp=_str(env.get("timestamp")),
            type=_str(env.get("type"), "message"),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
            replayed=replayed,
        )

    @property
    def position(self) -> Position | None:
        """This message's place in its channel, when it has one."""
        if self.seq is None or self.epoch is None:
            return None
        return Position(self.seq, self.epoch)


@dataclass(frozen=True)
class ClientSummary:
    """Who joined or left, in a presence event."""

    client_id: str
    client_type: str = "human"
    screen_name: str | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ClientSummary:
        return cls(
            client_id=_str(p.get("client_id")),
            client_type=_str(p.get("client_type"), "human"),
            screen_name=_opt_str(p.get("screen_name")),
        )


@dataclass(frozen=True)
class Presence:
    """Another client joined or left the channel (SPEC §15; only delivered
    to subscriptions joined with ``presence=True``)."""

    room: str
    channel: str
    event: Literal["join", "leave"]
    client: ClientSummary
    participant_count: int

    @classmethod
    def from_envelope(cls, env: Mapping[str, Any]) -> Presence:
        p = _obj(env.get("payload"))
        return cls(
            room=_str(env.get("room")),
            channel=_str(env.get("channel")),
            event="join" if p.get("event") == "join" else "leave",
            client=ClientSummary.from_payload(_obj(p.get("client"))),
            participant_count=_int(p.get("participant_count")),
        )


@dataclass(frozen=True)
class Gap:
    """Messages of the channel that could not be recovered.

    Delivered on a subscription where the missing messages would have
    been (for a lagged refill: among the refilled messages, which may
    follow later live ones). ``from_seq..to_seq`` is the range that was
    at stake; ``recovered`` of them were delivered (``replayed``) before
    this event. ``epoch_changed`` means the channel's history restarted
    (server restarted with memory storage, or the channel was recreated):
    nothing of the old epoch can be recovered, and ``to_seq`` is in
    ``new_epoch``. ``reason`` is ``"reconnect"``, ``"recover"`` (an
    explicit ``recover=`` on join) or ``"lagged"`` (SPEC §16).
    """

    room: str
    channel: str
    reason: str
    from_seq: int
    to_seq: int
    recovered: int
    epoch_changed: bool
    old_epoch: str | None
    new_epoch: str | None

    @property
    def missed(self) -> int:
        """Messages published in the range (same epoch only), recovered or not."""
        return 0 if self.epoch_changed else max(0, self.to_seq - self.from_seq + 1)


#: What ``async for event in subscription`` yields.
SubscriptionEvent = Union[Message, Presence, Gap]


@dataclass(frozen=True)
class DirectMessage:
    """A message sent to this client alone (SPEC §4.2), or a
    ``response``/``error`` envelope another client addressed to it."""

    id: str
    payload: JsonObject
    sender: str | None = None
    timestamp: str = ""
    type: str = "message"
    metadata: JsonObject | None = None
    request_id: str | None = None

    @classmethod
    def from_envelope(cls, env: Mapping[str, Any]) -> DirectMessage:
        metadata = env.get("metadata")
        return cls(
            id=_str(env.get("id")),
            payload=_obj(env.get("payload")),
            sender=_opt_str(env.get("sender")),
            timestamp=_str(env.get("timestamp")),
            type=_str(env.get("type"), "message"),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
            request_id=_opt_str(env.get("request_id")),
        )


# --------------------------------------------------------------------------
# Connection-level events (the ``on_event`` callback)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """A connection is open. ``attempts`` is 0 for the first connection,
    else the number of reconnect attempts it took."""

    welcome: Welcome
    attempts: int = 0


@dataclass(frozen=True)
class Disconnected:
    """The connection dropped; ``will_reconnect`` says what happens next."""

    reason: str
    close_code: int | None
    will_reconnect: bool


@dataclass(frozen=True)
class Resynced:
    """A channel's stream was brought up to date after a reconnect, an
    explicit ``recover=``, or a lagged notice. ``via`` says how:
    ``"server"`` (SPEC §14 recovery), ``"history"`` (``history after_seq``
    paging), or ``"none"`` (nothing was missed, or nothing could be
    fetched). ``filled`` is false when a :class:`Gap` was delivered."""

    room: str
    channel: str
    reason: str
    via: Literal["server", "history", "none"]
    recovered: int
    filled: bool


@dataclass(frozen=True)
class LaggedChannel:
    room: str
    channel: str
    dropped: int
    first_dropped_seq: int | None


@dataclass(frozen=True)
class Lagged:
    """The server dropped messages for this client (SPEC §16). The client
    refills the channels it holds from history; see :class:`Resynced`."""

    dropped: int
    channels: tuple[LaggedChannel, ...]

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Lagged:
        return cls(
            dropped=_int(p.get("dropped")),
            channels=tuple(
                LaggedChannel(
                    room=_str(c.get("room")),
                    channel=_str(c.get("channel")),
                    dropped=_int(c.get("dropped")),
                    first_dropped_seq=_opt_int(c.get("first_dropped_seq")),
                )
                for c in _list_of_obj(p.get("channels"))
            ),
        )


@dataclass(frozen=True)
class ServerErrorEvent:
    """An ``error`` that answers no pending call, e.g. a failed publish
    sent without ``ack``."""

    error: Exception


@dataclass(frozen=True)
class SystemNotice:
    """A ``system`` envelope the client has no special handling for."""

    envelope: JsonObject


@dataclass(frozen=True)
class Closed:
    """The client is closed; ``error`` is why, when it did not close itself."""

    error: BaseException | None


#: What the ``on_event`` callback receives.
BusEvent = Union[
    Connected, Disconnected, Resynced, Lagged, ServerErrorEvent, SystemNotice, Closed
]
