//! Key names. Both keys of a channel carry the hash tag `{room:channel}`, so
//! they live in one Redis Cluster slot and a channel's commands never span
//! slots.

use arqon_protocol::ChannelKey;

const PREFIX: &str = "arqonbus:{";
const STREAM_SUFFIX: &str = "}:stream";
const META_SUFFIX: &str = "}:meta";

/// `SCAN` pattern of every meta hash.
pub(crate) const META_PATTERN: &str = "arqonbus:{*}:meta";

/// Meta hash fields.
pub(crate) const FIELD_EPOCH: &str = "epoch";
pub(crate) const FIELD_LAST_SEQ: &str = "last_seq";

/// Stream entry fields.
pub(crate) const FIELD_ENVELOPE: &str = "envelope";
pub(crate) const FIELD_TS: &str = "ts";

/// `arqonbus:{room:channel}:stream`
pub(crate) fn stream_key(key: &ChannelKey) -> String {
    format!("{PREFIX}{key}{STREAM_SUFFIX}")
}

/// `arqonbus:{room:channel}:meta`
pub(crate) fn meta_key(key: &ChannelKey) -> String {
    format!("{PREFIX}{key}{META_SUFFIX}")
}

/// The channel of a meta key, if it is one of ours with valid names.
pub(crate) fn parse_meta_key(key: &str) -> Option<ChannelKey> {
    let inner = key.strip_prefix(PREFIX)?.strip_suffix(META_SUFFIX)?;
    ChannelKey::parse(inner).ok()
}

/// Stream entry id of `seq`: `<seq>-0`.
pub(crate) fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

/// The `seq` of an entry id `<seq>-<n>`.
pub(crate) fn parse_entry_id(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(seq, _)| seq).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_hash_tagged() {
        let key = ChannelKey::new("room", "chan.1").expect("valid");
        assert_eq!(stream_key(&key), "arqonbus:{room:chan.1}:stream");
        assert_eq!(meta_key(&key), "arqonbus:{room:chan.1}:meta");
        assert_eq!(parse_meta_key(&meta_key(&key)), Some(key));
        assert_eq!(parse_meta_key("arqonbus:{room:chan.1}:stream"), None);
        assert_eq!(parse_meta_key("arqonbus:{bad name:x}:meta"), None);
        assert_eq!(parse_meta_key("other:{a:b}:meta"), None);
    }

    #[test]
    fn entry_ids_round_trip() {
        assert_eq!(entry_id(42), "42-0");
        assert_eq!(parse_entry_id("42-0"), Some(42));
        assert_eq!(parse_entry_id("7"), Some(7));
        assert_eq!(parse_entry_id("x-0"), None);
    }
}
