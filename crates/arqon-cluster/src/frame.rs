//! The cluster's Pub/Sub messages, encoded and decoded here alone.
//!
//! A message is a header line and a body, on one of three kinds of
//! Pub/Sub channel (named by [`arqon_storage::layout`]):
//!
//! | channel | header | body |
//! |---|---|---|
//! | a channel's `live` | `<e\|->\t<sender>\t<seq>\t<epoch>` | the envelope |
//! | a channel's `live` | `p\t<node>\t<j\|l>\t<client id>\t<count>` | the member's record |
//! | a node's | `<client id>` | the envelope of a direct message |
//! | a node's | `disconnect\t<client id>` | empty |
//! | control | `delete` | `room:channel` |
//!
//! Channel messages and presence notices are finished by Lua scripts
//! (which add `seq`, `epoch` or the count): they append to the header
//! prefixes [`channel_header`] and [`presence_header`] write, exactly as
//! [`encode`] does. [`decode`] reads all of them into the typed
//! [`Inbound`] of `arqon-routing`, validating identifiers once; anything
//! else is `None`.

use std::sync::Arc;

use arqon_protocol::{ChannelKey, ClientId, Envelope, RawJson, SERVER_SENDER, now_rfc3339};
use arqon_routing::PresenceEvent;
use arqon_routing::backplane::{ChannelMessage, Inbound, PresenceNotice};
use arqon_storage::layout;
use bytes::Bytes;

/// First header field of a presence notice (a channel message's is
/// [`ECHO`] or [`NO_ECHO`]).
const PRESENCE: &str = "p";
const ECHO: &str = "e";
const NO_ECHO: &str = "-";
const JOIN: &str = "j";
const LEAVE: &str = "l";
/// Header kind of an operator's disconnect on a node's channel.
const DISCONNECT: &str = "disconnect";
/// Header of a deletion on the control channel.
const DELETE: &str = "delete";

/// The header prefix of a channel message, up to its `seq` (which the
/// publish script appends with its epoch, `\n` and the envelope).
pub(crate) fn channel_header(sender: Option<&ClientId>, echo: bool) -> String {
    let flags = if echo { ECHO } else { NO_ECHO };
    let sender = sender.map_or(SERVER_SENDER, ClientId::as_str);
    format!("{flags}\t{sender}\t")
}

/// The envelope of a channel message as the publish script takes it:
/// stamped (`sender`, `timestamp`, `room`, `channel`; no `seq` or `epoch`)
/// and encoded without its closing brace, to which the script appends
/// `,"seq":S,"epoch":"E"}`.
pub(crate) fn open_envelope(
    envelope: &mut Envelope<RawJson>,
    key: &ChannelKey,
    sender: Option<&ClientId>,
) -> Vec<u8> {
    envelope.sender = Some(sender.map_or(SERVER_SENDER, ClientId::as_str).to_owned());
    envelope.timestamp = now_rfc3339();
    envelope.room = Some(key.room().to_owned());
    envelope.channel = Some(key.channel().to_owned());
    envelope.seq = None;
    envelope.epoch = None;
    let mut open = envelope.to_json();
    // Always `}`: the envelope encodes as one JSON object.
    open.pop();
    open
}

/// The header of a presence notice up to its count (which the presence
/// script appends, with `\n` and the member's record).
pub(crate) fn presence_header(node: &str, change: PresenceEvent, client_id: &ClientId) -> String {
    let change = match change {
        PresenceEvent::Join => JOIN,
        PresenceEvent::Leave => LEAVE,
    };
    format!("{PRESENCE}\t{node}\t{change}\t{client_id}\t")
}

/// The header the direct script publishes to a node for an operator's
/// disconnect of `target`.
pub(crate) fn disconnect_header(target: &ClientId) -> String {
    format!("{DISCONNECT}\t{target}")
}

/// The control message of a channel's deletion.
pub(crate) fn deleted(key: &ChannelKey) -> String {
    format!("{DELETE}\n{key}")
}

