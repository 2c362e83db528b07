//! Cluster semantics of the command layer (SPEC §10), against an in-memory
//! backplane shared by several buses: channel messages sequenced once and
//! delivered on every node in one order, direct messages to a client of
//! another node, joins and presence counted over every node, deletions
//! everywhere, and a node that keeps serving its own clients when the
//! backplane is down. The Redis backplane is tested against a real Redis
//! in `tests/tests/cluster*.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arqon_commands::{Bus, Session};
use arqon_config::Config;
use arqon_protocol::{ChannelKey, ClientId};
use arqon_routing::backplane::{
    self, BackplaneFuture, ChannelMessage, Inbound, Members, NodeStatus, Overview, PresenceNotice,
    Published, SharedChannel, SharedJoin, SharedMessage,
};
use arqon_routing::{Backplane, Batch, Client, PresenceEvent, Profile, Role, Router, RoutingError};
use arqon_storage::Storage;
use bytes::Bytes;
use serde_json::{Value, json};

/// What every node shares: the part of Redis the backplane models.
#[derive(Debug, Default)]
struct Hub {
    state: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    down: bool,
    nodes: Vec<(String, Arc<Router>)>,
    sequences: HashMap<ChannelKey, (Arc<str>, u64)>,
    /// Per channel, member → (its node, its record).
    members: HashMap<ChannelKey, BTreeMap<ClientId, (String, Value)>>,
    clients: HashMap<ClientId, String>,
    records: BTreeMap<ChannelKey, Value>,
}

impl Shared {
    /// Delivers `inbound` on every node, as Redis Pub/Sub would.
    fn broadcast(&self, inbound: &Inbound) {
        for (node, router) in &self.nodes {
            backplane::deliver(router, node, inbound.clone());
        }
    }

    fn deliver_to(&self, node: &str, inbound: Inbound) {
        if let Some((node, router)) = self.nodes.iter().find(|(id, _)| id == node) {
            backplane::deliver(router, node, inbound);
        }
    }

    fn count(&self, key: &ChannelKey) -> u64 {
        self.members
            .get(key)
            .map_or(0, |members| members.len() as u64)
    }
}

/// One node's side of the hub.
#[derive(Debug)]
struct Fake {
    node: String,
    hub: Arc<Hub>,
}

impl Fake {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.hub.state.lock().expect("hub lock")
    }

    fn presence(
        &self,
        shared: &Shared,
        key: &ChannelKey,
        id: &ClientId,
        change: PresenceEvent,
        record: &Value,
    ) {
        shared.broadcast(&Inbound::Presence(PresenceNotice {
            key: key.clone(),
            node: self.node.clone(),
            change,
            client_id: id.clone(),
            count: shared.count(key),
            record: Bytes::from(record.to_string()),
        }));
    }
}

fn ready<T: Send + 'static>(value: T) -> BackplaneFuture<T> {
    Box::pin(std::future::ready(value))
}

impl Backplane for Fake {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn takes_channel_messages(&self) -> bool {
        !self.shared().down
    }

    fn publish(
        &self,
        message: SharedMessage<'_>,
    ) -> BackplaneFuture<Result<Published, RoutingError>> {
        let mut shared = self.shared();
        if shared.down {
            return ready(Err(RoutingError::BackplaneUnavailable));
        }
        let key = message.key.clone();
        let (epoch, seq) = {
            let entry = shared
                .sequences
                .entry(key.clone())
                .or_insert_with(|| (Arc::from(message.epoch), 0));
            entry.1 += 1;
            entry.clone()
        };
        let envelope = message.envelope;
        envelope.sender = Some(
            message
                .sender
                .map_or(arqon_protocol::SERVER_SENDER, ClientId::as_str)
                .to_owned(),
        );
        envelope.room = Some(key.room().to_owned());
        envelope.channel = Some(key.channel().to_owned());
        envelope.seq = Some(seq);
        envelope.epoch = Some(epoch.to_string());
        let frame = Bytes::from(envelope.to_json());
        shared.broadcast(&Inbound::Channel(ChannelMessage {
            key: key.clone(),
            seq,
            epoch: epoch.clone(),
            skip: if message.echo {
                None
            } else {
                message.sender.cloned()
            },
            frame,
        }));
        let members = shared.count(&key);
        ready(Ok(Published {
            seq,
            epoch,
            members,
            stored: true,
        }))
    }

