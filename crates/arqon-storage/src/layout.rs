//! The Redis layout of ArqonBus, in one place: every key, hash field and
//! Pub/Sub channel name that history (this crate) and cluster mode
//! (`arqon-cluster`) read or write, and the substitution that puts the
//! field names into their Lua scripts. Nothing here talks to Redis.
//!
//! Keys of one channel share the hash tag `{room:channel}`, and the
//! cluster-wide keys share `{cluster}`, so every script touches one Redis
//! Cluster slot. `docs/storage.md` and `docs/cluster.md` describe what each
//! key holds.

use arqon_protocol::ChannelKey;

const CHANNEL_PREFIX: &str = "arqonbus:{";
const STREAM_SUFFIX: &str = "}:stream";
const META_SUFFIX: &str = "}:meta";
const LIVE_SUFFIX: &str = "}:live";
const MEMBERS_INFIX: &str = "}:members:";
const NODES_SUFFIX: &str = "}:nodes";

/// `SCAN` pattern of every meta hash.
pub const META_PATTERN: &str = "arqonbus:{*}:meta";

/// Meta hash field: the channel's epoch.
pub const FIELD_EPOCH: &str = "epoch";
/// Meta hash field: the last `seq` assigned in the channel.
pub const FIELD_LAST_SEQ: &str = "last_seq";
/// Stream entry field: the delivered envelope (JSON).
pub const FIELD_ENVELOPE: &str = "envelope";
/// Stream entry field: when it was written (ms since the Unix epoch).
pub const FIELD_TS: &str = "ts";
/// Node hash field: the node's summary (JSON).
pub const FIELD_SUMMARY: &str = "summary";

/// Client id → node id of every client of every node.
pub const CLIENTS_KEY: &str = "arqonbus:{cluster}:clients";
/// Channel key → channel record (JSON) of every shared channel.
pub const CHANNELS_KEY: &str = "arqonbus:{cluster}:channels";
/// Sorted set of node ids scored by their last heartbeat (ms).
pub const NODES_KEY: &str = "arqonbus:{cluster}:nodes";
/// Pub/Sub channel of cluster-wide events (a channel's deletion).
pub const CONTROL_CHANNEL: &str = "arqonbus:control";
/// Pub/Sub channel name prefix of one node's direct messages.
pub const NODE_CHANNEL_PREFIX: &str = "arqonbus:node:";

/// `arqonbus:{room:channel}:stream`: the channel's history.
pub fn stream_key(key: &ChannelKey) -> String {
    format!("{CHANNEL_PREFIX}{key}{STREAM_SUFFIX}")
}

/// `arqonbus:{room:channel}:meta`: its epoch and last `seq`.
pub fn meta_key(key: &ChannelKey) -> String {
    format!("{CHANNEL_PREFIX}{key}{META_SUFFIX}")
}

/// The channel of a meta key, if it is one of ours with valid names.
pub fn parse_meta_key(key: &str) -> Option<ChannelKey> {
    let inner = key
        .strip_prefix(CHANNEL_PREFIX)?
        .strip_suffix(META_SUFFIX)?;
    ChannelKey::parse(inner).ok()
}

/// `arqonbus:{room:channel}:live`: the Pub/Sub channel of its messages
/// and presence notices.
pub fn live_channel(key: &ChannelKey) -> String {
    format!("{CHANNEL_PREFIX}{key}{LIVE_SUFFIX}")
}

/// The channel of a live Pub/Sub channel name.
pub fn parse_live_channel(name: &str) -> Option<ChannelKey> {
    let inner = name
        .strip_prefix(CHANNEL_PREFIX)?
        .strip_suffix(LIVE_SUFFIX)?;
    ChannelKey::parse(inner).ok()
}

/// `arqonbus:{room:channel}:members:`: followed by a node id, the hash of
/// that node's members of the channel (client id → client record).
pub fn members_prefix(key: &ChannelKey) -> String {
    format!("{CHANNEL_PREFIX}{key}{MEMBERS_INFIX}")
}

/// `arqonbus:{room:channel}:members:<node>`.
pub fn members_key(key: &ChannelKey, node: &str) -> String {
    format!("{}{node}", members_prefix(key))
}

/// `arqonbus:{room:channel}:nodes`: the nodes that have (or recently had)
/// members in the channel.
pub fn channel_nodes_key(key: &ChannelKey) -> String {
    format!("{CHANNEL_PREFIX}{key}{NODES_SUFFIX}")
}

/// `arqonbus:{cluster}:counts:<node>`: a node's member count per channel.
pub fn counts_key(node: &str) -> String {
    format!("arqonbus:{{cluster}}:counts:{node}")
}

/// `arqonbus:{cluster}:node:<node>`: a node's summary.
pub fn node_key(node: &str) -> String {
    format!("arqonbus:{{cluster}}:node:{node}")
}

