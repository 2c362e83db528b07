"""Pieces that need no server: errors, the reconnect policy, envelopes and
the per-channel recovery logic."""

from __future__ import annotations

import random
import re

import pytest

import arqonbus
import arqonbus._tracker
from arqonbus import ERROR_CLASSES, ArqonError, Gap, Joined, Message, Position, Presence
from arqonbus._protocol import IdGenerator, message_envelope, timestamp
from arqonbus._tracker import ChannelTracker, Fetch, Step
from arqonbus.types import ClientSummary, History

# -- errors --------------------------------------------------------------------

SPEC_CODES = {  # SPEC §6
    "VALIDATION_ERROR": 400,
    "UNSUPPORTED_VERSION": 400,
    "INVALID_ARGUMENT": 400,
    "UNKNOWN_COMMAND": 404,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_SUBSCRIBED": 403,
    "CHANNEL_NOT_FOUND": 404,
    "ROOM_NOT_FOUND": 404,
    "TARGET_NOT_FOUND": 404,
    "CHANNEL_EXISTS": 409,
    "CHANNEL_NOT_EMPTY": 409,
    "CHANNEL_FULL": 409,
    "SUBSCRIPTION_LIMIT": 409,
    "RATE_LIMITED": 429,
    "STORAGE_UNAVAILABLE": 503,
    "TOO_MANY_VIOLATIONS": 429,
    "INTERNAL_ERROR": 500,
}


def test_every_spec_error_code_has_a_class() -> None:
    assert set(ERROR_CLASSES) == set(SPEC_CODES)
    for code, status in SPEC_CODES.items():
        cls = ERROR_CLASSES[code]
        assert issubclass(cls, ArqonError) and cls is not ArqonError
        assert (cls.ERROR_CODE, cls.DEFAULT_STATUS) == (code, status)
        assert cls.__name__ in arqonbus.__all__


def test_error_from_envelope() -> None:
    err = arqonbus.error_from_envelope(
        {
            "type": "error",
            "request_id": "arq_1",
            "command": "history",
            "error_code": "RATE_LIMITED",
            "error": "slow down",
            "payload": {"code": 429, "details": [{"field": "x", "message": "y"}],
                        "retry_after_ms": 250},
        }
    )  # fmt: skip
    assert isinstance(err, arqonbus.RateLimited)
    assert (err.code, err.error_code, err.message, err.command, err.request_id) == (
        429,
        "RATE_LIMITED",
        "slow down",
        "history",
        "arq_1",
    )
    assert err.details == [{"field": "x", "message": "y"}]
    assert err.retry_after_ms == 250
    assert str(err) == "RATE_LIMITED (429): slow down [x: y]"


def test_unknown_error_code_is_a_plain_arqon_error() -> None:
    err = arqonbus.error_from_envelope({"error_code": "FROM_THE_FUTURE", "error": "?"})
    assert type(err) is ArqonError
    assert (err.error_code, err.code, err.details) == ("FROM_THE_FUTURE", 500, [])


def test_handshake_refusal_permanence() -> None:
    assert arqonbus.HandshakeRefused("ws://x/", 401, "").permanent
    assert arqonbus.HandshakeRefused("ws://x/", 403, "").permanent
    assert not arqonbus.HandshakeRefused("ws://x/", 503, "full").permanent


# -- reconnect policy ----------------------------------------------------------


def test_backoff_caps_grow_exponentially_up_to_the_maximum() -> None:
    policy = arqonbus.ReconnectPolicy(initial_delay=0.1, max_delay=2.0)
    assert [policy.cap(n) for n in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert policy.cap(10_000) == 2.0


def test_backoff_has_full_jitter() -> None:
    policy = arqonbus.ReconnectPolicy(initial_delay=1.0, max_delay=1.0)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(500)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert min(delays) < 0.05 and max(delays) > 0.95  # spread over the whole range


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        arqonbus.ReconnectPolicy(multiplier=0.5)
    with pytest.raises(ValueError):
        arqonbus.ReconnectPolicy(initial_delay=-1)


# -- envelopes -----------------------------------------------------------------


def test_envelopes() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp())
    ids = IdGenerator()
    first, second = ids(), ids()
    assert first != second
    assert re.fullmatch(r"arq_[A-Za-z0-9_.:-]{1,124}", first)
    env = message_envelope(first, {"a": 1}, room="r", channel="c", ack=True)
    assert (env["version"], env["type"], env["room"], env["channel"], env["ack"]) == (
        "1.0",
        "message",
        "r",
        "c",
        True,
    )
    with pytest.raises(TypeError):
        message_envelope(first, "text")  # type: ignore[arg-type]