    fn send_direct(
        &self,
        target: &ClientId,
        frame: Bytes,
    ) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        let shared = self.shared();
        if shared.down {
            return None;
        }
        let found = shared.clients.get(target).cloned();
        if let Some(node) = &found {
            shared.deliver_to(
                node,
                Inbound::Direct {
                    target: target.clone(),
                    frame,
                },
            );
        }
        Some(ready(Ok(found.is_some())))
    }

    fn disconnect(&self, target: &ClientId) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        let shared = self.shared();
        let found = shared.clients.get(target).cloned();
        if let Some(node) = &found {
            shared.deliver_to(
                node,
                Inbound::Disconnect {
                    target: target.clone(),
                },
            );
        }
        Some(ready(Ok(found.is_some())))
    }

    fn client_connected(&self, client: &Client) -> BackplaneFuture<()> {
        self.shared()
            .clients
            .insert(client.id().clone(), self.node.clone());
        ready(())
    }

    fn client_disconnected(&self, client: &Client, channels: Vec<ChannelKey>) {
        let mut shared = self.shared();
        shared.clients.remove(client.id());
        for key in channels {
            if let Some(members) = shared.members.get_mut(&key) {
                members.remove(client.id());
            }
        }
    }

    fn joined(
        &self,
        key: &ChannelKey,
        client_id: &ClientId,
        record: Value,
    ) -> BackplaneFuture<Option<SharedJoin>> {
        let mut shared = self.shared();
        if shared.down {
            return ready(None);
        }
        let members = shared.members.entry(key.clone()).or_default();
        let fresh = members
            .insert(client_id.clone(), (self.node.clone(), record.clone()))
            .is_none();
        if fresh {
            self.presence(&shared, key, client_id, PresenceEvent::Join, &record);
        }
        ready(Some(SharedJoin {
            members: shared.count(key),
            sequence: shared.sequences.get(key).cloned(),
        }))
    }

    fn left(&self, key: &ChannelKey, client_id: &ClientId) -> BackplaneFuture<()> {
        let mut shared = self.shared();
        let removed = shared
            .members
            .get_mut(key)
            .and_then(|members| members.remove(client_id));
        if let Some((_, record)) = removed {
            self.presence(&shared, key, client_id, PresenceEvent::Leave, &record);
        }
        ready(())
    }

    fn members(&self, key: &ChannelKey, limit: usize) -> BackplaneFuture<Option<Members>> {
        let shared = self.shared();
        if shared.down {
            return ready(None);
        }
        let records = shared
            .members
            .get(key)
            .map(|members| {
                members
                    .values()
                    .take(limit)
                    .map(|(_, record)| record.clone())
                    .collect()
            })
            .unwrap_or_default();
        ready(Some(Members {
            count: shared.count(key),
            records,
        }))
    }

    fn channel(&self, key: &ChannelKey) -> BackplaneFuture<Option<SharedChannel>> {
        let shared = self.shared();
        ready(Some(SharedChannel {
            record: shared.records.get(key).cloned(),
            sequence: shared.sequences.get(key).cloned(),
        }))
    }

    fn channel_records(&self) -> BackplaneFuture<Vec<Value>> {
        ready(self.shared().records.values().cloned().collect())
    }

    fn register_channel(
        &self,
        key: &ChannelKey,
        record: &Value,
    ) -> BackplaneFuture<Result<bool, RoutingError>> {
        let mut shared = self.shared();
        let fresh = !shared.records.contains_key(key);
        if fresh {
            shared.records.insert(key.clone(), record.clone());
        }
        ready(Ok(fresh))
    }

    fn delete_channel(&self, key: &ChannelKey) -> BackplaneFuture<Result<(), RoutingError>> {
        let mut shared = self.shared();
        shared.records.remove(key);
        shared.members.remove(key);
        shared.broadcast(&Inbound::ChannelDeleted(key.clone()));
        ready(Ok(()))
    }

    fn channel_idle(&self, _key: &ChannelKey) {}

    fn sequence(&self, key: &ChannelKey) -> BackplaneFuture<Option<(Arc<str>, u64)>> {
        ready(self.shared().sequences.get(key).cloned())
    }

    fn overview(&self) -> BackplaneFuture<Option<Overview>> {
        let shared = self.shared();
        let nodes = shared
            .nodes
            .iter()
            .map(|(node, _)| NodeStatus {
                node_id: node.clone(),
                clients: shared.clients.values().filter(|n| *n == node).count() as u64,
                ..NodeStatus::default()
            })
            .collect();
        let channel_members = shared
            .members
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(key, members)| (key.as_str().to_owned(), members.len() as u64))
            .collect();
        ready(Some(Overview {
            degraded: false,
            nodes,
            channel_members,
        }))
    }
}

