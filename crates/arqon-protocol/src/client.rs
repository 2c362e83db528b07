//! What a client says about itself (SPEC §2) and the close codes the server
//! ends a connection with (SPEC §11).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of client, from the `client_type` query parameter or `identify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ClientType {
    #[default]
    #[serde(rename = "human")]
    Human,
    #[serde(rename = "ai-agent")]
    AiAgent,
    #[serde(rename = "dashboard")]
    Dashboard,
    #[serde(rename = "service")]
    Service,
}

impl ClientType {
    pub const ALL: [ClientType; 4] = [
        ClientType::Human,
        ClientType::AiAgent,
        ClientType::Dashboard,
        ClientType::Service,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ClientType::Human => "human",
            ClientType::AiAgent => "ai-agent",
            ClientType::Dashboard => "dashboard",
            ClientType::Service => "service",
        }
    }
}

impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `client_type` that is not one of the four known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client_type must be one of human, ai-agent, dashboard, service")]
pub struct UnknownClientType;

impl FromStr for ClientType {
    type Err = UnknownClientType;
    fn from_str(text: &str) -> Result<Self, UnknownClientType> {
        ClientType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or(UnknownClientType)
    }
}

/// Longest `screen_name` (SPEC §2).
pub const MAX_SCREEN_NAME_LEN: usize = 64;
/// Longest `avatar`.
pub const MAX_AVATAR_LEN: usize = 512;
/// Longest `personality`.
pub const MAX_PERSONALITY_LEN: usize = 256;

/// Why an identity string (`screen_name`, `avatar`, `personality`) is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProfileText {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters or bidirectional controls")]
    ControlCharacter,
}

/// Checks an identity string against SPEC §2 and §18: 1 to `max`
/// characters, no control characters (C0, DEL, C1) and no bidirectional
/// controls (U+202A–U+202E, U+2066–U+2069), which would let a name rewrite
/// how the text around it is shown in dashboards and logs.
pub fn check_profile_text(value: &str, max: usize) -> Result<(), InvalidProfileText> {
    if value.is_empty() {
        return Err(InvalidProfileText::Empty);
    }
    if value.chars().count() > max {
        return Err(InvalidProfileText::TooLong { max });
    }
    let forbidden =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if value.chars().any(forbidden) {
        return Err(InvalidProfileText::ControlCharacter);
    }
    Ok(())
}

/// WebSocket close codes the server uses (SPEC §11).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown or idle timeout.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket framing violation: unmasked frame, reserved bits,
    /// unknown opcode, stray continuation (SPEC §18).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8 (SPEC §18).
    pub const INVALID_UTF8: u16 = 1007;
    /// Policy violation: too many protocol violations.
    pub const POLICY: u16 = 1008;
    /// A frame larger than the configured maximum.
    pub const TOO_BIG: u16 = 1009;
    /// An internal error.
    pub const INTERNAL: u16 = 1011;
    /// Replaced by a newer connection with the same identity.
    pub const REPLACED: u16 = 4000;
    /// The client did not read fast enough.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// Disconnected by an operator through the HTTP API (SPEC §17).
    pub const DISCONNECTED: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_text_refuses_control_and_bidi_characters() {
        assert_eq!(check_profile_text("Ada Lovelace", 64), Ok(()));
        assert_eq!(check_profile_text("Zoë 🚀", 64), Ok(()));
        assert_eq!(check_profile_text("", 64), Err(InvalidProfileText::Empty));
        assert_eq!(
            check_profile_text("abc", 2),
            Err(InvalidProfileText::TooLong { max: 2 })
        );
        for bad in [
            "a\u{1b}[31m",
            "tab\t",
            "nl\n",
            "del\u{7f}",
            "c1\u{85}",
            "\u{202E}gnp.exe",
            "x\u{202A}",
            "x\u{2066}",
            "x\u{2069}",
        ] {
            assert_eq!(
                check_profile_text(bad, 64),
                Err(InvalidProfileText::ControlCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_types_parse_their_wire_names() {
        for kind in ClientType::ALL {
            assert_eq!(kind.as_str().parse::<ClientType>(), Ok(kind));
            assert_eq!(
                serde_json::to_string(&kind).expect("json"),
                format!("\"{kind}\"")
            );
        }
        assert!("robot".parse::<ClientType>().is_err());
        assert!("Human".parse::<ClientType>().is_err());
        assert_eq!(ClientType::default(), ClientType::Human);
    }
}
