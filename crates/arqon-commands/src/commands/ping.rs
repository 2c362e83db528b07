//! `ping`: liveness and the server clock.

use serde_json::{Value, json};

use super::Ctx;
use crate::args::Args;
use crate::error::CommandError;

pub(super) fn ping(_ctx: Ctx<'_>, _args: Args<'_>) -> Result<Value, CommandError> {
    Ok(json!({"pong": true, "server_time": arqon_protocol::now_rfc3339()}))
}
