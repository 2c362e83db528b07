//! In-process fan-out: one publish to a channel of N members (encode once,
//! queue N clones). Queues are drained between iterations so that they
//! never fill up.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arqon_config::RoutingConfig;
use arqon_protocol::{ChannelKey, ClientId, Envelope, EnvelopeType, RawJson};
use arqon_routing::{Client, Profile, Publisher, Role, Router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

fn client() -> Arc<Client> {
    Arc::new(Client::new(
        ClientId::generate(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
        Role::User,
        Profile::default(),
        usize::MAX,
    ))
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fanout");
    for members in [10, 1000] {
        let router = Router::new(&RoutingConfig::default(), &[]);
        let key = ChannelKey::new("bench", "fanout").expect("key");
        let clients: Vec<_> = (0..members).map(|_| client()).collect();
        for client in &clients {
            router.join(client, &key).expect("join");
        }
        let payload: RawJson =
            RawValue::from_string(format!(r#"{{"text":"{}"}}"#, "x".repeat(100))).expect("json");
        let mut envelope: Envelope<RawJson> = Envelope::new(EnvelopeType::Message);
        envelope.payload = Some(payload);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("publish_to_{members}"), |b| {
            b.iter(|| {
                let delivery = router
                    .publish(
                        Publisher::Member(&clients[0]),
                        &key,
                        black_box(envelope.clone()),
                        // Echo, so every member (the publisher too) has a
                        // frame to drain below.
                        true,
                    )
                    .expect("publish");
                for client in &clients {
                    black_box(runtime.block_on(client.outbound().next_batch()));
                }
                delivery
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
