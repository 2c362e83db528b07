//! `record` cost per backend, and Redis write throughput: record a burst
//! and flush it (one pipeline per batch, not one round trip per message).
//! The Redis part runs only when `redis-server` is installed.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use arqon_storage::{Storage, StorageMode};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use support::{entry, key};

fn memory(c: &mut Criterion) {
    let storage = Storage::in_memory(500);
    let chat = key("bench", "chat");
    let mut seq = 0u64;
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory", |b| {
        b.iter_batched(
            || {
                seq += 1;
                entry(&chat, "e", seq)
            },
            |entry| storage.record(entry, true),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Some(server) = support::redis_server() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let storage = runtime.block_on(support::open_redis(&server.url(), StorageMode::Degraded));
    let chat = key("bench", "redis");
    let mut seq = 0u64;
    const BURST: u64 = 10_000;
    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(10);
    group.bench_function("record_and_flush_10k", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                seq += 1;
                drop(storage.record(entry(&chat, "e", seq), false));
            }
            let report = runtime.block_on(storage.flush(Duration::from_secs(60)));
            assert!(report.is_complete());
        });
    });
    group.finish();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
