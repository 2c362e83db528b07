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

Refill, per channel (a SPEC §16 lagged notice, or live messages lost to a
full recovery buffer): live delivery goes on; meanwhile ``history
after_seq=<first dropped - 1>`` is paged (pages may be cut short with
``truncated``) up to the ``last_seq`` of the first reply, and every
``seq`` not delivered yet is delivered once, marked ``replayed``. Replayed
messages may therefore arrive after live messages with a higher ``seq``.
Duplicates are recognised with a bounded record of the last
:data:`DELIVERED_KEPT` delivered ``seq``s; a :class:`~arqonbus.types.Gap`
reports only the messages that are no longer in history.
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

#: Delivered ``seq``s remembered (per channel) to deliver a refilled
#: message only if it was not delivered live. Older ones count as delivered.
DELIVERED_KEPT = 50_000

LiveEvent = Union[Message, Presence]
Reason = Literal["reconnect", "recover", "lagged"]


@dataclass(frozen=True)
class Fetch:
    """Ask the server for ``history after_seq=after_seq limit=limit``, and
    hand the reply back with the same :class:`Fetch`. ``purpose`` says
    whether it serves a recovery (``"resync"``: live events are buffered
    meanwhile) or a refill (``"refill"``: live events flow meanwhile)."""

    after_seq: int
    limit: int
    purpose: Literal["resync", "refill"] = "resync"


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
    #: Live events were dropped because the buffer was full: refill them
    #: once the buffer has been delivered.
    overflowed: bool = False
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


