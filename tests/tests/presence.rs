//! Presence (SPEC §15): a member that joined with `presence: true` hears of
//! every other member's join and leave (disconnects and forced removals
//! included) as `system` envelopes without `seq`; the `presence` command
//! pages through the members, visiting each exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, assert_error, envelope};
use serde_json::{Value, json};

const ROOM: &str = "lab";
const CHANNEL: &str = "bench";

async fn join_with(client: &mut TestClient, args: Value) -> Value {
    let mut all = json!({"room": ROOM, "channel": CHANNEL});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), args.as_object()) {
        all.extend(extra.clone());
    }
    let reply = client.command("join_channel", all).await;
    assert_eq!(reply["status"], "success", "{reply}");
    reply
}

/// Asserts `frame` is a presence event about `subject`.
fn assert_presence(frame: &Value, event: &str, subject: &TestClient, count: u64) {
    assert_eq!(frame["type"], "system", "{frame}");
    assert_eq!(frame["sender"], "arqonbus");
    assert_eq!(frame["room"], ROOM);
    assert_eq!(frame["channel"], CHANNEL);
    assert!(
        frame.get("seq").is_none(),
        "presence events carry no seq: {frame}"
    );
    let payload = &frame["payload"];
    assert_eq!(payload["event"], event, "{frame}");
    assert_eq!(payload["client"]["client_id"], subject.client_id.as_str());
    assert!(payload["client"].get("client_type").is_some());
    assert!(payload["client"].get("screen_name").is_some());
    assert_eq!(payload["participant_count"], count);
}

#[tokio::test]
async fn joins_leaves_and_disconnects_reach_presence_subscribers() {
    let server = TestServer::start().await;
    let mut watcher = server.connect().await;
    join_with(&mut watcher, json!({"presence": true})).await;

    let mut ada = server.connect_query("screen_name=Ada").await;
    join_with(&mut ada, json!({})).await;
    let event = watcher.recv().await;
    assert_presence(&event, "join", &ada, 2);
    assert_eq!(event["payload"]["client"]["screen_name"], "Ada");
    // No event for one's own join, and none for a member without presence.
    ada.expect_silence(Duration::from_millis(200)).await;

    let reply = ada
        .command("leave_channel", json!({"room": ROOM, "channel": CHANNEL}))
        .await;
    assert_eq!(reply["payload"]["was_member"], true);
    assert_presence(&watcher.recv().await, "leave", &ada, 1);

    let mut bob = server.connect().await;
    join_with(&mut bob, json!({})).await;
    assert_presence(&watcher.recv().await, "join", &bob, 2);
    drop(bob);
    let bob_id = watcher.recv().await;
    assert_eq!(
        bob_id["payload"]["event"], "leave",
        "a disconnect is a leave: {bob_id}"
    );
    assert_eq!(bob_id["payload"]["participant_count"], 1);

    // A later join without `presence` turns the events off.
    join_with(&mut watcher, json!({})).await;
    let mut carol = server.connect().await;
    join_with(&mut carol, json!({})).await;
    watcher.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn presence_events_are_not_stored_in_history() {
    let server = TestServer::start().await;
    let mut watcher = server.connect().await;
    join_with(&mut watcher, json!({"presence": true})).await;
    let mut other = server.connect().await;
    join_with(&mut other, json!({})).await;
    watcher.recv().await;
    let history = watcher
        .command("history", json!({"room": ROOM, "channel": CHANNEL}))
        .await;
    assert_eq!(history["payload"]["count"], 0, "{history}");
    assert_eq!(history["payload"]["last_seq"], 0);
}

#[tokio::test]
async fn the_presence_command_pages_through_every_member_once() {
    const MEMBERS: usize = 25;
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let mut client = server.connect().await;
        join_with(&mut client, json!({})).await;
        members.push(client);
    }
    let expected: BTreeSet<String> = members.iter().map(|c| c.client_id.clone()).collect();
    let asker = &mut members[0];

    let mut visited = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "paging ends");
        let reply = asker
            .command(
                "presence",
                json!({"room": ROOM, "channel": CHANNEL, "limit": 10, "cursor": cursor}),
            )
            .await;
        assert_eq!(reply["status"], "success", "{reply}");
        let payload = &reply["payload"];
        assert_eq!(payload["count"], MEMBERS as u64);
        assert_eq!(payload["room"], ROOM);
        for member in payload["members"].as_array().expect("members") {
            assert!(
                member.get("connected_at").is_some(),
                "a client record: {member}"
            );
            visited.push(member["client_id"].as_str().expect("id").to_owned());
        }
        cursor = payload["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(visited.len(), MEMBERS, "each member once");
    assert_eq!(visited.iter().cloned().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test]
async fn presence_arguments_are_checked() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    join_with(&mut client, json!({})).await;
    for args in [
        json!({"room": ROOM, "channel": CHANNEL, "limit": 0}),
        json!({"room": ROOM, "channel": CHANNEL, "limit": 1001}),
        json!({"room": ROOM, "channel": CHANNEL, "limit": "10"}),
        json!({"room": ROOM, "channel": CHANNEL, "cursor": "has space"}),
    ] {
        let frame = envelope("command", json!({"command": "presence", "args": args}));
        client.send_json(&frame).await;
        assert_error(
            &client.recv().await,
            "INVALID_ARGUMENT",
            Some(&frame["id"]),
            Some("presence"),
        );
    }
    let frame = envelope(
        "command",
        json!({"command": "presence", "args": {"room": "nope", "channel": "none"}}),
    );
    client.send_json(&frame).await;
    assert_error(
        &client.recv().await,
        "CHANNEL_NOT_FOUND",
        Some(&frame["id"]),
        Some("presence"),
    );
}

/// A joiner with presence on in a big room gets one reply, not an event per
/// existing member; each later join costs every presence subscriber one
/// frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_big_room_costs_the_joiner_one_reply() {
    const MEMBERS: usize = 300;
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let mut client = server.connect().await;
        join_with(&mut client, json!({"presence": true})).await;
        members.push(client);
    }
    let mut late = server.connect().await;
    let reply = join_with(&mut late, json!({"presence": true})).await;
    assert_eq!(reply["payload"]["participant_count"], MEMBERS as u64 + 1);
    late.expect_silence(Duration::from_millis(300)).await;
    // The last of the early members heard of exactly one join: the late one.
    let last = members.last_mut().expect("members");
    assert_presence(&last.recv().await, "join", &late, MEMBERS as u64 + 1);
    last.expect_silence(Duration::from_millis(200)).await;
}
