//! Timestamps: what clients may send and what the server writes (SPEC §3).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// A point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// The current time.
pub fn now() -> Timestamp {
    Utc::now()
}

/// RFC 3339 UTC with milliseconds and `Z`: `2026-01-02T03:04:05.678Z`.
pub fn format_timestamp(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`format_timestamp`] of [`now`].
pub fn now_rfc3339() -> String {
    format_timestamp(now())
}

/// Parses an ISO 8601 / RFC 3339 timestamp. A value without an offset is
/// read as UTC; a bare date is midnight UTC.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    // ISO 8601 forms RFC 3339 does not cover: basic offsets (`+0100`),
    // no offset at all, a space separator, no seconds, a bare date.
    const WITH_OFFSET: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];
    for format in WITH_OFFSET {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.with_timezone(&Utc));
        }
    }
    const NAIVE: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for format in NAIVE {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> String {
        format_timestamp(parse_timestamp(text).expect(text))
    }

    #[test]
    fn writes_millis_and_z() {
        let at = parse_timestamp("2026-01-02T03:04:05.6789+00:00").expect("valid");
        assert_eq!(format_timestamp(at), "2026-01-02T03:04:05.678Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-01-02T03:04:05.678Z".len());
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn reads_offsets_and_naive_values_as_utc() {
        assert_eq!(utc("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05.000Z");
        assert_eq!(utc("2026-01-02T05:04:05+02:00"), "2026-01-02T03:04:05.000Z");
        assert_eq!(utc("2026-01-02T05:04:05+0200"), "2026-01-02T03:04:05.000Z");
        assert_eq!(utc("2026-01-02T03:04:05"), "2026-01-02T03:04:05.000Z");
        assert_eq!(utc("2026-01-02T03:04:05.25"), "2026-01-02T03:04:05.250Z");
        assert_eq!(utc("2026-01-02 03:04:05"), "2026-01-02T03:04:05.000Z");
        assert_eq!(utc("2026-01-02T03:04"), "2026-01-02T03:04:00.000Z");
        assert_eq!(utc("2026-01-02"), "2026-01-02T00:00:00.000Z");
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for text in [
            "",
            "now",
            "2026-13-01T00:00:00Z",
            "1700000000",
            "2026-01-02T25:00:00",
        ] {
            assert!(parse_timestamp(text).is_none(), "{text}");
        }
    }
}
