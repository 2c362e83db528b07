use serde_json::json;

use super::*;
use crate::error::ErrorCode;

fn frame(overrides: Value) -> String {
    let mut base = json!({
        "version": "1.0",
        "id": "arq_m1",
        "type": "message",
        "timestamp": "2026-01-01T00:00:00Z",
        "room": "science",
        "channel": "explore",
        "payload": {"text": "hi"},
    });
    let map = base.as_object_mut().expect("object");
    for (key, value) in overrides.as_object().expect("object") {
        if value.is_null() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value.clone());
        }
    }
    base.to_string()
}

fn publish(text: &str) -> Publish {
    match decode(text) {
        Ok(Inbound::Publish(publish)) => publish,
        other => panic!("expected a publish, got {other:?}"),
    }
}

fn rejection(text: &str) -> Rejection {
    decode(text).expect_err("must be rejected")
}

fn fields(rejection: &Rejection) -> Vec<&str> {
    rejection
        .error
        .details()
        .iter()
        .map(|d| d.field.as_str())
        .collect()
}

#[test]
fn a_channel_message_decodes_to_a_canonical_envelope() {
    let publish = publish(&frame(
        json!({"from": "spoof", "sender": "spoof", "extra": 1}),
    ));
    assert_eq!(
        publish.target,
        Target::Channel(ChannelKey::parse("science:explore").expect("key"))
    );
    assert!(!publish.ack);
    assert_eq!(publish.envelope.sender, None);
    assert_eq!(
        publish.envelope.payload.as_deref().map(RawValue::get),
        Some(r#"{"text":"hi"}"#)
    );
    let json: Value = serde_json::from_slice(&publish.envelope.to_json()).expect("json");
    assert!(json.get("extra").is_none() && json.get("from").is_none());
}

#[test]
fn relayed_messages_always_carry_metadata() {
    let publish = publish(&frame(json!({})));
    assert_eq!(
        publish.envelope.metadata.as_deref().map(RawValue::get),
        Some("{}")
    );
}

#[test]
fn room_may_carry_room_and_channel() {
    let publish = publish(&frame(json!({"room": "chat:public", "channel": null})));
    assert_eq!(
        publish.target,
        Target::Channel(ChannelKey::parse("chat:public").expect("key"))
    );
}

#[test]
fn type_aliases_resolve() {
    let event = publish(&frame(json!({"type": "event"})));
    assert_eq!(event.envelope.kind, EnvelopeType::Message);

    let private = publish(&frame(
        json!({"type": "private", "room": null, "channel": null, "payload": {"target": "arq_client_abc"}}),
    ));
    assert_eq!(private.envelope.kind, EnvelopeType::Message);
    assert_eq!(
        private.target,
        Target::Direct(ClientId::new("arq_client_abc").expect("id"))
    );

    let response = publish(&frame(
        json!({"type": "command_response", "request_id": "arq_q"}),
    ));
    assert_eq!(response.envelope.kind, EnvelopeType::Response);
    assert_eq!(response.envelope.request_id, Some(Some("arq_q".to_owned())));
}

#[test]
fn direct_target_aliases() {
    let direct = publish(&frame(json!({"to_client": "arq_client_1"})));
    assert_eq!(
        direct.target,
        Target::Direct(ClientId::new("arq_client_1").expect("id"))
    );
    let meta = publish(&frame(json!({"metadata": {"to_client": "arq_client_2"}})));
    assert_eq!(
        meta.target,
        Target::Direct(ClientId::new("arq_client_2").expect("id"))
    );
}

#[test]
fn version_rules() {
    let missing = rejection(&frame(json!({"version": null})));
    assert_eq!(missing.error.code(), ErrorCode::ValidationError);
    assert_eq!(fields(&missing), ["version"]);
    assert_eq!(
        missing.request_id.as_ref().map(MessageId::as_str),
        Some("arq_m1")
    );

    let number = rejection(&frame(json!({"version": 1.0})));
    assert_eq!(number.error.code(), ErrorCode::ValidationError);

    let other = rejection(&frame(json!({"version": "2.0"})));
    assert_eq!(other.error.code(), ErrorCode::UnsupportedVersion);
    assert_eq!(
        other.request_id.as_ref().map(MessageId::as_str),
        Some("arq_m1")
    );
}

#[test]
fn every_invalid_field_is_listed() {
    let bad = rejection(&frame(
        json!({"id": "nope", "timestamp": "yesterday", "payload": [1], "ack": "yes"}),
    ));
    assert_eq!(bad.error.code(), ErrorCode::ValidationError);
    assert_eq!(bad.request_id, None);
    let listed = fields(&bad);
    for field in ["id", "timestamp", "payload", "ack"] {
        assert!(listed.contains(&field), "{field} missing from {listed:?}");
    }
}

#[test]
fn not_json_and_not_objects_are_validation_errors() {
    for text in [
        "",
        "not json",
        "[1,2]",
        "42",
        "\"s\"",
        "{\"version\":",
        "null",
    ] {
        let rejected = rejection(text);
        assert_eq!(rejected.error.code(), ErrorCode::ValidationError, "{text}");
        assert_eq!(rejected.request_id, None);
    }
}

#[test]
fn duplicate_fields_are_rejected() {
    let text = r#"{"version":"1.0","version":"1.0","id":"arq_1","type":"message","timestamp":"2026-01-01T00:00:00Z","room":"a","channel":"b","payload":{}}"#;
    assert_eq!(rejection(text).error.code(), ErrorCode::ValidationError);
}

#[test]
fn system_from_a_client_is_forbidden() {
    let rejected = rejection(&frame(json!({"type": "system"})));
    assert_eq!(rejected.error, ProtocolError::SystemType);
    assert_eq!(rejected.error.code(), ErrorCode::Forbidden);
}

#[test]
fn messages_need_a_target_and_a_payload() {
    let no_target = rejection(&frame(json!({"room": null, "channel": null})));
    assert_eq!(fields(&no_target), ["channel"]);
    let room_only = rejection(&frame(json!({"channel": null})));
    assert_eq!(fields(&room_only), ["channel"]);
    let no_payload = rejection(&frame(json!({"payload": null})));
    assert_eq!(fields(&no_payload), ["payload"]);
    let bad_room = rejection(&frame(json!({"room": "bad room"})));
    assert_eq!(fields(&bad_room), ["room"]);
    let long = rejection(&frame(json!({"channel": "x".repeat(65)})));
    assert_eq!(fields(&long), ["channel"]);
}

#[test]
fn responses_need_request_id_and_a_target() {
    let rejected = rejection(&frame(json!({"type": "response"})));
    assert_eq!(fields(&rejected), ["request_id"]);
    let untargeted = rejection(&frame(
        json!({"type": "error", "request_id": "arq_x", "room": null, "channel": null}),
    ));
    assert_eq!(fields(&untargeted), ["channel"]);
}

#[test]
fn commands_take_args_and_default_room_and_channel() {
    let text = frame(
        json!({"type": "command", "command": "join_channel", "payload": null, "args": {"channel": "other"}}),
    );
    let Ok(Inbound::Command(command)) = decode(&text) else {
        panic!("command")
    };
    assert_eq!(command.name, "join_channel");
    assert_eq!(command.args["room"], "science");
    assert_eq!(command.args["channel"], "other");
}

#[test]
fn legacy_commands_read_the_payload() {
    let text = frame(
        json!({"type": "command", "room": null, "channel": null, "payload": {"command": "ping", "parameters": {"x": 1}}}),
    );
    let Ok(Inbound::Command(command)) = decode(&text) else {
        panic!("command")
    };
    assert_eq!(command.name, "ping");
    assert_eq!(command.args["x"], 1);
    let text =
        frame(json!({"type": "command", "payload": {"command": "status", "args": {"y": 2}}}));
    let Ok(Inbound::Command(command)) = decode(&text) else {
        panic!("command")
    };
    assert_eq!(command.args["y"], 2);
}

#[test]
fn commands_need_a_name() {
    let rejected = rejection(&frame(json!({"type": "command", "payload": {}})));
    assert_eq!(fields(&rejected), ["command"]);
    let mistyped = rejection(&frame(json!({"type": "command", "command": 5})));
    assert_eq!(fields(&mistyped), ["command"]);
}

#[test]
fn telemetry_needs_an_event_type() {
    let ok = frame(json!({"type": "telemetry", "payload": {"eventType": "custom"}}));
    let Ok(Inbound::Telemetry(event)) = decode(&ok) else {
        panic!("telemetry")
    };
    assert_eq!(event.event_type, "custom");
    let empty = rejection(&frame(
        json!({"type": "telemetry", "payload": {"eventType": ""}}),
    ));
    assert_eq!(fields(&empty), ["payload.eventType"]);
    let missing = rejection(&frame(json!({"type": "telemetry", "payload": null})));
    assert_eq!(fields(&missing), ["payload.eventType"]);
}

#[test]
fn echo_and_ack_flags() {
    let publish = publish(&frame(json!({"ack": true, "metadata": {"echo": true}})));
    assert!(publish.ack && publish.echo);
}

#[test]
fn deep_nesting_is_rejected() {
    let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
    let ok: Value = serde_json::from_str(&deep(120)).expect("json");
    assert!(decode(&frame(json!({"payload": ok}))).is_ok());
    let text = frame(json!({"payload": {}}))
        .replace("\"payload\":{}", &format!("\"payload\":{}", deep(200)));
    assert_eq!(fields(&rejection(&text)), ["payload"]);
    let text = frame(json!({"type": "command", "command": "ping"})).replacen(
        '{',
        &format!("{{\"args\":{},", deep(100_000)),
        1,
    );
    assert_eq!(fields(&rejection(&text)), ["args"]);
    // Brackets inside strings do not count.
    let strings = json!({"s": "[".repeat(1000)});
    assert!(decode(&frame(json!({"payload": strings}))).is_ok());
}

#[test]
fn unknown_types_are_rejected() {
    assert_eq!(
        fields(&rejection(&frame(json!({"type": "shout"})))),
        ["type"]
    );
}
