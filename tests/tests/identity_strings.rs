//! Profile strings are printable (SPEC §18): a `screen_name`, `avatar` or
//! `personality` containing a control character (ESC, newline) or a bidi
//! control (U+202A–U+202E, U+2066–U+2069) is `INVALID_ARGUMENT` naming the
//! field in `identify`, HTTP 400 naming it at the upgrade, and makes a JWT
//! carrying it as `screen_name` invalid (401). Other Unicode, emoji
//! included, is fine, and lengths count characters.

use arqon_config::AuthMode;
use arqonbus_tests::{TestServer, assert_error, detail_fields, upgrade_request};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Each bad value, raw and percent-encoded for a query string.
const BAD: [(&str, &str, &str); 9] = [
    ("ESC", "a\u{1b}[31mb", "a%1B%5B31mb"),
    ("newline", "a\nb", "a%0Ab"),
    ("NUL", "a\u{0}b", "a%00b"),
    ("U+202E", "a\u{202e}b", "a%E2%80%AEb"),
    ("U+202A", "a\u{202a}b", "a%E2%80%AAb"),
    ("U+2066", "a\u{2066}b", "a%E2%81%A6b"),
    ("U+2069", "a\u{2069}b", "a%E2%81%A9b"),
    ("DEL", "a\u{7f}b", "a%7Fb"),
    ("C1 NEL", "a\u{85}b", "a%C2%85b"),
];

const FIELDS: [&str; 3] = ["screen_name", "avatar", "personality"];

#[tokio::test]
async fn identify_refuses_control_and_bidi_characters() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for field in FIELDS {
        for (what, raw, _) in BAD {
            let frame = client.send_command("identify", json!({ field: raw })).await;
            let reply = client.recv_reply_to(&frame["id"]).await;
            assert_error(
                &reply,
                "INVALID_ARGUMENT",
                Some(&frame["id"]),
                Some("identify"),
            );
            assert_eq!(
                detail_fields(&reply),
                [field],
                "{field} with {what}: {reply}"
            );
        }
    }
    // Nothing was changed by the refused attempts.
    let me = client.command("identify", json!({})).await;
    assert_eq!(me["status"], "success", "{me}");
    assert!(me["payload"]["screen_name"].is_null(), "{me}");
}

#[tokio::test]
async fn identify_accepts_other_unicode() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let name = "Zoë 🚀 ساره";
    let reply = client
        .command(
            "identify",
            json!({"screen_name": name, "personality": "curious 🤖", "avatar": "🦀"}),
        )
        .await;
    assert_eq!(reply["status"], "success", "{reply}");
    assert_eq!(reply["payload"]["screen_name"], name);
    assert_eq!(reply["payload"]["avatar"], "🦀");
}

/// Lengths count characters, not bytes: 64 four-byte emoji are a valid
/// screen name, 65 are not.
#[tokio::test]
async fn lengths_count_characters() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let reply = client
        .command("identify", json!({"screen_name": "🚀".repeat(64)}))
        .await;
    assert_eq!(reply["status"], "success", "{reply}");
    let frame = client
        .send_command("identify", json!({"screen_name": "🚀".repeat(65)}))
        .await;
    let reply = client.recv_reply_to(&frame["id"]).await;
    assert_error(
        &reply,
        "INVALID_ARGUMENT",
        Some(&frame["id"]),
        Some("identify"),
    );
    assert_eq!(detail_fields(&reply), ["screen_name"]);

    let rocket = "%F0%9F%9A%80";
    let ok = upgrade_request(server.addr, &format!("/?screen_name={}", rocket.repeat(64))).await;
    assert_eq!(ok.status, 101, "{ok:?}");
    let long = upgrade_request(server.addr, &format!("/?screen_name={}", rocket.repeat(65))).await;
    assert_eq!(long.status, 400, "{long:?}");
    assert_eq!(long.json()["field"], "screen_name");
}

#[tokio::test]
async fn the_upgrade_refuses_them_with_400_naming_the_field() {
    let server = TestServer::start().await;
    for field in FIELDS {
        for (what, _, encoded) in BAD {
            let response = upgrade_request(server.addr, &format!("/?{field}={encoded}")).await;
            assert_eq!(response.status, 400, "{field} with {what}: {response:?}");
            assert_eq!(response.json()["field"], field, "{field} with {what}");
        }
    }
    let fine = server
        .connect_query("screen_name=Zo%C3%AB%20%F0%9F%9A%80")
        .await;
    assert_eq!(fine.welcome["payload"]["client_id"], fine.client_id);
    let mut fine = fine;
    let me = fine.command("identify", json!({})).await;
    assert_eq!(me["payload"]["screen_name"], "Zoë 🚀");
}

#[tokio::test]
async fn a_jwt_screen_name_with_a_bidi_control_is_refused() {
    const SECRET: &str = "identity-strings-secret-0123";
    let server = TestServer::with(|b| b.auth(AuthMode::Jwt).jwt_secret(SECRET)).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let sign = |screen_name: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "ada", "exp": exp, "screen_name": screen_name}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    for bad in ["evil\u{202e}gnp.exe", "a\u{1b}b", "a\nb"] {
        let jwt = sign(bad);
        let response = upgrade_request(server.addr, &format!("/?token={jwt}")).await;
        assert_eq!(response.status, 401, "{bad:?}: {response:?}");
    }
    let jwt = sign("Ada 🚀");
    assert_eq!(
        upgrade_request(server.addr, &format!("/?token={jwt}"))
            .await
            .status,
        101
    );
}
