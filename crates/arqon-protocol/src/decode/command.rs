//! Commands (SPEC §3): the name from `command`, or in the legacy form from
//! `payload.command` with arguments in `payload.parameters` or
//! `payload.args`; `room` and `channel` default the arguments.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::fields::{Checker, object_map};
use super::{CommandRequest, Fields};

/// The command's name: `command`, else the legacy `payload.command`.
pub(super) fn name(command: Option<String>, payload: Option<&RawValue>) -> Option<String> {
    command.or_else(|| {
        payload.and_then(|raw| object_map(raw).get("command")?.as_str().map(str::to_owned))
    })
}

impl Fields {
    pub(super) fn into_command(self, check: &mut Checker) -> Option<CommandRequest> {
        let Some(name) = self.command_name.filter(|name| !name.is_empty()) else {
            check.fail("command", "is required for type \"command\"");
            return None;
        };
        // Legacy form: `payload.command` with `payload.parameters` or `payload.args`.
        let mut args = match (&self.args, &self.payload) {
            (Some(args), _) => object_map(args),
            (None, Some(payload)) => {
                let mut payload = object_map(payload);
                match payload
                    .remove("parameters")
                    .or_else(|| payload.remove("args"))
                {
                    Some(Value::Object(args)) => args,
                    Some(_) => {
                        check.fail("payload.parameters", "must be an object");
                        return None;
                    }
                    None => Map::new(),
                }
            }
            (None, None) => Map::new(),
        };
        if let Some(room) = self.room {
            args.entry("room").or_insert(Value::String(room));
        }
        if let Some(channel) = self.channel {
            args.entry("channel").or_insert(Value::String(channel));
        }
        Some(CommandRequest {
            id: self.id,
            name,
            args,
        })
    }
}
