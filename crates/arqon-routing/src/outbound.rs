//! The bounded outbound queue of one connection (SPEC §11).
//!
//! Publishers push already-encoded frames and never wait: a push either
//! fits under the byte budget or fails at once with [`PushError::Full`], and
//! the caller applies the slow-consumer policy. One writer task per
//! connection drains the queue in batches, so that frames queued while it
//! was writing go out in one socket write.
//!
//! Frames come in two kinds. [`Outbound::push`] is for what the client is
//! waiting on (replies, direct messages, notices): the writer sends it as
//! soon as it can. [`Outbound::push_batched`] is for channel fan-out: the
//! writer of a connection that wrote moments ago may hold such frames for
//! a short window ([`Outbound::gather_until`]) and send them together, which
//! saves a socket write (and the reader's wake-up) per frame under load. A
//! frame of the first kind ends such a window at once.
//!
//! The writer is woken only when the queue goes from empty to non-empty:
//! it drains everything queued when it runs, so later pushes need no wake.

use std::collections::VecDeque;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};

use arqon_protocol::{ChannelKey, Envelope, EnvelopeType};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// Why and how a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code (see `arqon_protocol::close`).
    pub code: u16,
    /// The close frame's reason text.
    pub reason: &'static str,
    /// Drop the frames still queued instead of writing them first: right
    /// for a slow consumer, wrong for an error that should reach the client.
    pub discard_pending: bool,
}

/// A push that did not enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue holds more than its byte budget.
    #[error("outbound queue full")]
    Full,
    /// The connection is closing.
    #[error("connection closing")]
    Closed,
}

/// Frames taken from the queue by its writer, oldest first.
pub type Frames = VecDeque<Bytes>;

/// What the writer gets from [`Outbound::next_batch`].
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Frames to write, oldest first. `urgent` when one of them was pushed
    /// with [`Outbound::push`] (the client waits for it): write it now.
    Frames { frames: Frames, urgent: bool },
    /// Nothing more will come: send this close frame and stop.
    Close(CloseReason),
}

#[derive(Debug, Default)]
struct State {
    /// The queued frames. Moved out whole by the writer, so an idle
    /// connection holds no buffer here.
    frames: Frames,
    bytes: usize,
    /// A frame in `frames` came from [`Outbound::push`].
    urgent: bool,
    close: Option<CloseReason>,
    lag: Lag,
}

impl State {
    /// Takes every queued frame, which frees their room in the budget, and
    /// whether one of them was urgent.
    fn take_frames(&mut self) -> (Frames, bool) {
        self.bytes = 0;
        (mem::take(&mut self.frames), mem::take(&mut self.urgent))
    }
}

/// At most one lagged notice per this interval (SPEC §16).
const LAGGED_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Channel messages dropped for this connection since its last lagged
/// notice (SPEC §16), by channel.
#[derive(Debug, Default)]
struct Lag {
    dropped: u64,
    channels: Vec<ChannelLag>,
    last_notice: Option<Instant>,
}

#[derive(Debug)]
struct ChannelLag {
    key: ChannelKey,
    dropped: u64,
    first_dropped_seq: Option<u64>,
}

impl Lag {
    fn note(&mut self, key: &ChannelKey, seq: Option<u64>) {
        self.dropped += 1;
        match self.channels.iter_mut().find(|lag| lag.key == *key) {
            Some(lag) => {
                lag.dropped += 1;
                lag.first_dropped_seq = lag.first_dropped_seq.or(seq);
            }
            None => self.channels.push(ChannelLag {
                key: key.clone(),
                dropped: 1,
                first_dropped_seq: seq,
            }),
        }
    }

    /// When the next notice may go, if one is owed: `now` when none was
    /// sent yet.
    fn due_at(&self, now: Instant) -> Option<Instant> {
        (self.dropped > 0).then(|| {
            self.last_notice
                .map_or(now, |last| last + LAGGED_NOTICE_INTERVAL)
        })
    }

