//! Every error the server can produce today has the full SPEC §6 shape:
//! `type:"error"`, `status:"error"`, `sender:"arqonbus"`, a stable
//! `error_code` with its HTTP-like `payload.code`, human `error` text,
//! a `payload.details` array naming bad fields, `request_id` = the offending
//! frame's id (or `null` when it had no valid id), and `command` when it
//! answers a command. Invalid input never closes the connection by itself.

use std::time::Duration;

use arqon_config::AuthMode;
use arqonbus_tests::{TestClient, TestServer, assert_error, detail_fields, envelope, http_status};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const QUIET: Duration = Duration::from_millis(300);

/// What a case sends.
enum Frame {
    Json(Value),
    Text(&'static str),
    Binary(Vec<u8>),
}

/// One refused frame and the error it must get: `error_code` with its
/// `payload.code`, `request_id` the frame's id (or `null`), the `command`
/// it answers, and the fields `payload.details` must name.
struct Case {
    frame: Frame,
    error_code: &'static str,
    http_code: u16,
    echoes_id: bool,
    command: Option<&'static str>,
    fields: &'static [&'static str],
}

impl Case {
    /// A JSON frame; its error echoes the frame's `id`.
    fn json(frame: Value, error_code: &'static str, http_code: u16) -> Self {
        Self::of(Frame::Json(frame), error_code, http_code, true)
    }

    /// A text frame with no valid id to echo.
    fn text(text: &'static str, error_code: &'static str, http_code: u16) -> Self {
        Self::of(Frame::Text(text), error_code, http_code, false)
    }

    /// A binary frame (never decoded, so no id to echo).
    fn binary(bytes: &[u8], error_code: &'static str, http_code: u16) -> Self {
        Self::of(Frame::Binary(bytes.to_vec()), error_code, http_code, false)
    }

    fn of(frame: Frame, error_code: &'static str, http_code: u16, echoes_id: bool) -> Self {
        Self {
            frame,
            error_code,
            http_code,
            echoes_id,
            command: None,
            fields: &[],
        }
    }

    /// The frame's id is invalid: `request_id` is `null`.
    fn without_request_id(mut self) -> Self {
        self.echoes_id = false;
        self
    }

    /// The error answers `command`.
    fn command(mut self, command: &'static str) -> Self {
        self.command = Some(command);
        self
    }

    /// `payload.details` names (at least) these fields.
    fn naming(mut self, fields: &'static [&'static str]) -> Self {
        self.fields = fields;
        self
    }
}

/// Sends the case's frame and checks the error it gets (the full SPEC §6
/// shape, see [`assert_error`]); returns the error for further checks.
async fn expect_error(client: &mut TestClient, case: &Case) -> Value {
    let request_id = match &case.frame {
        Frame::Json(frame) => {
            client.send_json(frame).await;
            case.echoes_id.then(|| frame["id"].clone())
        }
        Frame::Text(text) => {
            client.send_text(*text).await;
            None
        }
        Frame::Binary(bytes) => {
            client.send_binary(bytes.clone()).await;
            None
        }
    };
    let err = client.recv().await;
    assert_error(&err, case.error_code, request_id.as_ref(), case.command);
    assert_eq!(err["payload"]["code"], case.http_code, "{err}");
    for field in case.fields {
        assert!(has_field(&err, field), "{field} missing: {err}");
    }
    err
}

/// Every case in turn on one connection, which none of them closes.
async fn expect_errors(client: &mut TestClient, cases: &[Case]) {
    for case in cases {
        expect_error(client, case).await;
    }
    still_alive(client).await;
}

/// A message to `r:c` with `fields` added (a `null` removes one).
fn message(fields: Value) -> Value {
    let mut extra = json!({"room": "r", "channel": "c", "payload": {}});
    for (key, value) in fields.as_object().expect("an object") {
        extra[key] = value.clone();
    }
    envelope("message", extra)
}

fn command(name: &str, args: Value) -> Value {
    envelope("command", json!({"command": name, "args": args}))
}

fn has_field(err: &Value, field: &str) -> bool {
    detail_fields(err).iter().any(|f| f == field)
}

async fn still_alive(client: &mut TestClient) {
    let pong = client.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success", "{pong}");
}

// ---- VALIDATION_ERROR -------------------------------------------------------

