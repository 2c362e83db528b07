//! Every metric family of SPEC §12, its labels, and the bounded sets their
//! values come from. Names follow `arqonbus_<what>_<unit>`, counters end in
//! `_total`. Use these constants, never string literals.

// Gauges.
/// Connected bus clients (registered, past the handshake).
pub const ACTIVE_CLIENTS: &str = "arqonbus_active_clients";
/// Rooms that exist (a room exists while it has a channel).
pub const ROOMS: &str = "arqonbus_rooms";
/// Channels that exist, system channels included.
pub const CHANNELS: &str = "arqonbus_channels";
/// Seconds since the server started.
pub const UPTIME_SECONDS: &str = "arqonbus_uptime_seconds";
/// Resident set size of the process.
pub const MEMORY_USAGE_BYTES: &str = "arqonbus_memory_usage_bytes";
/// Open WebSocket connections on the bus listener.
pub const WEBSOCKET_CONNECTIONS: &str = "arqonbus_websocket_connections";
/// Open WebSocket connections on the telemetry listener.
pub const TELEMETRY_CONNECTIONS: &str = "arqonbus_telemetry_connections";
/// 1 while storage is degraded (SPEC §7), else 0.
pub const STORAGE_DEGRADED: &str = "arqonbus_storage_degraded";
/// Bytes of encoded envelopes held in memory for history (SPEC §18).
pub const HISTORY_MEMORY_BYTES: &str = "arqonbus_history_memory_bytes";

// Counters.
/// Deliveries to clients.
pub const MESSAGES_SENT_TOTAL: &str = "arqonbus_messages_sent_total";
/// Frames received from clients.
pub const MESSAGES_RECEIVED_TOTAL: &str = "arqonbus_messages_received_total";
/// `error` envelopes sent, by `code` ([`ERROR_CODES`]).
pub const ERRORS_TOTAL: &str = "arqonbus_errors_total";
/// Slow-consumer events, by `action` ([`SLOW_CONSUMER_ACTIONS`]).
pub const SLOW_CONSUMER_TOTAL: &str = "arqonbus_slow_consumer_total";
/// Frames refused by the per-connection rate limit.
pub const RATE_LIMITED_TOTAL: &str = "arqonbus_rate_limited_total";
/// Protocol violations counted towards `ARQONBUS_MAX_VIOLATIONS`.
pub const VIOLATIONS_TOTAL: &str = "arqonbus_violations_total";
/// Storage writes, by `result` ([`STORAGE_WRITE_RESULTS`]).
pub const STORAGE_WRITES_TOTAL: &str = "arqonbus_storage_writes_total";
/// Telemetry events slow telemetry subscribers missed.
pub const TELEMETRY_DROPPED_TOTAL: &str = "arqonbus_telemetry_dropped_total";
/// Connections cut off without a close handshake, by `reason`
/// ([`ABORT_REASONS`]).
pub const CONNECTIONS_ABORTED_TOTAL: &str = "arqonbus_connections_aborted_total";

// Histograms.
/// Time to route one message, from decoded to queued for every subscriber.
pub const MESSAGE_ROUTING_SECONDS: &str = "arqonbus_message_routing_seconds";
/// Time to answer a command, by `command` ([`COMMANDS`]).
pub const COMMAND_DURATION_SECONDS: &str = "arqonbus_command_duration_seconds";

/// Every gauge family.
pub const GAUGES: [&str; 9] = [
    ACTIVE_CLIENTS,
    ROOMS,
    CHANNELS,
    UPTIME_SECONDS,
    MEMORY_USAGE_BYTES,
    WEBSOCKET_CONNECTIONS,
    TELEMETRY_CONNECTIONS,
    STORAGE_DEGRADED,
    HISTORY_MEMORY_BYTES,
];

/// Every counter family.
pub const COUNTERS: [&str; 9] = [
    MESSAGES_SENT_TOTAL,
    MESSAGES_RECEIVED_TOTAL,
    ERRORS_TOTAL,
    SLOW_CONSUMER_TOTAL,
    RATE_LIMITED_TOTAL,
    VIOLATIONS_TOTAL,
    STORAGE_WRITES_TOTAL,
    TELEMETRY_DROPPED_TOTAL,
    CONNECTIONS_ABORTED_TOTAL,
];

/// Every histogram family.
pub const HISTOGRAMS: [&str; 2] = [MESSAGE_ROUTING_SECONDS, COMMAND_DURATION_SECONDS];

// Labels.
/// Label of [`ERRORS_TOTAL`]: a SPEC §6 error code.
pub const LABEL_CODE: &str = "code";
/// Label of [`SLOW_CONSUMER_TOTAL`].
pub const LABEL_ACTION: &str = "action";
/// Label of [`STORAGE_WRITES_TOTAL`].
pub const LABEL_RESULT: &str = "result";
/// Label of [`CONNECTIONS_ABORTED_TOTAL`].
pub const LABEL_REASON: &str = "reason";
/// Label of [`COMMAND_DURATION_SECONDS`].
pub const LABEL_COMMAND: &str = "command";

/// Values of [`LABEL_CODE`]: every SPEC §6 error code.
pub const ERROR_CODES: [&str; arqon_protocol::ErrorCode::ALL.len()] = {
    let all = arqon_protocol::ErrorCode::ALL;
    let mut codes = [""; arqon_protocol::ErrorCode::ALL.len()];
    let mut i = 0;
    while i < all.len() {
        codes[i] = all[i].as_str();
        i += 1;
    }
    codes
};

