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

/// WebSocket close codes the server uses (SPEC §11).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown or idle timeout.
    pub const GOING_AWAY: u16 = 1001;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
