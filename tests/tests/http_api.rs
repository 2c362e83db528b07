//! The HTTP server API (SPEC §17): with `ARQONBUS_API_KEY` set, a backend
//! holding no WebSocket publishes to channels (subscribers get a normal
//! channel message from `arqonbus`, with `seq`/`epoch`, kept in history),
//! sends direct messages, disconnects clients (close 4003) and administers
//! channels, with `Authorization: Bearer <key>`, on the bus listener and on
//! the separate HTTP port; errors carry the §6 code as the HTTP status.
//! Without the key every `/api/*` path is a JSON 404. In a cluster, publish,
//! send and disconnect reach clients on another node.

use std::net::SocketAddr;
use std::time::Duration;

use arqon_config::{ClusterMode, StorageBackend};
use arqonbus_tests::redis::redis_server;
use arqonbus_tests::{HttpResponse, TestServer, http_request};
use serde_json::{Value, json};

const KEY: &str = "test-api-key-0123456789";

async fn server() -> TestServer {
    TestServer::with(|b| b.api_key(KEY).rate_limit_per_sec(0)).await
}

/// An API request with the right key.
async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    let body = body.map(Value::to_string);
    request(addr, method, path, Some(KEY), body.as_deref()).await
}

/// A raw HTTP request: `key` as a bearer token, `body` verbatim as JSON.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    http_request(addr, &format!("{head}\r\n{body}")).await
}

/// Asserts an error response: status, `error_code`, and the fields named.
fn assert_api_error(response: &HttpResponse, status: u16, code: &str) -> Vec<String> {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_array(), "{body}");
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "{:?}",
        response.headers
    );
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|detail| detail["field"].as_str().map(str::to_owned))
        .collect()
}

async fn create(addr: SocketAddr, room: &str, channel: &str) -> HttpResponse {
    api(
        addr,
        "POST",
        "/api/channels",
        Some(&json!({"room": room, "channel": channel})),
    )
    .await
}

#[tokio::test]
async fn without_a_key_every_api_path_is_a_json_404() {
    let server = TestServer::start().await;
    for (method, path) in [
        ("POST", "/api/publish"),
        ("POST", "/api/send"),
        ("POST", "/api/disconnect"),
        ("GET", "/api/channels"),
        ("GET", "/api/channels/chat/general"),
        ("GET", "/api/channels/chat/general/history"),
        ("DELETE", "/api/channels/chat/general"),
    ] {
        let response = request(server.addr, method, path, Some(KEY), Some("{}")).await;
        assert_eq!(response.status, 404, "{method} {path}: {}", response.body);
        assert!(response.json().is_object(), "{}", response.body);
    }
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401() {
    let server = server().await;
    for key in [
        None,
        Some("wrong"),
        Some(""),
        Some("test-api-key-012345678"),
    ] {
        for (method, path) in [
            ("POST", "/api/publish"),
            ("GET", "/api/channels"),
            ("DELETE", "/api/channels/a/b"),
        ] {
            let response = request(server.addr, method, path, key, Some("{}")).await;
            assert_api_error(&response, 401, "UNAUTHORIZED");
        }
    }
    // Another scheme with the right key is refused too.
    let raw = format!(
        "GET /api/channels HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\nAuthorization: Basic {KEY}\r\n\r\n",
        server.addr
    );
    assert_api_error(&http_request(server.addr, &raw).await, 401, "UNAUTHORIZED");
    // The right key in any case of the scheme is accepted.
    let raw = format!(
        "GET /api/channels HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\nAuthorization: bearer {KEY}\r\n\r\n",
        server.addr
    );
    assert_eq!(http_request(server.addr, &raw).await.status, 200);
}

#[tokio::test]
async fn publish_reaches_subscribers_as_the_server_and_lands_in_history() {
    let server = server().await;
    let created = create(server.addr, "news", "alerts").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut subscriber = server.connect().await;
    subscriber.join("news", "alerts").await;

    let response = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({
            "room": "news", "channel": "alerts",
            "payload": {"text": "hello from a backend"},
            "metadata": {"source": "billing"},
        })),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let reply = response.json();
    assert_eq!(reply["seq"], 1, "{reply}");
    assert_eq!(reply["delivered"], 1, "{reply}");
    assert_eq!(reply["stored"], true, "{reply}");
    let epoch = reply["epoch"].as_str().expect("epoch").to_owned();

    let message = subscriber.recv().await;
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["sender"], "arqonbus", "{message}");
    assert_eq!(message["room"], "news");
    assert_eq!(message["channel"], "alerts");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["epoch"], epoch.as_str());
    assert_eq!(message["payload"], json!({"text": "hello from a backend"}));
    assert_eq!(message["metadata"], json!({"source": "billing"}));

    // The same message through the WebSocket `history` command and the API.
    let history = subscriber
        .command("history", json!({"room": "news", "channel": "alerts"}))
        .await;
    let messages = history["payload"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{history}");
    assert_eq!(messages[0]["sender"], "arqonbus");
    assert_eq!(messages[0]["id"], message["id"]);
    let response = api(
        server.addr,
        "GET",
        "/api/channels/news/alerts/history?limit=10&after_seq=0",
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let history = response.json();
    assert_eq!(history["count"], 1, "{history}");
    assert_eq!(history["last_seq"], 1, "{history}");
    assert_eq!(history["messages"][0]["id"], message["id"]);

    // A second publish continues the sequence.
    let response = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": "news", "channel": "alerts", "payload": {}})),
    )
    .await;
    assert_eq!(response.json()["seq"], 2, "{}", response.body);
    assert_eq!(subscriber.recv().await["seq"], 2);
}