#[tokio::test]
async fn frames_that_are_not_json_objects() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [
        "hello",
        "{\"version\":",
        "[1,2,3]",
        "42",
        "\"text\"",
        "null",
        "",
    ]
    .map(|text| Case::text(text, "VALIDATION_ERROR", 400));
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn version_missing_or_not_a_string() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    let cases = [json!(null), json!(1.0)].map(|version| {
        Case::json(
            message(json!({"version": version})),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["version"])
    });
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn another_version_is_unsupported() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = envelope("command", json!({"version": "2.0", "command": "ping"}));
    let cases = [Case::json(frame, "UNSUPPORTED_VERSION", 400)];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_bad_id_gives_a_null_request_id() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    let cases = [
        json!("nope"),
        json!("arq_"),
        json!("arq_has space"),
        json!(17),
        json!(null),
    ]
    .map(|id| {
        Case::json(message(json!({"id": id})), "VALIDATION_ERROR", 400)
            .without_request_id()
            .naming(&["id"])
    });
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_bad_timestamp() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    let cases = [
        json!("yesterday"),
        json!("2026-13-45T99:00:00Z"),
        json!(1700000000),
    ]
    .map(|timestamp| {
        Case::json(
            message(json!({"timestamp": timestamp})),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["timestamp"])
    });
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn bad_room_and_channel_names() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let name = |room: Value, channel: Value, field: &'static [&'static str]| {
        Case::json(
            message(json!({"room": room, "channel": channel})),
            "VALIDATION_ERROR",
            400,
        )
        .naming(field)
    };
    let cases = [
        name(json!("bad room"), json!("c"), &["room"]),
        name(json!("r"), json!("x".repeat(65)), &["channel"]),
        name(json!("r"), json!("sl/ash"), &["channel"]),
        name(json!(""), json!("c"), &["room"]),
        // Commands check their names too, as arguments.
        Case::json(
            command("join_channel", json!({"room": "bad room", "channel": "c"})),
            "INVALID_ARGUMENT",
            400,
        )
        .command("join_channel")
        .naming(&["room"]),
    ];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_message_without_a_target() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let nowhere = Case::json(
        envelope("message", json!({"payload": {}})),
        "VALIDATION_ERROR",
        400,
    );
    let err = expect_error(&mut client, &nowhere).await;
    assert!(!detail_fields(&err).is_empty(), "{err}");

    // A room with no channel is no target either.
    let cases = [Case::json(
        envelope("message", json!({"room": "r", "payload": {}})),
        "VALIDATION_ERROR",
        400,
    )];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_payload_that_is_not_an_object() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    // And a message needs one (`null` removes it).
    let cases = [json!([1, 2]), json!("text"), json!(3), json!(null)].map(|payload| {
        Case::json(
            message(json!({"payload": payload})),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["payload"])
    });
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_binary_frame() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [Case::binary(
        b"{\"version\":\"1.0\"}",
        "VALIDATION_ERROR",
        400,
    )];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn details_list_every_bad_field() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [
        Case::json(
            envelope(
                "message",
                json!({
                    "timestamp": "yesterday",
                    "room": "bad room",
                    "channel": "c",
                    "payload": [1],
                    "ack": "yes",
                }),
            ),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["timestamp", "room", "payload", "ack"]),
        // A command frame that is invalid still names its command.
        Case::json(
            envelope(
                "command",
                json!({"command": "ping", "timestamp": "never", "args": 5}),
            ),
            "VALIDATION_ERROR",
            400,
        )
        .command("ping")
        .naming(&["timestamp", "args"]),
    ];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn unknown_types_and_missing_fields() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [
        Case::json(
            envelope("shout", json!({"payload": {}})),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["type"]),
        Case::json(
            json!({"version": "1.0", "id": "arq_bare"}),
            "VALIDATION_ERROR",
            400,
        )
        .naming(&["type", "timestamp"]),
        // A command with no name.
        Case::json(envelope("command", json!({})), "VALIDATION_ERROR", 400).naming(&["command"]),
    ];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn garbage_never_closes_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let mut cases: Vec<Case> = ["\u{0}\u{1}\u{2}", "{{{{", "}", "\u{feff}{}", "{\"a\":1}"]
        .into_iter()
        .map(|text| Case::text(text, "VALIDATION_ERROR", 400))
        .collect();
    cases.push(Case::binary(&[0xff, 0xfe, 0x00], "VALIDATION_ERROR", 400));
    expect_errors(&mut client, &cases).await;
}

