//! The gap fill after a reconnect, for one channel, as a state machine
//! without I/O: the driver feeds it the re-join's reply and the history
//! pages, delivers the messages it hands back (marked `replayed`), and does
//! what [`Next`] says. See the [driver](crate::driver) for the protocol.
//!
//! Invariants: a message is handed back only when its `seq` follows the
//! last delivered one (so nothing is delivered twice) and, from history,
//! only up to the `seq` the channel had when the client re-joined; live
//! messages arriving meanwhile wait in a bounded buffer and are delivered
//! after the [`GapReport`].

use std::collections::VecDeque;

use arqon_protocol::{ChannelKey, Envelope};

use crate::types::{GapFill, GapReport, History, Joined, Recovery};

/// Live messages buffered per channel while its gap is being filled.
const BUFFER: usize = 65_536;

/// How far delivery on a channel has got: the last delivered `seq`, and the
/// epoch it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) last_seq: u64,
    pub(crate) epoch: Option<String>,
}

impl Position {
    /// Of `messages` (oldest first), those after `last_seq`, which then
    /// moves to the last of them. Messages without a `seq` are skipped.
    pub(crate) fn unseen(&mut self, messages: Vec<Envelope>) -> Vec<Envelope> {
        let mut unseen = Vec::new();
        for envelope in messages {
            let Some(seq) = envelope.seq else { continue };
            if seq <= self.last_seq {
                continue;
            }
            self.last_seq = seq;
            unseen.push(envelope);
        }
        unseen
    }
}

/// What the driver does next for the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read `history` after `after_seq`, at most `wanted` messages, and
    /// hand the page to [`Resync::on_history`].
    ReadHistory { after_seq: u64, wanted: u64 },
    /// Nothing more to fetch: call [`Resync::finish`] with `filled`.
    Finish { filled: bool },
}

/// One channel's gap fill, from the re-join to the [`GapReport`].
#[derive(Debug)]
pub(crate) struct Resync {
    from_seq: u64,
    /// The channel's `seq` when the client re-joined.
    target: u64,
    recovered: u64,
    old_epoch: Option<String>,
    new_epoch: Option<String>,
    epoch_changed: bool,
    /// False once something is known to be missing for good (history no
    /// longer held it, or the buffer overflowed).
    complete: bool,
    via: GapFill,
    buffer: VecDeque<Envelope>,
}

impl Resync {
    /// Starts when the client re-joins, from where delivery stopped.
    pub(crate) fn start(position: &Position) -> Self {
        Self {
            from_seq: position.last_seq + 1,
            target: position.last_seq,
            recovered: 0,
            old_epoch: position.epoch.clone(),
            new_epoch: None,
            epoch_changed: false,
            complete: true,
            via: GapFill::Nothing,
            buffer: VecDeque::new(),
        }
    }

    /// Keeps a live message for after the fill; beyond the buffer's bound
    /// it is lost and the gap counts as not filled.
    pub(crate) fn buffer(&mut self, envelope: Envelope) {
        if self.buffer.len() < BUFFER {
            self.buffer.push_back(envelope);
        } else {
            self.complete = false;
        }
    }

    /// The re-join's reply. Returns the messages its recovery holds (SPEC
    /// §14: exactly the missed ones) that are new, and what to do next: read
    /// history when the server could not recover and is ahead in the same
    /// epoch; finish otherwise. A new epoch moves `position` to the
    /// channel's current `seq`: the old history cannot be recovered.
    pub(crate) fn on_rejoined(
        &mut self,
        position: &mut Position,
        joined: &Joined,
        recovery: Recovery,
    ) -> (Vec<Envelope>, Next) {
        let same_epoch = position.epoch.is_some() && position.epoch == joined.epoch;
        self.target = joined.seq;
        self.new_epoch.clone_from(&joined.epoch);
        if !same_epoch {
            self.epoch_changed = true;
            self.complete = false;
        }
        if same_epoch && recovery.recovered == Some(true) {
            let before = position.last_seq;
            let recovered = position.unseen(recovery.publications);
            self.recovered += recovered.len() as u64;
            if joined.seq > before {
                self.via = GapFill::Recovery;
            }
            let filled = position.last_seq >= joined.seq;
            return (recovered, Next::Finish { filled });
        }
        if same_epoch && joined.seq > position.last_seq {
            self.via = GapFill::History;
            let after_seq = position.last_seq;
            let wanted = joined.seq - after_seq;
            return (Vec::new(), Next::ReadHistory { after_seq, wanted });
        }
        if !same_epoch {
            position.epoch.clone_from(&joined.epoch);
            position.last_seq = joined.seq;
        }
        (Vec::new(), Next::Finish { filled: same_epoch })
    }

