//! JWT claims beyond signature and expiry (SPEC §18, "Identity and
//! authorization"): a `sub` starting with `arqonbus` and an `nbf` in the
//! future are refused with 401; an empty `token` parameter is an invalid
//! token (401 in `jwt` and `token` modes, not 400); `channels` patterns
//! govern reading too: `channel_info` and `history` outside them are
//! `FORBIDDEN`, and `list_channels` (its `total` included) and
//! `status.participants` show only channels the client may join.

use arqon_config::AuthMode;
use arqonbus_tests::{TestClient, TestServer, assert_error, upgrade_request};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "jwt-claims-secret-0123456789";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn jwt_server() -> TestServer {
    TestServer::with(|b| b.auth(AuthMode::Jwt).jwt_secret(SECRET)).await
}

async fn status_for(server: &TestServer, query: &str) -> u16 {
    upgrade_request(server.addr, &format!("/?{query}"))
        .await
        .status
}

#[tokio::test]
async fn reserved_subjects_are_refused() {
    let server = jwt_server().await;
    for sub in [
        "arqonbus",
        "arqonbus-x",
        "arqonbus_client_1",
        "arqonbus:node",
    ] {
        let jwt = token(json!({"sub": sub, "exp": now() + 600}));
        assert_eq!(
            status_for(&server, &format!("token={jwt}")).await,
            401,
            "{sub}"
        );
    }
    // The rule is about the prefix, not the word anywhere.
    let jwt = token(json!({"sub": "not-arqonbus", "exp": now() + 600}));
    assert_eq!(status_for(&server, &format!("token={jwt}")).await, 101);
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let server = jwt_server().await;
    let early = token(json!({"sub": "ada", "exp": now() + 7200, "nbf": now() + 3600}));
    assert_eq!(status_for(&server, &format!("token={early}")).await, 401);
    let valid_now = token(json!({"sub": "ada", "exp": now() + 7200, "nbf": now() - 60}));
    assert_eq!(
        status_for(&server, &format!("token={valid_now}")).await,
        101
    );
}

#[tokio::test]
async fn an_empty_token_is_an_invalid_token_in_jwt_mode() {
    let server = jwt_server().await;
    let response = upgrade_request(server.addr, "/?token=").await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.json()["field"], "token");
}

#[tokio::test]
async fn an_empty_token_is_an_invalid_token_in_token_mode() {
    let server = TestServer::with(|b| b.auth(AuthMode::Token).admin_token("s3cret")).await;
    let response = upgrade_request(server.addr, "/?token=").await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.json()["field"], "token");
    // No token at all is still a user, and the admin token is an admin.
    assert_eq!(upgrade_request(server.addr, "/").await.status, 101);
    assert_eq!(
        upgrade_request(server.addr, "/?token=s3cret").await.status,
        101
    );
}

/// An admin without patterns who owns `secret:ops` (two members) and a
/// member of `science:lab`; and a user limited to `science:*`.
async fn restricted_world(server: &TestServer) -> (TestClient, TestClient, TestClient) {
    let admin_jwt = token(json!({"sub": "boss", "exp": now() + 600, "role": "admin"}));
    let mut admin = server.connect_query(&format!("token={admin_jwt}")).await;
    let created = admin
        .command(
            "create_channel",
            json!({"room": "secret", "channel": "ops"}),
        )
        .await;
    assert_eq!(created["status"], "success", "{created}");
    admin.join("secret", "ops").await;
    admin.join("science", "lab").await;
    admin.join("secret", "plans").await;
    let spy_jwt = token(json!({"sub": "agent", "exp": now() + 600}));
    let mut other = server.connect_query(&format!("token={spy_jwt}")).await;
    other.join("secret", "ops").await;
    let user_jwt = token(json!({"sub": "sci", "exp": now() + 600, "channels": ["science:*"]}));
    let mut user = server.connect_query(&format!("token={user_jwt}")).await;
    user.join("science", "lab").await;
    user.join("science", "bio").await;
    (admin, other, user)
}

#[tokio::test]
async fn reading_outside_the_patterns_is_forbidden() {
    let server = jwt_server().await;
    let (_admin, _other, mut user) = restricted_world(&server).await;
    for command in ["channel_info", "history"] {
        let frame = user
            .send_command(command, json!({"room": "secret", "channel": "ops"}))
            .await;
        let reply = user.recv_reply_to(&frame["id"]).await;
        assert_error(&reply, "FORBIDDEN", Some(&frame["id"]), Some(command));
    }
    // Outside the patterns, whether a channel exists is not revealed.
    for command in ["channel_info", "history"] {
        let frame = user
            .send_command(command, json!({"room": "secret", "channel": "nothing"}))
            .await;
        let reply = user.recv_reply_to(&frame["id"]).await;
        assert_error(&reply, "FORBIDDEN", Some(&frame["id"]), Some(command));
    }
    // Inside the patterns the same commands work.
    for command in ["channel_info", "history"] {
        let reply = user
            .command(command, json!({"room": "science", "channel": "lab"}))
            .await;
        assert_eq!(reply["status"], "success", "{command}: {reply}");
    }
}

fn keys_of(records: &Value) -> Vec<String> {
    records
        .as_array()
        .expect("channel records")
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["room"].as_str().expect("room"),
                r["channel"].as_str().expect("channel")
            )
        })
        .collect()
}

#[tokio::test]
async fn list_channels_shows_and_counts_only_permitted_channels() {
    let server = jwt_server().await;
    let (mut admin, _other, mut user) = restricted_world(&server).await;

    let everything = admin.command("list_channels", json!({})).await;
    let all = keys_of(&everything["payload"]["channels"]);
    assert!(all.contains(&"secret:ops".to_owned()), "{all:?}");

    let reply = user.command("list_channels", json!({})).await;
    assert_eq!(reply["status"], "success", "{reply}");
    let mut mine = keys_of(&reply["payload"]["channels"]);
    mine.sort();
    assert_eq!(mine, ["science:bio", "science:lab"]);
    assert_eq!(reply["payload"]["total"], 2, "{reply}");

    // A room with no permitted channel looks like an absent one.
    for room in ["secret", "nowhere"] {
        let frame = user
            .send_command("list_channels", json!({"room": room}))
            .await;
        let reply = user.recv_reply_to(&frame["id"]).await;
        assert_error(
            &reply,
            "ROOM_NOT_FOUND",
            Some(&frame["id"]),
            Some("list_channels"),
        );
    }
    let reply = user
        .command("list_channels", json!({"room": "science"}))
        .await;
    assert_eq!(reply["payload"]["total"], 2, "{reply}");

    // Paging walks the permitted channels only, each once.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..5 {
        let mut args = json!({"limit": 1});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = user.command("list_channels", args).await;
        assert_eq!(page["status"], "success", "{page}");
        assert_eq!(page["payload"]["total"], 2, "{page}");
        seen.extend(keys_of(&page["payload"]["channels"]));
        cursor = page["payload"]["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["science:bio", "science:lab"]);
}

#[tokio::test]
async fn status_participants_show_only_permitted_channels() {
    let server = jwt_server().await;
    let (mut admin, _other, mut user) = restricted_world(&server).await;

    let all = admin.status().await;
    assert_eq!(all["participants"]["channels"]["secret:ops"], 2, "{all}");

    let mine = user.status().await;
    let channels = mine["participants"]["channels"]
        .as_object()
        .expect("participants.channels");
    let mut keys: Vec<&str> = channels.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["science:bio", "science:lab"], "{mine}");
    assert_eq!(channels["science:lab"], 2, "{mine}");
}
