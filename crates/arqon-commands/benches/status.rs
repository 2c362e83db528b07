//! `status` on a bus with 10,000 channels: the command reads each channel's
//! member count (an atomic, no lock) and selects the 100 largest with a
//! linear-time selection, so its cost grows with the channel count but
//! never waits on a client.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arqon_commands::{Bus, Ctx, Dispatched, dispatch};
use arqon_config::Config;
use arqon_protocol::{ChannelKey, ClientId, CommandRequest, MessageId};
use arqon_routing::{Client, Profile, Role};
use arqon_storage::Storage;
use criterion::{Criterion, criterion_group, criterion_main};

fn status(c: &mut Criterion) {
    let mut group = c.benchmark_group("status");
    for channels in [100, 10_000] {
        let bus = Arc::new(Bus::new(
            &Config::default(),
            "bench",
            Storage::in_memory(500),
        ));
        let client = Arc::new(Client::new(
            ClientId::generate(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            Role::Admin,
            Profile::default(),
            usize::MAX,
        ));
        let members: Vec<Arc<Client>> = (0..channels)
            .map(|_| {
                Arc::new(Client::new(
                    ClientId::generate(),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 2)),
                    Role::User,
                    Profile::default(),
                    1024,
                ))
            })
            .collect();
        let router = bus.router();
        for (i, member) in members.iter().enumerate() {
            let key = ChannelKey::new(&format!("room{}", i % 100), &format!("ch{i}")).expect("key");
            router.join(member, &key).expect("join");
        }
        let request = CommandRequest {
            id: MessageId::new("arq_bench").expect("id"),
            name: "status".to_owned(),
            args: serde_json::Map::new(),
        };
        group.bench_function(format!("{channels}_channels"), |b| {
            b.iter(|| {
                let ctx = Ctx {
                    bus: &bus,
                    client: &client,
                };
                match dispatch(ctx, black_box(&request)) {
                    Dispatched::Done(result) => result.expect("status"),
                    Dispatched::Later(_) => unreachable!("status answers at once"),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, status);
criterion_main!(benches);