    /// A page of `history`. Returns its messages that close the gap (in
    /// order, up to the re-join's `seq`) and what to do next: read on when
    /// the page fell short of the target, finish otherwise. A new epoch
    /// (the history restarted since the re-join) ends the fill unfilled.
    pub(crate) fn on_history(
        &mut self,
        position: &mut Position,
        history: History,
    ) -> (Vec<Envelope>, Next) {
        if history.epoch.is_some() && history.epoch != position.epoch {
            self.epoch_changed = true;
            self.complete = false;
            self.new_epoch.clone_from(&history.epoch);
            position.epoch = history.epoch;
            position.last_seq = history.last_seq;
            return (Vec::new(), Next::Finish { filled: false });
        }
        let got_any = !history.messages.is_empty();
        let mut filling = Vec::new();
        for envelope in history.messages {
            let Some(seq) = envelope.seq else { continue };
            if seq <= position.last_seq || seq > self.target {
                continue;
            }
            if seq != position.last_seq + 1 {
                // The oldest messages of the gap are no longer stored.
                self.complete = false;
            }
            position.last_seq = seq;
            self.recovered += 1;
            filling.push(envelope);
        }
        if position.last_seq < self.target && got_any {
            let after_seq = position.last_seq;
            let wanted = self.target - after_seq;
            return (filling, Next::ReadHistory { after_seq, wanted });
        }
        let filled = position.last_seq >= self.target;
        (filling, Next::Finish { filled })
    }