/// Buses sharing one hub.
fn cluster(nodes: usize) -> (Arc<Hub>, Vec<Arc<Bus>>) {
    let hub = Arc::new(Hub::default());
    let buses = (0..nodes)
        .map(|n| {
            let node = format!("n{n}");
            let bus = Bus::new(&Config::default(), "test", Storage::in_memory(100));
            hub.state
                .lock()
                .expect("hub lock")
                .nodes
                .push((node.clone(), bus.shared_router()));
            let fake = Fake {
                node,
                hub: hub.clone(),
            };
            Arc::new(bus.with_backplane(Arc::new(fake)))
        })
        .collect();
    (hub, buses)
}

/// One client's connection to a bus.
struct Conn {
    session: Session,
    frames: Vec<Bytes>,
    next: u32,
}

impl Conn {
    async fn open(bus: &Arc<Bus>) -> Conn {
        let client = Arc::new(Client::new(
            ClientId::generate(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            Role::Admin,
            Profile::default(),
            1 << 20,
        ));
        bus.router().register(client.clone());
        bus.backplane().client_connected(&client).await;
        Conn {
            session: Session::new(bus.clone(), client),
            frames: Vec::new(),
            next: 0,
        }
    }

    fn id(&self) -> &ClientId {
        self.session.client().id()
    }

    /// Sends one frame and settles the replies it owes.
    async fn send(&mut self, mut frame: Value) {
        self.next += 1;
        frame["version"] = json!("1.0");
        frame["id"] = json!(format!("arq_{}", self.next));
        frame["timestamp"] = json!("2026-01-01T00:00:00Z");
        self.session.on_text(&frame.to_string());
        tokio::time::timeout(Duration::from_secs(5), self.session.resolve_pending())
            .await
            .expect("replies settle");
    }

    async fn command(&mut self, name: &str, args: Value) -> Value {
        self.send(json!({"type": "command", "command": name, "args": args}))
            .await;
        self.recv().await
    }

    async fn publish(&mut self, payload: Value) -> Value {
        self.send(json!({"type": "message", "room": "chat", "channel": "general", "payload": payload, "ack": true}))
            .await;
        self.recv().await
    }

    /// The next frame this client got.
    async fn recv(&mut self) -> Value {
        if self.frames.is_empty() {
            let outbound = self.session.client().outbound();
            let batch = tokio::time::timeout(Duration::from_secs(5), outbound.next_batch())
                .await
                .expect("a frame arrives");
            let Batch::Frames { frames, .. } = batch else {
                panic!("closed: {batch:?}");
            };
            self.frames.extend(frames);
        }
        let frame = self.frames.remove(0);
        serde_json::from_slice(&frame).expect("JSON frame")
    }

    /// Nothing is waiting for this client.
    fn assert_idle(&self) {
        assert!(self.frames.is_empty());
        assert_eq!(self.session.client().outbound().queued_bytes(), 0);
    }
}

fn general() -> Value {
    json!({"room": "chat", "channel": "general"})
}

#[tokio::test]
async fn channel_messages_reach_every_node_in_one_seq_order() {
    let (_hub, buses) = cluster(2);
    let mut a = Conn::open(&buses[0]).await;
    let mut b = Conn::open(&buses[1]).await;
    let mut c = Conn::open(&buses[1]).await;
    for conn in [&mut a, &mut b, &mut c] {
        let joined = conn.command("join_channel", general()).await;
        assert_eq!(joined["status"], "success", "{joined}");
    }
    let ack = a.publish(json!({"n": 1})).await;
    assert_eq!(ack["payload"]["seq"], 1, "{ack}");
    // Three members over the cluster, less the publisher.
    assert_eq!(ack["payload"]["delivered"], 2);
    let message = b.recv().await;
    assert_eq!(
        (message["seq"].as_u64(), message["payload"]["n"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(message["sender"], a.id().as_str());
    let ack = b.publish(json!({"n": 2})).await;
    assert_eq!(ack["payload"]["seq"], 2, "{ack}");
    for (seq, n) in [(1, 1), (2, 2)] {
        let message = c.recv().await;
        assert_eq!(
            (message["seq"].as_u64(), message["payload"]["n"].as_u64()),
            (Some(seq), Some(n))
        );
    }
    let message = a.recv().await;
    assert_eq!(message["payload"]["n"], 2);
    a.assert_idle();
    b.assert_idle();
    // A later join on either node starts from the shared sequence.
    let mut d = Conn::open(&buses[0]).await;
    let joined = d.command("join_channel", general()).await;
    assert_eq!(joined["payload"]["seq"], 2, "{joined}");
    assert_eq!(joined["payload"]["participant_count"], 4);
}

#[tokio::test]
async fn direct_messages_find_the_node_of_their_target() {
    let (_hub, buses) = cluster(2);
    let mut a = Conn::open(&buses[0]).await;
    let mut b = Conn::open(&buses[1]).await;
    let target = b.id().clone();
    a.send(json!({"type": "message", "to_client": target, "payload": {"hi": true}, "ack": true}))
        .await;
    let ack = a.recv().await;
    assert_eq!(ack["payload"]["delivered"], 1, "{ack}");
    let message = b.recv().await;
    assert_eq!(message["payload"]["hi"], true);
    assert_eq!(message["sender"], a.id().as_str());
    let nobody = ClientId::generate();
    a.send(json!({"type": "message", "to_client": nobody, "payload": {}}))
        .await;
    let error = a.recv().await;
    assert_eq!(error["error_code"], "TARGET_NOT_FOUND", "{error}");
}

#[tokio::test]
async fn joins_and_presence_count_the_members_of_every_node() {
    let (_hub, buses) = cluster(2);
    let mut a = Conn::open(&buses[0]).await;
    let mut b = Conn::open(&buses[1]).await;
    let joined = b
        .command(
            "join_channel",
            json!({"room": "chat", "channel": "general", "presence": true}),
        )
        .await;
    assert_eq!(joined["payload"]["participant_count"], 1, "{joined}");
    let joined = a.command("join_channel", general()).await;
    assert_eq!(joined["payload"]["participant_count"], 2, "{joined}");
    // The member of the other node hears of the join.
    let event = b.recv().await;
    assert_eq!(event["payload"]["event"], "join", "{event}");
    assert_eq!(event["payload"]["client"]["client_id"], a.id().as_str());
    let presence = a.command("presence", general()).await;
    assert_eq!(presence["payload"]["count"], 2, "{presence}");
    let info = a.command("channel_info", general()).await;
    assert_eq!(info["payload"]["participant_count"], 2, "{info}");
    assert_eq!(
        info["payload"]["participants"].as_array().map(Vec::len),
        Some(2)
    );
    let listed = a.command("list_channels", json!({"room": "chat"})).await;
    assert_eq!(
        listed["payload"]["channels"][0]["participant_count"], 2,
        "{listed}"
    );
    let status = a.command("status", json!({})).await;
    assert_eq!(
        status["payload"]["cluster"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(status["payload"]["subscriptions"], 2, "{status}");
}

#[tokio::test]
async fn channels_are_created_and_deleted_on_every_node() {
    let (_hub, buses) = cluster(2);
    let mut a = Conn::open(&buses[0]).await;
    let mut b = Conn::open(&buses[1]).await;
    let created = a
        .command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(created["status"], "success", "{created}");
    // The name is taken on every node.
    let again = b
        .command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(again["error_code"], "CHANNEL_EXISTS", "{again}");
    b.command("join_channel", json!({"room": "ops", "channel": "alerts"}))
        .await;
    // A member on another node keeps the channel from going...
    let refused = a
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(refused["error_code"], "CHANNEL_NOT_EMPTY", "{refused}");
    // ...unless forced: it is told, and the channel is gone everywhere.
    let deleted = a
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts", "force": true}),
        )
        .await;
    assert_eq!(deleted["payload"]["removed_members"], 1, "{deleted}");
    let notice = b.recv().await;
    assert_eq!(notice["payload"]["event"], "channel_deleted", "{notice}");
    assert!(
        buses[1]
            .router()
            .channel(&ChannelKey::new("ops", "alerts").expect("key"))
            .is_none()
    );
    let info = b
        .command("channel_info", json!({"room": "ops", "channel": "alerts"}))
        .await;
    assert_eq!(info["error_code"], "CHANNEL_NOT_FOUND", "{info}");
}

#[tokio::test]
async fn a_node_serves_its_own_clients_while_the_backplane_is_down() {
    let (hub, buses) = cluster(2);
    let mut a = Conn::open(&buses[0]).await;
    let mut here = Conn::open(&buses[0]).await;
    let mut there = Conn::open(&buses[1]).await;
    for conn in [&mut a, &mut here, &mut there] {
        conn.command("join_channel", general()).await;
    }
    hub.state.lock().expect("hub lock").down = true;
    let ack = a.publish(json!({"n": 1})).await;
    // Routed on this node: its one other member got it, stored locally.
    assert_eq!(ack["payload"]["delivered"], 1, "{ack}");
    assert_eq!(ack["payload"]["stored"], true);
    let message = here.recv().await;
    assert_eq!(message["payload"]["n"], 1);
    there.assert_idle();
    // A client of another node cannot be reached meanwhile.
    let target = there.id().clone();
    a.send(json!({"type": "message", "to_client": target, "payload": {}}))
        .await;
    let error = a.recv().await;
    assert_eq!(error["error_code"], "TARGET_NOT_FOUND", "{error}");
}

#[tokio::test]
async fn a_single_node_has_nothing_to_share() {
    let bus = Arc::new(Bus::new(
        &Config::default(),
        "test",
        Storage::in_memory(100),
    ));
    let mut a = Conn::open(&bus).await;
    let mut b = Conn::open(&bus).await;
    a.command("join_channel", general()).await;
    b.command("join_channel", general()).await;
    let ack = a.publish(json!({"n": 1})).await;
    assert_eq!(
        (
            ack["payload"]["seq"].as_u64(),
            ack["payload"]["delivered"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(b.recv().await["payload"]["n"], 1);
    let status = a.command("status", json!({})).await;
    assert!(status["payload"].get("cluster").is_none(), "{status}");
}
