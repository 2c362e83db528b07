//! Why a routing operation was refused.

use arqon_protocol::{ChannelKey, ClientId, ErrorCode};

/// A refused join, leave, publish or channel operation. Each maps to one
/// wire [`ErrorCode`]; the text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    #[error("channel {key} does not exist")]
    ChannelNotFound { key: ChannelKey },
    #[error("room {room} does not exist")]
    RoomNotFound { room: String },
    #[error("client {client} is not connected")]
    TargetNotFound { client: ClientId },
    #[error("join channel {key} before publishing to it")]
    NotSubscribed { key: ChannelKey },
    #[error("channel {key} already exists")]
    ChannelExists { key: ChannelKey },
    #[error("channel {key} still has {members} member(s); pass force to delete it anyway")]
    ChannelNotEmpty { key: ChannelKey, members: usize },
    #[error("channel {key} is full ({max} members)")]
    ChannelFull { key: ChannelKey, max: usize },
    #[error("a client may join at most {max} channels")]
    SubscriptionLimit { max: usize },
    #[error("channel {key} is a system channel")]
    SystemChannel { key: ChannelKey },
    /// The backplane (the cluster's Redis) did not answer; the reason is
    /// logged where it happened.
    #[error("the cluster is unavailable")]
    BackplaneUnavailable,
}

impl RoutingError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RoutingError::ChannelNotFound { .. } => ErrorCode::ChannelNotFound,
            RoutingError::RoomNotFound { .. } => ErrorCode::RoomNotFound,
            RoutingError::TargetNotFound { .. } => ErrorCode::TargetNotFound,
            RoutingError::NotSubscribed { .. } => ErrorCode::NotSubscribed,
            RoutingError::ChannelExists { .. } => ErrorCode::ChannelExists,
            RoutingError::ChannelNotEmpty { .. } => ErrorCode::ChannelNotEmpty,
            RoutingError::ChannelFull { .. } => ErrorCode::ChannelFull,
            RoutingError::SubscriptionLimit { .. } => ErrorCode::SubscriptionLimit,
            RoutingError::SystemChannel { .. } => ErrorCode::Forbidden,
            RoutingError::BackplaneUnavailable => ErrorCode::StorageUnavailable,
        }
    }
}