    /// Ends the fill (`filled`: whether the last step closed the gap).
    /// Returns the report and the live messages buffered meanwhile, to be
    /// delivered in that order; `position` moves past the re-join's `seq`.
    pub(crate) fn finish(
        self,
        key: &ChannelKey,
        position: &mut Position,
        filled: bool,
    ) -> (GapReport, VecDeque<Envelope>) {
        position.last_seq = position.last_seq.max(self.target);
        let report = GapReport {
            channel: key.clone(),
            from_seq: self.from_seq,
            to_seq: self.target,
            recovered: self.recovered,
            filled: filled && self.complete && !self.epoch_changed,
            epoch_changed: self.epoch_changed,
            old_epoch: self.old_epoch,
            new_epoch: self.new_epoch,
            via: self.via,
        };
        (report, self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use arqon_protocol::EnvelopeType;

    use super::*;

    fn key() -> ChannelKey {
        ChannelKey::new("r", "c").expect("a valid key")
    }

    fn message(seq: u64) -> Envelope {
        let mut envelope = Envelope::new(EnvelopeType::Message);
        envelope.seq = Some(seq);
        envelope
    }

    fn seqs(messages: &[Envelope]) -> Vec<u64> {
        messages.iter().filter_map(|m| m.seq).collect()
    }

    fn at(last_seq: u64, epoch: &str) -> Position {
        Position {
            last_seq,
            epoch: Some(epoch.to_owned()),
        }
    }

    fn joined(seq: u64, epoch: &str) -> Joined {
        Joined {
            room: "r".to_owned(),
            channel: "c".to_owned(),
            participant_count: 1,
            seq,
            epoch: Some(epoch.to_owned()),
            recovered: None,
        }
    }

    fn recovered(publications: Vec<Envelope>) -> Recovery {
        Recovery {
            recovered: Some(true),
            publications,
        }
    }

    fn history(messages: Vec<Envelope>, last_seq: u64, epoch: &str) -> History {
        History {
            room: "r".to_owned(),
            channel: "c".to_owned(),
            count: messages.len() as u64,
            messages,
            backend: "memory".to_owned(),
            epoch: Some(epoch.to_owned()),
            last_seq,
            truncated: false,
        }
    }

    #[test]
    fn a_recovered_rejoin_delivers_the_missed_messages_once() {
        let mut position = at(3, "e1");
        let mut resync = Resync::start(&position);
        // 3 was delivered before the drop: not again.
        let publications = vec![message(3), message(4), message(5)];
        let (deliver, next) =
            resync.on_rejoined(&mut position, &joined(5, "e1"), recovered(publications));
        assert_eq!(seqs(&deliver), [4, 5]);
        assert_eq!(next, Next::Finish { filled: true });
        let (report, buffered) = resync.finish(&key(), &mut position, true);
        assert!(buffered.is_empty());
        assert_eq!(
            (report.from_seq, report.to_seq, report.recovered),
            (4, 5, 2)
        );
        assert!(report.filled && !report.epoch_changed);
        assert_eq!(report.via, GapFill::Recovery);
        assert_eq!(position, at(5, "e1"));
    }

    #[test]
    fn without_recovery_history_is_paged_up_to_the_rejoin_seq() {
        let mut position = at(10, "e1");
        let mut resync = Resync::start(&position);
        let (deliver, next) =
            resync.on_rejoined(&mut position, &joined(14, "e1"), Recovery::default());
        assert!(deliver.is_empty());
        assert_eq!(
            next,
            Next::ReadHistory {
                after_seq: 10,
                wanted: 4
            }
        );
        // A short page: read on from its last seq.
        let page = history(vec![message(11), message(12)], 15, "e1");
        let (deliver, next) = resync.on_history(&mut position, page);
        assert_eq!(seqs(&deliver), [11, 12]);
        assert_eq!(
            next,
            Next::ReadHistory {
                after_seq: 12,
                wanted: 2
            }
        );
        // 15 came after the re-join: it arrives live, not from history.
        let page = history(vec![message(13), message(14), message(15)], 15, "e1");
        let (deliver, next) = resync.on_history(&mut position, page);
        assert_eq!(seqs(&deliver), [13, 14]);
        assert_eq!(next, Next::Finish { filled: true });
        let (report, _) = resync.finish(&key(), &mut position, true);
        assert_eq!(
            (report.from_seq, report.to_seq, report.recovered),
            (11, 14, 4)
        );
        assert!(report.filled);
        assert_eq!(report.via, GapFill::History);
    }

    #[test]
    fn history_that_lost_the_oldest_messages_leaves_the_gap_unfilled() {
        let mut position = at(10, "e1");
        let mut resync = Resync::start(&position);
        resync.on_rejoined(&mut position, &joined(14, "e1"), Recovery::default());
        let page = history(vec![message(13), message(14)], 14, "e1");
        let (deliver, next) = resync.on_history(&mut position, page);
        assert_eq!(seqs(&deliver), [13, 14]);
        assert_eq!(next, Next::Finish { filled: true });
        let (report, _) = resync.finish(&key(), &mut position, true);
        assert!(!report.filled, "11 and 12 are gone: {report:?}");
        assert_eq!(report.recovered, 2);
    }

    #[test]
    fn an_empty_page_ends_the_fill() {
        let mut position = at(10, "e1");
        let mut resync = Resync::start(&position);
        resync.on_rejoined(&mut position, &joined(12, "e1"), Recovery::default());
        let (deliver, next) = resync.on_history(&mut position, history(vec![], 12, "e1"));
        assert!(deliver.is_empty());
        assert_eq!(next, Next::Finish { filled: false });
        let (report, _) = resync.finish(&key(), &mut position, false);
        assert!(!report.filled);
        // Live delivery goes on from the re-join's seq.
        assert_eq!(position.last_seq, 12);
    }

    #[test]
    fn a_new_epoch_at_the_rejoin_recovers_nothing() {
        let mut position = at(7, "e1");
        let mut resync = Resync::start(&position);
        let (deliver, next) = resync.on_rejoined(
            &mut position,
            &joined(2, "e2"),
            recovered(vec![message(1), message(2)]),
        );
        assert!(deliver.is_empty());
        assert_eq!(next, Next::Finish { filled: false });
        assert_eq!(position, at(2, "e2"));
        let (report, _) = resync.finish(&key(), &mut position, false);
        assert!(report.epoch_changed && !report.filled);
        assert_eq!(report.old_epoch.as_deref(), Some("e1"));
        assert_eq!(report.new_epoch.as_deref(), Some("e2"));
        assert_eq!(report.via, GapFill::Nothing);
    }

    #[test]
    fn a_new_epoch_in_history_ends_the_fill() {
        let mut position = at(10, "e1");
        let mut resync = Resync::start(&position);
        resync.on_rejoined(&mut position, &joined(14, "e1"), Recovery::default());
        let (deliver, next) = resync.on_history(&mut position, history(vec![message(1)], 1, "e2"));
        assert!(deliver.is_empty());
        assert_eq!(next, Next::Finish { filled: false });
        assert_eq!(position, at(1, "e2"));
        let (report, _) = resync.finish(&key(), &mut position, false);
        assert!(report.epoch_changed && !report.filled);
        assert_eq!(report.new_epoch.as_deref(), Some("e2"));
    }

    #[test]
    fn nothing_missed_finishes_at_once() {
        let mut position = at(5, "e1");
        let mut resync = Resync::start(&position);
        let (deliver, next) =
            resync.on_rejoined(&mut position, &joined(5, "e1"), Recovery::default());
        assert!(deliver.is_empty());
        assert_eq!(next, Next::Finish { filled: true });
        let (report, _) = resync.finish(&key(), &mut position, true);
        assert!(report.filled);
        assert_eq!(report.via, GapFill::Nothing);
    }

    #[test]
    fn live_messages_wait_until_the_report_and_overflow_unfills() {
        let mut position = at(5, "e1");
        let mut resync = Resync::start(&position);
        resync.buffer(message(7));
        resync.buffer(message(8));
        resync.on_rejoined(&mut position, &joined(6, "e1"), recovered(vec![message(6)]));
        let (report, buffered) = resync.finish(&key(), &mut position, true);
        assert!(report.filled);
        assert_eq!(seqs(&Vec::from(buffered)), [7, 8]);

        let mut resync = Resync::start(&position);
        for seq in 0..=BUFFER as u64 {
            resync.buffer(message(100 + seq));
        }
        let (report, buffered) = resync.finish(&key(), &mut position, true);
        assert_eq!(buffered.len(), BUFFER);
        assert!(!report.filled, "one live message was lost");
    }
}
