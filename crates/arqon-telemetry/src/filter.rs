//! The `?events=a,b` filter of a telemetry socket (SPEC §8).

use crate::Event;
use crate::error::TelemetryError;

/// Which events a telemetry subscriber wants, by `eventType` (the names of
/// [`Event::KINDS`]). `telemetry_connected` always matches, whatever the
/// filter: it is the first frame on every telemetry socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventFilter {
    /// Bit `i` set: [`Event::KINDS`]`[i]` is wanted.
    mask: u32,
}

const ALL: u32 = (1 << Event::KINDS.len()) - 1;
/// `telemetry_connected` is index 0 of [`Event::KINDS`].
const ALWAYS: u32 = 1;

impl EventFilter {
    /// Every event.
    pub const fn all() -> Self {
        Self { mask: ALL }
    }

    /// Parses the value of the `events` query parameter: comma-separated
    /// event names, surrounding spaces and empty items ignored. An empty
    /// value (`?events=`) means every event. An unknown name is an error
    /// naming it, so the server can refuse the upgrade with HTTP 400.
    pub fn parse(list: &str) -> Result<Self, TelemetryError> {
        let mut mask = 0;
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let Some(index) = Event::KINDS.iter().position(|kind| *kind == name) else {
                return Err(TelemetryError::UnknownEvent {
                    name: name.to_owned(),
                });
            };
            mask |= 1 << index;
        }
        Ok(if mask == 0 {
            Self::all()
        } else {
            Self {
                mask: mask | ALWAYS,
            }
        })
    }

    /// Whether an event of `kind` (an `eventType`, as in
    /// [`crate::Published::kind`]) passes the filter.
    pub fn matches(&self, kind: &str) -> bool {
        Event::KINDS
            .iter()
            .position(|known| *known == kind)
            .is_some_and(|index| self.mask & (1 << index) != 0)
    }

    /// Whether every event passes.
    pub const fn is_all(&self) -> bool {
        self.mask == ALL
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_of_known_names() {
        let filter = EventFilter::parse("stats, error,,client_connected").expect("valid");
        assert!(filter.matches("stats"));
        assert!(filter.matches("error"));
        assert!(filter.matches("client_connected"));
        assert!(!filter.matches("client_disconnected"));
        assert!(!filter.matches("agent_activity"));
        assert!(!filter.matches("custom"));
        assert!(!filter.is_all());
    }

    #[test]
    fn telemetry_connected_always_passes() {
        let filter = EventFilter::parse("stats").expect("valid");
        assert!(filter.matches("telemetry_connected"));
        assert!(!filter.matches("error"));
    }

    #[test]
    fn empty_means_everything() {
        for list in ["", " ", ",", " , "] {
            let filter = EventFilter::parse(list).expect("valid");
            assert!(filter.is_all(), "{list:?}");
            for kind in Event::KINDS {
                assert!(filter.matches(kind));
            }
        }
        assert_eq!(EventFilter::default(), EventFilter::all());
    }

    #[test]
    fn every_kind_can_be_selected_alone() {
        for kind in Event::KINDS {
            let filter = EventFilter::parse(kind).expect("known");
            for other in Event::KINDS {
                let expected = other == kind || other == "telemetry_connected";
                assert_eq!(filter.matches(other), expected, "{kind} vs {other}");
            }
        }
    }

    #[test]
    fn unknown_names_are_rejected_by_name() {
        for (list, bad) in [
            ("stats,nope", "nope"),
            ("STATS", "STATS"),
            ("stats;error", "stats;error"),
            ("client connected", "client connected"),
        ] {
            match EventFilter::parse(list) {
                Err(TelemetryError::UnknownEvent { name }) => assert_eq!(name, bad),
                other => panic!("{list:?}: {other:?}"),
            }
        }
        let err = EventFilter::parse("x").expect_err("unknown");
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    #[test]
    fn unknown_kinds_never_match() {
        assert!(!EventFilter::all().matches("heartbeat"));
    }
}
