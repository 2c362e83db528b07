//! The built-in commands (SPEC §5): a dispatcher from name to handler and
//! one module per group of commands.

mod channels;
mod identify;
mod ping;
mod status;

use std::sync::Arc;

use arqon_protocol::{CommandRequest, ErrorCode};
use arqon_routing::{Client, Role};
use serde_json::Value;

use crate::args::Args;
use crate::bus::Bus;
use crate::error::CommandError;

/// What a command handler may use: the bus and the calling client.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub bus: &'a Bus,
    pub client: &'a Arc<Client>,
}

impl Ctx<'_> {
    /// Admin-only commands (SPEC §9) refuse everyone else with `FORBIDDEN`.
    fn require_admin(&self, command: &str) -> Result<(), CommandError> {
        match self.client.role() {
            Role::Admin => Ok(()),
            Role::User => Err(CommandError::forbidden(format!(
                "{command} is an admin command"
            ))),
        }
    }
}

type Handler = fn(Ctx<'_>, Args<'_>) -> Result<Value, CommandError>;

/// Every command this server knows, by wire name.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("ping", ping::ping),
    ("status", status::status),
    ("identify", identify::identify),
    ("join_channel", channels::join),
    ("leave_channel", channels::leave),
    ("create_channel", channels::create),
    ("delete_channel", channels::delete),
    ("list_channels", channels::list),
    ("channel_info", channels::info),
];

/// Runs one command; the `Ok` value is the success payload.
pub fn dispatch(ctx: Ctx<'_>, request: &CommandRequest) -> Result<Value, CommandError> {
    let handler = COMMANDS
        .iter()
        .find(|(name, _)| *name == request.name)
        .map(|(_, handler)| *handler)
        .ok_or_else(|| {
            CommandError::new(
                ErrorCode::UnknownCommand,
                format!("unknown command {:?}", request.name),
            )
        })?;
    handler(ctx, Args(&request.args))
}
