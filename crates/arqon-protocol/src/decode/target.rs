//! Where a published envelope goes: its channel (`room` and `channel`), or
//! one client named by `to_client` or an alias of it: `metadata.to_client`,
//! and for type `private`, `payload.target` (SPEC §3).

use serde_json::Value;

use crate::ids::{ChannelKey, ClientId};

use super::fields::{Checker, object_map};
use super::{Fields, InputType, Target};

impl Fields {
    /// The target; `None`, with `check` told why, when there is none or it
    /// is invalid.
    pub(super) fn target(&self, input_type: InputType, check: &mut Checker) -> Option<Target> {
        let direct = self.direct_target(input_type, check);
        match (direct, self.room.as_deref(), self.channel.as_deref()) {
            (Some((field, id)), _, _) => match ClientId::new(&id) {
                Ok(client) => Some(Target::Direct(client)),
                Err(_) => {
                    check.fail(field, "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -");
                    None
                }
            },
            (None, Some(room), Some(channel)) => {
                ChannelKey::new(room, channel).ok().map(Target::Channel)
            }
            (None, _, _) => {
                check.fail("channel", "a message needs room and channel, or to_client");
                None
            }
        }
    }

    /// The client named by `to_client` or its aliases, with the field it
    /// came from (for the error).
    fn direct_target(
        &self,
        input_type: InputType,
        check: &mut Checker,
    ) -> Option<(&'static str, String)> {
        let mut direct = self.to_client.clone().map(|id| ("to_client", id));
        if direct.is_none() {
            direct = match self.metadata_map.get("to_client") {
                Some(Value::String(id)) => Some(("metadata.to_client", id.clone())),
                Some(_) => {
                    check.fail("metadata.to_client", "must be a string");
                    None
                }
                None => None,
            };
        }
        if direct.is_none() && input_type == InputType::Private {
            direct = match self
                .payload
                .as_deref()
                .map(object_map)
                .and_then(|p| p.get("target").cloned())
            {
                Some(Value::String(id)) => Some(("payload.target", id)),
                Some(_) => {
                    check.fail("payload.target", "must be a string");
                    None
                }
                None => {
                    check.fail("payload.target", "type \"private\" needs a target client");
                    None
                }
            };
        }
        direct
    }
}
