"""A blocking facade over :class:`~arqonbus.ArqonBus`, for scripts and
notebooks.

The asyncio client runs on an event loop in a background thread; every
method here submits a coroutine to it and waits for the result::

    from arqonbus.sync import connect

    with connect("ws://127.0.0.1:9100/", screen_name="notebook") as bus:
        sub = bus.join("science", "explore")
        bus.publish("science", "explore", {"text": "hi"}, ack=True)
        for event in sub:          # blocks; or sub.get(timeout=1.0)
            print(event)

Errors are the same as the asyncio client's. The ``on_event`` callback,
if any, runs in the background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Literal, TypeVar, overload

from .client import DEFAULT_URL, ArqonBus, ConnectionState
from .errors import ClientClosed
from .subscription import Subscription, SubscriptionClosed
from .types import (
    Ack,
    ChannelInfo,
    ChannelList,
    ChannelRecord,
    ClientRecord,
    ClientType,
    Deleted,
    DirectMessage,
    History,
    Left,
    Pong,
    Position,
    PresencePage,
    Status,
    SubscriptionEvent,
    Welcome,
)

__all__ = ["SyncArqonBus", "SyncSubscription", "connect"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="arqonbus-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the loop and waits for its result; an interrupt
        (Ctrl-C) cancels it."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking arqonbus call from the client's own loop would deadlock")
        if self.loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise ClientClosed("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class SyncSubscription:
    """Blocking view of a :class:`~arqonbus.Subscription`: ``for event in
    sub`` (stops when the subscription ends) or ``sub.get(timeout)``."""

    def __init__(self, sub: Subscription, runner: _LoopThread) -> None:
        self._sub = sub
        self._runner = runner

    @property
    def room(self) -> str:
        return self._sub.room

    @property
    def channel(self) -> str:
        return self._sub.channel

    @property
    def position(self) -> Position | None:
        return self._sub.position

    @property
    def closed(self) -> bool:
        return self._sub.closed

    def get(self, timeout: float | None = None) -> SubscriptionEvent:
        """The next event; raises :class:`TimeoutError` after ``timeout``
        seconds, :class:`~arqonbus.SubscriptionClosed` once it ended."""
        return self._runner.run(self._sub.get(timeout))

    def __iter__(self) -> Iterator[SubscriptionEvent]:
        while True:
            try:
                yield self.get()
            except SubscriptionClosed:
                return

    def leave(self, *, timeout: float | None = None) -> Left:
        return self._runner.run(self._sub.leave(timeout=timeout))


class SyncArqonBus:
    """Blocking counterpart of :class:`~arqonbus.ArqonBus`; create it with
    :func:`connect`. Methods mirror the asyncio client's."""

    def __init__(self, bus: ArqonBus, runner: _LoopThread) -> None:
        self._bus = bus
        self._runner = runner

    def __enter__(self) -> SyncArqonBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection and stops the background loop."""
        if self._runner.loop.is_closed():
            return
        try:
            self._runner.run(self._bus.close())
        finally:
            self._runner.stop()

    @property
    def state(self) -> ConnectionState:
        return self._bus.state

    @property
    def client_id(self) -> str | None:
        return self._bus.client_id

    @property
    def welcome(self) -> Welcome | None:
        return self._bus.welcome

    @property
    def asyncio_client(self) -> ArqonBus:
        """The underlying asyncio client (use it only from its loop)."""
        return self._bus

    @overload
    def publish(
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
    def publish(
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

    def publish(
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
        return self._runner.run(
            self._bus.publish(
                room, channel, payload, ack=ack, metadata=metadata, echo=echo, timeout=timeout
            )
        )

    def send(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        ack: bool = False,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Ack | None:
        return self._runner.run(
            self._bus.send(client_id, payload, ack=ack, metadata=metadata, timeout=timeout)
        )

    def receive(self, timeout: float | None = None) -> DirectMessage:
        """The next direct message; :class:`TimeoutError` after ``timeout``."""
        return self._runner.run(self._bus.inbox.get(timeout))

    def join(
        self,
        room: str,
        channel: str,
        *,
        presence: bool = False,
        recover: Position | None = None,
        timeout: float | None = None,
    ) -> SyncSubscription:
        sub = self._runner.run(
            self._bus.join(room, channel, presence=presence, recover=recover, timeout=timeout)
        )
        return SyncSubscription(sub, self._runner)

    def leave(self, room: str, channel: str, *, timeout: float | None = None) -> Left:
        return self._runner.run(self._bus.leave(room, channel, timeout=timeout))

    def command(
        self, name: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._runner.run(self._bus.command(name, args, timeout=timeout))

    def ping(self, *, timeout: float | None = None) -> Pong:
        return self._runner.run(self._bus.ping(timeout=timeout))

    def status(self, *, timeout: float | None = None) -> Status:
        return self._runner.run(self._bus.status(timeout=timeout))

    def identify(
        self,
        *,
        client_type: ClientType | None = None,
        screen_name: str | None = None,
        avatar: str | None = None,
        personality: str | None = None,
        timeout: float | None = None,
    ) -> ClientRecord:
        return self._runner.run(
            self._bus.identify(
                client_type=client_type,
                screen_name=screen_name,
                avatar=avatar,
                personality=personality,
                timeout=timeout,
            )
        )

    def list_channels(
        self,
        room: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
    ) -> ChannelList:
        return self._runner.run(
            self._bus.list_channels(room, limit=limit, cursor=cursor, timeout=timeout)
        )

    def channel_info(self, room: str, channel: str, *, timeout: float | None = None) -> ChannelInfo:
        return self._runner.run(self._bus.channel_info(room, channel, timeout=timeout))

    def history(
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
        return self._runner.run(
            self._bus.history(
                room,
                channel,
                limit=limit,
                since=since,
                until=until,
                after_seq=after_seq,
                timeout=timeout,
            )
        )

    def create_channel(
        self,
        room: str,
        channel: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ChannelRecord:
        return self._runner.run(
            self._bus.create_channel(
                room, channel, description=description, metadata=metadata, timeout=timeout
            )
        )

    def delete_channel(
        self, room: str, channel: str, *, force: bool = False, timeout: float | None = None
    ) -> Deleted:
        return self._runner.run(
            self._bus.delete_channel(room, channel, force=force, timeout=timeout)
        )

    def presence(
        self,
        room: str,
        channel: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
    ) -> PresencePage:
        return self._runner.run(
            self._bus.presence(room, channel, limit=limit, cursor=cursor, timeout=timeout)
        )


def connect(url: str = DEFAULT_URL, **options: Any) -> SyncArqonBus:
    """Connects and returns a :class:`SyncArqonBus`; ``options`` are
    :class:`~arqonbus.ArqonBus`'s keyword arguments. Close it (or use it as
    a context manager) to stop its background thread."""
    runner = _LoopThread()

    async def open_bus() -> ArqonBus:
        bus = ArqonBus(url, **options)
        await bus.connect()
        return bus

    try:
        bus = runner.run(open_bus())
    except BaseException:
        runner.stop()
        raise
    return SyncArqonBus(bus, runner)