@dataclass
class _Refill:
    """History paging for messages lost while live delivery went on."""

    #: First ``seq`` at stake (reported in a Gap when the epoch changes).
    from_seq: int
    #: The next page is read ``after_seq=cursor``.
    cursor: int
    #: Read up to here: the ``last_seq`` of the first reply (anything
    #: published later was sent live after the drops being refilled).
    end: int | None = None
    recovered: int = 0
    complete: bool = True
    in_flight: bool = False
    #: A notice arrived while a page was in flight: read again from here
    #: and take a new ``end`` from the next reply.
    restart: int | None = None


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
        self._refill: _Refill | None = None
        #: Delivered ``seq``s above ``_floor`` (the current epoch); every
        #: ``seq`` up to ``_floor`` counts as delivered.
        self._floor = 0
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    @property
    def position(self) -> Position | None:
        if self.last_seq is None or self.epoch is None:
            return None
        return Position(self.last_seq, self.epoch)

    @position.setter
    def position(self, position: Position) -> None:
        self.last_seq = position.seq
        self.epoch = position.epoch
        self._forget(position.seq)

    @property
    def resyncing(self) -> bool:
        """A recovery is running (live events are buffered)."""
        return self._resync is not None

    @property
    def refilling(self) -> bool:
        """Dropped messages are being refilled from history."""
        return self._refill is not None

    # -- delivered seqs ------------------------------------------------------

    def _delivered(self, seq: int) -> bool:
        return seq <= self._floor or seq in self._seen

    def _mark(self, seq: int) -> None:
        if self._delivered(seq):
            return
        self._seen.add(seq)
        self._seen_order.append(seq)
        while len(self._seen_order) > DELIVERED_KEPT:
            old = self._seen_order.popleft()
            self._seen.discard(old)
            self._floor = max(self._floor, old)

    def _forget(self, floor: int) -> None:
        """A new starting point (or epoch): every ``seq`` up to ``floor``
        counts as delivered, nothing above it."""
        self._floor = floor
        self._seen.clear()
        self._seen_order.clear()

    # -- live stream ---------------------------------------------------------

    def on_live(self, event: LiveEvent) -> list[SubscriptionEvent]:
        """A live message or presence event: what to deliver now."""
        resync = self._resync
        if resync is None:
            return self._accept_live(event)
        if len(resync.buffer) < self._buffer_limit and not resync.overflowed:
            resync.buffer.append(event)
            if (
                resync.first_live_seq is None
                and isinstance(event, Message)
                and event.seq is not None
                and event.epoch in (None, self.epoch)
            ):
                resync.first_live_seq = event.seq
        else:
            # Refilled from history after the buffer has been delivered.
            resync.overflowed = True
        return []

    def _accept_live(self, event: LiveEvent) -> list[SubscriptionEvent]:
        if isinstance(event, Message) and event.seq is not None:
            seq = event.seq
            if event.epoch is None or event.epoch == self.epoch:
                if self._delivered(seq):
                    return []  # already delivered (recovered, or a duplicate)
                if self.last_seq is None or seq > self.last_seq:
                    self.last_seq = seq
            else:
                self.epoch = event.epoch
                self.last_seq = seq
                self._forget(0)
            self._mark(seq)
        return [event]

    # -- recovery ------------------------------------------------------------

    def begin(self, reason: Reason) -> None:
        """Starts buffering live events until the stream is caught up."""
        self._resync = _Resync(
            reason=reason, from_seq=(self.last_seq or 0) + 1, old_epoch=self.epoch
        )

    def reset(self) -> None:
        """The connection dropped: an unfinished recovery starts over from
        what was delivered (its buffer is dropped; history has it); an
        unfinished refill goes on once the channel is recovered."""
        self._resync = None
        refill = self._refill
        if refill is not None and refill.in_flight:
            refill.in_flight = False
            if refill.restart is not None:
                refill.cursor = min(refill.cursor, refill.restart)
                refill.restart = None
                refill.end = None

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
                if self.last_seq is None and joined.epoch in (None, self.epoch):
                    # Live messages that beat the reply stay recorded.
                    self._floor = max(self._floor, joined.seq)
                else:
                    self._forget(joined.seq)
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
            self._forget(joined.seq)
            return self._finish(resync, [], filled=False)
        upper = resync.upper()
        if upper is not None and upper > (self.last_seq or 0):
            # recovered is None (a server without SPEC §14) or False (more
            # than the server recovers at once): history has what it has.
            resync.via = "history"
            return Step(fetch=self._next_fetch(resync))
        return self._finish(resync, [], filled=True)

    def on_history(self, history: History, fetch: Fetch | None = None) -> Step:
        """A ``history`` page this tracker asked for with ``fetch``."""
        if self._purpose(fetch) == "refill":
            return self._refill_page(history)
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
            self._forget(history.last_seq)
            return self._finish(resync, [], filled=False)
        before = self.last_seq
        events = self._replay(resync, history.messages)
        upper = resync.upper()
        caught_up = upper is None or (self.last_seq or 0) >= upper
        if not caught_up and self.last_seq != before:
            # A short page (``truncated``, or the limit): read on.
            return Step(events, self._next_fetch(resync))
        return self._finish(resync, events, filled=caught_up)

    def abort(self, fetch: Fetch | None = None) -> Step:
        """The recovery (or refill) cannot go on (a ``history`` call failed)."""
        if self._purpose(fetch) == "refill":
            refill = self._refill
            if refill is None:
                return Step()
            refill.in_flight = False
            end = refill.end if refill.end is not None else self.last_seq or 0
            events = self._hole(refill.cursor + 1, end, refill)
            return self._end_refill(refill, events)
        resync = self._resync
        if resync is None:
            return Step()
        return self._finish(resync, [], filled=False)

    def on_lagged(self, first_dropped_seq: int | None) -> Step:
        """The server dropped messages of this channel for this client
        (SPEC §16): refill them from history while live delivery goes on.
        Without ``first_dropped_seq``, only what follows the last delivered
        message can be refilled."""
        start = first_dropped_seq
        if start is None or start < 1:
            start = (self.last_seq or 0) + 1
        self._want_refill(start)
        if self._resync is not None:
            return Step()  # the refill starts once the recovery is done
        return Step(fetch=self._resume_refill())

    # -- refill --------------------------------------------------------------

    def _purpose(self, fetch: Fetch | None) -> str:
        if fetch is not None:
            return fetch.purpose
        if self._refill is not None and self._refill.in_flight:
            return "refill"
        return "resync"

    def _want_refill(self, start: int) -> None:
        """Messages from ``start`` on may be missing."""
        refill = self._refill
        if refill is None:
            self._refill = _Refill(from_seq=start, cursor=start - 1)
            return
        refill.from_seq = min(refill.from_seq, start)
        if refill.in_flight:
            # The page in flight may have been read before these drops.
            refill.restart = min(start - 1, refill.restart if refill.restart is not None else start)
        else:
            refill.cursor = min(refill.cursor, start - 1)
            refill.end = None

    def _resume_refill(self) -> Fetch | None:
        """The next refill page, unless one is in flight or a recovery runs."""
        refill = self._refill
        if refill is None or refill.in_flight or self._resync is not None:
            return None
        refill.in_flight = True
        wanted = HISTORY_PAGE if refill.end is None else refill.end - refill.cursor
        return Fetch(refill.cursor, max(1, min(HISTORY_PAGE, wanted)), "refill")

    def _refill_page(self, history: History) -> Step:
        refill = self._refill
        if refill is None or not refill.in_flight:
            return Step()
        refill.in_flight = False
        if history.epoch is not None and self.epoch is not None and history.epoch != self.epoch:
            # The history restarted: nothing of the old epoch can be read.
            self._refill = None
            gap = Gap(
                room=self.room,
                channel=self.channel,
                reason="lagged",
                from_seq=refill.from_seq,
                to_seq=history.last_seq,
                recovered=refill.recovered,
                epoch_changed=True,
                old_epoch=self.epoch,
                new_epoch=history.epoch,
            )
            return Step([gap], None, self._refilled(refill, filled=False))
        if refill.end is None:
            refill.end = history.last_seq
        end = refill.end
        events: list[SubscriptionEvent] = []
        before = refill.cursor
        for message in history.messages:
            seq = message.seq
            if seq is None or seq <= refill.cursor:
                continue
            if seq > end:
                break
            if seq > refill.cursor + 1:
                events.extend(self._hole(refill.cursor + 1, seq - 1, refill))
            refill.cursor = seq
            if self._delivered(seq):
                continue
            self._mark(seq)
            if self.last_seq is None or seq > self.last_seq:
                self.last_seq = seq
            if self._is_own(message):
                continue
            refill.recovered += 1
            events.append(message if message.replayed else replace(message, replayed=True))
        if refill.cursor == before and refill.cursor < end:
            # Nothing after the cursor up to ``end`` is left in history.
            events.extend(self._hole(refill.cursor + 1, end, refill))
            refill.cursor = end
        if refill.restart is not None:
            refill.cursor = min(refill.cursor, refill.restart)
            refill.restart = None
            refill.end = None
        elif refill.cursor >= end:
            return self._end_refill(refill, events)
        # A short page (``truncated``, or the limit): read on.
        return Step(events, self._resume_refill())

    def _hole(self, first: int, last: int, refill: _Refill) -> list[SubscriptionEvent]:
        """``first..last`` are no longer in history: a Gap for the part of
        it that was not delivered."""
        if last - first < 2 * DELIVERED_KEPT:
            missing = [seq for seq in range(first, last + 1) if not self._delivered(seq)]
            if not missing:
                return []
            low, high, lost = missing[0], missing[-1], len(missing)
        else:
            low, high, lost = first, last, last - first + 1
        refill.complete = False
        return [
            Gap(
                room=self.room,
                channel=self.channel,
                reason="lagged",
                from_seq=low,
                to_seq=high,
                recovered=(high - low + 1) - lost,
                epoch_changed=False,
                old_epoch=self.epoch,
                new_epoch=self.epoch,
            )
        ]

    def _end_refill(self, refill: _Refill, events: list[SubscriptionEvent]) -> Step:
        self._refill = None
        return Step(events, None, self._refilled(refill, filled=refill.complete))

    def _refilled(self, refill: _Refill, *, filled: bool) -> Resynced:
        return Resynced(
            room=self.room,
            channel=self.channel,
            reason="lagged",
            via="history",
            recovered=refill.recovered,
            filled=filled,
        )

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
            self._mark(seq)
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
            # Not delivered (e.g. publications that stop short of the
            # reply's seq): reported in the Gap below.
            filled = filled and resync.epoch_changed
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
        refill = self._refill
        if refill is not None and resync.epoch_changed:
            # What a refill was after is in the old epoch: lost.
            self._refill = None
            events.append(
                Gap(
                    room=self.room,
                    channel=self.channel,
                    reason="lagged",
                    from_seq=refill.from_seq,
                    to_seq=target,
                    recovered=refill.recovered,
                    epoch_changed=True,
                    old_epoch=resync.old_epoch,
                    new_epoch=self.epoch,
                )
            )
        if resync.overflowed:
            self._want_refill((self.last_seq or 0) + 1)
        return Step(events, self._resume_refill(), resynced)