// ---- INVALID_ARGUMENT, UNKNOWN_COMMAND ---------------------------------------

#[tokio::test]
async fn a_missing_or_mistyped_argument_is_named() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [
        ("join_channel", json!({"channel": "c"}), &["room"]),
        ("join_channel", json!({"room": "r"}), &["channel"]),
        (
            "channel_info",
            json!({"room": 5, "channel": "c"}),
            &["room"],
        ),
    ]
    .map(|(name, args, fields)| {
        Case::json(command(name, args), "INVALID_ARGUMENT", 400)
            .command(name)
            .naming(fields)
    });
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn an_unknown_command() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [
        Case::json(command("frobnicate", json!({})), "UNKNOWN_COMMAND", 404).command("frobnicate"),
    ];
    expect_errors(&mut client, &cases).await;
}

// ---- FORBIDDEN, UNAUTHORIZED at the upgrade ----------------------------------

#[tokio::test]
async fn clients_cannot_send_system_envelopes() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let mut other = server.connect().await;
    client.join("r", "c").await;
    other.join("r", "c").await;
    let frame = envelope(
        "system",
        json!({"room": "r", "channel": "c", "payload": {"event": "fake"}}),
    );
    expect_error(&mut client, &Case::json(frame, "FORBIDDEN", 403)).await;
    other.expect_silence(QUIET).await;
}

#[tokio::test]
async fn admin_commands_need_the_admin_token() {
    let server = TestServer::with(|b| b.auth(AuthMode::Token).admin_token("s3cret")).await;

    let mut user = server.connect().await;
    let frame = user
        .send_command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    let err = user.recv().await;
    assert_error(
        &err,
        "FORBIDDEN",
        Some(&frame["id"]),
        Some("create_channel"),
    );
    let frame = user
        .send_command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    let err = user.recv().await;
    assert_error(
        &err,
        "FORBIDDEN",
        Some(&frame["id"]),
        Some("delete_channel"),
    );
    // Ordinary commands are open to users.
    user.join("ops", "chat").await;

    let mut admin = server.connect_query("token=s3cret").await;
    let created = admin
        .command(
            "create_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(created["status"], "success", "{created}");
    assert_eq!(created["payload"]["created_by"], admin.client_id.as_str());

    // The header form works as well.
    let mut request = server.url().into_client_request().expect("request");
    request.headers_mut().insert(
        "Authorization",
        "Bearer s3cret".parse().expect("header value"),
    );
    let mut bearer = server
        .try_connect_request(request)
        .await
        .expect("bearer admin connects");
    let deleted = bearer
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(deleted["status"], "success", "{deleted}");

    // Another token is refused at the upgrade with HTTP 401.
    let err = server
        .try_connect("/?token=wrong")
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(http_status(&err), Some(401), "{err:?}");
    let mut request = server.url().into_client_request().expect("request");
    request.headers_mut().insert(
        "Authorization",
        "Bearer s3cre".parse().expect("header value"),
    );
    let err = server
        .try_connect_request(request)
        .await
        .expect_err("a wrong bearer token is refused");
    assert_eq!(http_status(&err), Some(401), "{err:?}");
}

// ---- NOT_SUBSCRIBED, *_NOT_FOUND ---------------------------------------------

#[tokio::test]
async fn publishing_without_joining() {
    let server = TestServer::start().await;
    let mut member = server.connect().await;
    let mut outsider = server.connect().await;
    member.join("r", "c").await;
    let frame = outsider.publish("r", "c", json!({})).await;
    let err = outsider.recv().await;
    assert_error(&err, "NOT_SUBSCRIBED", Some(&frame["id"]), None);
    member.expect_silence(QUIET).await;
}

#[tokio::test]
async fn channels_that_do_not_exist() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;

    let void = json!({"room": "nowhere", "channel": "void"});
    let mut cases = vec![
        // Publishing: the channel check comes before the membership check.
        Case::json(message(void.clone()), "CHANNEL_NOT_FOUND", 404),
    ];
    for name in ["leave_channel", "channel_info", "delete_channel"] {
        cases.push(Case::json(command(name, void.clone()), "CHANNEL_NOT_FOUND", 404).command(name));
    }
    expect_errors(&mut client, &cases).await;

    let strict = TestServer::with(|b| b.auto_create_channels(false)).await;
    let mut client = strict.connect().await;
    let frame = client
        .send_command(
            "join_channel",
            json!({"room": "nowhere", "channel": "void"}),
        )
        .await;
    let err = client.recv().await;
    assert_error(
        &err,
        "CHANNEL_NOT_FOUND",
        Some(&frame["id"]),
        Some("join_channel"),
    );
    // Created channels can still be joined.
    let created = client
        .command(
            "create_channel",
            json!({"room": "some", "channel": "where"}),
        )
        .await;
    assert_eq!(created["status"], "success", "{created}");
    client.join("some", "where").await;
}

