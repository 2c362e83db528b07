//! Property: decoding never panics, whatever the bytes or JSON; every valid
//! envelope survives encode → decode unchanged; every alias decodes to its
//! canonical form.

use arqon_protocol::{
    ChannelKey, ClientId, Envelope, EnvelopeType, ErrorCode, Inbound, Target, decode,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 17] = [
    "version",
    "id",
    "type",
    "timestamp",
    "room",
    "channel",
    "payload",
    "command",
    "args",
    "request_id",
    "status",
    "error",
    "error_code",
    "to_client",
    "ack",
    "metadata",
    "sender",
];

/// Objects built from the envelope's own field names with arbitrary values:
/// much closer to the edge cases than random bytes.
fn arb_envelope_like() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(FIELDS.to_vec());
    let value = prop_oneof![
        arb_json(),
        Just(json!("1.0")),
        Just(json!("arq_ok")),
        Just(json!("message")),
        Just(json!("private")),
        Just(json!("command")),
        Just(json!("telemetry")),
        Just(json!("system")),
        Just(json!("2026-01-01T00:00:00Z")),
        Just(json!("room:chan")),
        Just(json!({"target": "arq_client_x", "eventType": "e", "command": "ping"})),
    ];
    prop::collection::btree_map(field, value, 0..12)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode(&text);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        if let Err(rejection) = decode(&value.to_string()) {
            prop_assert!(rejection.error.code() == ErrorCode::ValidationError
                || rejection.error.code() == ErrorCode::UnsupportedVersion
                || rejection.error.code() == ErrorCode::Forbidden);
        }
    }

    #[test]
    fn envelope_like_objects_never_panic(value in arb_envelope_like()) {
        match decode(&value.to_string()) {
            Ok(inbound) => prop_assert_eq!(Some(inbound.id().as_str()), value["id"].as_str()),
            Err(rejection) => {
                // A rejection names the frame's id exactly when it was valid.
                if let Some(id) = &rejection.request_id {
                    prop_assert_eq!(Some(id.as_str()), value["id"].as_str());
                }
            }
        }
    }

    #[test]
    fn channel_messages_round_trip(
        room in name(),
        channel in name(),
        id in "arq_[A-Za-z0-9_.:-]{1,124}",
        text in ".{0,40}",
        ack in any::<bool>(),
    ) {
        let mut sent: Envelope = Envelope::new(EnvelopeType::Message);
        sent.id = id.clone();
        sent.room = Some(room.clone());
        sent.channel = Some(channel.clone());
        sent.ack = Some(ack);
        sent.payload = Some(json!({"text": text}));
        sent.metadata = Some(json!({"k": [1, 2]}));
        let Ok(Inbound::Publish(publish)) = decode(std::str::from_utf8(&sent.to_json()).expect("utf8")) else {
            return Err(TestCaseError::fail("valid envelope rejected"));
        };
        prop_assert_eq!(publish.id.as_str(), id.as_str());
        prop_assert_eq!(publish.ack, ack);
        prop_assert_eq!(&publish.target, &Target::Channel(ChannelKey::new(&room, &channel).expect("valid")));
        // What the router relays parses back to what the client sent.
        let relayed: Envelope = serde_json::from_slice(&publish.envelope.to_json()).expect("json");
        prop_assert_eq!(relayed.payload, sent.payload);
        prop_assert_eq!(relayed.metadata, sent.metadata);
        prop_assert_eq!(relayed.room, Some(room));
        prop_assert_eq!(relayed.channel, Some(channel));
        prop_assert_eq!(relayed.kind, EnvelopeType::Message);
    }

    #[test]
    fn commands_round_trip(name in "[a-z_]{1,20}", args in prop::collection::btree_map("[a-z]{1,8}", arb_json(), 0..4)) {
        let mut sent: Envelope = Envelope::new(EnvelopeType::Command);
        sent.command = Some(name.clone());
        let args: Map<String, Value> = args.into_iter().collect();
        sent.args = Some(args.clone());
        let Ok(Inbound::Command(command)) = decode(std::str::from_utf8(&sent.to_json()).expect("utf8")) else {
            return Err(TestCaseError::fail("valid command rejected"));
        };
        prop_assert_eq!(command.name, name);
        prop_assert_eq!(command.args, args);
    }

    #[test]
    fn server_frames_round_trip(code in prop::sample::select(ErrorCode::ALL.to_vec()), text in ".{0,40}") {
        let id = arqon_protocol::MessageId::generate();
        let sent = Envelope::error(Some(&id), None, code, text, &[], None);
        let back: Envelope = serde_json::from_slice(&sent.to_json()).expect("json");
        prop_assert_eq!(back.error_code(), Some(code));
        prop_assert_eq!(back, sent);
    }
}

/// Every input alias decodes to the canonical form the server sends.
#[test]
fn every_alias_maps_to_its_canonical_form() {
    let base = |extra: Value| {
        let mut frame = json!({"version": "1.0", "id": "arq_a", "timestamp": "2026-01-01T00:00:00Z", "payload": {}});
        for (k, v) in extra.as_object().expect("object") {
            frame[k] = v.clone();
        }
        frame.to_string()
    };
    let cases = [
        (
            json!({"type": "event", "room": "r", "channel": "c"}),
            EnvelopeType::Message,
            Target::Channel(ChannelKey::new("r", "c").expect("key")),
        ),
        (
            json!({"type": "private", "payload": {"target": "arq_client_t"}}),
            EnvelopeType::Message,
            Target::Direct(ClientId::new("arq_client_t").expect("id")),
        ),
        (
            json!({"type": "command_response", "request_id": "arq_r", "to_client": "arq_client_t"}),
            EnvelopeType::Response,
            Target::Direct(ClientId::new("arq_client_t").expect("id")),
        ),
        (
            json!({"type": "message", "metadata": {"to_client": "arq_client_t"}}),
            EnvelopeType::Message,
            Target::Direct(ClientId::new("arq_client_t").expect("id")),
        ),
        (
            json!({"type": "message", "room": "r:c"}),
            EnvelopeType::Message,
            Target::Channel(ChannelKey::new("r", "c").expect("key")),
        ),
        (
            json!({"type": "message", "room": "r", "channel": "c", "from": "arq_client_x", "from_client": "y"}),
            EnvelopeType::Message,
            Target::Channel(ChannelKey::new("r", "c").expect("key")),
        ),
    ];
    for (extra, kind, target) in cases {
        let text = base(extra.clone());
        let Ok(Inbound::Publish(publish)) = decode(&text) else {
            panic!("{extra} rejected")
        };
        assert_eq!(publish.envelope.kind, kind, "{extra}");
        assert_eq!(publish.target, target, "{extra}");
        let wire = String::from_utf8(publish.envelope.to_json()).expect("utf8");
        assert!(
            !wire.contains("\"event\"")
                && !wire.contains("\"private\"")
                && !wire.contains("command_response"),
            "{wire}"
        );
        assert!(
            !wire.contains("from_client") && !wire.contains("\"from\""),
            "{wire}"
        );
    }
    let legacy = base(json!({"type": "command", "payload": {"command": "ping", "args": {}}}));
    assert!(matches!(decode(&legacy), Ok(Inbound::Command(c)) if c.name == "ping"));
}