/// Values of [`LABEL_ACTION`]: the SPEC §11 slow-consumer policies.
pub const SLOW_CONSUMER_ACTIONS: [&str; 2] = ["disconnect", "drop"];

/// Values of [`LABEL_RESULT`]: written to the backend, failed, buffered in
/// memory while degraded, dropped.
pub const STORAGE_WRITE_RESULTS: [&str; 4] = ["ok", "error", "buffered", "dropped"];

/// Values of [`LABEL_REASON`]: a socket write made no progress for
/// `ARQONBUS_WRITE_TIMEOUT_SECS`; the shutdown grace period ran out.
pub const ABORT_REASONS: [&str; 2] = ["write_timeout", "shutdown"];

/// Values of [`LABEL_COMMAND`]: the SPEC §5 commands. Other names (unknown
/// commands) are never used as a label.
pub const COMMANDS: [&str; 11] = [
    "ping",
    "status",
    "identify",
    "join_channel",
    "leave_channel",
    "create_channel",
    "delete_channel",
    "list_channels",
    "channel_info",
    "history",
    "presence",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The families SPEC §12 lists, in its words.
    const SPEC: &str = "gauges `arqonbus_active_clients`, `arqonbus_rooms`, `arqonbus_channels`, \
        `arqonbus_uptime_seconds`, `arqonbus_memory_usage_bytes` (RSS), \
        `arqonbus_websocket_connections`, `arqonbus_telemetry_connections`, \
        `arqonbus_storage_degraded` (0/1), and from §18 \
        `arqonbus_history_memory_bytes`; counters `arqonbus_messages_sent_total` \
        (deliveries to clients), `arqonbus_messages_received_total`, \
        `arqonbus_errors_total{code}`, `arqonbus_slow_consumer_total{action}`, \
        `arqonbus_rate_limited_total`, `arqonbus_violations_total`, \
        `arqonbus_storage_writes_total{result}`, `arqonbus_telemetry_dropped_total`; \
        histograms `arqonbus_message_routing_seconds`, \
        `arqonbus_command_duration_seconds{command}`.";

    /// `(kind, name, label)` of every family in [`SPEC`].
    fn spec_families() -> Vec<(&'static str, String, Option<String>)> {
        let mut kind = "";
        let mut families = Vec::new();
        for word in SPEC.split_whitespace() {
            match word {
                "gauges" => kind = "gauge",
                "counters" => kind = "counter",
                "histograms" => kind = "histogram",
                _ => {}
            }
            let Some(quoted) = word.strip_prefix('`') else {
                continue;
            };
            let quoted = quoted.split('`').next().expect("closing backquote");
            let (name, label) = match quoted.split_once('{') {
                Some((name, label)) => (name, Some(label.trim_end_matches('}').to_owned())),
                None => (quoted, None),
            };
            families.push((kind, name.to_owned(), label));
        }
        families
    }

    /// Families added by wave 2 (SPEC §18), beyond the §12 list.
    const BEYOND_SPEC: [&str; 1] = [CONNECTIONS_ABORTED_TOTAL];

    #[test]
    fn names_are_exactly_the_spec_families() {
        let families = spec_families();
        assert_eq!(families.len(), 19);
        let ours: Vec<(&str, &str)> = GAUGES
            .iter()
            .map(|name| ("gauge", *name))
            .chain(COUNTERS.iter().map(|name| ("counter", *name)))
            .chain(HISTOGRAMS.iter().map(|name| ("histogram", *name)))
            .filter(|(_, name)| !BEYOND_SPEC.contains(name))
            .collect();
        let spec: Vec<(&str, &str)> = families
            .iter()
            .map(|(kind, name, _)| (*kind, name.as_str()))
            .collect();
        assert_eq!(ours, spec);
    }

    #[test]
    fn labels_are_the_spec_labels() {
        let labelled: Vec<(String, String)> = spec_families()
            .into_iter()
            .filter_map(|(_, name, label)| label.map(|label| (name, label)))
            .collect();
        let ours = [
            (ERRORS_TOTAL, LABEL_CODE),
            (SLOW_CONSUMER_TOTAL, LABEL_ACTION),
            (STORAGE_WRITES_TOTAL, LABEL_RESULT),
            (COMMAND_DURATION_SECONDS, LABEL_COMMAND),
        ];
        assert_eq!(labelled.len(), ours.len());
        for ((name, label), (our_name, our_label)) in labelled.iter().zip(ours) {
            assert_eq!((name.as_str(), label.as_str()), (our_name, our_label));
        }
    }

    #[test]
    fn names_follow_the_house_convention() {
        for name in GAUGES.iter().chain(&COUNTERS).chain(&HISTOGRAMS) {
            assert!(name.starts_with("arqonbus_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        for name in COUNTERS {
            assert!(name.ends_with("_total"), "{name}");
        }
        for name in GAUGES.iter().chain(&HISTOGRAMS) {
            assert!(!name.ends_with("_total"), "{name}");
        }
        for name in HISTOGRAMS {
            assert!(name.ends_with("_seconds"), "{name}");
        }
    }

    #[test]
    fn error_codes_are_every_spec_code() {
        assert_eq!(ERROR_CODES[0], "VALIDATION_ERROR");
        assert_eq!(ERROR_CODES[17], "INTERNAL_ERROR");
        assert!(ERROR_CODES.iter().all(|code| !code.is_empty()));
        assert_eq!(ERROR_CODES.len(), 18, "SPEC §6 lists 18 codes");
    }
}
