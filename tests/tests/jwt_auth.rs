//! JWT mode (SPEC §9): a valid HS256 token with `exp` is required at the
//! upgrade (401 otherwise); `sub` becomes the client id and a second
//! connection with the same `sub` replaces the first (close 4000); `role`
//! gates admin commands; `channels` patterns gate joins and publishes.

use arqon_config::AuthMode;
use arqonbus_tests::{TestServer, envelope};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const SECRET: &str = "jwt-test-secret-0123456789";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

async fn jwt_server() -> TestServer {
    TestServer::with(|b| b.auth(AuthMode::Jwt).jwt_secret(SECRET)).await
}

/// The HTTP status an upgrade attempt is refused with.
async fn refused_status(server: &TestServer, query: &str) -> u16 {
    let url = format!("{}?{query}", server.url());
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_get_401() {
    let server = jwt_server().await;
    assert_eq!(refused_status(&server, "client_type=human").await, 401);
    let expired = token(json!({"sub": "ada", "exp": now() - 30}), SECRET);
    assert_eq!(
        refused_status(&server, &format!("token={expired}")).await,
        401
    );
    let forged = token(json!({"sub": "ada", "exp": now() + 600}), "not-the-secret");
    assert_eq!(
        refused_status(&server, &format!("token={forged}")).await,
        401
    );
    let no_exp = token(json!({"sub": "ada"}), SECRET);
    assert_eq!(
        refused_status(&server, &format!("token={no_exp}")).await,
        401
    );
    let bad_sub = token(json!({"sub": "a b", "exp": now() + 600}), SECRET);
    assert_eq!(
        refused_status(&server, &format!("token={bad_sub}")).await,
        401
    );
    let bad_pattern = token(
        json!({"sub": "ada", "exp": now() + 600, "channels": ["sci*:x"]}),
        SECRET,
    );
    assert_eq!(
        refused_status(&server, &format!("token={bad_pattern}")).await,
        401
    );
}

#[tokio::test]
async fn sub_becomes_the_client_id_and_claims_fill_the_profile() {
    let server = jwt_server().await;
    let jwt = token(
        json!({"sub": "ada@lab", "exp": now() + 600, "client_type": "ai-agent", "screen_name": "Ada"}),
        SECRET,
    );
    let mut client = server.connect_query(&format!("token={jwt}")).await;
    assert_eq!(client.client_id, "ada@lab");
    let me = client.command("identify", json!({})).await;
    assert_eq!(me["payload"]["client_type"], "ai-agent");
    assert_eq!(me["payload"]["screen_name"], "Ada");
}

#[tokio::test]
async fn the_bearer_header_works_too() {
    let server = jwt_server().await;
    let jwt = token(json!({"sub": "svc-1", "exp": now() + 600}), SECRET);
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(server.url()).expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {jwt}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connects");
    use futures_util::StreamExt;
    let welcome = ws.next().await.expect("frame").expect("ok");
    let welcome: Value = serde_json::from_str(welcome.to_text().expect("text")).expect("json");
    assert_eq!(welcome["payload"]["client_id"], "svc-1");
}

#[tokio::test]
async fn a_second_connection_with_the_same_sub_replaces_the_first() {
    let server = jwt_server().await;
    let jwt = token(json!({"sub": "dup", "exp": now() + 600}), SECRET);
    let mut first = server.connect_query(&format!("token={jwt}")).await;
    let mut second = server.connect_query(&format!("token={jwt}")).await;
    let (ending, _) = first.until_closed(std::time::Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(4000));
    // The new connection is the one registered: direct messages reach it.
    let other_jwt = token(json!({"sub": "other", "exp": now() + 600}), SECRET);
    let mut other = server.connect_query(&format!("token={other_jwt}")).await;
    other
        .send_json(&envelope(
            "message",
            json!({"to_client": "dup", "payload": {"hi": 1}}),
        ))
        .await;
    assert_eq!(second.recv().await["payload"]["hi"], 1);
}

#[tokio::test]
async fn role_gates_admin_commands() {
    let server = jwt_server().await;
    let user = token(json!({"sub": "u", "exp": now() + 600}), SECRET);
    let admin = token(
        json!({"sub": "a", "exp": now() + 600, "role": "admin"}),
        SECRET,
    );
    let mut user = server.connect_query(&format!("token={user}")).await;
    let mut admin = server.connect_query(&format!("token={admin}")).await;
    let refused = user
        .command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(refused["error_code"], "FORBIDDEN");
    assert_eq!(refused["command"], "create_channel");
    let created = admin
        .command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(created["status"], "success");
    assert_eq!(created["payload"]["created_by"], "a");
}

#[tokio::test]
async fn channel_patterns_allow_and_deny() {
    let server = jwt_server().await;
    let limited = token(
        json!({"sub": "lim", "exp": now() + 600, "channels": ["science:*", "*:public"]}),
        SECRET,
    );
    let open = token(json!({"sub": "open", "exp": now() + 600}), SECRET);
    let mut limited = server.connect_query(&format!("token={limited}")).await;
    let mut open = server.connect_query(&format!("token={open}")).await;

    limited.join("science", "explore").await;
    limited.join("chat", "public").await;
    let denied = limited
        .command("join_channel", json!({"room": "chat", "channel": "secret"}))
        .await;
    assert_eq!(denied["error_code"], "FORBIDDEN");

    // Publishing outside the patterns is refused even where no join is needed.
    open.join("chat", "secret").await;
    let frame = limited.publish("chat", "secret", json!({"x": 1})).await;
    let err = limited.recv().await;
    assert_eq!(err["error_code"], "FORBIDDEN");
    assert_eq!(err["request_id"], frame["id"]);

    open.join("science", "explore").await;
    limited
        .publish("science", "explore", json!({"ok": true}))
        .await;
    assert_eq!(open.recv().await["payload"]["ok"], true);
}
