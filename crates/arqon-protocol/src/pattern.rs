//! Channel patterns (SPEC §9): the `channels` claim of a JWT lists the
//! `room:channel` keys a client may join and publish to, with `*` allowed
//! only as a whole segment.

use std::fmt;
use std::str::FromStr;

use crate::ids::{ChannelKey, is_valid_name};

/// One segment of a pattern: any name, or exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Exact(String),
}

impl Segment {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "*" => Some(Segment::Any),
            name if is_valid_name(name) => Some(Segment::Exact(name.to_owned())),
            _ => None,
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Exact(exact) => exact == name,
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Any => f.write_str("*"),
            Segment::Exact(name) => f.write_str(name),
        }
    }
}

/// `room:channel`, `room:*`, `*:channel` or `*:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    room: Segment,
    channel: Segment,
}

/// A pattern that is not `room:channel` with `*` only as a whole segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel pattern {0:?}: expected room:channel, with * only as a whole segment")]
pub struct InvalidPattern(pub String);

impl ChannelPattern {
    pub fn parse(text: &str) -> Result<Self, InvalidPattern> {
        let invalid = || InvalidPattern(text.to_owned());
        let (room, channel) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Self {
            room: Segment::parse(room).ok_or_else(invalid)?,
            channel: Segment::parse(channel).ok_or_else(invalid)?,
        })
    }

    pub fn matches(&self, key: &ChannelKey) -> bool {
        self.room.matches(key.room()) && self.channel.matches(key.channel())
    }
}

impl FromStr for ChannelPattern {
    type Err = InvalidPattern;
    fn from_str(text: &str) -> Result<Self, InvalidPattern> {
        Self::parse(text)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.room, self.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ChannelKey {
        ChannelKey::parse(text).expect("key")
    }

    #[test]
    fn whole_segment_wildcards_match() {
        let exact = ChannelPattern::parse("science:explore").expect("valid");
        assert!(exact.matches(&key("science:explore")));
        assert!(!exact.matches(&key("science:other")));
        let room = ChannelPattern::parse("science:*").expect("valid");
        assert!(room.matches(&key("science:anything")));
        assert!(!room.matches(&key("chat:anything")));
        let channel = ChannelPattern::parse("*:public").expect("valid");
        assert!(channel.matches(&key("chat:public")) && !channel.matches(&key("chat:private")));
        assert!(
            ChannelPattern::parse("*:*")
                .expect("valid")
                .matches(&key("a:b"))
        );
        assert_eq!(room.to_string(), "science:*");
    }

    #[test]
    fn partial_wildcards_and_bad_shapes_are_invalid() {
        for bad in [
            "sci*:explore",
            "science:ex*",
            "science",
            "*",
            "a:b:c",
            ":b",
            "a:",
            "**:x",
            "a b:c",
            "",
        ] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
