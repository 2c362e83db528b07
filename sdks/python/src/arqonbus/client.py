"""The asyncio client: :class:`ArqonBus`."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Union, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import __version__
from ._mailbox import Ended, Mailbox
from ._protocol import (
    SERVER_SENDER,
    IdGenerator,
    command_envelope,
    decode,
    encode,
    message_envelope,
)
from ._tracker import Fetch, Step
from .errors import (
    ArqonBusError,
    ChannelDeleted,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    DisconnectedByOperator,
    HandshakeRefused,
    ProtocolError,
    ReconnectFailed,
    Replaced,
    RequestTimeout,
    error_from_envelope,
)
from .reconnect import ReconnectPolicy
from .subscription import Subscription, SubscriptionClosed
from .types import (
    Ack,
    BusEvent,
    ChannelInfo,
    ChannelList,
    ChannelRecord,
    ClientRecord,
    ClientType,
    Closed,
    Connected,
    Deleted,
    DirectMessage,
    Disconnected,
    History,
    Joined,
    Lagged,
    Left,
    Message,
    Pong,
    Position,
    Presence,
    PresencePage,
    ServerErrorEvent,
    Status,
    SystemNotice,
    Welcome,
)

__all__ = ["DEFAULT_URL", "ArqonBus", "ConnectionState", "Inbox", "TokenSource"]

log = logging.getLogger("arqonbus")

#: Where the server listens by default (SPEC §1).
DEFAULT_URL = "ws://127.0.0.1:9100/"
#: Close codes after which reconnecting would undo what the server meant:
#: replaced by a newer connection with the same identity, disconnected by
#: an operator.
CLOSE_REPLACED = 4000
CLOSE_OPERATOR = 4003
#: ``client_id``s remembered to recognise this client's own messages in
#: replayed history (one per connection).
OWN_IDS_KEPT = 64

#: A token, or a function (sync or async) returning the current one; it is
#: called before every connection attempt, so it can refresh the token.
TokenSource = Union[str, Callable[[], Union[str, None, Awaitable[Union[str, None]]]]]

JsonObject = dict[str, Any]
_ReplyHandler = Callable[[JsonObject], Awaitable[None]]


class ConnectionState(str, enum.Enum):
    """Where an :class:`ArqonBus` stands."""

    IDLE = "idle"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class _Pending:
    """A request waiting for its reply: a caller's future, and/or a
    handler run by the connection task when the reply is read (so that it
    sees the reply in order with the messages around it)."""

    future: asyncio.Future[JsonObject] | None
    on_reply: _ReplyHandler | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A caller cancelled at the wrong moment never reads the exception;
    # reading it here keeps asyncio from logging "never retrieved".
    if not future.cancelled():
        future.exception()


class Inbox:
    """Direct messages sent to this client: ``async for msg in bus.inbox``.

    Bounded (``inbox_size``): when nobody reads it, the oldest message is
    dropped (counted in :attr:`dropped`) rather than stalling the
    connection.
    """

    def __init__(self, size: int) -> None:
        self._mailbox: Mailbox[DirectMessage] = Mailbox(size)

    @property
    def dropped(self) -> int:
        """Messages dropped because the inbox was full."""
        return self._mailbox.dropped

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> DirectMessage:
        try:
            return await self._mailbox.get()
        except (Ended, SubscriptionClosed):
            raise StopAsyncIteration from None

    async def get(self, timeout: float | None = None) -> DirectMessage:
        """The next direct message, waiting at most ``timeout`` seconds.

        Raises:
            TimeoutError: nothing arrived in time.
            SubscriptionClosed: the client was closed.
        """
        try:
            return await asyncio.wait_for(self._mailbox.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no direct message within {timeout:g} s") from None
        except Ended:
            raise SubscriptionClosed("the client is closed") from None


class ArqonBus:
    """An ArqonBus connection that reconnects by itself.

    Use it as an async context manager::

        async with ArqonBus("ws://127.0.0.1:9100/", client_type="ai-agent",
                            screen_name="Ada") as bus:
            sub = await bus.join("science", "explore")
            await bus.publish("science", "explore", {"text": "hello"})
            async for event in sub:
                ...

    Every call takes an optional ``timeout`` (seconds; default
    ``request_timeout``) covering the wait for a connection, the send and
    the reply; past it :class:`~arqonbus.errors.RequestTimeout` is raised.
    Calls made while reconnecting wait for the new connection. A server
    ``error`` reply raises the :class:`~arqonbus.errors.ArqonError`
    subclass of its ``error_code``.

    Reconnection follows ``reconnect`` (exponential backoff with full
    jitter). After a reconnect every subscription is re-joined and
    brought up to date (SPEC §14 recovery, or ``history`` paging with a
    server without it), so each channel message is delivered once, in
    order; what cannot be recovered is reported with a
    :class:`~arqonbus.types.Gap`. The client stops for good when the
    server refuses the upgrade with 400/401/403
    (:class:`~arqonbus.errors.HandshakeRefused`), replaces the connection
    (close 4000, :class:`~arqonbus.errors.Replaced`), an operator
    disconnects it (close 4003,
    :class:`~arqonbus.errors.DisconnectedByOperator`), or the policy's
    ``max_attempts`` run out; that error is then raised by pending and
    later calls, by subscriptions and by :meth:`wait_closed`.

    Args:
        url: ``ws://host:port/`` of the bus.
        token: a token, or a callable (sync or async) returning one, called
            before every connection attempt. Sent as ``Authorization:
            Bearer``.
        client_type, screen_name, avatar, personality: who this client is
            (SPEC §2 query parameters).
        request_timeout: default per-call timeout, in seconds.
        connect_timeout: bound of one connection attempt (TCP, upgrade and
            welcome frame), in seconds.
        reconnect: the reconnect policy (default: reconnect forever).
        queue_size: bound of each subscription's event queue.
        inbox_size: bound of the direct-message inbox.
        on_event: called (in the event loop) with connection events:
            :class:`~arqonbus.types.Connected`,
            :class:`~arqonbus.types.Disconnected`,
            :class:`~arqonbus.types.Resynced`,
            :class:`~arqonbus.types.Lagged`,
            :class:`~arqonbus.types.ServerErrorEvent` (an error answering
            no call, e.g. a failed publish without ``ack``),
            :class:`~arqonbus.types.SystemNotice`,
            :class:`~arqonbus.types.Closed`. It must not block.
        max_frame_size: largest frame accepted from the server, in bytes.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: TokenSource | None = None,
        client_type: ClientType | None = None,
        screen_name: str | None = None,
        avatar: str | None = None,
        personality: str | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect: ReconnectPolicy | None = None,
        queue_size: int = 1024,
        inbox_size: int = 1024,
        on_event: Callable[[BusEvent], None] | None = None,
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if queue_size < 1 or inbox_size < 1:
            raise ValueError("queue sizes must be at least 1")
        self._url = url
        self._token = token
        self._identity: dict[str, str] = {}
        self._set_identity(
            client_type=client_type,
            screen_name=screen_name,
            avatar=avatar,
            personality=personality,
        )
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect if reconnect is not None else ReconnectPolicy()
        self._queue_size = queue_size
        self._on_event = on_event
        self._max_frame_size = max_frame_size

        self._ids = IdGenerator()
        self._state = ConnectionState.IDLE
        self._ws: ClientConnection | None = None
        self._welcome: Welcome | None = None
        #: Set while requests may be sent (connected, re-joins sent), and
        #: once closed, to wake waiting callers.
        self._ready = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._subs: dict[tuple[str, str], Subscription] = {}
        self._own_ids: dict[str, None] = {}
        self._inbox = Inbox(inbox_size)
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> ArqonBus:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> Welcome:
        """Opens the first connection and starts the connection task.

        Raises:
            HandshakeRefused: the server refused the upgrade (HTTP status).
            ConnectFailed: the server could not be reached.
        """
        if self._state is not ConnectionState.IDLE:
            raise RuntimeError("connect() was already called")
        ws, welcome = await self._open()
        self._attach(ws, welcome)
        self._ready.set()
        self._task = asyncio.create_task(self._run(ws), name=f"arqonbus connection {self._url}")
        self._emit(Connected(welcome, 0))
        return welcome

    async def close(self) -> None:
        """Closes the connection. Subscriptions end after the events already
        queued; pending calls raise :class:`~arqonbus.errors.ClientClosed`."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        ws = self._ws
        self._finalize(None)
        if ws is not None:
            await ws.close()

    async def wait_closed(self) -> None:
        """Waits until the client is closed; raises the error that closed it,
        if it did not close by :meth:`close`."""
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._error is not None:
            raise self._error

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def url(self) -> str:
        return self._url

    @property
    def welcome(self) -> Welcome | None:
        """The welcome frame of the current (or last) connection."""
        return self._welcome

    @property
    def client_id(self) -> str | None:
        """This connection's ``client_id`` (changes on reconnect unless a
        JWT fixes it)."""
        return self._welcome.client_id if self._welcome else None

    @property
    def error(self) -> BaseException | None:
        """Why the client closed, when it did not close by :meth:`close`."""
        return self._error

    @property
    def inbox(self) -> Inbox:
        """Direct messages to this client."""
        return self._inbox

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs.values())

    # -- publishing ----------------------------------------------------------

    @overload
    async def publish(
        self,
        room: str,
        channel: str,
        payload: Mapping[str, Any],
        *,
        ack: Literal[True],
        metadata: Mapping[str, Any] | None = ...,
        echo: bool = ...,
        timeout: float | None = ...,
    ) -> Ack: ...

    @overload
    async def publish(
        self,
        room: str,
        channel: str,
        payload: Mapping[str, Any],
        *,
        ack: Literal[False] = ...,
        metadata: Mapping[str, Any] | None = ...,
        echo: bool = ...,
        timeout: float | None = ...,
    ) -> None: ...

    @overload
    async def publish(
        self,
        room: str,
        channel: str,
        payload: Mapping[str, Any],
        *,
        ack: bool,
        metadata: Mapping[str, Any] | None = ...,
        echo: bool = ...,
        timeout: float | None = ...,
    ) -> Ack | None: ...

    async def publish(
        self,
        room: str,
        channel: str,
        payload: Mapping[str, Any],
        *,
        ack: bool = False,
        metadata: Mapping[str, Any] | None = None,
        echo: bool = False,
        timeout: float | None = None,
    ) -> Ack | None:
        """Publishes ``payload`` to ``room:channel`` (SPEC §4.1).

        With ``ack=True`` waits for the server's acknowledgement (the
        message's ``seq``, how many received it, whether it is stored) and
        raises the server's error, if any. Without it, returns once the
        frame is sent; a server error then arrives as a
        :class:`~arqonbus.types.ServerErrorEvent`. ``echo=True`` delivers
        the message to this client too.
        """
        meta = dict(metadata or {})
        if echo:
            meta["echo"] = True
        envelope = message_envelope(
            self._ids(), payload, room=room, channel=channel, metadata=meta or None, ack=ack
        )
        return await self._send_message(envelope, ack=ack, timeout=timeout)

    @overload
    async def send(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        ack: Literal[True],
        metadata: Mapping[str, Any] | None = ...,
        timeout: float | None = ...,
    ) -> Ack: ...

    @overload
    async def send(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        ack: Literal[False] = ...,
        metadata: Mapping[str, Any] | None = ...,
        timeout: float | None = ...,
    ) -> None: ...

    @overload
    async def send(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        ack: bool,
        metadata: Mapping[str, Any] | None = ...,
        timeout: float | None = ...,
    ) -> Ack | None: ...

    async def send(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        ack: bool = False,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Ack | None:
        """Sends ``payload`` to one client (SPEC §4.2); it arrives in that
        client's :attr:`inbox`. ``ack`` as for :meth:`publish`."""
        envelope = message_envelope(
            self._ids(), payload, to_client=client_id, metadata=metadata, ack=ack
        )
        return await self._send_message(envelope, ack=ack, timeout=timeout)

    # -- commands ------------------------------------------------------------

    async def command(
        self, name: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> JsonObject:
        """Sends any command and returns its reply's ``payload`` as a dict.
        The typed methods below are built on it."""
        return await self._call(name, dict(args or {}), timeout)

    async def ping(self, *, timeout: float | None = None) -> Pong:
        """Round trip to the server."""
        return Pong.from_payload(await self._call("ping", {}, timeout))

    async def status(self, *, timeout: float | None = None) -> Status:
        """Server counters: clients, channels, messages, storage."""
        return Status.from_payload(await self._call("status", {}, timeout))

    async def identify(
        self,
        *,
        client_type: ClientType | None = None,
        screen_name: str | None = None,
        avatar: str | None = None,
        personality: str | None = None,
        timeout: float | None = None,
    ) -> ClientRecord:
        """Updates who this client is; later reconnects use the new values."""
        fields = {
            "client_type": client_type,
            "screen_name": screen_name,
            "avatar": avatar,
            "personality": personality,
        }
        args = {k: v for k, v in fields.items() if v is not None}
        record = ClientRecord.from_payload(await self._call("identify", args, timeout))
        self._set_identity(**fields)
        return record

    async def join(
        self,
        room: str,
        channel: str,
        *,
        presence: bool = False,
        recover: Position | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Joins ``room:channel`` and returns its :class:`Subscription`.

        Args:
            presence: also deliver :class:`~arqonbus.types.Presence` events
                when other clients join or leave (SPEC §15).
            recover: resume from this position (for example the last
                message a previous run processed): the messages published
                after it are delivered first, marked ``replayed``
                (SPEC §14, or ``history`` paging), then live ones.

        Joining a channel that already has a subscription returns that
        subscription (updating ``presence``; ``recover`` is ignored).
        """
        key = (room, channel)
        sub = self._subs.get(key)
        created = sub is None
        if sub is None:
            sub = Subscription(
                self,
                room,
                channel,
                presence=presence,
                queue_size=self._queue_size,
                own_ids=self._own_ids,
            )
            if recover is not None:
                sub._tracker.position = recover
                sub._tracker.begin("recover")
            self._subs[key] = sub
        sub.presence = presence
        try:
            await self._call(
                "join_channel",
                self._join_args(sub),
                timeout,
                on_reply=partial(self._on_join_reply, sub),
            )
        except BaseException:
            if created and not sub._confirmed and self._subs.get(key) is sub:
                del self._subs[key]
                sub._mailbox.end(SubscriptionClosed("the join failed"), discard=True)
            raise
        return sub

    async def leave(self, room: str, channel: str, *, timeout: float | None = None) -> Left:
        """Leaves ``room:channel``. Its subscription ends at once: events
        still queued are dropped and the iteration stops."""
        sub = self._subs.pop((room, channel), None)
        if sub is not None:
            sub._mailbox.end(SubscriptionClosed(f"left {room}:{channel}"), discard=True)
        payload = await self._call("leave_channel", {"room": room, "channel": channel}, timeout)
        return Left.from_payload(payload)

    async def list_channels(
        self,
        room: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
    ) -> ChannelList:
        """Every channel, or those of ``room``."""
        args = _drop_none(room=room, limit=limit, cursor=cursor)
        return ChannelList.from_payload(await self._call("list_channels", args, timeout))

    async def channel_info(
        self, room: str, channel: str, *, timeout: float | None = None
    ) -> ChannelInfo:
        """A channel's record, members and history position."""
        args = {"room": room, "channel": channel}
        return ChannelInfo.from_payload(await self._call("channel_info", args, timeout))

    async def history(
        self,
        room: str,
        channel: str,
        *,
        limit: int | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int | None = None,
        timeout: float | None = None,
    ) -> History:
        """Stored messages, oldest first: the newest ``limit`` (server
        default 50, at most 1000), or with ``after_seq`` the oldest
        ``limit`` after it. ``since``/``until`` are exclusive RFC 3339
        bounds."""
        args = {"room": room, "channel": channel}
        args.update(_drop_none(limit=limit, since=since, until=until, after_seq=after_seq))
        return History.from_payload(await self._call("history", args, timeout))

    async def create_channel(
        self,
        room: str,
        channel: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ChannelRecord:
        """Creates a channel (admin only)."""
        args: JsonObject = {"room": room, "channel": channel}
        args.update(_drop_none(description=description))
        if metadata is not None:
            args["metadata"] = dict(metadata)
        return ChannelRecord.from_payload(await self._call("create_channel", args, timeout))

    async def delete_channel(
        self, room: str, channel: str, *, force: bool = False, timeout: float | None = None
    ) -> Deleted:
        """Deletes a channel (admin only); ``force`` removes its members."""
        args: JsonObject = {"room": room, "channel": channel}
        if force:
            args["force"] = True
        return Deleted.from_payload(await self._call("delete_channel", args, timeout))

    async def presence(
        self,
        room: str,
        channel: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
    ) -> PresencePage:
        """One page of a channel's members (SPEC §15); pass the reply's
        ``next_cursor`` as ``cursor`` for the next page."""
        args: JsonObject = {"room": room, "channel": channel}
        args.update(_drop_none(limit=limit, cursor=cursor))
        return PresencePage.from_payload(await self._call("presence", args, timeout))

    # -- requests ------------------------------------------------------------

    async def _call(
        self,
        command: str,
        args: JsonObject,
        timeout: float | None,
        *,
        on_reply: _ReplyHandler | None = None,
    ) -> JsonObject:
        envelope = command_envelope(self._ids(), command, args)
        reply = await self._roundtrip(envelope, command, timeout, on_reply)
        payload = reply.get("payload")
        return dict(payload) if isinstance(payload, Mapping) else {}

    async def _send_message(
        self, envelope: JsonObject, *, ack: bool, timeout: float | None
    ) -> Ack | None:
        what = "publish" if "room" in envelope else "send"
        if ack:
            reply = await self._roundtrip(envelope, what, timeout, None)
            payload = reply.get("payload")
            return Ack.from_payload(payload if isinstance(payload, Mapping) else {})
        limit = self._request_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._send_when_ready(envelope), limit)
        except asyncio.TimeoutError:
            raise RequestTimeout(what, limit) from None
        return None

    async def _roundtrip(
        self,
        envelope: JsonObject,
        what: str,
        timeout: float | None,
        on_reply: _ReplyHandler | None,
    ) -> JsonObject:
        """Sends ``envelope`` and returns the reply; raises an error reply."""
        limit = self._request_timeout if timeout is None else timeout
        envelope_id: str = envelope["id"]
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        pending = _Pending(future, on_reply)

        async def exchange() -> JsonObject:
            ws = await self._wait_ready()
            self._pending[envelope_id] = pending
            await self._write(ws, envelope)
            return await future

        try:
            reply = await asyncio.wait_for(exchange(), limit)
        except asyncio.TimeoutError:
            raise RequestTimeout(what, limit) from None
        finally:
            if self._pending.get(envelope_id) is pending:
                del self._pending[envelope_id]
        if reply.get("type") == "error":
            raise error_from_envelope(reply)
        return reply

    async def _send_when_ready(self, envelope: JsonObject) -> None:
        await self._write(await self._wait_ready(), envelope)

    async def _wait_ready(self) -> ClientConnection:
        """The connection, once requests may be sent on it."""
        while True:
            if self._state is ConnectionState.CLOSED:
                raise self._closed_error()
            if self._state is ConnectionState.IDLE:
                raise ClientClosed("the client is not connected: use `async with` or connect()")
            ws = self._ws
            if self._ready.is_set():
                if ws is not None:
                    return ws
                self._ready.clear()  # not ready without a connection
            await self._ready.wait()

    @staticmethod
    async def _write(ws: ClientConnection, envelope: JsonObject) -> None:
        try:
            await ws.send(encode(envelope))
        except ConnectionClosed as exc:
            raise ConnectionLost(f"connection lost while sending: {exc}") from exc

    def _closed_error(self) -> BaseException:
        return self._error if self._error is not None else ClientClosed("the client is closed")

    # -- the connection task -------------------------------------------------

    async def _open(self) -> tuple[ClientConnection, Welcome]:
        """One connection attempt: upgrade, then the welcome frame."""
        token = await self._resolve_token()
        headers = [("Authorization", f"Bearer {token}")] if token else []
        url = self._connect_url()
        try:
            ws = await ws_connect(
                url,
                additional_headers=headers,
                open_timeout=self._connect_timeout,
                close_timeout=2,
                max_size=self._max_frame_size,
                compression=None,
                user_agent_header=f"arqonbus-python/{__version__}",
            )
        except InvalidStatus as exc:
            response = exc.response
            body = response.body.decode("utf-8", "replace") if response.body else ""
            raise HandshakeRefused(self._url, response.status_code, body) from exc
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            raise ConnectFailed(self._url, str(exc) or type(exc).__name__) from exc
        try:
            raw = await asyncio.wait_for(ws.recv(), self._connect_timeout)
            envelope = decode(raw)
            payload = envelope.get("payload") if envelope else None
            if not isinstance(payload, Mapping) or not isinstance(payload.get("client_id"), str):
                raise ProtocolError(f"the first frame is not a welcome: {raw!r:.200}")
            return ws, Welcome.from_payload(payload)
        except BaseException as exc:
            ws.transport.abort()
            if isinstance(exc, ConnectionClosed):
                raise ConnectFailed(self._url, f"closed before the welcome frame: {exc}") from exc
            if isinstance(exc, asyncio.TimeoutError):
                raise ConnectFailed(self._url, "no welcome frame") from exc
            raise

    async def _resolve_token(self) -> str | None:
        source = self._token
        if source is None or isinstance(source, str):
            return source or None
        value = source()
        if inspect.isawaitable(value):
            value = await value
        if value is not None and not isinstance(value, str):
            raise TypeError(f"the token callable returned {type(value).__name__}, not str")
        return value or None

    def _connect_url(self) -> str:
        parts = urlsplit(self._url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in self._identity]
        query.extend(self._identity.items())
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _set_identity(self, **fields: str | None) -> None:
        for name, value in fields.items():
            if value is not None:
                self._identity[name] = value

    def _attach(self, ws: ClientConnection, welcome: Welcome) -> None:
        self._ws = ws
        self._welcome = welcome
        self._own_ids[welcome.client_id] = None
        while len(self._own_ids) > OWN_IDS_KEPT:
            del self._own_ids[next(iter(self._own_ids))]
        self._state = ConnectionState.CONNECTED

    async def _run(self, ws: ClientConnection) -> None:
        """Reads the connection; on loss, reconnects and re-joins."""
        try:
            while True:
                code, reason = await self._serve(ws)
                fatal: ArqonBusError | None = None
                if code == CLOSE_REPLACED:
                    fatal = Replaced(f"replaced by a newer connection: {reason}")
                elif code == CLOSE_OPERATOR:
                    fatal = DisconnectedByOperator(f"disconnected by an operator: {reason}")
                elif not self._reconnect.enabled:
                    fatal = ConnectionLost(f"connection lost ({reason}); reconnect is disabled")
                self._on_disconnect(reason)
                self._emit(Disconnected(reason, code, will_reconnect=fatal is None))
                if fatal is not None:
                    raise fatal
                ws, welcome, attempts = await self._reconnect_loop()
                self._attach(ws, welcome)
                await self._resubscribe(ws)
                self._ready.set()
                self._emit(Connected(welcome, attempts))
        except ArqonBusError as exc:
            self._finalize(exc)
        except Exception as exc:
            log.exception("the ArqonBus connection task failed")
            if self._ws is not None:
                self._ws.transport.abort()
            self._finalize(exc)

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Dispatches frames until the connection closes; returns the close
        code and a description."""
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    log.warning("ignoring a binary frame")
                    continue
                envelope = decode(raw)
                if envelope is None:
                    log.warning("ignoring a frame that is not a JSON object: %.200r", raw)
                    continue
                await self._dispatch(envelope)
        except ConnectionClosed:
            pass
        code = ws.close_code
        reason = ws.close_reason or ""
        description = f"connection closed ({code}{' ' + reason if reason else ''})"
        return code, description

    async def _reconnect_loop(self) -> tuple[ClientConnection, Welcome, int]:
        """Opens a new connection, waiting between attempts per the policy."""
        policy = self._reconnect
        attempt = 0
        last_error: BaseException | None = None
        while policy.max_attempts is None or attempt < policy.max_attempts:
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1
            try:
                ws, welcome = await self._open()
            except HandshakeRefused as exc:
                if exc.permanent:
                    raise
                last_error = exc
            except ArqonBusError as exc:  # unreachable, or no welcome frame
                last_error = exc
            except Exception as exc:  # the token callable failed
                log.warning("the token callable failed: %r", exc)
                last_error = exc
            else:
                return ws, welcome, attempt
            log.debug("reconnect attempt %d failed: %s", attempt, last_error)
        raise ReconnectFailed(attempt, last_error)

    def _on_disconnect(self, reason: str) -> None:
        """Fails what was in flight; keeps subscriptions for the re-join."""
        self._ready.clear()
        self._ws = None
        self._state = ConnectionState.RECONNECTING
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(ConnectionLost(reason))
        for sub in self._subs.values():
            sub._tracker.reset()

    async def _resubscribe(self, ws: ClientConnection) -> None:
        """Re-joins every confirmed subscription, asking for recovery. The
        live messages that arrive meanwhile are buffered by each tracker."""
        for sub in list(self._subs.values()):
            if not sub._confirmed:
                continue
            sub._tracker.begin("reconnect")
            envelope_id = self._ids()
            self._pending[envelope_id] = _Pending(
                None, on_reply=partial(self._on_rejoin_reply, sub)
            )
            try:
                await self._write(ws, command_envelope(envelope_id, "join_channel", self._join_args(sub)))
            except ConnectionLost:
                return  # _serve sees the closed connection next

    def _finalize(self, error: BaseException | None) -> None:
        """Ends everything once; ``error`` is why, unless closed on request."""
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        self._error = error
        self._ws = None
        self._ready.set()  # wake callers waiting for a connection
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(self._closed_error())
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            sub._mailbox.end(error or SubscriptionClosed("the client is closed"))
        self._inbox._mailbox.end(error or SubscriptionClosed("the client is closed"))
        self._emit(Closed(error))

    # -- dispatch ------------------------------------------------------------

    async def _dispatch(self, envelope: JsonObject) -> None:
        kind = envelope.get("type")
        if kind in ("response", "error") and envelope.get("sender") == SERVER_SENDER:
            request_id = envelope.get("request_id")
            entry = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
            if entry is None:
                if kind == "error":
                    error = error_from_envelope(envelope)
                    log.debug("server error answering no call: %s", error)
                    self._emit(ServerErrorEvent(error))
                return
            # The caller resumes only when this task next waits, after the
            # handler has updated its state; resolving first means a
            # handler blocked on a full queue never holds the caller back.
            if entry.future is not None and not entry.future.done():
                entry.future.set_result(envelope)
            if entry.on_reply is not None:
                await entry.on_reply(envelope)
        elif kind == "system":
            await self._on_system(envelope)
        elif kind == "command":
            return
        else:
            room, channel = envelope.get("room"), envelope.get("channel")
            if isinstance(room, str) and isinstance(channel, str):
                sub = self._subs.get((room, channel))
                if sub is not None:
                    message = Message.from_envelope(envelope)
                    await self._apply(sub, Step(sub._tracker.on_live(message)))
            elif not self._inbox._mailbox.offer(DirectMessage.from_envelope(envelope)):
                log.warning("inbox full: dropped the oldest direct message")

    async def _on_system(self, envelope: JsonObject) -> None:
        raw_payload = envelope.get("payload")
        payload: Mapping[str, Any] = raw_payload if isinstance(raw_payload, Mapping) else {}
        event = payload.get("event")
        room, channel = envelope.get("room"), envelope.get("channel")
        sub = None
        if isinstance(room, str) and isinstance(channel, str):
            sub = self._subs.get((room, channel))
        if event in ("join", "leave") and sub is not None:
            presence = Presence.from_envelope(envelope)
            await self._apply(sub, Step(sub._tracker.on_live(presence)))
        elif event == "channel_deleted" and sub is not None:
            del self._subs[(sub.room, sub.channel)]
            text = payload.get("message")
            message = text if isinstance(text, str) else f"channel {room}:{channel} was deleted"
            sub._mailbox.end(ChannelDeleted(sub.room, sub.channel, message))
        elif event == "lagged":
            lagged = Lagged.from_payload(payload)
            log.info("the server dropped %d messages for this client", lagged.dropped)
            self._emit(lagged)
            for dropped in lagged.channels:
                target = self._subs.get((dropped.room, dropped.channel))
                if target is not None:
                    await self._apply(target, target._tracker.on_lagged(dropped.first_dropped_seq))
        else:
            self._emit(SystemNotice(envelope))

    async def _apply(self, sub: Subscription, step: Step) -> None:
        """Delivers a tracker step: events in order, then its history fetch."""
        for event in step.events:
            await sub._mailbox.put(event)
        if step.resynced is not None:
            self._emit(step.resynced)
        if step.fetch is not None:
            await self._fetch_history(sub, step.fetch)

    async def _fetch_history(self, sub: Subscription, fetch: Fetch) -> None:
        ws = self._ws
        if ws is None:
            return
        envelope_id = self._ids()
        args = {
            "room": sub.room,
            "channel": sub.channel,
            "after_seq": fetch.after_seq,
            "limit": fetch.limit,
        }
        self._pending[envelope_id] = _Pending(
            None, on_reply=partial(self._on_history_reply, sub, fetch)
        )
        try:
            await self._write(ws, command_envelope(envelope_id, "history", args))
        except ConnectionLost:
            pass  # _serve sees the closed connection; the re-join starts over

    def _join_args(self, sub: Subscription) -> JsonObject:
        args: JsonObject = {"room": sub.room, "channel": sub.channel}
        if sub.presence:
            args["presence"] = True
        position = sub._tracker.position
        if sub._tracker.resyncing and position is not None:
            args["recover"] = position.to_args()
        return args

    def _is_current(self, sub: Subscription) -> bool:
        return self._subs.get((sub.room, sub.channel)) is sub

    async def _on_join_reply(self, sub: Subscription, envelope: JsonObject) -> None:
        if envelope.get("type") == "error" or not self._is_current(sub):
            return  # the caller gets the error; join() forgets the subscription
        joined = Joined.from_payload(_payload(envelope))
        sub.joined = joined
        sub._confirmed = True
        await self._apply(sub, sub._tracker.on_joined(joined))

    async def _on_rejoin_reply(self, sub: Subscription, envelope: JsonObject) -> None:
        if not self._is_current(sub):
            return
        if envelope.get("type") == "error":
            error = error_from_envelope(envelope)
            log.warning("re-joining %s:%s after a reconnect failed: %s", sub.room, sub.channel, error)
            del self._subs[(sub.room, sub.channel)]
            sub._mailbox.end(error)
            return
        joined = Joined.from_payload(_payload(envelope))
        sub.joined = joined
        await self._apply(sub, sub._tracker.on_joined(joined))

    async def _on_history_reply(
        self, sub: Subscription, fetch: Fetch, envelope: JsonObject
    ) -> None:
        if not self._is_current(sub):
            return
        if envelope.get("type") == "error":
            log.warning(
                "history of %s:%s unavailable, gap not filled: %s",
                sub.room,
                sub.channel,
                error_from_envelope(envelope),
            )
            step = sub._tracker.abort(fetch)
        else:
            step = sub._tracker.on_history(History.from_payload(_payload(envelope)), fetch)
        await self._apply(sub, step)

    def _emit(self, event: BusEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("the on_event callback failed on %r", event)


def _payload(envelope: Mapping[str, Any]) -> JsonObject:
    payload = envelope.get("payload")
    return dict(payload) if isinstance(payload, Mapping) else {}


def _drop_none(**values: Any) -> JsonObject:
    return {k: v for k, v in values.items() if v is not None}