#[tokio::test]
async fn publish_errors() {
    let server = TestServer::with(|b| b.api_key(KEY).max_message_size(4096)).await;
    let missing = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": "nope", "channel": "none", "payload": {}})),
    )
    .await;
    assert_api_error(&missing, 404, "CHANNEL_NOT_FOUND");

    // Every bad field is named.
    let bad = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": 5, "channel": "bad name!", "metadata": []})),
    )
    .await;
    let mut fields = assert_api_error(&bad, 400, "INVALID_ARGUMENT");
    fields.sort();
    assert_eq!(fields, ["channel", "metadata", "payload", "room"]);
    let bad = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": "a", "channel": "b", "payload": "text"})),
    )
    .await;
    assert_eq!(assert_api_error(&bad, 400, "INVALID_ARGUMENT"), ["payload"]);

    for body in ["{not json", "", "[1,2]"] {
        let response = request(server.addr, "POST", "/api/publish", Some(KEY), Some(body)).await;
        assert_api_error(&response, 400, "VALIDATION_ERROR");
    }
    let big = json!({"room": "a", "channel": "b", "payload": {"x": "y".repeat(5000)}});
    let response = api(server.addr, "POST", "/api/publish", Some(&big)).await;
    assert_api_error(&response, 413, "VALIDATION_ERROR");
}

#[tokio::test]
async fn publish_into_a_system_channel_is_allowed() {
    let server = server().await;
    let mut watcher = server.connect().await;
    watcher.join("integriguard", "dashboard-events").await;
    let response = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": "integriguard", "channel": "dashboard-events", "payload": {"n": 1}})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let message = watcher.recv().await;
    assert_eq!(message["sender"], "arqonbus", "{message}");
    assert_eq!(message["payload"], json!({"n": 1}));
}

#[tokio::test]
async fn send_reaches_one_client() {
    let server = server().await;
    let mut target = server.connect().await;
    let response = api(
        server.addr,
        "POST",
        "/api/send",
        Some(
            &json!({"to_client": target.client_id, "payload": {"hi": true}, "metadata": {"k": 1}}),
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"delivered": 1}));
    let message = target.recv().await;
    assert_eq!(message["sender"], "arqonbus", "{message}");
    assert_eq!(message["to_client"], target.client_id.as_str());
    assert_eq!(message["payload"], json!({"hi": true}));
    assert_eq!(message["metadata"], json!({"k": 1}));

    let gone = api(
        server.addr,
        "POST",
        "/api/send",
        Some(&json!({"to_client": "arq_client_nobody", "payload": {}})),
    )
    .await;
    assert_api_error(&gone, 404, "TARGET_NOT_FOUND");
    let bad = api(
        server.addr,
        "POST",
        "/api/send",
        Some(&json!({"to_client": 7})),
    )
    .await;
    let mut fields = assert_api_error(&bad, 400, "INVALID_ARGUMENT");
    fields.sort();
    assert_eq!(fields, ["payload", "to_client"]);
}

#[tokio::test]
async fn disconnect_closes_with_4003() {
    let server = server().await;
    let mut target = server.connect().await;
    let mut bystander = server.connect().await;
    let response = api(
        server.addr,
        "POST",
        "/api/disconnect",
        Some(&json!({"client_id": target.client_id})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"disconnected": true}));
    let (ending, _) = target.until_closed(Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(4003), "{ending:?}");
    let arqonbus_tests::Ending::Closed(Some(frame)) = ending else {
        unreachable!()
    };
    assert!(!frame.reason.is_empty());
    // Others stay connected.
    let pong = bystander.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success");

    let gone = api(
        server.addr,
        "POST",
        "/api/disconnect",
        Some(&json!({"client_id": "arq_client_nobody"})),
    )
    .await;
    assert_api_error(&gone, 404, "TARGET_NOT_FOUND");
    let bad = api(server.addr, "POST", "/api/disconnect", Some(&json!({}))).await;
    assert_eq!(
        assert_api_error(&bad, 400, "INVALID_ARGUMENT"),
        ["client_id"]
    );
}