# -- recovery logic ------------------------------------------------------------

ME = "arq_client_me"


def msg(seq: int, epoch: str = "e1", sender: str = "arq_client_other", **meta: object) -> Message:
    return Message(
        room="r",
        channel="c",
        id=f"arq_{seq}",
        payload={"n": seq},
        sender=sender,
        seq=seq,
        epoch=epoch,
        metadata=dict(meta),
    )


def history(*seqs: int, epoch: str = "e1", last_seq: int | None = None) -> History:
    return History(
        room="r",
        channel="c",
        messages=tuple(msg(s, epoch) for s in seqs),
        epoch=epoch,
        last_seq=last_seq if last_seq is not None else max(seqs, default=0),
    )


def joined(seq: int, epoch: str = "e1", **extra: object) -> Joined:
    return Joined(room="r", channel="c", participant_count=1, seq=seq, epoch=epoch, **extra)  # type: ignore[arg-type]


def seqs(step: Step) -> list[object]:
    """Message seqs of a step's events; a Gap shows as "gap"."""
    return ["gap" if isinstance(e, Gap) else e.seq if isinstance(e, Message) else e for e in step.events]


def live_tracker(last_seq: int = 3) -> ChannelTracker:
    tracker = ChannelTracker("r", "c", {ME})
    tracker.on_joined(joined(0))
    for n in range(1, last_seq + 1):
        tracker.on_live(msg(n))
    return tracker


def test_live_messages_are_deduplicated() -> None:
    tracker = live_tracker(2)
    assert [m.seq for m in tracker.on_live(msg(3)) if isinstance(m, Message)] == [3]
    assert tracker.on_live(msg(3)) == []
    assert tracker.on_live(msg(2)) == []
    assert tracker.position == Position(3, "e1")


def test_first_join_does_not_drop_messages_that_beat_its_reply() -> None:
    tracker = ChannelTracker("r", "c", {ME})
    assert len(tracker.on_live(msg(5))) == 1  # arrived before the join reply
    tracker.on_joined(joined(5))
    assert tracker.position == Position(5, "e1")
    assert len(tracker.on_live(msg(6))) == 1


def test_reconnect_pages_through_history_then_flushes_live() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    assert tracker.on_live(msg(1503)) == []  # buffered
    step = tracker.on_joined(joined(1502))
    assert step.fetch == Fetch(after_seq=3, limit=1000) and step.events == []
    step = tracker.on_history(history(*range(4, 1004)))
    assert seqs(step) == list(range(4, 1004))
    assert all(isinstance(e, Message) and e.replayed for e in step.events)
    assert step.fetch == Fetch(after_seq=1003, limit=499)
    step = tracker.on_history(history(*range(1004, 1504)))  # 1503 is buffered
    assert seqs(step) == [*range(1004, 1503), 1503]
    assert step.fetch is None
    assert step.resynced is not None and step.resynced.filled and step.resynced.recovered == 1499
    assert not tracker.resyncing


def test_nothing_missed_means_no_fetch_and_no_gap() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    step = tracker.on_joined(joined(3))
    assert (step.events, step.fetch) == ([], None)
    assert step.resynced is not None and step.resynced.via == "none" and step.resynced.filled


def test_epoch_change_is_a_gap() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_live(msg(1, "e2"))
    step = tracker.on_joined(joined(0, "e2"))
    (gap, first) = step.events
    assert isinstance(gap, Gap)
    assert (gap.epoch_changed, gap.old_epoch, gap.new_epoch, gap.from_seq, gap.missed) == (
        True,
        "e1",
        "e2",
        4,
        0,
    )
    assert isinstance(first, Message) and first.seq == 1
    assert tracker.position == Position(1, "e2")


def test_server_recovery_delivers_publications() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_live(msg(6))
    step = tracker.on_joined(joined(5, recovered=True, publications=(msg(4), msg(5))))
    assert seqs(step) == [4, 5, 6]
    assert step.fetch is None
    assert step.resynced is not None and step.resynced.via == "server"


def test_history_hole_is_reported() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_joined(joined(8))
    step = tracker.on_history(history(6, 7, 8))  # 4 and 5 are gone
    assert seqs(step) == [6, 7, 8, "gap"]
    gap = step.events[-1]
    assert isinstance(gap, Gap)
    assert (gap.from_seq, gap.to_seq, gap.recovered, gap.missed, gap.epoch_changed) == (
        4,
        8,
        3,
        5,
        False,
    )


