//! The Lua scripts of cluster mode. Each runs atomically in Redis, so what
//! it reads and writes is one step for every node. Key names come in
//! `KEYS` and `ARGV` from [`arqon_storage::layout`]; the meta and stream
//! field names are put in by [`layout::script`], so no script spells one.
//! The messages they publish are those of [`crate::frame`]: a script only
//! completes a header that `frame` wrote.

use std::sync::LazyLock;

use arqon_storage::layout;

/// Sequences, stores and broadcasts one channel message.
///
/// KEYS: meta, stream, the channel's node set.
/// ARGV: the envelope JSON without its closing brace, a fresh epoch (used
/// when the channel has none in Redis), stream MAXLEN, TTL seconds (0 =
/// never), the channel's Pub/Sub name, the time in ms, the header prefix
/// ([`crate::frame::channel_header`]), and the key prefix of its members
/// hashes.
///
/// Appends `,"seq":S,"epoch":"E"}` to the envelope, `XADD`s it as
/// `<S>-0`, and `PUBLISH`es `<header prefix><S>\t<E>\n<envelope>`.
/// Returns `{seq, epoch, members on live nodes, stored (1|0)}`.
pub(crate) static PUBLISH: LazyLock<String> = LazyLock::new(|| {
    layout::script(
        r#"
local epoch = redis.call('HGET', KEYS[1], '$EPOCH')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], '$EPOCH', epoch, '$LAST_SEQ', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], '$LAST_SEQ', 1)
local frame = ARGV[1] .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', '$ENVELOPE', frame, '$TS', ARGV[6])
local stored = 1
if type(added) == 'table' and added.err then
  stored = 0
end
local ttl = tonumber(ARGV[4])
$APPLY_TTL
redis.call('PUBLISH', ARGV[5], ARGV[7] .. seq .. '\t' .. epoch .. '\n' .. frame)
local members = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  members = members + redis.call('HLEN', ARGV[8] .. node)
end
return {seq, epoch, members, stored}
"#,
    )
});

/// The members of a channel on every node, as client records.
///
/// KEYS: the channel's node set. ARGV: the key prefix of its members
/// hashes. A node whose members hash is gone (it died, and its keys
/// expired) leaves the set on the way.
pub(crate) const MEMBERS: &str = r"
local records = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local values = redis.call('HVALS', ARGV[1] .. node)
  if #values == 0 then
    redis.call('SREM', KEYS[1], node)
  end
  for _, value in ipairs(values) do
    records[#records + 1] = value
  end
end
return records
";

/// Sends a direct message to the node that holds its target.
///
/// KEYS: the client registry, the node registry.
/// ARGV: target client id, envelope JSON, now (ms), node TTL (ms), the
/// Pub/Sub name prefix of nodes, and optionally the header to publish
/// instead of the target id (a disconnect's `disconnect\t<id>`).
///
/// Returns 1 when the target is registered on a live node (the frame was
/// published to that node), 0 otherwise; a registration on a dead node is
/// removed on the way.
pub(crate) const DIRECT: &str = r"
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then
  return 0
end
local seen = redis.call('ZSCORE', KEYS[2], node)
if not seen or tonumber(seen) < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('PUBLISH', ARGV[5] .. node, (ARGV[6] or ARGV[1]) .. '\n' .. ARGV[2])
return 1
";

/// Removes a client's registration if it still names this node (a client
/// that reconnected elsewhere keeps the newer one).
///
/// KEYS: the client registry. ARGV: client id, node id.
pub(crate) const UNREGISTER: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Records a member joining or leaving a channel on one node, and tells
/// every node through the channel's Pub/Sub channel (SPEC §15).
///
/// KEYS: the node's members hash of the channel, the channel's node set.
/// ARGV: `j` (join) or `l` (leave), client id, client record (JSON), node
/// TTL (ms), this node's id, the key prefix of the members hashes, the
/// channel's Pub/Sub name, the notice header without its count (empty: no
/// notice, e.g. for a repeated join).
///
/// Publishes `<header><count>\n<record>`, the count being the members on
/// every node after the change; returns that count.
pub(crate) const PRESENCE: &str = r"
if ARGV[1] == 'j' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local total = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local n = redis.call('HLEN', ARGV[6] .. node)
  if n == 0 then
    redis.call('SREM', KEYS[2], node)
  end
  total = total + n
end
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. total .. '\n' .. ARGV[3])
end
return total
";

/// The members of a channel on every node, by node.
///
/// KEYS: the channel's node set. ARGV: the key prefix of its members
/// hashes. Returns a flat array `node, client id, record, node, …`.
pub(crate) const MEMBERS_BY_NODE: &str = r"
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local pairs = redis.call('HGETALL', ARGV[1] .. node)
  for i = 1, #pairs, 2 do
    out[#out + 1] = node
    out[#out + 1] = pairs[i]
    out[#out + 1] = pairs[i + 1]
  end
end
return out
";
