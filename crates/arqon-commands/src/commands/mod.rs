//! The built-in commands (SPEC §5): a dispatcher from name to handler and
//! one module per group of commands.

mod channels;
mod history;
mod identify;
mod ping;
mod status;

use std::future::Future;
use std::pin::Pin;
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
    pub bus: &'a Arc<Bus>,
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

/// The rest of a command that has to wait (on storage): it owns what it
/// needs and resolves to the reply payload.
pub type CommandFuture =
    Pin<Box<dyn Future<Output = Result<Value, CommandError>> + Send + 'static>>;

/// A command handler. Arguments are always checked synchronously, so an
/// `INVALID_ARGUMENT` never waits on I/O.
#[derive(Debug, Clone, Copy)]
pub enum Handler {
    /// Answers at once.
    Now(fn(Ctx<'_>, Args<'_>) -> Result<Value, CommandError>),
    /// Checks its arguments, then answers when its future resolves.
    Later(fn(Ctx<'_>, Args<'_>) -> Result<CommandFuture, CommandError>),
}

/// What [`dispatch`] produced.
pub enum Dispatched {
    Done(Result<Value, CommandError>),
    Later(CommandFuture),
}

impl std::fmt::Debug for Dispatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dispatched::Done(result) => f.debug_tuple("Done").field(result).finish(),
            Dispatched::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Every command this server knows, by wire name.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("ping", Handler::Now(ping::ping)),
    ("status", Handler::Later(status::status)),
    ("identify", Handler::Now(identify::identify)),
    ("join_channel", Handler::Later(channels::join)),
    ("leave_channel", Handler::Later(channels::leave)),
    ("create_channel", Handler::Later(channels::create)),
    ("delete_channel", Handler::Later(channels::delete)),
    ("list_channels", Handler::Later(channels::list)),
    ("presence", Handler::Later(channels::presence)),
    ("channel_info", Handler::Later(channels::info)),
    ("history", Handler::Later(history::history)),
];

/// Runs one command.
pub fn dispatch(ctx: Ctx<'_>, request: &CommandRequest) -> Dispatched {
    let Some(handler) = COMMANDS
        .iter()
        .find(|(name, _)| *name == request.name)
        .map(|(_, handler)| *handler)
    else {
        return Dispatched::Done(Err(CommandError::new(
            ErrorCode::UnknownCommand,
            format!("unknown command {:?}", request.name),
        )));
    };
    let args = Args(&request.args);
    match handler {
        Handler::Now(run) => Dispatched::Done(run(ctx, args)),
        Handler::Later(start) => match start(ctx, args) {
            Ok(future) => Dispatched::Later(future),
            Err(err) => Dispatched::Done(Err(err)),
        },
    }
}