#[tokio::test]
async fn a_room_that_does_not_exist() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let cases = [Case::json(
        command("list_channels", json!({"room": "atlantis"})),
        "ROOM_NOT_FOUND",
        404,
    )
    .command("list_channels")];
    expect_errors(&mut client, &cases).await;
}

#[tokio::test]
async fn a_target_that_is_not_connected() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = envelope(
        "message",
        json!({"to_client": "arq_client_ffffffffffffffffffffffffffffffff", "payload": {}}),
    );
    let cases = [Case::json(frame, "TARGET_NOT_FOUND", 404)];
    expect_errors(&mut client, &cases).await;
}

// ---- channel lifecycle: EXISTS, NOT_EMPTY, system channels --------------------

#[tokio::test]
async fn creating_a_channel_twice() {
    let server = TestServer::start().await;
    let mut admin = server.connect().await;
    let args = json!({"room": "ops", "channel": "alerts"});
    let created = admin.command("create_channel", args.clone()).await;
    assert_eq!(created["status"], "success", "{created}");
    let frame = admin.send_command("create_channel", args).await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "CHANNEL_EXISTS",
        Some(&frame["id"]),
        Some("create_channel"),
    );

    // A channel auto-created by a join exists too.
    admin.join("ops", "chat").await;
    let frame = admin
        .send_command("create_channel", json!({"room": "ops", "channel": "chat"}))
        .await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "CHANNEL_EXISTS",
        Some(&frame["id"]),
        Some("create_channel"),
    );
}

#[tokio::test]
async fn deleting_a_channel_with_members() {
    let server = TestServer::start().await;
    let mut admin = server.connect().await;
    let mut member = server.connect().await;
    let mut other = server.connect().await;
    member.join("ops", "alerts").await;
    other.join("ops", "alerts").await;
    member.join("ops", "keep").await;

    let args = json!({"room": "ops", "channel": "alerts"});
    let frame = admin.send_command("delete_channel", args.clone()).await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "CHANNEL_NOT_EMPTY",
        Some(&frame["id"]),
        Some("delete_channel"),
    );
    let frame = admin
        .send_command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts", "force": false}),
        )
        .await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "CHANNEL_NOT_EMPTY",
        Some(&frame["id"]),
        Some("delete_channel"),
    );

    let deleted = admin
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts", "force": true}),
        )
        .await;
    assert_eq!(deleted["status"], "success", "{deleted}");
    assert_eq!(
        deleted["payload"],
        json!({"room": "ops", "channel": "alerts", "deleted": true, "removed_members": 2})
    );

    for client in [&mut member, &mut other] {
        let notice = client.recv().await;
        assert_eq!(notice["type"], "system", "{notice}");
        assert_eq!(notice["sender"], "arqonbus");
        assert_eq!(notice["room"], "ops");
        assert_eq!(notice["channel"], "alerts");
    }
    admin.expect_silence(QUIET).await;

    // The members lost the subscription: even once the channel exists
    // again, they are not in it.
    let status = admin.status().await;
    assert_eq!(
        status["subscriptions"], 1,
        "only ops:keep is left: {status}"
    );
    admin.join("ops", "alerts").await;
    let frame = member.publish("ops", "alerts", json!({})).await;
    let err = member.recv().await;
    assert_error(&err, "NOT_SUBSCRIBED", Some(&frame["id"]), None);
    let info = admin.command("channel_info", args).await;
    assert_eq!(info["payload"]["participant_count"], 1, "{info}");
}

