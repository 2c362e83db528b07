//! Routing rules without sockets: channel isolation, sender exclusion and
//! echo, NOT_SUBSCRIBED, direct delivery, join/leave bookkeeping, limits,
//! deletion, the slow-consumer policies, and cleanup on unregister.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arqon_config::{RoutingConfig, SlowConsumerPolicy};
use arqon_protocol::{ChannelKey, ClientId, Envelope, EnvelopeType, ErrorCode, RawJson};
use arqon_routing::{
    Batch, ChannelSpec, Client, JoinOptions, Profile, Publisher, Role, Router, RoutingError,
};
use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Duration;

fn client_with_queue(bytes: usize) -> Arc<Client> {
    Arc::new(Client::new(
        ClientId::generate(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
        Role::User,
        Profile::default(),
        bytes,
    ))
}

fn client() -> Arc<Client> {
    client_with_queue(1 << 20)
}

fn key(text: &str) -> ChannelKey {
    ChannelKey::parse(text).expect("valid key")
}

fn message(text: &str) -> Envelope<RawJson> {
    let mut envelope = Envelope::new(EnvelopeType::Message);
    envelope.payload =
        Some(RawValue::from_string(format!(r#"{{"text":"{text}"}}"#)).expect("json"));
    envelope
}

/// Everything queued for `client` so far, parsed.
fn received(client: &Client) -> Vec<Value> {
    let mut frames = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("rt");
    runtime.block_on(async {
        while let Ok(Batch::Frames { frames: batch, .. }) = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            client.outbound().next_batch(),
        )
        .await
        {
            frames.extend(batch);
        }
    });
    frames
        .iter()
        .map(|f| serde_json::from_slice(f).expect("json"))
        .collect()
}

fn router() -> Router {
    Router::new(
        &RoutingConfig::default(),
        &[key("integriguard:telemetry-stream")],
    )
}

#[test]
fn rooms_are_isolated_and_the_sender_is_excluded() {
    let router = router();
    let (scientist, other_scientist, chatter) = (client(), client(), client());
    for c in [&scientist, &other_scientist, &chatter] {
        router.register(c.clone());
    }
    router
        .join(&scientist, &key("science:explore"))
        .expect("join");
    router
        .join(&other_scientist, &key("science:explore"))
        .expect("join");
    router.join(&chatter, &key("chat:public")).expect("join");

    let delivery = router
        .publish(
            Publisher::Member(&scientist),
            &key("science:explore"),
            message("hello"),
            false,
        )
        .expect("publish");
    assert_eq!(delivery.delivered, 1);
    assert_eq!(delivery.seq, Some(1));

    let got = received(&other_scientist);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["payload"]["text"], "hello");
    assert_eq!(got[0]["sender"], scientist.id().as_str());
    assert_eq!(got[0]["room"], "science");
    assert_eq!(got[0]["seq"], 1);
    assert!(received(&scientist).is_empty());
    assert!(received(&chatter).is_empty());
}

#[test]
fn echo_includes_the_sender() {
    let router = router();
    let sender = client();
    router.join(&sender, &key("a:b")).expect("join");
    let delivery = router
        .publish(Publisher::Member(&sender), &key("a:b"), message("me"), true)
        .expect("publish");
    assert_eq!(delivery.delivered, 1);
    assert_eq!(received(&sender).len(), 1);
}

#[test]
fn publishing_needs_an_existing_channel_and_a_subscription() {
    let router = router();
    let outsider = client();
    let err = router
        .publish(
            Publisher::Member(&outsider),
            &key("no:where"),
            message("x"),
            false,
        )
        .expect_err("missing");
    assert_eq!(err.code(), ErrorCode::ChannelNotFound);
    let member = client();
    router.join(&member, &key("a:b")).expect("join");
    let err = router
        .publish(
            Publisher::Member(&outsider),
            &key("a:b"),
            message("x"),
            false,
        )
        .expect_err("not joined");
    assert_eq!(err.code(), ErrorCode::NotSubscribed);

    let open = Router::new(
        &RoutingConfig {
            publish_requires_join: false,
            ..RoutingConfig::default()
        },
        &[],
    );
    open.join(&member, &key("a:b")).expect("join");
    assert_eq!(
        open.publish(
            Publisher::Member(&outsider),
            &key("a:b"),
            message("x"),
            false
        )
        .expect("allowed")
        .delivered,
        1
    );
}

#[test]
fn seq_counts_per_channel_and_every_member_sees_the_same_order() {
    let router = router();
    let members: Vec<_> = (0..4).map(|_| client()).collect();
    for m in &members {
        router.join(m, &key("a:b")).expect("join");
    }
    for i in 0..50 {
        router
            .publish(
                Publisher::Member(&members[i % 4]),
                &key("a:b"),
                message(&i.to_string()),
                true,
            )
            .expect("publish");
    }
    for m in &members {
        let seqs: Vec<u64> = received(m)
            .iter()
            .map(|v| v["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }
    assert_eq!(router.channel(&key("a:b")).expect("channel").last_seq(), 50);
}

#[test]
fn direct_messages_reach_only_their_target() {
    let router = router();
    let (alice, bob, carol) = (client(), client(), client());
    for c in [&alice, &bob, &carol] {
        router.register(c.clone());
    }
    let delivery = router
        .send_direct(&alice, bob.id(), message("psst"))
        .expect("direct");
    assert_eq!((delivery.delivered, delivery.seq), (1, None));
    let got = received(&bob);
    assert_eq!(got[0]["to_client"], bob.id().as_str());
    assert_eq!(got[0]["sender"], alice.id().as_str());
    assert!(received(&carol).is_empty());
    let err = router
        .send_direct(&alice, &ClientId::generate(), message("?"))
        .expect_err("unknown");
    assert_eq!(err.code(), ErrorCode::TargetNotFound);
}

#[test]
fn joins_are_idempotent_and_counted() {
    let router = router();
    let (a, b) = (client(), client());
    let first = router.join(&a, &key("r:c")).expect("join");
    assert!(first.created && !first.already_member);
    assert_eq!(first.participant_count, 1);
    let again = router.join(&a, &key("r:c")).expect("join");
    assert!(again.already_member && !again.created);
    assert_eq!(
        router
            .join(&b, &key("r:c"))
            .expect("join")
            .participant_count,
        2
    );
    assert_eq!(router.snapshot(10).subscriptions, 2);
    assert!(router.leave(&a, &key("r:c")).expect("leave"));
    assert!(!router.leave(&a, &key("r:c")).expect("leave"));
    assert_eq!(
        router.leave(&a, &key("x:y")).expect_err("missing").code(),
        ErrorCode::ChannelNotFound
    );
    assert_eq!(router.snapshot(10).subscriptions, 1);
}

#[test]
fn limits_are_enforced() {
    let config = RoutingConfig {
        max_channel_members: 1,
        max_subscriptions: 2,
        ..RoutingConfig::default()
    };
    let router = Router::new(&config, &[]);
    let (a, b) = (client(), client());
    router.join(&a, &key("r:one")).expect("join");
    assert!(matches!(
        router.join(&b, &key("r:one")),
        Err(RoutingError::ChannelFull { max: 1, .. })
    ));
    router.join(&a, &key("r:two")).expect("join");
    assert_eq!(
        router.join(&a, &key("r:three")).expect_err("limit").code(),
        ErrorCode::SubscriptionLimit
    );

    let closed = Router::new(
        &RoutingConfig {
            auto_create_channels: false,
            ..RoutingConfig::default()
        },
        &[],
    );
    assert_eq!(
        closed
            .join(&a, &key("r:c"))
            .expect_err("no auto-create")
            .code(),
        ErrorCode::ChannelNotFound
    );
}

#[test]
fn unregister_removes_the_client_everywhere() {
    let router = router();
    let (a, b) = (client(), client());
    router.register(a.clone());
    router.register(b.clone());
    router.join(&a, &key("r:c")).expect("join");
    router.join(&a, &key("r:d")).expect("join");
    router.join(&b, &key("r:c")).expect("join");
    router.unregister(&a);
    assert!(router.client(a.id()).is_none());
    assert!(
        !router
            .channel(&key("r:c"))
            .expect("channel")
            .has_member(a.id())
    );
    assert_eq!(
        router.channel(&key("r:d")).expect("channel").member_count(),
        0
    );
    assert_eq!(router.snapshot(10).subscriptions, 1);
    assert_eq!(
        router
            .publish(Publisher::Member(&b), &key("r:c"), message("x"), false)
            .expect("publish")
            .delivered,
        0
    );
}

#[test]
fn a_full_queue_disconnects_or_drops_that_subscriber_only() {
    for policy in [SlowConsumerPolicy::Disconnect, SlowConsumerPolicy::Drop] {
        let router = Router::new(
            &RoutingConfig {
                slow_consumer: policy,
                ..RoutingConfig::default()
            },
            &[],
        );
        let (sender, healthy, stalled) = (client(), client(), client_with_queue(300));
        for c in [&sender, &healthy, &stalled] {
            router.join(c, &key("r:c")).expect("join");
        }
        for i in 0..20 {
            router
                .publish(
                    Publisher::Member(&sender),
                    &key("r:c"),
                    message(&i.to_string()),
                    false,
                )
                .expect("publish");
        }
        assert_eq!(received(&healthy).len(), 20, "{policy:?}");
        match policy {
            SlowConsumerPolicy::Disconnect => {
                assert!(stalled.outbound().is_closing());
                assert_eq!(
                    router
                        .stats()
                        .slow_disconnects
                        .load(std::sync::atomic::Ordering::Relaxed),
                    1
                );
            }
            SlowConsumerPolicy::Drop => {
                assert!(!stalled.outbound().is_closing());
                let frames = received(&stalled);
                let (notices, messages): (Vec<_>, Vec<_>) =
                    frames.iter().partition(|frame| frame["type"] == "system");
                let kept = messages.len();
                assert!(kept > 0 && kept < 20, "kept {kept}");
                // What was dropped is owed a lagged notice (SPEC §16).
                assert_eq!(notices.len(), 1, "{notices:?}");
                assert_eq!(notices[0]["payload"]["event"], "lagged");
                assert_eq!(notices[0]["payload"]["dropped"], 20 - kept as u64);
                assert_eq!(
                    router
                        .stats()
                        .dropped
                        .load(std::sync::atomic::Ordering::Relaxed) as usize,
                    20 - kept
                );
            }
        }
    }
}

#[test]
fn system_channels_cannot_be_deleted_and_deletion_needs_force() {
    let router = router();
    let system = key("integriguard:telemetry-stream");
    assert_eq!(
        router
            .delete_channel(&system, true, Bytes::new())
            .expect_err("system")
            .code(),
        ErrorCode::Forbidden
    );
    assert_eq!(
        router
            .create_channel(system, Default::default())
            .expect_err("system")
            .code(),
        ErrorCode::Forbidden
    );

    let member = client();
    router.join(&member, &key("lab:one")).expect("join");
    router.join(&member, &key("lab:two")).expect("join");
    assert_eq!(
        router
            .create_channel(key("lab:one"), Default::default())
            .expect_err("exists")
            .code(),
        ErrorCode::ChannelExists
    );
    let err = router
        .delete_channel(&key("lab:one"), false, Bytes::new())
        .expect_err("members");
    assert_eq!(err.code(), ErrorCode::ChannelNotEmpty);
    let removed = router
        .delete_channel(&key("lab:one"), true, Bytes::from_static(b"{\"notice\":1}"))
        .expect("forced");
    assert_eq!(removed, 1);
    assert!(!member.is_subscribed(&key("lab:one")));
    assert_eq!(received(&member), [serde_json::json!({"notice": 1})]);
    assert_eq!(router.snapshot(10).rooms, 2, "lab still has a channel");
    router
        .delete_channel(&key("lab:two"), true, Bytes::from_static(b"{}"))
        .expect("forced");
    assert_eq!(
        router.snapshot(10).rooms,
        1,
        "the room went with its last channel"
    );
    assert_eq!(
        router.channels(Some("lab")).expect_err("gone").code(),
        ErrorCode::RoomNotFound
    );
}

#[test]
fn snapshot_lists_the_largest_channels_first() {
    let router = router();
    let clients: Vec<_> = (0..6).map(|_| client()).collect();
    for (i, c) in clients.iter().enumerate() {
        router.register(c.clone());
        for n in 0..=i % 3 {
            router.join(c, &key(&format!("r:c{n}"))).expect("join");
        }
    }
    let snapshot = router.snapshot(2);
    assert_eq!(snapshot.clients, 6);
    assert_eq!(snapshot.channels, 4);
    assert_eq!(
        snapshot.largest_channels,
        vec![(key("r:c0"), 6), (key("r:c1"), 4)]
    );
    assert_eq!(snapshot.clients_by_type["human"], 6);
}

#[test]
fn the_sequenced_hook_sees_messages_in_seq_order_with_their_frames() {
    let router = router();
    let member = client();
    router.join(&member, &key("r:c")).expect("join");
    let mut seen = Vec::new();
    for i in 0..5 {
        let (delivery, (seq, frame)) = router
            .publish_with(
                Publisher::Member(&member),
                &key("r:c"),
                message(&i.to_string()),
                true,
                |s| (s.seq, s.frame.clone()),
            )
            .expect("publish");
        assert_eq!(delivery.seq, Some(seq));
        seen.push(seq);
        let delivered = received(&member);
        assert_eq!(delivered.len(), 1);
        assert_eq!(
            delivered[0],
            serde_json::from_slice::<Value>(&frame).expect("json")
        );
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
}

#[test]
fn restored_channels_continue_their_seq_and_keep_their_epoch() {
    let router = router();
    router.restore_channel(key("old:news"), "e-restored".into(), 41);
    let member = client();
    let joined = router.join(&member, &key("old:news")).expect("join");
    assert_eq!(
        (joined.seq, &*joined.epoch, joined.created),
        (41, "e-restored", false)
    );
    let delivery = router
        .publish(
            Publisher::Member(&member),
            &key("old:news"),
            message("x"),
            false,
        )
        .expect("publish");
    assert_eq!(delivery.seq, Some(42));
    // Restoring again does not reset a live channel.
    router.restore_channel(key("old:news"), "other".into(), 0);
    assert_eq!(
        router
            .channel(&key("old:news"))
            .expect("channel")
            .last_seq(),
        42
    );
}

/// Storage lost a channel's history (SPEC §18): the channel starts a new
/// epoch at seq 1, once per loss, and a join reports it.
#[test]
fn a_lost_history_restarts_the_epoch_once() {
    let router = router();
    let channel = key("lost:chat");
    router.restore_channel(channel.clone(), "e-old".into(), 400);
    let member = client();
    router.join(&member, &channel).expect("join");
    let publish = |text: &str| {
        router
            .publish(Publisher::Member(&member), &channel, message(text), false)
            .expect("publish")
    };
    assert_eq!(publish("a").seq, Some(401));
    // Not the channel's epoch (already restarted, or never it): nothing.
    assert_eq!(router.restart_epoch(&channel, "e-other"), None);
    assert_eq!(router.restart_epoch(&key("lost:none"), "e-old"), None);
    let fresh = router
        .restart_epoch(&channel, "e-old")
        .expect("a new epoch");
    assert_ne!(&*fresh, "e-old");
    // The same loss reported again changes nothing.
    assert_eq!(router.restart_epoch(&channel, "e-old"), None);
    let delivery = publish("b");
    assert_eq!(
        (delivery.seq, delivery.epoch.as_deref()),
        (Some(1), Some(&*fresh))
    );
    let joined = router.join(&client(), &channel).expect("join");
    assert_eq!((joined.seq, &*joined.epoch), (1, &*fresh));
}

/// Cluster mode: a `join` or `history` elsewhere on the node may read the
/// channel's `seq` from Redis before Redis's broadcast of that message has
/// arrived here. The broadcast must still reach every local member, and the
/// channel must not move its `seq` backwards.
#[test]
fn a_sequenced_message_is_delivered_even_after_its_seq_was_learnt() {
    let router = router();
    let (member, sender) = (client(), client());
    router.register(member.clone());
    let channel = key("science:explore");
    router.join(&member, &channel).expect("join");
    let epoch = router.channel(&channel).expect("channel").epoch();

    router.sync_sequence(&channel, &epoch, 5);
    let frame = Bytes::from_static(br#"{"seq":5}"#);
    assert_eq!(
        router.deliver_sequenced(&channel, 5, &epoch, &frame, Some(sender.id())),
        1
    );
    let frame = Bytes::from_static(br#"{"seq":4}"#);
    assert_eq!(
        router.deliver_sequenced(&channel, 4, &epoch, &frame, None),
        1
    );
    let seqs: Vec<Value> = received(&member).iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(seqs, [Value::from(5), Value::from(4)]);
    assert_eq!(router.channel(&channel).expect("channel").sequence().1, 5);

    // The sender is skipped; another epoch is adopted with its seq.
    router.join(&sender, &channel).expect("join");
    let frame = Bytes::from_static(br#"{"seq":1}"#);
    assert_eq!(
        router.deliver_sequenced(&channel, 1, "fresh", &frame, Some(sender.id())),
        1
    );
    assert!(received(&sender).is_empty());
    let (epoch, seq) = router.channel(&channel).expect("channel").sequence();
    assert_eq!((&*epoch, seq), ("fresh", 1));
}

/// SPEC §15 in a big room: 10,000 members with presence on. A new joiner
/// is sent no presence event at all (its join reply is the only frame it
/// gets, from the session), and each member gets exactly one frame for the
/// join — one encoding shared by all of them.
#[test]
fn a_join_into_a_big_presence_room_costs_one_frame_per_member_and_none_for_the_joiner() {
    const MEMBERS: usize = 10_000;
    let router = Router::new(
        &RoutingConfig {
            max_subscriptions: 10,
            ..RoutingConfig::default()
        },
        &[],
    );
    let room = key("big:room");
    let members: Vec<Arc<Client>> = (0..MEMBERS).map(|_| client()).collect();
    for member in &members {
        router.join(member, &room).expect("join");
    }
    // Presence on for everyone (an idempotent join announces nothing).
    let presence = arqon_routing::JoinOptions {
        presence: true,
        hold: false,
    };
    for member in &members {
        router.join_with(member, &room, presence).expect("join");
    }
    let joiner = client();
    let joined = router.join_with(&joiner, &room, presence).expect("join");
    assert_eq!(joined.participant_count, MEMBERS + 1);
    assert_eq!(
        joiner.outbound().queued_bytes(),
        0,
        "nothing for the joiner"
    );
    let first = members[0].outbound().queued_bytes();
    assert!(first > 0, "members hear of the join");
    for member in &members {
        assert_eq!(
            member.outbound().queued_bytes(),
            first,
            "one event, the same bytes, per member"
        );
    }
    let events = received(&members[MEMBERS - 1]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["event"], "join");
    assert_eq!(
        events[0]["payload"]["participant_count"],
        MEMBERS as u64 + 1
    );
}

/// Cluster mode, recovery (SPEC §14): a message that a join reply covered
/// (its `seq` ≤ the reply's) but that arrives from Redis only after the
/// reply was released is not delivered to that member again; the others
/// get it, and later messages reach everyone.
#[test]
fn a_message_the_join_reply_covered_is_not_delivered_after_it() {
    let router = router();
    let (old, joiner) = (client(), client());
    router.register(old.clone());
    router.register(joiner.clone());
    let channel = key("science:explore");
    router.join(&old, &channel).expect("join");
    let epoch = router.channel(&channel).expect("channel").epoch();
    let options = JoinOptions {
        hold: true,
        ..JoinOptions::default()
    };
    router.join_with(&joiner, &channel, options).expect("join");
    router.sync_sequence(&channel, &epoch, 5);
    router.release(&joiner, &channel, 5);

    let frame = Bytes::from_static(br#"{"seq":5}"#);
    assert_eq!(
        router.deliver_sequenced(&channel, 5, &epoch, &frame, None),
        1
    );
    let frame = Bytes::from_static(br#"{"seq":6}"#);
    assert_eq!(
        router.deliver_sequenced(&channel, 6, &epoch, &frame, None),
        2
    );
    let seqs = |client: &Client| -> Vec<Value> {
        received(client).iter().map(|m| m["seq"].clone()).collect()
    };
    assert_eq!(seqs(&old), [Value::from(5), Value::from(6)]);
    assert_eq!(seqs(&joiner), [Value::from(6)]);
}

/// An auto-created channel goes once it has been empty for the TTL, not a
/// moment before; a member coming back starts the count again; a created
/// channel stays (SPEC §18). On paused time, so the TTL is exact.
#[tokio::test(start_paused = true)]
async fn idle_auto_created_channels_go_after_exactly_their_ttl() {
    let ttl = Duration::from_secs(600);
    let tick = Duration::from_millis(1);
    let router = router();
    let member = client();
    let idle = key("r:idle");
    router.join(&member, &idle).expect("join creates it");
    router
        .create_channel(key("r:made"), ChannelSpec::default())
        .expect("create");
    router.leave(&member, &idle).expect("leave");

    tokio::time::advance(ttl - tick).await;
    assert!(router.delete_idle_channels(ttl).is_empty(), "not yet");
    router.join(&member, &idle).expect("join");
    router.leave(&member, &idle).expect("leave");
    tokio::time::advance(tick).await;
    assert!(
        router.delete_idle_channels(ttl).is_empty(),
        "the count started again at the leave"
    );

    tokio::time::advance(ttl - tick).await;
    assert_eq!(
        router.delete_idle_channels(ttl),
        std::slice::from_ref(&idle)
    );
    assert!(router.channel(&idle).is_none());
    assert!(
        router.channel(&key("r:made")).is_some(),
        "created channels stay"
    );
}
