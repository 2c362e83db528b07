//! Typed access to a command's `args`, with `INVALID_ARGUMENT` errors that
//! name the offending field.

use arqon_protocol::{ChannelKey, ErrorCode, FieldError, is_valid_name};
use serde_json::{Map, Value};

use crate::error::CommandError;

/// A command's arguments.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a>(pub &'a Map<String, Value>);

fn invalid(field: &str, message: &str) -> CommandError {
    CommandError::with_details(
        ErrorCode::InvalidArgument,
        format!("invalid argument `{field}`: {message}"),
        vec![FieldError::new(field, message)],
    )
}

impl<'a> Args<'a> {
    /// An optional string argument.
    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>, CommandError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(invalid(field, "must be a string")),
        }
    }

    /// An optional string of at most `max` characters.
    pub fn opt_str_max(&self, field: &str, max: usize) -> Result<Option<&'a str>, CommandError> {
        let value = self.opt_str(field)?;
        if value.is_some_and(|text| text.chars().count() > max) {
            return Err(invalid(field, &format!("must be at most {max} characters")));
        }
        Ok(value)
    }

    /// A required room or channel name.
    pub fn name(&self, field: &str) -> Result<&'a str, CommandError> {
        let Some(value) = self.opt_str(field)? else {
            return Err(invalid(field, "is required"));
        };
        if !is_valid_name(value) {
            return Err(invalid(
                field,
                "must be 1-64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        Ok(value)
    }

    /// An optional room name.
    pub fn opt_name(&self, field: &str) -> Result<Option<&'a str>, CommandError> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(_) => self.name(field).map(Some),
        }
    }

    /// The required `room` and `channel` (`room` may be `"room:channel"`).
    pub fn channel_key(&self) -> Result<ChannelKey, CommandError> {
        if let (Some(room), None) = (self.opt_str("room")?, self.opt_str("channel")?)
            && let Some((room, channel)) = room.split_once(':')
        {
            return ChannelKey::new(room, channel)
                .map_err(|_| invalid("room", "must be a room name or \"room:channel\""));
        }
        // Both are checked, so that one reply names every bad argument.
        match (self.name("room"), self.name("channel")) {
            (Ok(room), Ok(channel)) => {
                ChannelKey::new(room, channel).map_err(|_| invalid("channel", "invalid"))
            }
            (Err(room), Err(channel)) => Err(room.and(channel)),
            (Err(err), Ok(_)) | (Ok(_), Err(err)) => Err(err),
        }
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, CommandError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(invalid(field, "must be a boolean")),
        }
    }

    pub fn opt_object(&self, field: &str) -> Result<Option<&'a Map<String, Value>>, CommandError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(invalid(field, "must be an object")),
        }
    }

    /// An optional non-negative integer no larger than `max`.
    pub fn opt_u64(&self, field: &str, max: u64) -> Result<Option<u64>, CommandError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Ok(Some(v)),
                _ => Err(invalid(
                    field,
                    &format!("must be an integer from 0 to {max}"),
                )),
            },
            Some(_) => Err(invalid(field, "must be an integer")),
        }
    }
}

/// Builds the error for a single bad argument (for checks done outside [`Args`]).
pub fn invalid_argument(field: &str, message: &str) -> CommandError {
    invalid(field, message)
}