/// `inbound` as it travels: its Pub/Sub channel and message. `node` is the
/// node a direct message or disconnect is for. What the scripts publish
/// is the same, byte for byte.
#[cfg(test)]
pub(crate) fn encode(inbound: &Inbound, node: &str) -> (String, Vec<u8>) {
    let mut out = Vec::new();
    let channel = match inbound {
        Inbound::Channel(message) => {
            let sender = message.skip.as_ref();
            out.extend(channel_header(sender, sender.is_none()).into_bytes());
            out.extend(format!("{}\t{}\n", message.seq, message.epoch).into_bytes());
            out.extend_from_slice(&message.frame);
            layout::live_channel(&message.key)
        }
        Inbound::Presence(notice) => {
            out.extend(
                presence_header(&notice.node, notice.change, &notice.client_id).into_bytes(),
            );
            out.extend(format!("{}\n", notice.count).into_bytes());
            out.extend_from_slice(&notice.record);
            layout::live_channel(&notice.key)
        }
        Inbound::Direct { target, frame } => {
            out.extend(format!("{target}\n").into_bytes());
            out.extend_from_slice(frame);
            layout::node_channel(node)
        }
        Inbound::Disconnect { target } => {
            out.extend(format!("{}\n", disconnect_header(target)).into_bytes());
            layout::node_channel(node)
        }
        Inbound::ChannelDeleted(key) => {
            out.extend(deleted(key).into_bytes());
            layout::CONTROL_CHANNEL.to_owned()
        }
    };
    (channel, out)
}

