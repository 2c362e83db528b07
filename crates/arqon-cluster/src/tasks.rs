//! The node's long-running cluster tasks, each on the bus's task tracker
//! and ended by its stop signal: the publisher (queued publishes to
//! Redis, in order), the pump (Pub/Sub messages to this node's clients)
//! and the heartbeat.

use std::sync::{Arc, Weak};

use arqon_routing::backplane::{self, Inbound, Published};
use bytes::Bytes;
use fred::error::{Error, ErrorKind};
use fred::prelude::{Client, ClientLike, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ClusterError;
use crate::frame;
use crate::node::{Cluster, Inner, PublishJob, lock};
use crate::presence::mirror;

/// Sends queued publishes to Redis in order, one pipeline per batch of at
/// most `batch`, until stopped or every handle is gone.
pub(crate) async fn publisher(
    client: Client,
    mut jobs: mpsc::Receiver<PublishJob>,
    batch: usize,
    stop: CancellationToken,
) {
    let limit = batch.max(1);
    let mut batch = Vec::with_capacity(limit);
    loop {
        let taken = tokio::select! {
            () = stop.cancelled() => return,
            taken = jobs.recv_many(&mut batch, limit) => taken,
        };
        if taken == 0 {
            return;
        }
        send_batch(&client, &mut batch).await;
    }
}

/// One pipeline of publishes; every job gets its own result.
async fn send_batch(client: &Client, batch: &mut Vec<PublishJob>) {
    let short = || Error::new(ErrorKind::Protocol, "short pipeline reply");
    let pipeline = client.pipeline();
    let mut queued = Ok(());
    for job in batch.iter() {
        let (command, args) = job.script.clone();
        queued = pipeline.custom::<(), _>(command, args).await;
        if queued.is_err() {
            break;
        }
    }
    let results = match queued {
        Ok(()) => pipeline.try_all::<Value>().await,
        Err(error) => vec![Err(error)],
    };
    let whole = (results.len() != batch.len()).then(|| {
        results
            .iter()
            .find_map(|result| result.as_ref().err().cloned())
            .unwrap_or_else(short)
    });
    let mut results = results.into_iter();
    for job in batch.drain(..) {
        let result = match &whole {
            Some(error) => Err(error.clone()),
            None => results
                .next()
                .unwrap_or_else(|| Err(short()))
                .and_then(Value::convert::<(u64, String, u64, i64)>),
        };
        let result = result
            .map(|(seq, epoch, members, stored)| Published {
                seq,
                epoch: Arc::from(epoch),
                members,
                stored: stored == 1,
            })
            .map_err(ClusterError::redis("publish"));
        // The publisher may have stopped waiting: its message is out.
        let _ = job.reply.send(result);
    }
}

/// Renews this node's presence every heartbeat until stopped.
pub(crate) async fn heartbeat(inner: Weak<Inner>, stop: CancellationToken) {
    let Some(period) = inner.upgrade().map(|inner| inner.settings.heartbeat) else {
        return;
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let cluster = Cluster { inner };
        tokio::select! {
            () = stop.cancelled() => return,
            () = cluster.heartbeat_once(false) => {}
        }
    }
}

/// Delivers what arrives on Pub/Sub to this node's clients until stopped.
/// Presence notices of other nodes also update the mirror of their
/// members; a deleted channel's presence here is cleaned up in the
/// background.
pub(crate) async fn pump(
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    inner: Weak<Inner>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = messages.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "cluster: Pub/Sub messages lost: this node read them too slowly"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(payload) = message.value.as_bytes().map(Bytes::copy_from_slice) else {
            continue;
        };
        let Some(inbound) = frame::decode(&message.channel, payload) else {
            tracing::debug!(channel = %&*message.channel, "cluster: unreadable Pub/Sub message ignored");
            continue;
        };
        let Some(inner) = inner.upgrade() else { return };
        let cluster = Cluster { inner };
        match &inbound {
            Inbound::Presence(notice) if notice.node != cluster.node_id() => {
                mirror(&mut lock(&cluster.inner.remote), notice);
            }
            Inbound::ChannelDeleted(key) => {
                let (cluster, key) = (cluster.clone(), key.clone());
                cluster.inner.tasks.clone().spawn(async move {
                    if let Err(error) = cluster.channel_gone(&key).await {
                        tracing::debug!(channel = %key, %error, "cluster: presence of a deleted channel expires with the node TTL");
                    }
                });
            }
            _ => {}
        }
        backplane::deliver(&cluster.inner.router, cluster.node_id(), inbound);
    }
}
