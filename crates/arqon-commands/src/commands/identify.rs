//! `identify`: update what the client says about itself (SPEC §2).

use arqon_protocol::{
    ClientType, MAX_AVATAR_LEN, MAX_PERSONALITY_LEN, MAX_SCREEN_NAME_LEN, check_profile_text,
};
use serde_json::Value;

use super::Ctx;
use crate::args::{Args, invalid_argument};
use crate::error::CommandError;

pub(super) fn identify(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
    let mut profile = ctx.client.profile();
    if let Some(kind) = args.opt_str("client_type")? {
        profile.client_type = kind
            .parse::<ClientType>()
            .map_err(|err| invalid_argument("client_type", &err.to_string()))?;
    }
    let fields = [
        ("screen_name", MAX_SCREEN_NAME_LEN, &mut profile.screen_name),
        ("avatar", MAX_AVATAR_LEN, &mut profile.avatar),
        ("personality", MAX_PERSONALITY_LEN, &mut profile.personality),
    ];
    for (field, max, slot) in fields {
        if let Some(value) = args.opt_str_max(field, max)? {
            check_profile_text(value, max)
                .map_err(|err| invalid_argument(field, &err.to_string()))?;
            *slot = Some(value.to_owned());
        }
    }
    ctx.client.set_profile(profile);
    Ok(ctx.client.record())
}
