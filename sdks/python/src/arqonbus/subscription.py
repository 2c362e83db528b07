"""A joined channel, as an async iterator of its events."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import TYPE_CHECKING

from ._mailbox import Ended, Mailbox
from ._tracker import ChannelTracker
from .errors import ArqonBusError
from .types import Joined, Left, Position, SubscriptionEvent

if TYPE_CHECKING:
    from .client import ArqonBus

__all__ = ["Subscription", "SubscriptionClosed"]


class SubscriptionClosed(ArqonBusError):
    """:meth:`Subscription.get` on a subscription that ended normally (left,
    or the client was closed). ``async for`` simply stops instead."""


class Subscription:
    """Events of one joined channel: ``async for event in subscription``.

    Yields :class:`~arqonbus.types.Message` (channel messages, in ``seq``
    order, each once, across reconnects), :class:`~arqonbus.types.Presence`
    (when joined with ``presence=True``) and :class:`~arqonbus.types.Gap`
    (messages that could not be recovered). The iteration stops after
    :meth:`leave` or :meth:`ArqonBus.close <arqonbus.ArqonBus.close>`; it
    raises :class:`~arqonbus.errors.ChannelDeleted` when an admin deletes
    the channel, the server's error when re-joining after a reconnect is
    refused, and the client's fatal error when it gives up reconnecting.

    The queue between the connection and the consumer is bounded
    (``queue_size``): while it is full the connection stops reading, and
    the server eventually treats the client as a slow consumer (SPEC §11),
    after which the client recovers what it missed. Keep consuming every
    subscription you hold, or leave it.
    """

    def __init__(
        self,
        bus: ArqonBus,
        room: str,
        channel: str,
        *,
        presence: bool,
        queue_size: int,
        own_ids: Container[str],
    ) -> None:
        self.room = room
        self.channel = channel
        #: Whether presence events were asked for on the last join.
        self.presence = presence
        #: The reply to the last ``join_channel`` (updated on re-joins).
        self.joined: Joined | None = None
        self._bus = bus
        self._tracker = ChannelTracker(room, channel, own_ids)
        self._mailbox: Mailbox[SubscriptionEvent] = Mailbox(queue_size)
        #: Whether the server confirmed the join (only those are re-joined).
        self._confirmed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Subscription {self.room}:{self.channel} {state} position={self.position}>"

    @property
    def position(self) -> Position | None:
        """The position of the last message handed to this subscription's
        queue. To resume exactly where your own processing stopped, keep
        the :attr:`~arqonbus.types.Message.position` of the last message
        you finished with and pass it as ``recover=``."""
        return self._tracker.position

    @property
    def closed(self) -> bool:
        """Whether no more events will be queued."""
        return self._mailbox.ended

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionEvent:
        try:
            return await self._mailbox.get()
        except (Ended, SubscriptionClosed):
            raise StopAsyncIteration from None

    async def get(self, timeout: float | None = None) -> SubscriptionEvent:
        """The next event, waiting at most ``timeout`` seconds.

        Raises:
            TimeoutError: nothing arrived in time.
            SubscriptionClosed: the subscription ended normally.
        """
        try:
            return await asyncio.wait_for(self._mailbox.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"no event on {self.room}:{self.channel} within {timeout:g} s"
            ) from None
        except Ended:
            raise SubscriptionClosed(f"subscription {self.room}:{self.channel} ended") from None

    async def leave(self, *, timeout: float | None = None) -> Left:
        """Leaves the channel; the iteration stops at once (events still
        queued are dropped)."""
        return await self._bus.leave(self.room, self.channel, timeout=timeout)
