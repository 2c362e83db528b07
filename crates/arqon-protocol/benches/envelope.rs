//! Parse + validate + encode of a typical channel message: the work the
//! server does once per published message, before fan-out.

use std::hint::black_box;

use arqon_protocol::{Inbound, decode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn typical_message(payload_bytes: usize) -> String {
    format!(
        r#"{{"version":"1.0","id":"arq_8f14e45fceea167a5a36dedd4bea2543","type":"message","timestamp":"2026-11-26T12:00:00.000Z","room":"science","channel":"explore","payload":{{"text":"{}","n":42}},"metadata":{{"trace":"abc"}}}}"#,
        "x".repeat(payload_bytes)
    )
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for size in [100, 1024] {
        let frame = typical_message(size);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("decode/{size}B"), |b| {
            b.iter(|| decode(black_box(&frame)).is_ok())
        });
        group.bench_function(format!("decode+encode/{size}B"), |b| {
            b.iter(|| {
                let Ok(Inbound::Publish(mut publish)) = decode(black_box(&frame)) else {
                    panic!("the benchmark frame is valid");
                };
                publish.envelope.sender =
                    Some("arq_client_0123456789abcdef0123456789abcdef".into());
                publish.envelope.seq = Some(7);
                publish.envelope.epoch = Some("e1".into());
                publish.envelope.to_json()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