#[tokio::test]
async fn system_channels_cannot_be_deleted_or_created() {
    let server = TestServer::start().await;
    let mut admin = server.connect().await;
    for force in [false, true] {
        let frame = admin
            .send_command(
                "delete_channel",
                json!({"room": "integriguard", "channel": "telemetry-stream", "force": force}),
            )
            .await;
        let err = admin.recv().await;
        assert_error(
            &err,
            "FORBIDDEN",
            Some(&frame["id"]),
            Some("delete_channel"),
        );
    }
    let frame = admin
        .send_command(
            "create_channel",
            json!({"room": "integriguard", "channel": "dashboard-events"}),
        )
        .await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "FORBIDDEN",
        Some(&frame["id"]),
        Some("create_channel"),
    );
    let listed = admin
        .command("list_channels", json!({"room": "integriguard"}))
        .await;
    assert_eq!(listed["payload"]["total"], 2, "{listed}");
}

// ---- limits: CHANNEL_FULL, SUBSCRIPTION_LIMIT, RATE_LIMITED -------------------

#[tokio::test]
async fn a_full_channel() {
    let server = TestServer::with(|b| b.max_channel_members(1)).await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    first.join("r", "c").await;
    // Joining again is idempotent, not "full".
    first.join("r", "c").await;
    let frame = second
        .send_command("join_channel", json!({"room": "r", "channel": "c"}))
        .await;
    let err = second.recv().await;
    assert_error(
        &err,
        "CHANNEL_FULL",
        Some(&frame["id"]),
        Some("join_channel"),
    );
    // Room for one more once the first leaves.
    let left = first
        .command("leave_channel", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(left["payload"]["was_member"], true);
    second.join("r", "c").await;
}

#[tokio::test]
async fn too_many_subscriptions() {
    let server = TestServer::with(|b| b.max_subscriptions(2)).await;
    let mut client = server.connect().await;
    assert_eq!(client.welcome["payload"]["limits"]["max_subscriptions"], 2);
    client.join("r", "a").await;
    client.join("r", "b").await;
    client.join("r", "a").await;
    let frame = client
        .send_command("join_channel", json!({"room": "r", "channel": "c"}))
        .await;
    let err = client.recv().await;
    assert_error(
        &err,
        "SUBSCRIPTION_LIMIT",
        Some(&frame["id"]),
        Some("join_channel"),
    );
    client
        .command("leave_channel", json!({"room": "r", "channel": "a"}))
        .await;
    client.join("r", "c").await;
}

#[tokio::test]
async fn over_the_rate_limit() {
    let server = TestServer::with(|b| b.rate_limit_per_sec(2).rate_limit_burst(2)).await;
    let mut client = server.connect().await;
    let frames: Vec<Value> = (0..3)
        .map(|_| envelope("command", json!({"command": "ping"})))
        .collect();
    for frame in &frames {
        client.send_json(frame).await;
    }
    for frame in &frames[..2] {
        let pong = client.recv().await;
        assert_eq!(pong["request_id"], frame["id"]);
        assert_eq!(pong["status"], "success");
    }
    let err = client.recv().await;
    // The refused frame was a command: its error names it (SPEC §5).
    assert_error(&err, "RATE_LIMITED", Some(&frames[2]["id"]), Some("ping"));
    let retry = err["payload"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(retry > 0, "{err}");
    assert!(
        retry <= 1000,
        "one token takes at most 500 ms at 2/s: {err}"
    );
}

#[tokio::test]
async fn binary_frames_cost_a_token_too() {
    // "Every inbound frame costs one token" (SPEC §6).
    let server = TestServer::with(|b| b.rate_limit_per_sec(2).rate_limit_burst(2)).await;
    let mut client = server.connect().await;
    client.send_binary(vec![1]).await;
    client.send_binary(vec![2]).await;
    let frame = envelope("command", json!({"command": "ping"}));
    client.send_json(&frame).await;
    for _ in 0..2 {
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    let reply = client.recv().await;
    assert_eq!(reply["request_id"], frame["id"], "{reply}");
    assert_eq!(
        reply["error_code"], "RATE_LIMITED",
        "the two binary frames used up the burst: {reply}"
    );
}

#[tokio::test]
async fn over_the_rate_limit_a_message_names_its_id() {
    let server = TestServer::with(|b| b.rate_limit_per_sec(2).rate_limit_burst(2)).await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    // The join took one token, this publish the other.
    client.publish("r", "c", json!({})).await;
    let refused = client.publish("r", "c", json!({})).await;
    let err = client.recv().await;
    assert_error(&err, "RATE_LIMITED", Some(&refused["id"]), None);
    assert!(
        err["payload"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    // Garbage over the limit gets a null request_id.
    client.send_text("garbage").await;
    let err = client.recv().await;
    assert_error(&err, "RATE_LIMITED", None, None);
}
