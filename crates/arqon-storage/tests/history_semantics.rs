//! SPEC §5 history semantics hold for both backends, through one shared
//! test body: oldest first; the newest `limit` matches, or with `after_seq`
//! the oldest `limit` after it; `since`/`until` exclusive; channels apart.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_storage::{Storage, StorageMode};
use support::{check_history_semantics, open_redis, redis_server};

#[tokio::test]
async fn memory_backend() {
    let storage = Storage::in_memory(500);
    check_history_semantics(&storage, || async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_after_flush() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    check_history_semantics(&storage, || async {
        let report = storage.flush(Duration::from_secs(10)).await;
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(storage.status().buffered, 0);
    })
    .await;
}

/// Read right after recording: whatever is still buffered is merged with
/// what Redis already has; the answer is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_while_writing() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    check_history_semantics(&storage, || async {}).await;
}

/// With Redis gone, nothing recorded can reach it: history is served from
/// the outage buffer alone, and it is still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_from_the_buffer_only() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    redis.kill();
    support::eventually("degraded", Duration::from_secs(10), || {
        storage.status().degraded
    })
    .await;
    check_history_semantics(&storage, || async {}).await;
    assert!(storage.status().degraded);
}