/// `arqonbus:node:<node>`: the Pub/Sub channel of a node's direct messages
/// and operator disconnects.
pub fn node_channel(node: &str) -> String {
    format!("{NODE_CHANNEL_PREFIX}{node}")
}

/// Stream entry id of `seq`: `<seq>-0`.
pub fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

/// The `seq` of an entry id `<seq>-<n>`.
pub fn parse_entry_id(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(seq, _)| seq).parse().ok()
}

/// The retention rule of a channel's two keys, for scripts (`$APPLY_TTL`):
/// `KEYS[1]` and `KEYS[2]` (its meta hash and its stream, in either order)
/// expire after the local `ttl` seconds, or are kept for good when it is 0.
/// History writes and cluster publishes apply the same rule.
const APPLY_TTL: &str = "if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end";

/// A Lua script with the field names of this layout: `$EPOCH`,
/// `$LAST_SEQ`, `$ENVELOPE` and `$TS` in `template` become [`FIELD_EPOCH`],
/// [`FIELD_LAST_SEQ`], [`FIELD_ENVELOPE`] and [`FIELD_TS`], so that no
/// script spells a field itself; `$APPLY_TTL` becomes the retention rule
/// of the channel's keys.
pub fn script(template: &str) -> String {
    template
        .replace("$APPLY_TTL", APPLY_TTL)
        .replace("$EPOCH", FIELD_EPOCH)
        .replace("$LAST_SEQ", FIELD_LAST_SEQ)
        .replace("$ENVELOPE", FIELD_ENVELOPE)
        .replace("$TS", FIELD_TS)
}

/// Whether `url` asks for TLS (`rediss://`, `valkeys://`), which this
/// build does not support.
pub fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

/// `url` as the Redis client reads it. SPEC §10 writes a Redis Cluster as
/// `redis-cluster://host:port,host:port`; the client reads further seed
/// nodes from `?node=host:port&…`.
pub fn client_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("redis-cluster://") else {
        return url.to_owned();
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let mut nodes = hosts.split(',').filter(|host| !host.is_empty());
    let first = nodes.next().unwrap_or_default();
    let mut params: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
    if !query.is_empty() {
        params.push(query.to_owned());
    }
    if params.is_empty() {
        format!("redis-cluster://{credentials}{first}")
    } else {
        format!("redis-cluster://{credentials}{first}?{}", params.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_hash_tagged() {
        let key = ChannelKey::new("room", "chan.1").expect("valid");
        assert_eq!(stream_key(&key), "arqonbus:{room:chan.1}:stream");
        assert_eq!(meta_key(&key), "arqonbus:{room:chan.1}:meta");
        assert_eq!(parse_meta_key(&meta_key(&key)), Some(key.clone()));
        assert_eq!(parse_meta_key("arqonbus:{room:chan.1}:stream"), None);
        assert_eq!(parse_meta_key("arqonbus:{bad name:x}:meta"), None);
        assert_eq!(parse_meta_key("other:{a:b}:meta"), None);
        assert_eq!(live_channel(&key), "arqonbus:{room:chan.1}:live");
        assert_eq!(parse_live_channel(&live_channel(&key)), Some(key.clone()));
        assert_eq!(parse_live_channel(&meta_key(&key)), None);
        assert_eq!(members_key(&key, "n1"), "arqonbus:{room:chan.1}:members:n1");
        assert_eq!(channel_nodes_key(&key), "arqonbus:{room:chan.1}:nodes");
        assert_eq!(counts_key("n1"), "arqonbus:{cluster}:counts:n1");
        assert_eq!(node_key("n1"), "arqonbus:{cluster}:node:n1");
        assert_eq!(node_channel("n1"), "arqonbus:node:n1");
    }

    #[test]
    fn entry_ids_round_trip() {
        assert_eq!(entry_id(42), "42-0");
        assert_eq!(parse_entry_id("42-0"), Some(42));
        assert_eq!(parse_entry_id("7"), Some(7));
        assert_eq!(parse_entry_id("x-0"), None);
    }

    #[test]
    fn scripts_get_the_field_names() {
        let lua =
            script("redis.call('HSET', KEYS[1], '$EPOCH', e, '$LAST_SEQ', 0, '$ENVELOPE', '$TS')");
        assert_eq!(
            lua,
            "redis.call('HSET', KEYS[1], 'epoch', e, 'last_seq', 0, 'envelope', 'ts')"
        );
        let retention = script("local ttl = 5\n$APPLY_TTL");
        assert!(retention.contains("redis.call('EXPIRE', KEYS[2], ttl)"));
        assert!(retention.contains("redis.call('PERSIST', KEYS[1])"));
        assert!(!retention.contains('$'));
    }
}