/// Reads a message of a node channel, a live channel or the control
/// channel. Never panics; `None` for anything malformed.
pub(crate) fn decode(channel: &str, payload: Bytes) -> Option<Inbound> {
    let newline = payload.iter().position(|&byte| byte == b'\n')?;
    let header = std::str::from_utf8(&payload[..newline]).ok()?;
    let body = payload.slice(newline + 1..);
    if channel == layout::CONTROL_CHANNEL {
        return match header {
            DELETE => std::str::from_utf8(&body)
                .ok()
                .and_then(|key| ChannelKey::parse(key).ok())
                .map(Inbound::ChannelDeleted),
            _ => None,
        };
    }
    if channel.starts_with(layout::NODE_CHANNEL_PREFIX) {
        // Client ids never contain a tab: a tabbed header is a control.
        if let Some((kind, target)) = header.split_once('\t') {
            let target = ClientId::new(target).ok()?;
            return (kind == DISCONNECT).then_some(Inbound::Disconnect { target });
        }
        let target = ClientId::new(header).ok()?;
        return Some(Inbound::Direct {
            target,
            frame: body,
        });
    }
    let key = layout::parse_live_channel(channel)?;
    let mut fields = header.split('\t');
    let flags = fields.next()?;
    if flags == PRESENCE {
        let node = fields.next()?.to_owned();
        let change = match fields.next()? {
            JOIN => PresenceEvent::Join,
            LEAVE => PresenceEvent::Leave,
            _ => return None,
        };
        let client_id = ClientId::new(fields.next()?).ok()?;
        let count = fields.next()?.parse().ok()?;
        return Some(Inbound::Presence(PresenceNotice {
            key,
            node,
            change,
            client_id,
            count,
            record: body,
        }));
    }
    let echo = match flags {
        ECHO => true,
        NO_ECHO => false,
        _ => return None,
    };
    let sender = match fields.next()? {
        SERVER_SENDER => None,
        id => Some(ClientId::new(id).ok()?),
    };
    let seq = fields.next()?.parse().ok()?;
    let epoch: Arc<str> = Arc::from(fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some(Inbound::Channel(ChannelMessage {
        key,
        seq,
        epoch,
        skip: if echo { None } else { sender },
        frame: body,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn decoding_never_panics(channel in "\\PC{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            for channel in [channel.as_str(), layout::CONTROL_CHANNEL, "arqonbus:node:n1", "arqonbus:{chat:general}:live"] {
                let _ = decode(channel, Bytes::from(payload.clone()));
            }
        }

        #[test]
        fn channel_headers_decode_to_what_was_sent(seq in any::<u64>(), echo in any::<bool>(), epoch in "[0-9a-f]{1,16}") {
            let sender = ClientId::new("arq_client_00000000000000000000000000000001").expect("valid");
            let mut payload = channel_header(Some(&sender), echo).into_bytes();
            payload.extend(format!("{seq}\t{epoch}\n{{}}").into_bytes());
            let decoded = decode(&layout::live_channel(&key()), Bytes::from(payload));
            let Some(Inbound::Channel(message)) = decoded else {
                panic!("not decoded");
            };
            prop_assert_eq!(message.seq, seq);
            prop_assert_eq!(&*message.epoch, epoch.as_str());
            prop_assert_eq!(message.skip, (!echo).then_some(sender));
        }
    }

    fn key() -> ChannelKey {
        ChannelKey::new("chat", "general").expect("valid")
    }

    fn client(n: u32) -> ClientId {
        ClientId::new(&format!("arq_client_{n:032x}")).expect("valid")
    }

    fn round_trip(inbound: Inbound) {
        let (channel, payload) = encode(&inbound, "n1");
        assert_eq!(decode(&channel, Bytes::from(payload)), Some(inbound));
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Inbound::Channel(ChannelMessage {
            key: key(),
            seq: 7,
            epoch: Arc::from("abc"),
            skip: Some(client(1)),
            frame: Bytes::from_static(b"{\"x\":1}"),
        }));
        round_trip(Inbound::Presence(PresenceNotice {
            key: key(),
            node: "n2".to_owned(),
            change: PresenceEvent::Leave,
            client_id: client(3),
            count: 4,
            record: Bytes::from_static(b"{\"client_id\":\"x\"}"),
        }));
        round_trip(Inbound::Direct {
            target: client(9),
            frame: Bytes::from_static(b"{\"y\":2}"),
        });
        round_trip(Inbound::Disconnect { target: client(9) });
        round_trip(Inbound::ChannelDeleted(key()));
    }

    #[test]
    fn echoes_and_the_server_skip_nobody() {
        let live = layout::live_channel(&key());
        let echoed = format!("e\t{}\t1\tabc\n{{}}", client(1));
        let Some(Inbound::Channel(message)) = decode(&live, Bytes::from(echoed)) else {
            panic!("not decoded");
        };
        assert_eq!(message.skip, None);
        let header = channel_header(None, false);
        assert_eq!(header, "-\tarqonbus\t");
        let Some(Inbound::Channel(message)) =
            decode(&live, Bytes::from(format!("{header}2\te\n{{}}")))
        else {
            panic!("not decoded");
        };
        assert_eq!((message.skip, message.seq), (None, 2));
    }

    #[test]
    fn open_envelopes_lose_only_their_closing_brace() {
        let mut envelope = Envelope::<RawJson>::new(arqon_protocol::EnvelopeType::Message);
        let open = open_envelope(&mut envelope, &key(), Some(&client(1)));
        let mut closed = open.clone();
        closed.extend_from_slice(b",\"seq\":3,\"epoch\":\"e\"}");
        let value: serde_json::Value = serde_json::from_slice(&closed).expect("JSON");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["room"], "chat");
        assert_eq!(value["sender"], client(1).as_str());
    }

    #[test]
    fn garbage_is_ignored() {
        let live = layout::live_channel(&key());
        for payload in [
            &b"no newline"[..],
            b"-\tx\tnan\te\n{}",
            b"?\tarqonbus\t1\te\n{}",
            b"-\tarqonbus\t1\te\textra\n{}",
            b"p\tn1\tx\tarq_client_3\t4\n{}",
            b"\xff\n{}",
        ] {
            assert!(decode(&live, Bytes::copy_from_slice(payload)).is_none());
        }
        assert!(decode("elsewhere", Bytes::from_static(b"-\tarqonbus\t1\te\n{}")).is_none());
        let control = layout::CONTROL_CHANNEL;
        assert!(decode(control, Bytes::from_static(b"rename\nchat:general")).is_none());
        assert!(decode(control, Bytes::from_static(b"delete\nno colon")).is_none());
        let node = layout::node_channel("n1");
        assert!(decode(&node, Bytes::from_static(b"other\tarq_client_9\n")).is_none());
        assert!(decode(&node, Bytes::from_static(b"not an id!\n{}")).is_none());
    }
}