    /// The notice owed, if it may go at `now`; counting starts again.
    fn take_due(&mut self, now: Instant) -> Option<Bytes> {
        if self.due_at(now).is_none_or(|due| now < due) {
            return None;
        }
        let channels: Vec<Value> = self
            .channels
            .drain(..)
            .map(|lag| {
                json!({
                    "room": lag.key.room(),
                    "channel": lag.key.channel(),
                    "dropped": lag.dropped,
                    "first_dropped_seq": lag.first_dropped_seq,
                })
            })
            .collect();
        let mut notice = Envelope::from_server(EnvelopeType::System);
        notice.payload = Some(json!({
            "event": "lagged",
            "dropped": std::mem::take(&mut self.dropped),
            "channels": channels,
        }));
        self.last_notice = Some(now);
        Some(Bytes::from(notice.to_json()))
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: frames or a close are waiting.
    ready: Notify,
    /// Wakes anyone waiting in [`Outbound::discarded`].
    discarded: Notify,
    /// Wakes anyone waiting in [`Outbound::push_when_room`]: the writer
    /// drained the queue, or the connection is closing.
    room: Notify,
    capacity: usize,
}

/// Producer and consumer handle of one connection's queue; clones share it.
#[derive(Debug, Clone)]
pub struct Outbound {
    shared: Arc<Shared>,
}

impl Outbound {
    /// A queue holding at most `capacity` bytes of frames. A single frame
    /// larger than the budget is still accepted into an empty queue, so a
    /// large (but allowed) message is never undeliverable.
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                discarded: Notify::new(),
                room: Notify::new(),
                capacity,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent
        // (every update is a single push or drain), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The byte budget of the queue.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Enqueues `frame` without waiting, for the writer to send at once:
    /// a reply, a direct message or a notice.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        self.enqueue(frame, true)
    }

    /// Enqueues a channel message (or presence event) without waiting; the
    /// writer may hold it for its coalescing window to send it together with
    /// the frames that follow ([`Outbound::gather_until`]).
    pub fn push_batched(&self, frame: Bytes) -> Result<(), PushError> {
        self.enqueue(frame, false)
    }

