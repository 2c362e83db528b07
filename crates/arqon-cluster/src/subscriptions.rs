//! Which channels' Pub/Sub this node subscribes to: exactly those it has
//! local members in.
//!
//! One task owns the changes. A join or leave that finds the subscription
//! already as wanted returns at once, reading a set under a short lock;
//! otherwise it asks the task through a bounded queue and waits for its
//! answer. The task takes every waiting request, reads the wanted state
//! when it gets to them (so a join and a leave racing on one channel end
//! in the right state), and sends one `SUBSCRIBE` and one `UNSUBSCRIBE`
//! for all of them, holding no lock while Redis answers.

use std::collections::HashSet;
use std::sync::{Mutex, Weak};

use arqon_protocol::ChannelKey;
use arqon_storage::layout;
use fred::prelude::PubsubInterface;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::ClusterError;
use crate::node::{Inner, lock};

/// Requests the task takes at once, at most.
const BATCH: usize = 256;

/// A channel whose subscription may have to change; the answer says
/// whether the task subscribed to it now.
#[derive(Debug)]
pub(crate) struct Request {
    key: ChannelKey,
    done: oneshot::Sender<Result<bool, ClusterError>>,
}

/// The subscribed set and the way to the task that changes it.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    /// Written by the task alone.
    subscribed: Mutex<HashSet<ChannelKey>>,
    requests: mpsc::Sender<Request>,
}

impl Subscriptions {
    /// The handle, and the queue to give [`run`].
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Request>) {
        let (requests, queue) = mpsc::channel(capacity.max(1));
        let subscriptions = Self {
            subscribed: Mutex::new(HashSet::new()),
            requests,
        };
        (subscriptions, queue)
    }

    /// Brings the subscription to `key` in line with `wanted`. Returns
    /// whether this call subscribed to it.
    ///
    /// # Cancel safety
    /// Cancel safe: a request already queued is carried out anyway.
    pub(crate) async fn sync(&self, key: &ChannelKey, wanted: bool) -> Result<bool, ClusterError> {
        if lock(&self.subscribed).contains(key) == wanted {
            return Ok(false);
        }
        let (done, answer) = oneshot::channel();
        let request = Request {
            key: key.clone(),
            done,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| ClusterError::Stopped)?;
        answer.await.unwrap_or(Err(ClusterError::Stopped))
    }
}

/// Changes subscriptions as requested until `stop` or until the cluster
/// handle is gone.
pub(crate) async fn run(
    inner: Weak<Inner>,
    mut queue: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let taken = tokio::select! {
            () = stop.cancelled() => return,
            taken = queue.recv_many(&mut batch, BATCH) => taken,
        };
        if taken == 0 {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        apply(&inner, &mut batch).await;
    }
}

/// Carries out one batch of requests and answers them.
async fn apply(inner: &Inner, batch: &mut Vec<Request>) {
    let keys: HashSet<&ChannelKey> = batch.iter().map(|request| &request.key).collect();
    let (subscribe, unsubscribe) = {
        let local = lock(&inner.local);
        let subscribed = lock(&inner.subscriptions.subscribed);
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for key in keys {
            match (local.channels.contains_key(key), subscribed.contains(key)) {
                (true, false) => subscribe.push(key.clone()),
                (false, true) => unsubscribe.push(key.clone()),
                _ => {}
            }
        }
        (subscribe, unsubscribe)
    };
    // The mirror of a channel this node stops listening to goes first:
    // its notices stop meaning anything.
    {
        let mut remote = lock(&inner.remote);
        for key in &unsubscribe {
            remote.remove(key);
        }
    }
    let names =
        |keys: &[ChannelKey]| -> Vec<String> { keys.iter().map(layout::live_channel).collect() };
    let subscribed = if subscribe.is_empty() {
        Ok(())
    } else {
        inner
            .subscriber
            .subscribe(names(&subscribe))
            .await
            .map_err(ClusterError::redis("subscribe"))
    };
    let unsubscribed = if unsubscribe.is_empty() {
        Ok(())
    } else {
        inner
            .subscriber
            .unsubscribe(names(&unsubscribe))
            .await
            .map_err(ClusterError::redis("unsubscribe"))
    };
    if subscribed.is_err() || unsubscribed.is_err() {
        // The heartbeat retries, and rewrites presence.
        inner
            .dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    {
        let mut set = lock(&inner.subscriptions.subscribed);
        let mut remote = lock(&inner.remote);
        if subscribed.is_ok() {
            for key in &subscribe {
                set.insert(key.clone());
                remote.entry(key.clone()).or_default();
            }
        }
        if unsubscribed.is_ok() {
            for key in &unsubscribe {
                set.remove(key);
            }
        }
    }
    for request in batch.drain(..) {
        let answer = if subscribe.contains(&request.key) {
            subscribed.clone().map(|()| true)
        } else if unsubscribe.contains(&request.key) {
            unsubscribed.clone().map(|()| false)
        } else {
            Ok(false)
        };
        // The caller may have stopped waiting: the change stands anyway.
        let _ = request.done.send(answer);
    }
}