def test_failed_history_read_is_a_gap_and_live_messages_follow() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_live(msg(9))
    tracker.on_joined(joined(8))
    step = tracker.abort()
    assert seqs(step) == ["gap", 9]
    assert tracker.position == Position(9, "e1")


def test_own_messages_are_not_replayed_unless_echoed() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_joined(joined(6))
    replay = History(
        room="r",
        channel="c",
        messages=(msg(4, sender=ME), msg(5, sender=ME, echo=True), msg(6)),
        epoch="e1",
        last_seq=6,
    )
    step = tracker.on_history(replay)
    assert seqs(step) == [5, 6]
    assert step.resynced is not None and step.resynced.filled


def refill(after: int, limit: int = 1000) -> Fetch:
    return Fetch(after_seq=after, limit=limit, purpose="refill")


def test_lagged_refill_lets_live_events_flow() -> None:
    tracker = live_tracker(2)
    step = tracker.on_lagged(first_dropped_seq=3)
    assert step.events == [] and step.fetch == refill(2)
    assert tracker.refilling and not tracker.resyncing
    presence = Presence("r", "c", "join", ClientSummary("arq_client_x"), 2)
    # 3..5 were dropped; 6, a presence event and 7 come live meanwhile.
    assert seqs(Step(tracker.on_live(msg(6)))) == [6]
    assert tracker.on_live(presence) == [presence]
    assert seqs(Step(tracker.on_live(msg(7)))) == [7]
    step = tracker.on_history(history(3, 4, 5, 6, 7), step.fetch)
    assert seqs(step) == [3, 4, 5]
    assert all(isinstance(e, Message) and e.replayed for e in step.events)
    assert step.fetch is None and not tracker.refilling
    assert step.resynced is not None
    assert (step.resynced.reason, step.resynced.via, step.resynced.recovered) == ("lagged", "history", 3)
    assert step.resynced.filled
    assert tracker.on_live(msg(7)) == [] and seqs(Step(tracker.on_live(msg(8)))) == [8]
    assert tracker.position == Position(8, "e1")


def test_lagged_after_later_messages_refills_the_holes() -> None:
    """The notice can come after later messages were delivered: what was
    dropped before them is delivered (out of order), the rest only once."""
    tracker = live_tracker(3)
    for n in (6, 8):  # 4, 5 and 7 were dropped; 9 and 10 too, at the tail
        tracker.on_live(msg(n))
    step = tracker.on_lagged(first_dropped_seq=4)
    assert step.events == [] and step.fetch == refill(3)
    # Pages cut short (``truncated``): paging goes on up to the first
    # reply's last_seq (10), not just the last seq seen live (8).
    page = History(room="r", channel="c", messages=(msg(4), msg(5), msg(6)), epoch="e1",
                   last_seq=10, truncated=True)  # fmt: skip
    step = tracker.on_history(page, step.fetch)
    assert seqs(step) == [4, 5] and step.fetch == refill(6, 4) and step.resynced is None
    assert seqs(Step(tracker.on_live(msg(11)))) == [11]  # live goes on
    step = tracker.on_history(history(7, 8, 9, last_seq=11), step.fetch)
    assert seqs(step) == [7, 9] and step.fetch == refill(9, 1)
    step = tracker.on_history(history(10, 11), step.fetch)
    assert seqs(step) == [10] and step.fetch is None
    assert step.resynced is not None and step.resynced.filled and step.resynced.recovered == 5
    assert tracker.position == Position(11, "e1")
    for n in range(1, 12):
        assert tracker.on_live(msg(n)) == []  # every one was delivered


def test_lagged_refill_reports_only_what_history_lost() -> None:
    tracker = live_tracker(2)
    tracker.on_live(msg(5))
    step = tracker.on_lagged(first_dropped_seq=3)
    step = tracker.on_history(history(4, 5, 6), step.fetch)  # 3 is gone
    gap, four, six = step.events
    assert isinstance(gap, Gap)
    assert (gap.reason, gap.from_seq, gap.to_seq, gap.recovered, gap.epoch_changed) == (
        "lagged", 3, 3, 0, False)  # fmt: skip
    assert [four.seq, six.seq] == [4, 6]  # type: ignore[union-attr]
    assert step.resynced is not None and not step.resynced.filled


