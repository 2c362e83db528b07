//! Identifiers, validated once at construction (SPEC §2, §3, §9).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest room or channel name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest message id suffix after `arq_`.
pub const MAX_ID_SUFFIX_LEN: usize = 124;
/// Longest client id (a JWT `sub` may be up to this long).
pub const MAX_CLIENT_ID_LEN: usize = 128;

const ID_PREFIX: &str = "arq_";
const CLIENT_ID_PREFIX: &str = "arq_client_";

/// A room or channel name: 1–64 chars of `[A-Za-z0-9_.-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A message id: `arq_` followed by 1–124 chars of `[A-Za-z0-9_.:-]`.
pub fn is_valid_message_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= MAX_ID_SUFFIX_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    })
}

/// A client id: 1–128 chars of `[A-Za-z0-9_.:@-]`. Server-assigned ids are
/// `arq_client_` + 32 hex chars; in `jwt` mode the token's `sub` is used.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

fn random_hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The rejected text of an identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value`.
            pub fn new(value: &str) -> Result<Self, InvalidId> {
                if $check(value) {
                    Ok(Self(Arc::from(value)))
                } else {
                    Err(InvalidId { kind: $kind, value: value.to_owned() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An envelope `id` (`arq_…`).
    MessageId,
    "message id",
    is_valid_message_id
);

string_id!(
    /// A connection's identity, the `sender` of what it sends.
    ClientId,
    "client id",
    is_valid_client_id
);

impl MessageId {
    /// A fresh random id for an envelope the server writes.
    pub fn generate() -> Self {
        Self(Arc::from(format!("{ID_PREFIX}{}", random_hex32())))
    }
}

impl ClientId {
    /// A fresh server-assigned id: `arq_client_` + 32 lowercase hex chars.
    pub fn generate() -> Self {
        Self(Arc::from(format!("{CLIENT_ID_PREFIX}{}", random_hex32())))
    }
}

/// A `room:channel` pair. Cheap to clone; hashes as its `room:channel` text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    key: Arc<str>,
    split: usize,
}

impl ChannelKey {
    /// Validates both names (1–64 chars of `[A-Za-z0-9_.-]` each).
    pub fn new(room: &str, channel: &str) -> Result<Self, InvalidId> {
        if !is_valid_name(room) {
            return Err(InvalidId {
                kind: "room name",
                value: room.to_owned(),
            });
        }
        if !is_valid_name(channel) {
            return Err(InvalidId {
                kind: "channel name",
                value: channel.to_owned(),
            });
        }
        Ok(Self {
            key: Arc::from(format!("{room}:{channel}")),
            split: room.len(),
        })
    }

    /// Parses `"room:channel"`.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        match text.split_once(':') {
            Some((room, channel)) => Self::new(room, channel),
            None => Err(InvalidId {
                kind: "room:channel key",
                value: text.to_owned(),
            }),
        }
    }

    pub fn room(&self) -> &str {
        &self.key[..self.split]
    }

    pub fn channel(&self) -> &str {
        &self.key[self.split + 1..]
    }

    /// The `room:channel` text.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.key, f)
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl FromStr for ChannelKey {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_have_the_spec_shape() {
        let id = ClientId::generate();
        let hex = id.as_str().strip_prefix("arq_client_").expect("prefix");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(id, ClientId::generate());
    }

    #[test]
    fn message_ids_are_validated() {
        assert!(MessageId::generate().as_str().starts_with("arq_"));
        assert!(is_valid_message_id("arq_1"));
        assert!(is_valid_message_id("arq_a.b:c-d_e"));
        assert!(is_valid_message_id(&format!("arq_{}", "x".repeat(124))));
        assert!(!is_valid_message_id(&format!("arq_{}", "x".repeat(125))));
        assert!(!is_valid_message_id("arq_"));
        assert!(!is_valid_message_id("msg_1"));
        assert!(!is_valid_message_id("arq_a b"));
        assert!(!is_valid_message_id("arq_é"));
    }

    #[test]
    fn names_are_validated() {
        assert!(is_valid_name("science"));
        assert!(is_valid_name("a.b-c_d"));
        assert!(is_valid_name(&"x".repeat(64)));
        assert!(!is_valid_name(&"x".repeat(65)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a:b"));
        assert!(!is_valid_name("a b"));
    }

    #[test]
    fn channel_keys_split_and_join() {
        let key = ChannelKey::parse("science:explore").expect("valid");
        assert_eq!(key.room(), "science");
        assert_eq!(key.channel(), "explore");
        assert_eq!(key.as_str(), "science:explore");
        assert_eq!(key, ChannelKey::new("science", "explore").expect("valid"));
        assert!(ChannelKey::parse("science").is_err());
        assert!(ChannelKey::parse("a:b:c").is_err());
        assert!(ChannelKey::parse(":b").is_err());
    }

    #[test]
    fn client_ids_accept_jwt_subjects() {
        assert!(ClientId::new("user@example.com").is_ok());
        assert!(ClientId::new("svc:billing.v2").is_ok());
        assert!(ClientId::new("").is_err());
        assert!(ClientId::new(&"a".repeat(129)).is_err());
        assert!(ClientId::new("a/b").is_err());
    }
}
