"""Per-channel stream bookkeeping, without I/O.

A :class:`ChannelTracker` remembers the last ``seq`` and ``epoch``
delivered on a subscription, drops duplicates, and runs the recovery
procedure after a reconnect (or an explicit ``recover=``, or a SPEC §16
lagged notice). The client feeds it what the server sends and performs the
I/O it asks for (:class:`Fetch`); the tracker says what to deliver.

Recovery, per channel (the same procedure as the Rust client's driver):

1. :meth:`~ChannelTracker.begin`: from now on live messages are buffered
   (bounded) instead of delivered;
2. the client sends ``join_channel`` with ``recover: {seq, epoch}``;
3. :meth:`~ChannelTracker.on_joined`: if the server recovered (SPEC §14),
   its ``publications`` are delivered. Otherwise, same epoch and a higher
   ``seq``: page through ``history after_seq=<last>``
   (:meth:`~ChannelTracker.on_history`). A different epoch: the history
   restarted, nothing can be recovered;
4. a :class:`~arqonbus.types.Gap` is delivered if anything could not be
   recovered, then the buffered live messages, skipping any ``seq``
   already delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, Union

from .types import Gap, History, Joined, Message, Position, Presence, Resynced, SubscriptionEvent

#: Largest ``history`` page the server allows (SPEC §5).
HISTORY_PAGE = 1000
#: Live events buffered per channel while its gap is being filled. When it
#: overflows, further live messages are dropped and fetched from history
#: once the buffer has been delivered.
RESYNC_BUFFER = 10_000

LiveEvent = Union[Message, Presence]
Reason = Literal["reconnect", "recover", "lagged"]


@dataclass(frozen=True)
class Fetch:
    """Ask the server for ``history after_seq=after_seq limit=limit``."""

    after_seq: int
    limit: int


@dataclass
class Step:
    """What the client must do after feeding the tracker: deliver
    ``events`` in order, then send ``fetch`` if set. ``resynced`` is set
    when a recovery finished."""

    events: list[SubscriptionEvent] = field(default_factory=list)
    fetch: Fetch | None = None
    resynced: Resynced | None = None


@dataclass
class _Resync:
    reason: Reason
    from_seq: int
    old_epoch: str | None
    target: int | None = None
    new_epoch: str | None = None
    recovered: int = 0
    via: Literal["server", "history", "none"] = "none"
    epoch_changed: bool = False
    complete: bool = True
    again: bool = False
    buffer: deque[LiveEvent] = field(default_factory=deque)
    #: ``seq`` of the first buffered live message: history is read only up
    #: to just before it, so buffered presence events keep their place.
    first_live_seq: int | None = None

    def upper(self) -> int | None:
        """The last ``seq`` this recovery must deliver from history."""
        bounds = []
        if self.target is not None:
            bounds.append(self.target)
        if self.first_live_seq is not None:
            bounds.append(self.first_live_seq - 1)
        return min(bounds, default=None)


class ChannelTracker:
    """The position of one subscription and its recovery state."""

    def __init__(
        self,
        room: str,
        channel: str,
        own_ids: Container[str],
        *,
        buffer_limit: int = RESYNC_BUFFER,
    ) -> None:
        self.room = room
        self.channel = channel
        #: Last ``seq`` delivered (or known to be before the subscription).
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self._own_ids = own_ids
        self._buffer_limit = buffer_limit
        self._resync: _Resync | None = None

    @property
    def position(self) -> Position | None:
        if self.last_seq is None or self.epoch is None:
            return None
        return Position(self.last_seq, self.epoch)

    @position.setter
    def position(self, position: Position) -> None:
        self.last_seq = position.seq
        self.epoch = position.epoch

    @property
    def resyncing(self) -> bool:
        return self._resync is not None

    # -- live stream ---------------------------------------------------------

    def on_live(self, event: LiveEvent) -> list[SubscriptionEvent]:
        """A live message or presence event: what to deliver now."""
        resync = self._resync
        if resync is None:
            return self._accept_live(event)
        if len(resync.buffer) < self._buffer_limit:
            resync.buffer.append(event)
            if (
                resync.first_live_seq is None
                and isinstance(event, Message)
                and event.seq is not None
                and event.epoch in (None, self.epoch)
            ):
                resync.first_live_seq = event.seq
        else:
            # Fetched from history after the buffer has been delivered.
            resync.again = True
        return []

    def _accept_live(self, event: LiveEvent) -> list[SubscriptionEvent]:
        if isinstance(event, Message) and event.seq is not None:
            if event.epoch is None or event.epoch == self.epoch:
                if self.last_seq is not None and event.seq <= self.last_seq:
                    return []  # already delivered (recovered, or a duplicate)
            else:
                self.epoch = event.epoch
            self.last_seq = event.seq
        return [event]

    # -- recovery ------------------------------------------------------------

    def begin(self, reason: Reason) -> None:
        """Starts buffering live events until the stream is caught up."""
        self._resync = _Resync(
            reason=reason, from_seq=(self.last_seq or 0) + 1, old_epoch=self.epoch
        )

    def reset(self) -> None:
        """The connection dropped: an unfinished recovery starts over from
        what was delivered (its buffer is dropped; history has it)."""
        self._resync = None

    def on_joined(self, joined: Joined) -> Step:
        """The ``join_channel`` reply."""
        resync = self._resync
        if resync is None:
            # A plain join, or a re-join of a live subscription (e.g. to
            # change presence): take the reply as the starting point only
            # if there is none yet; live messages may have been delivered
            # before the reply.
            if self.last_seq is None or (
                joined.epoch is not None and self.epoch is not None and joined.epoch != self.epoch
            ):
                self.last_seq = joined.seq
                self.epoch = joined.epoch
            elif self.epoch is None:
                self.epoch = joined.epoch
            return Step()

        resync.target = joined.seq
        resync.new_epoch = joined.epoch
        if joined.recovered is True:
            resync.via = "server"
            events = self._replay(resync, joined.publications)
            return self._finish(resync, events, filled=True)
        if joined.epoch != self.epoch:
            resync.epoch_changed = True
            self.epoch = joined.epoch
            self.last_seq = joined.seq
            return self._finish(resync, [], filled=False)
        upper = resync.upper()
        if upper is not None and upper > (self.last_seq or 0):
            # recovered is None (a server without SPEC §14) or False (more
            # than the server recovers at once): history has what it has.
            resync.via = "history"
            return Step(fetch=self._next_fetch(resync))
        return self._finish(resync, [], filled=True)

    def on_history(self, history: History) -> Step:
        """A ``history`` page this tracker asked for."""
        resync = self._resync
        if resync is None:
            return Step()
        resync.via = "history"
        if resync.target is None:
            resync.target = history.last_seq
        if history.epoch is not None and history.epoch != self.epoch:
            # The history restarted between the join and this read.
            resync.epoch_changed = True
            resync.new_epoch = history.epoch
            resync.target = history.last_seq
            self.epoch = history.epoch
            self.last_seq = history.last_seq
            return self._finish(resync, [], filled=False)
        before = self.last_seq
        events = self._replay(resync, history.messages)
        upper = resync.upper()
        caught_up = upper is None or (self.last_seq or 0) >= upper
        if not caught_up and self.last_seq != before:
            return Step(events, self._next_fetch(resync))
        return self._finish(resync, events, filled=caught_up)

    def abort(self) -> Step:
        """The recovery cannot go on (a ``history`` call failed)."""
        resync = self._resync
        if resync is None:
            return Step()
        return self._finish(resync, [], filled=False)

    def on_lagged(self, first_dropped_seq: int | None) -> Step:
        """The server dropped messages of this channel for this client."""
        events: list[SubscriptionEvent] = []
        if (
            first_dropped_seq is not None
            and self.last_seq is not None
            and first_dropped_seq <= self.last_seq
        ):
            # Later messages were delivered already: what was dropped
            # before them cannot be put back in order.
            events.append(
                Gap(
                    room=self.room,
                    channel=self.channel,
                    reason="lagged",
                    from_seq=first_dropped_seq,
                    to_seq=self.last_seq,
                    recovered=0,
                    epoch_changed=False,
                    old_epoch=self.epoch,
                    new_epoch=self.epoch,
                )
            )
        if self._resync is not None:
            self._resync.again = True
            return Step(events)
        self.begin("lagged")
        assert self._resync is not None
        self._resync.via = "history"
        return Step(events, self._next_fetch(self._resync))

    # -- helpers -------------------------------------------------------------

    def _is_own(self, message: Message) -> bool:
        """A message this client published: not delivered live (unless it
        asked for an echo), so not replayed either."""
        echo = bool(message.metadata and message.metadata.get("echo") is True)
        return message.sender is not None and message.sender in self._own_ids and not echo

    def _replay(self, resync: _Resync, messages: Iterable[Message]) -> list[SubscriptionEvent]:
        events: list[SubscriptionEvent] = []
        for message in messages:
            seq = message.seq
            if seq is None:
                continue
            if self.last_seq is not None and seq <= self.last_seq:
                continue
            upper = resync.upper()
            if upper is not None and seq > upper:
                continue
            if seq != (self.last_seq or 0) + 1:
                resync.complete = False  # the oldest missed messages are gone
            self.last_seq = seq
            if self._is_own(message):
                continue
            resync.recovered += 1
            events.append(message if message.replayed else replace(message, replayed=True))
        return events

    def _next_fetch(self, resync: _Resync) -> Fetch:
        after = self.last_seq or 0
        upper = resync.upper()
        wanted = HISTORY_PAGE if upper is None else upper - after
        return Fetch(after_seq=after, limit=max(1, min(HISTORY_PAGE, wanted)))

    def _finish(self, resync: _Resync, events: list[SubscriptionEvent], *, filled: bool) -> Step:
        self._resync = None
        upper = None if resync.epoch_changed else resync.upper()
        target = upper if upper is not None else self.last_seq or 0
        if self.last_seq is None or self.last_seq < target:
            self.last_seq = target
        filled = filled and resync.complete and not resync.epoch_changed
        if not filled:
            events.append(
                Gap(
                    room=self.room,
                    channel=self.channel,
                    reason=resync.reason,
                    from_seq=resync.from_seq,
                    to_seq=target,
                    recovered=resync.recovered,
                    epoch_changed=resync.epoch_changed,
                    old_epoch=resync.old_epoch,
                    new_epoch=resync.new_epoch if resync.new_epoch is not None else self.epoch,
                )
            )
        for event in resync.buffer:
            events.extend(self._accept_live(event))
        resynced = Resynced(
            room=self.room,
            channel=self.channel,
            reason=resync.reason,
            via=resync.via,
            recovered=resync.recovered,
            filled=filled,
        )
        if resync.again:
            self.begin("lagged")
            assert self._resync is not None
            self._resync.via = "history"
            return Step(events, self._next_fetch(self._resync), resynced)
        return Step(events, None, resynced)