def test_lagged_refill_with_nothing_left_in_history() -> None:
    tracker = live_tracker(2)
    tracker.on_live(msg(4))
    tracker.on_live(msg(6))
    step = tracker.on_lagged(first_dropped_seq=3)
    step = tracker.on_history(history(last_seq=6), step.fetch)
    (gap,) = step.events
    assert isinstance(gap, Gap) and (gap.from_seq, gap.to_seq, gap.recovered) == (3, 5, 1)
    assert step.resynced is not None and not step.resynced.filled and step.fetch is None


def test_a_notice_during_a_refill_page_reads_again() -> None:
    tracker = live_tracker(2)
    first = tracker.on_lagged(first_dropped_seq=3).fetch
    assert first == refill(2)
    for n in (4, 6):
        tracker.on_live(msg(n))
    # A second notice while the page is in flight: no second request.
    assert tracker.on_lagged(first_dropped_seq=5) == Step()
    step = tracker.on_history(history(3, 4, last_seq=4), first)  # read before 5 was dropped
    assert seqs(step) == [3] and step.fetch == refill(4) and step.resynced is None
    step = tracker.on_history(history(5, 6, last_seq=6), step.fetch)
    assert seqs(step) == [5] and step.fetch is None
    assert step.resynced is not None and step.resynced.filled and step.resynced.recovered == 2


def test_a_notice_during_a_recovery_refills_after_it() -> None:
    tracker = live_tracker(2)
    tracker.begin("reconnect")
    assert tracker.on_live(msg(6)) == []  # buffered; 5 was dropped by the server
    assert tracker.on_lagged(first_dropped_seq=5) == Step()
    step = tracker.on_joined(joined(4, recovered=True, publications=(msg(3), msg(4))))
    assert seqs(step) == [3, 4, 6] and step.fetch == refill(4)
    step = tracker.on_history(history(5, 6), step.fetch)
    assert seqs(step) == [5] and step.fetch is None


def test_an_unfinished_refill_goes_on_after_a_reconnect() -> None:
    tracker = live_tracker(2)
    tracker.on_live(msg(5))
    assert tracker.on_lagged(first_dropped_seq=3).fetch == refill(2)
    tracker.reset()  # the connection dropped with the page in flight
    tracker.begin("reconnect")
    step = tracker.on_joined(joined(5, recovered=True, publications=()))
    assert step.events == [] and step.fetch == refill(2)
    step = tracker.on_history(history(3, 4, 5), step.fetch)
    assert seqs(step) == [3, 4]


def test_a_refill_after_an_epoch_change_is_a_gap() -> None:
    tracker = live_tracker(2)
    tracker.on_live(msg(5))
    step = tracker.on_lagged(first_dropped_seq=3)
    step = tracker.on_history(history(1, epoch="e2"), step.fetch)
    (gap,) = step.events
    assert isinstance(gap, Gap) and gap.epoch_changed and (gap.old_epoch, gap.new_epoch) == ("e1", "e2")
    assert not tracker.refilling


def test_a_failed_refill_read_is_a_gap() -> None:
    tracker = live_tracker(2)
    tracker.on_live(msg(5))
    step = tracker.abort(tracker.on_lagged(first_dropped_seq=3).fetch)
    (gap,) = step.events
    assert isinstance(gap, Gap) and (gap.from_seq, gap.to_seq) == (3, 4)
    assert not tracker.refilling


def test_the_delivered_record_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arqonbus._tracker, "DELIVERED_KEPT", 10)
    tracker = live_tracker(0)
    for n in range(1, 101):
        tracker.on_live(msg(n))
    assert len(tracker._seen) == 10 and tracker._floor == 90
    assert tracker.on_live(msg(50)) == []


def test_buffer_overflow_is_refilled_from_history() -> None:
    tracker = ChannelTracker("r", "c", {ME}, buffer_limit=2)
    tracker.on_joined(joined(0))
    tracker.begin("reconnect")
    for n in (1, 2, 3, 4):  # 3 and 4 overflow the buffer
        tracker.on_live(msg(n))
    step = tracker.on_joined(joined(0))
    assert seqs(step) == [1, 2]
    assert step.fetch == refill(2)
    assert not tracker.resyncing
    assert seqs(Step(tracker.on_live(msg(5)))) == [5]  # live flows meanwhile
    step = tracker.on_history(history(3, 4, 5), step.fetch)
    assert seqs(step) == [3, 4]
    assert step.fetch is None and not tracker.refilling


def test_reset_forgets_an_unfinished_recovery() -> None:
    tracker = live_tracker(3)
    tracker.begin("reconnect")
    tracker.on_live(msg(9))
    tracker.reset()
    assert not tracker.resyncing and tracker.position == Position(3, "e1")