#[tokio::test]
async fn channel_administration() {
    let server = server().await;
    let created = api(
        server.addr,
        "POST",
        "/api/channels",
        Some(&json!({"room": "ops", "channel": "deploys", "description": "CI", "metadata": {"team": "infra"}})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let record = created.json();
    assert_eq!(record["room"], "ops");
    assert_eq!(record["channel"], "deploys");
    assert_eq!(record["type"], "general");
    assert_eq!(record["description"], "CI");
    assert_eq!(record["metadata"], json!({"team": "infra"}));
    assert_eq!(record["auto_created"], false);

    let again = create(server.addr, "ops", "deploys").await;
    assert_api_error(&again, 409, "CHANNEL_EXISTS");
    let bad = api(
        server.addr,
        "POST",
        "/api/channels",
        Some(&json!({"channel": "x y", "description": 3, "metadata": "no"})),
    )
    .await;
    let mut fields = assert_api_error(&bad, 400, "INVALID_ARGUMENT");
    fields.sort();
    assert_eq!(fields, ["channel", "description", "metadata", "room"]);

    // list_channels, whole and by room.
    let list = api(server.addr, "GET", "/api/channels", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    assert!(
        list["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .any(|c| c["room"] == "ops" && c["channel"] == "deploys"),
        "{list}"
    );
    let by_room = api(server.addr, "GET", "/api/channels?room=ops&limit=5", None)
        .await
        .json();
    assert_eq!(by_room["total"], 1, "{by_room}");
    let none = api(server.addr, "GET", "/api/channels?room=nowhere", None).await;
    assert_api_error(&none, 404, "ROOM_NOT_FOUND");
    let bad = api(server.addr, "GET", "/api/channels?limit=lots", None).await;
    assert_eq!(assert_api_error(&bad, 400, "INVALID_ARGUMENT"), ["limit"]);

    // channel_info with a member.
    let mut member = server.connect().await;
    member.join("ops", "deploys").await;
    let info = api(server.addr, "GET", "/api/channels/ops/deploys", None).await;
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["participant_count"], 1, "{info}");
    assert_eq!(
        info["participants"][0]["client_id"],
        member.client_id.as_str()
    );
    let missing = api(server.addr, "GET", "/api/channels/ops/nothing", None).await;
    assert_api_error(&missing, 404, "CHANNEL_NOT_FOUND");
    let missing = api(
        server.addr,
        "GET",
        "/api/channels/ops/nothing/history",
        None,
    )
    .await;
    assert_api_error(&missing, 404, "CHANNEL_NOT_FOUND");
    let bad = api(
        server.addr,
        "GET",
        "/api/channels/ops/deploys/history?limit=x&after_seq=-&since=yesterday",
        None,
    )
    .await;
    let mut fields = assert_api_error(&bad, 400, "INVALID_ARGUMENT");
    fields.sort();
    assert_eq!(fields, ["after_seq", "limit"]);
    let bad = api(
        server.addr,
        "GET",
        "/api/channels/ops/deploys/history?limit=5000",
        None,
    )
    .await;
    assert_eq!(assert_api_error(&bad, 400, "INVALID_ARGUMENT"), ["limit"]);

    // delete: refused while it has a member, then forced.
    let refused = api(server.addr, "DELETE", "/api/channels/ops/deploys", None).await;
    assert_api_error(&refused, 409, "CHANNEL_NOT_EMPTY");
    let bad = api(
        server.addr,
        "DELETE",
        "/api/channels/ops/deploys?force=maybe",
        None,
    )
    .await;
    assert_eq!(assert_api_error(&bad, 400, "INVALID_ARGUMENT"), ["force"]);
    let deleted = api(
        server.addr,
        "DELETE",
        "/api/channels/ops/deploys?force=true",
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        deleted.json(),
        json!({"room": "ops", "channel": "deploys", "deleted": true, "removed_members": 1})
    );
    let notice = member.recv().await;
    assert_eq!(notice["type"], "system", "{notice}");
    let gone = api(server.addr, "DELETE", "/api/channels/ops/deploys", None).await;
    assert_api_error(&gone, 404, "CHANNEL_NOT_FOUND");
    let system = api(
        server.addr,
        "DELETE",
        "/api/channels/integriguard/telemetry-stream",
        None,
    )
    .await;
    assert_api_error(&system, 403, "FORBIDDEN");
}

/// `presence` answers what the dispatcher answers for that command: its
/// payload once the command exists (SPEC §15), `UNKNOWN_COMMAND` (404)
/// before.
#[tokio::test]
async fn presence_goes_through_the_presence_command() {
    let server = server().await;
    assert_eq!(create(server.addr, "p", "c").await.status, 201);
    let mut member = server.connect().await;
    member.join("p", "c").await;
    let response = api(
        server.addr,
        "GET",
        "/api/channels/p/c/presence?limit=10",
        None,
    )
    .await;
    let body = response.json();
    if response.status == 404 && body["error_code"] == "UNKNOWN_COMMAND" {
        eprintln!("presence: the server lacks the `presence` command (SPEC §15)");
        return;
    }
    assert_eq!(response.status, 200, "{body}");
    assert!(body.to_string().contains(&member.client_id), "{body}");
    let bad = api(
        server.addr,
        "GET",
        "/api/channels/p/c/presence?limit=x",
        None,
    )
    .await;
    assert_eq!(assert_api_error(&bad, 400, "INVALID_ARGUMENT"), ["limit"]);
}

#[tokio::test]
async fn served_on_the_separate_http_port_too() {
    let server = TestServer::full(|b| b.api_key(KEY).http_port(Some(0))).await;
    let http = server.http_addr.expect("http listener");
    let mut subscriber = server.connect().await;
    subscriber.join("side", "door").await;
    let response = api(
        http,
        "POST",
        "/api/publish",
        Some(&json!({"room": "side", "channel": "door", "payload": {"via": "http port"}})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let message = subscriber.recv().await;
    assert_eq!(message["sender"], "arqonbus");
    assert_eq!(message["payload"], json!({"via": "http port"}));
    let response = request(http, "GET", "/api/channels", None, None).await;
    assert_api_error(&response, 401, "UNAUTHORIZED");
    let info = api(http, "GET", "/api/channels/side/door", None).await;
    assert_eq!(info.json()["participant_count"], 1, "{}", info.body);
}

#[tokio::test]
async fn a_preflight_needs_no_key() {
    let server = server().await;
    let response = request(server.addr, "OPTIONS", "/api/publish", None, None).await;
    assert_eq!(response.status, 204);
    assert!(
        response
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("Authorization")),
        "{:?}",
        response.headers
    );
}

/// In a cluster, an API call on one node reaches clients on another.
#[tokio::test]
async fn cluster_publish_send_and_disconnect_cross_nodes() {
    let Some(redis) = redis_server() else { return };
    let node = |id: &'static str| {
        let url = redis.url();
        TestServer::with(move |b| {
            b.storage(StorageBackend::Redis)
                .redis_url(url)
                .cluster(ClusterMode::Redis)
                .node_id(id)
                .api_key(KEY)
        })
    };
    let a = node("api-a").await;
    let b = node("api-b").await;
    let created = create(a.addr, "x", "y").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut remote = b.connect().await;
    remote.join("x", "y").await;

    let response = api(
        a.addr,
        "POST",
        "/api/publish",
        Some(&json!({"room": "x", "channel": "y", "payload": {"n": 1}})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let reply = response.json();
    assert_eq!(reply["seq"], 1, "{reply}");
    assert_eq!(reply["delivered"], 1, "{reply}");
    assert_eq!(reply["stored"], true, "{reply}");
    let message = remote.recv().await;
    assert_eq!(message["sender"], "arqonbus", "{message}");
    assert_eq!(message["seq"], 1);

    let history = api(b.addr, "GET", "/api/channels/x/y/history", None)
        .await
        .json();
    assert_eq!(history["count"], 1, "{history}");

    let response = api(
        a.addr,
        "POST",
        "/api/send",
        Some(&json!({"to_client": remote.client_id, "payload": {"d": 1}})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let direct = remote.recv().await;
    assert_eq!(direct["payload"], json!({"d": 1}), "{direct}");

    let response = api(
        a.addr,
        "POST",
        "/api/disconnect",
        Some(&json!({"client_id": remote.client_id})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let (ending, _) = remote.until_closed(Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(4003), "{ending:?}");
    let gone = api(
        a.addr,
        "POST",
        "/api/disconnect",
        Some(&json!({"client_id": "arq_client_nobody"})),
    )
    .await;
    assert_api_error(&gone, 404, "TARGET_NOT_FOUND");
}
