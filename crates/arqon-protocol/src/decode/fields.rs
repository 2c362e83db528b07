//! Reading the envelope's fields: each known field kept raw so that a
//! wrong type is reported per field, the per-field checks, and the nesting
//! limit on relayed JSON.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::ids::is_valid_name;

use super::RawJson;

/// The known top-level fields, each kept raw so that a wrong type is
/// reported per field instead of failing the whole frame. Unknown fields
/// (including the ignored `sender`, `from` and `from_client`) are skipped.
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(borrow, default)]
    pub(super) version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    pub(super) kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) command: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) args: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) error_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) to_client: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) ack: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) metadata: Option<&'a RawValue>,
}

/// Collects per-field problems while the fields are read.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) details: Vec<FieldError>,
}

impl Checker {
    pub(super) fn fail(&mut self, field: &str, message: &str) {
        self.details.push(FieldError::new(field, message));
    }

    pub(super) fn string(&mut self, field: &str, raw: Option<&RawValue>) -> Option<String> {
        let raw = raw?;
        match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => Some(text),
            Err(_) => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    pub(super) fn required_string(
        &mut self,
        field: &str,
        raw: Option<&RawValue>,
    ) -> Option<String> {
        if raw.is_none() {
            self.fail(field, "is required");
        }
        self.string(field, raw)
    }

    pub(super) fn object(&mut self, field: &str, raw: Option<&RawValue>) -> Option<RawJson> {
        let raw = raw?;
        if !raw.get().starts_with('{') {
            self.fail(field, "must be an object");
            None
        } else if nested_deeper_than(raw.get(), MAX_NESTING) {
            self.fail(field, "is nested too deeply (at most 128 levels)");
            None
        } else {
            Some(raw.to_owned())
        }
    }

    pub(super) fn bool(&mut self, field: &str, raw: Option<&RawValue>) -> Option<bool> {
        let raw = raw?;
        match raw.get() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.fail(field, "must be a boolean");
                None
            }
        }
    }

    pub(super) fn name(&mut self, field: &str, value: Option<String>) -> Option<String> {
        let value = value?;
        if is_valid_name(&value) {
            Some(value)
        } else {
            self.fail(field, "must be 1-64 characters of A-Z a-z 0-9 _ . -");
            None
        }
    }
}

/// How deeply objects and arrays may nest in `payload`, `metadata` and
/// `args`: the limit of serde_json's own parser, so that anything relayed
/// can also be read back by the server and by typical clients.
const MAX_NESTING: usize = 128;

/// Whether valid JSON `text` nests objects/arrays deeper than `max`. JSON
/// of `2 * max` bytes or fewer cannot, so short values are not scanned.
fn nested_deeper_than(text: &str, max: usize) -> bool {
    if text.len() <= 2 * max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `{}` as raw JSON.
pub(super) fn empty_object() -> RawJson {
    RawValue::from_string("{}".to_owned()).expect("{} is valid JSON")
}

/// Parses a JSON object's text into a map (for the few places that look
/// inside a payload or metadata object).
pub(super) fn object_map(raw: &RawValue) -> Map<String, Value> {
    serde_json::from_str(raw.get()).unwrap_or_default()
}