    fn enqueue(&self, frame: Bytes, urgent: bool) -> Result<(), PushError> {
        let wake = {
            let mut state = self.state();
            if state.close.is_some() {
                return Err(PushError::Closed);
            }
            let was_empty = state.frames.is_empty();
            if !was_empty && state.bytes + frame.len() > self.shared.capacity {
                return Err(PushError::Full);
            }
            state.bytes += frame.len();
            state.frames.push_back(frame);
            // A writer gathering a window waits for the first urgent frame;
            // otherwise it drains the whole queue when it runs, so only
            // the first frame after a drain needs to wake it.
            let wake = was_empty || (urgent && !state.urgent);
            state.urgent |= urgent;
            wake
        };
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Enqueues `frame`, waiting while the queue is full: for the replies a
    /// client's own frames produce, which must not be dropped and may make
    /// that client (and only it) wait. Fails only when the connection is
    /// closing.
    ///
    /// # Cancel safety
    /// Cancel safe: the frame is enqueued only on the poll that returns.
    pub async fn push_when_room(&self, frame: Bytes) -> Result<(), PushError> {
        loop {
            let mut room = std::pin::pin!(self.shared.room.notified());
            room.as_mut().enable();
            match self.push(frame.clone()) {
                Err(PushError::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Asks the writer to close the connection. The first reason wins;
    /// later calls return `false`.
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = {
            let mut state = self.state();
            if state.close.is_some() {
                false
            } else {
                if reason.discard_pending {
                    state.frames.clear();
                    state.bytes = 0;
                }
                state.close = Some(reason);
                true
            }
        };
        self.shared.ready.notify_one();
        if reason.discard_pending {
            self.shared.discarded.notify_waiters();
        }
        self.shared.room.notify_waiters();
        first
    }

    /// Resolves once a close that discards pending frames has been
    /// requested: the writer races its socket writes against this, so that
    /// a consumer whose socket no longer drains is cut off at once.
    ///
    /// # Cancel safety
    /// Cancel safe: it only observes state.
    pub async fn discarded(&self) -> CloseReason {
        loop {
            let mut notified = std::pin::pin!(self.shared.discarded.notified());
            notified.as_mut().enable();
            if let Some(reason) = self.state().close.filter(|reason| reason.discard_pending) {
                return reason;
            }
            notified.await;
        }
    }

    /// The close requested for this connection, if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state().close
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.state().bytes
    }

    /// Records a channel message dropped for this connection (the `drop`
    /// policy): the writer owes the client a lagged notice (SPEC §16).
    pub fn note_dropped(&self, key: &ChannelKey, seq: Option<u64>) {
        self.state().lag.note(key, seq);
        self.shared.ready.notify_one();
    }

    /// Waits for work: takes every queued frame and returns
    /// [`Batch::Frames`], or, once the queue is empty and a close was
    /// requested, returns [`Batch::Close`]. A lagged notice that is owed
    /// (SPEC §16) leads the batch, as soon as the queue has room again (it
    /// has: this drains it) and at most once per second; it never counts
    /// against the budget, so it is never dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: frames are taken only on the poll that returns, so a
    /// cancelled wait loses nothing.
    pub async fn next_batch(&self) -> Batch {
        loop {
            let notice_due = {
                let now = Instant::now();
                let mut state = self.state();
                let notice = state.lag.take_due(now);
                if !state.frames.is_empty() || notice.is_some() {
                    let (mut frames, urgent) = state.take_frames();
                    drop(state);
                    // The notice goes first: every message queued after the
                    // drops it reports follows it.
                    if let Some(notice) = notice {
                        frames.push_front(notice);
                    }
                    self.shared.room.notify_waiters();
                    return Batch::Frames { frames, urgent };
                }
                if let Some(reason) = state.close {
                    return Batch::Close(reason);
                }
                state.lag.due_at(now)
            };
            match notice_due {
                Some(due) => {
                    // Boxed: only a connection owed a lagged notice waits
                    // on a timer here, and every writer's task holds this
                    // future while it waits.
                    let notice_timer = Box::pin(tokio::time::sleep_until(due));
                    tokio::select! {
                        () = self.shared.ready.notified() => {}
                        () = notice_timer => {}
                    }
                }
                None => self.shared.ready.notified().await,
            }
        }
    }

    /// Holds the writer's `frames` (a batch of [`Outbound::push_batched`]
    /// frames) until `deadline`, or until an urgent frame is pushed or the
    /// connection is closing, whichever comes first; then appends whatever
    /// was queued meanwhile. The frames held count against the budget no
    /// longer, so during a window a connection may hold up to twice its
    /// budget. An owed lagged notice waits for the next batch, which it
    /// leads.
    ///
    /// # Cancel safety
    /// Cancel safe: frames are appended only on the poll that returns.
    pub async fn gather_until(&self, deadline: Instant, frames: &mut Frames) {
        // Boxed rather than pinned in place: every writer's task holds this
        // future's state, and a timer is most of it.
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        loop {
            let mut ready = std::pin::pin!(self.shared.ready.notified());
            ready.as_mut().enable();
            {
                let mut state = self.state();
                if state.urgent || state.close.is_some() || sleep.is_elapsed() {
                    let (more, _urgent) = state.take_frames();
                    drop(state);
                    frames.extend(more);
                    self.shared.room.notify_waiters();
                    return;
                }
            }
            tokio::select! {
                () = ready => {}
                () = sleep.as_mut() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: CloseReason = CloseReason {
        code: 4002,
        reason: "slow consumer",
        discard_pending: true,
    };

    #[tokio::test]
    async fn frames_come_out_in_order_in_one_batch() {
        let queue = Outbound::new(100);
        for text in ["a", "b", "c"] {
            queue
                .push(Bytes::from_static(text.as_bytes()))
                .expect("fits");
        }
        assert_eq!(queue.queued_bytes(), 3);
        let Batch::Frames { frames, urgent } = queue.next_batch().await else {
            panic!("frames are queued");
        };
        assert!(urgent);
        assert_eq!(
            frames,
            ["a", "b", "c"].map(|t| Bytes::from_static(t.as_bytes()))
        );
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn the_byte_budget_bounds_the_queue() {
        let queue = Outbound::new(10);
        queue.push(Bytes::from(vec![0; 6])).expect("fits");
        assert_eq!(queue.push(Bytes::from(vec![0; 6])), Err(PushError::Full));
        queue.push(Bytes::from(vec![0; 4])).expect("exactly fits");
        assert_eq!(queue.push(Bytes::from(vec![0; 1])), Err(PushError::Full));
    }

    #[test]
    fn an_oversized_frame_fits_an_empty_queue() {
        let queue = Outbound::new(10);
        queue
            .push(Bytes::from(vec![0; 50]))
            .expect("empty queue takes it");
        assert_eq!(queue.push(Bytes::from(vec![0; 1])), Err(PushError::Full));
    }

    #[tokio::test]
    async fn close_discards_or_flushes_pending_frames() {
        let queue = Outbound::new(100);
        queue.push(Bytes::from_static(b"x")).expect("fits");
        assert!(queue.close(SLOW));
        assert!(
            !queue.close(CloseReason { code: 1000, ..SLOW }),
            "first reason wins"
        );
        assert_eq!(queue.push(Bytes::from_static(b"y")), Err(PushError::Closed));
        assert_eq!(
            queue.next_batch().await,
            Batch::Close(SLOW),
            "nothing left to write"
        );

        let queue = Outbound::new(100);
        queue.push(Bytes::from_static(b"x")).expect("fits");
        queue.close(CloseReason {
            discard_pending: false,
            ..SLOW
        });
        assert!(
            matches!(queue.next_batch().await, Batch::Frames { frames, .. } if frames.len() == 1)
        );
        assert!(matches!(queue.next_batch().await, Batch::Close(_)));
    }

    #[tokio::test]
    async fn a_discarding_close_interrupts_a_stuck_writer() {
        let queue = Outbound::new(100);
        let waiter = queue.clone();
        let task = tokio::spawn(async move { waiter.discarded().await });
        tokio::task::yield_now().await;
        queue.close(CloseReason {
            discard_pending: false,
            ..SLOW
        });
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "a flushing close does not interrupt");

        let queue = Outbound::new(100);
        let waiter = queue.clone();
        let task = tokio::spawn(async move { waiter.discarded().await });
        tokio::task::yield_now().await;
        queue.close(SLOW);
        assert_eq!(task.await.expect("waiter"), SLOW);
    }

    #[tokio::test]
    async fn push_when_room_waits_for_the_writer_to_drain() {
        let queue = Outbound::new(10);
        queue.push(Bytes::from(vec![0; 8])).expect("fits");
        let waiter = queue.clone();
        let task =
            tokio::spawn(async move { waiter.push_when_room(Bytes::from(vec![1; 8])).await });
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "the queue is full");
        assert!(matches!(queue.next_batch().await, Batch::Frames { .. }));
        assert_eq!(task.await.expect("task"), Ok(()));
        assert_eq!(queue.queued_bytes(), 8);

        queue.push(Bytes::from(vec![0; 8])).ok();
        let waiter = queue.clone();
        let task =
            tokio::spawn(async move { waiter.push_when_room(Bytes::from(vec![1; 8])).await });
        tokio::task::yield_now().await;
        queue.close(SLOW);
        assert_eq!(task.await.expect("task"), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn the_writer_wakes_on_push() {
        let queue = Outbound::new(100);
        let writer = queue.clone();
        let task = tokio::spawn(async move { writer.next_batch().await });
        tokio::task::yield_now().await;
        queue
            .push_batched(Bytes::from_static(b"late"))
            .expect("fits");
        let batch = task.await.expect("writer");
        assert_eq!(
            batch,
            Batch::Frames {
                frames: [Bytes::from_static(b"late")].into(),
                urgent: false
            }
        );
    }

    fn frames(texts: &[&'static str]) -> Frames {
        texts
            .iter()
            .map(|text| Bytes::from_static(text.as_bytes()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_gathers_batched_frames_until_its_deadline() {
        let queue = Outbound::new(100);
        queue.push_batched(Bytes::from_static(b"a")).expect("fits");
        let Batch::Frames { mut frames, urgent } = queue.next_batch().await else {
            panic!("a frame is queued");
        };
        assert!(!urgent);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(5);
        let producer = queue.clone();
        let pushes = tokio::spawn(async move {
            for text in ["b", "c"] {
                tokio::time::sleep(Duration::from_millis(1)).await;
                producer
                    .push_batched(Bytes::from_static(text.as_bytes()))
                    .expect("fits");
            }
        });
        queue.gather_until(deadline, &mut frames).await;
        assert_eq!(
            Instant::now(),
            deadline,
            "batched frames wait for the deadline"
        );
        assert_eq!(frames, self::frames(&["a", "b", "c"]));
        assert_eq!(queue.queued_bytes(), 0);
        pushes.await.expect("producer");
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_frame_ends_the_window() {
        let queue = Outbound::new(100);
        queue.push_batched(Bytes::from_static(b"a")).expect("fits");
        let Batch::Frames { mut frames, .. } = queue.next_batch().await else {
            panic!("a frame is queued");
        };
        let start = Instant::now();
        let producer = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            producer
                .push_batched(Bytes::from_static(b"b"))
                .expect("fits");
            tokio::time::sleep(Duration::from_millis(1)).await;
            producer.push(Bytes::from_static(b"reply")).expect("fits");
        });
        queue
            .gather_until(start + Duration::from_secs(1), &mut frames)
            .await;
        assert_eq!(Instant::now(), start + Duration::from_millis(2));
        assert_eq!(frames, self::frames(&["a", "b", "reply"]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_ends_the_window() {
        let queue = Outbound::new(100);
        let mut frames = self::frames(&["a"]);
        let closer = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            closer.close(CloseReason {
                discard_pending: false,
                ..SLOW
            });
        });
        let start = Instant::now();
        queue
            .gather_until(start + Duration::from_secs(1), &mut frames)
            .await;
        assert_eq!(Instant::now(), start + Duration::from_millis(1));
        assert_eq!(frames, self::frames(&["a"]));
        assert!(matches!(queue.next_batch().await, Batch::Close(_)));
    }
}
