//! The three-master Redis Cluster test harness (`testing::redis_cluster`):
//! it comes up with every slot assigned, keys in different slots land on
//! their owners and read back through `redis-cli -c`, and dropping it frees
//! its ports.

use std::net::TcpStream;

use arqon_storage::testing::redis_cluster;

#[test]
fn cluster_starts_serves_keys_in_every_slot_and_stops() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        cluster.url(),
        format!(
            "redis-cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    let info = cluster.cli(&["cluster", "info"]);
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");

    // Hash tags chosen to hash into slots owned by different masters.
    let keys = ["{a}x", "{b}x", "{c}x", "{d}x", "{e}x", "{f}x"];
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(cluster.cli(&["set", key, &n.to_string()]), "OK");
    }
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(cluster.cli(&["get", key]), n.to_string(), "{key}");
    }
    let slots: std::collections::HashSet<String> = keys
        .iter()
        .map(|key| cluster.cli(&["cluster", "keyslot", key]))
        .collect();
    assert!(slots.len() > 1, "keys all in one slot: {slots:?}");
    // The keys are spread over the masters, not all on the node redis-cli
    // first talks to.
    let dbsizes: Vec<u64> = ports
        .iter()
        .map(|port| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "dbsize"])
                .output()
                .expect("redis-cli dbsize");
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .parse()
                .expect("dbsize")
        })
        .collect();
    assert_eq!(
        dbsizes.iter().sum::<u64>(),
        keys.len() as u64,
        "{dbsizes:?}"
    );
    assert!(
        dbsizes.iter().filter(|&&n| n > 0).count() > 1,
        "keys all on one master: {dbsizes:?}"
    );

    drop(cluster);
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after drop"
        );
    }
}
