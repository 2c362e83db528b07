//! The HTTP server API (SPEC §17): publish, send, disconnect and channel
//! administration for backends that hold no WebSocket.
//!
//! Served wherever the §12 endpoints are, and only when
//! `ARQONBUS_API_KEY` is set (otherwise no `/api/*` route exists and the
//! router's JSON 404 answers). Every request needs
//! `Authorization: Bearer <key>`, compared in constant time.
//!
//! This module is transport only: bodies, query strings and status codes.
//! Publish, send and disconnect are `Bus` methods in `arqon-commands`
//! (`operator.rs`); the channel endpoints run the very command handlers a
//! WebSocket client reaches, through [`dispatch`], as one server-side
//! operator client ([`App::operator`]: admin, no channel restrictions, id
//! `arqonbus-api`, which no real client can have).
//!
//! Bodies: any `Content-Type` is accepted when the body is JSON; over
//! `ARQONBUS_MAX_MESSAGE_SIZE` bytes → 413; not JSON or not an object →
//! 400 `VALIDATION_ERROR`; missing or mistyped fields → 400
//! `INVALID_ARGUMENT` naming every one.

use std::sync::Arc;

use arqon_commands::auth::api_key_matches;
use arqon_commands::{CommandError, Ctx, Dispatched, dispatch};
use arqon_protocol::{
    ChannelKey, ClientId, CommandRequest, ErrorCode, FieldError, MessageId, RawJson,
    is_valid_client_id, is_valid_name,
};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::app::App;

/// The `/api/*` routes, or none when no API key is configured.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    if app.config.auth.api_key.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/send", post(send))
        .route("/api/disconnect", post(disconnect))
        .route("/api/channels", get(list_channels).post(create_channel))
        .route(
            "/api/channels/{room}/{channel}",
            get(channel_info).delete(delete_channel),
        )
        .route("/api/channels/{room}/{channel}/history", get(history))
        .route("/api/channels/{room}/{channel}/presence", get(presence))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_key,
        ))
}

/// A failed API request: the §6 code, text safe to show, and per-field
/// details. The HTTP status is the code's, except for an oversized body
/// (413, which §6 has no code for: `VALIDATION_ERROR`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Vec<FieldError>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>, details: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details,
        }
    }

    /// `INVALID_ARGUMENT` naming every bad field.
    fn invalid(details: Vec<FieldError>) -> Self {
        let names: Vec<String> = details
            .iter()
            .map(|detail| format!("`{}` {}", detail.field, detail.message))
            .collect();
        Self::new(
            ErrorCode::InvalidArgument,
            format!("invalid argument: {}", names.join("; ")),
            details,
        )
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        Self::new(err.code, err.message, err.details)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        arqon_telemetry::metrics::error(self.code);
        let body = json!({
            "error_code": self.code.as_str(),
            "error": self.message,
            "details": self.details,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// Lets a request through only with `Authorization: Bearer <key>`.
async fn require_key(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    match given.and_then(|key| api_key_matches(&app.config.auth, key)) {
        Some(true) => next.run(request).await,
        _ => ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs `Authorization: Bearer <ARQONBUS_API_KEY>`",
            Vec::new(),
        )
        .into_response(),
    }
}

// ---- bodies -----------------------------------------------------------

/// Reads a JSON object body of at most `ARQONBUS_MAX_MESSAGE_SIZE` bytes.
async fn json_object(app: &App, body: Body) -> Result<Map<String, Value>, ApiError> {
    let max = app.config.server.max_message_size;
    let too_large = || {
        let mut err = ApiError::new(
            ErrorCode::ValidationError,
            format!("the body is larger than ARQONBUS_MAX_MESSAGE_SIZE ({max} bytes)"),
            vec![FieldError::new("body", format!("at most {max} bytes"))],
        );
        err.status = StatusCode::PAYLOAD_TOO_LARGE;
        err
    };
    // Past the limit the read stops; any other read error means the client
    // went away mid-body, and then no one reads this answer anyway.
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large())?;
    let not_json = |message: String| {
        ApiError::new(
            ErrorCode::ValidationError,
            message.clone(),
            vec![FieldError::new("body", message)],
        )
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(not_json("the body must be a JSON object".to_owned())),
        Err(err) => Err(not_json(format!("the body is not valid JSON: {err}"))),
    }
}

/// Typed access to a body's fields, collecting every bad one.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    bad: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Map<String, Value>) -> Self {
        Self {
            body,
            bad: Vec::new(),
        }
    }

    fn fail(&mut self, field: &str, message: &str) {
        self.bad.push(FieldError::new(field, message));
    }

    /// A required string that `valid` accepts.
    fn string(&mut self, field: &str, valid: fn(&str) -> bool, rule: &str) -> Option<&'a str> {
        match self.body.get(field) {
            None | Some(Value::Null) => self.fail(field, "is required"),
            Some(Value::String(text)) if valid(text) => return Some(text),
            Some(Value::String(_)) => self.fail(field, rule),
            Some(_) => self.fail(field, "must be a string"),
        }
        None
    }

    /// An optional string.
    fn opt_string(&mut self, field: &str) {
        match self.body.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => self.fail(field, "must be a string"),
        }
    }

    /// An object, required or not, as raw JSON to relay.
    fn object(&mut self, field: &str, required: bool) -> Option<RawJson> {
        match self.body.get(field) {
            None | Some(Value::Null) if required => {
                self.fail(field, "is required (it may be {})");
            }
            None | Some(Value::Null) => {}
            Some(value @ Value::Object(_)) => match serde_json::value::to_raw_value(value) {
                Ok(raw) => return Some(raw),
                Err(_) => self.fail(field, "must be an object"),
            },
            Some(_) => self.fail(field, "must be an object"),
        }
        None
    }

    fn room_and_channel(&mut self) -> Option<ChannelKey> {
        const RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ . -";
        let room = self.string("room", is_valid_name, RULE);
        let channel = self.string("channel", is_valid_name, RULE);
        ChannelKey::new(room?, channel?).ok()
    }

    fn client_id(&mut self, field: &str) -> Option<ClientId> {
        let text = self.string(
            field,
            is_valid_client_id,
            "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -",
        )?;
        ClientId::new(text).ok()
    }

    /// Every bad field at once, or nothing.
    fn finish(self) -> Result<(), ApiError> {
        if self.bad.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.bad))
        }
    }
}

// ---- publish, send, disconnect ----------------------------------------

/// `POST /api/publish {"room","channel","payload","metadata"?}`.
async fn publish(State(app): State<Arc<App>>, body: Body) -> ApiResult {
    let body = json_object(&app, body).await?;
    let mut fields = Fields::new(&body);
    let key = fields.room_and_channel();
    let payload = fields.object("payload", true);
    let metadata = fields.object("metadata", false);
    fields.finish()?;
    let (Some(key), Some(payload)) = (key, payload) else {
        return Err(ApiError::invalid(Vec::new()));
    };
    let published = app.bus.publish_as_server(&key, payload, metadata).await?;
    Ok(axum::Json(json!({
        "seq": published.seq,
        "epoch": &*published.epoch,
        "delivered": published.delivered,
        "stored": published.stored,
    }))
    .into_response())
}

/// `POST /api/send {"to_client","payload","metadata"?}`.
async fn send(State(app): State<Arc<App>>, body: Body) -> ApiResult {
    let body = json_object(&app, body).await?;
    let mut fields = Fields::new(&body);
    let target = fields.client_id("to_client");
    let payload = fields.object("payload", true);
    let metadata = fields.object("metadata", false);
    fields.finish()?;
    let (Some(target), Some(payload)) = (target, payload) else {
        return Err(ApiError::invalid(Vec::new()));
    };
    let delivered = app.bus.send_as_server(&target, payload, metadata).await?;
    Ok(axum::Json(json!({"delivered": delivered})).into_response())
}

/// `POST /api/disconnect {"client_id"}`: close 4003.
async fn disconnect(State(app): State<Arc<App>>, body: Body) -> ApiResult {
    let body = json_object(&app, body).await?;
    let mut fields = Fields::new(&body);
    let target = fields.client_id("client_id");
    fields.finish()?;
    let Some(target) = target else {
        return Err(ApiError::invalid(Vec::new()));
    };
    app.bus.disconnect_client(&target).await?;
    Ok(axum::Json(json!({"disconnected": true})).into_response())
}

// ---- channels: the command handlers ----------------------------------

/// Runs command `name` with `args` as the API's operator client.
async fn run(app: &App, name: &str, args: Map<String, Value>) -> Result<Value, ApiError> {
    let started = Instant::now();
    let request = CommandRequest {
        id: MessageId::generate(),
        name: name.to_owned(),
        args,
    };
    let ctx = Ctx {
        bus: &app.bus,
        client: &app.operator,
    };
    let result = match dispatch(ctx, &request) {
        Dispatched::Done(result) => result,
        Dispatched::Later(future) => future.await,
    };
    arqon_telemetry::metrics::command_duration(name, started.elapsed());
    result.map_err(ApiError::from)
}

/// How a query parameter becomes a typed command argument.
#[derive(Debug, Clone, Copy)]
enum Param {
    Text,
    Integer,
    Boolean,
}

type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;
type ChannelPath = Result<Path<(String, String)>, PathRejection>;

/// The command arguments a query string gives: the parameters `known`
/// names, typed (others are ignored; an empty value is as if absent). Every
/// value that does not parse is named in one `INVALID_ARGUMENT`.
fn query_args(query: QueryPairs, known: &[(&str, Param)]) -> Result<Map<String, Value>, ApiError> {
    let Query(pairs) = query.map_err(|_| {
        ApiError::invalid(vec![FieldError::new(
            "query",
            "must be a valid URL-encoded query string",
        )])
    })?;
    let mut args = Map::new();
    let mut bad = Vec::new();
    for (name, text) in pairs {
        let Some((field, kind)) = known.iter().find(|(field, _)| *field == name) else {
            continue;
        };
        if text.is_empty() {
            args.remove(*field);
            continue;
        }
        let value = match kind {
            Param::Text => Some(Value::String(text)),
            Param::Integer => text
                .parse::<u64>()
                .map(Value::from)
                .or_else(|_| text.parse::<i64>().map(Value::from))
                .ok(),
            Param::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        match value {
            Some(value) => {
                args.insert((*field).to_owned(), value);
            }
            None => bad.push(FieldError::new(
                *field,
                match kind {
                    Param::Boolean => "must be true or false",
                    _ => "must be an integer",
                },
            )),
        }
    }
    if bad.is_empty() {
        Ok(args)
    } else {
        Err(ApiError::invalid(bad))
    }
}

/// `room` and `channel` from the path, as command arguments (the command
/// checks them).
fn path_args(path: ChannelPath, args: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Path((room, channel)) = path.map_err(|_| {
        ApiError::invalid(vec![
            FieldError::new("room", "must be a path segment"),
            FieldError::new("channel", "must be a path segment"),
        ])
    })?;
    args.insert("room".to_owned(), Value::String(room));
    args.insert("channel".to_owned(), Value::String(channel));
    Ok(())
}

/// `GET /api/channels?room&limit&cursor` → `list_channels`.
async fn list_channels(State(app): State<Arc<App>>, query: QueryPairs) -> ApiResult {
    let args = query_args(
        query,
        &[
            ("room", Param::Text),
            ("limit", Param::Integer),
            ("cursor", Param::Text),
        ],
    )?;
    Ok(axum::Json(run(&app, "list_channels", args).await?).into_response())
}

/// `GET /api/channels/{room}/{channel}` → `channel_info`.
async fn channel_info(State(app): State<Arc<App>>, path: ChannelPath) -> ApiResult {
    let mut args = Map::new();
    path_args(path, &mut args)?;
    Ok(axum::Json(run(&app, "channel_info", args).await?).into_response())
}

/// `GET /api/channels/{room}/{channel}/history?limit&after_seq&since&until`.
async fn history(State(app): State<Arc<App>>, path: ChannelPath, query: QueryPairs) -> ApiResult {
    let mut args = query_args(
        query,
        &[
            ("limit", Param::Integer),
            ("after_seq", Param::Integer),
            ("since", Param::Text),
            ("until", Param::Text),
        ],
    )?;
    path_args(path, &mut args)?;
    Ok(axum::Json(run(&app, "history", args).await?).into_response())
}

/// `GET /api/channels/{room}/{channel}/presence?limit&cursor` → the
/// `presence` command (SPEC §15), whatever the dispatcher answers for it.
async fn presence(State(app): State<Arc<App>>, path: ChannelPath, query: QueryPairs) -> ApiResult {
    let mut args = query_args(query, &[("limit", Param::Integer), ("cursor", Param::Text)])?;
    path_args(path, &mut args)?;
    Ok(axum::Json(run(&app, "presence", args).await?).into_response())
}

/// `POST /api/channels` (`create_channel`'s arguments) → 201 and the record.
async fn create_channel(State(app): State<Arc<App>>, body: Body) -> ApiResult {
    let body = json_object(&app, body).await?;
    // Every bad field at once; the command checks them again.
    let mut fields = Fields::new(&body);
    fields.room_and_channel();
    fields.opt_string("description");
    fields.object("metadata", false);
    fields.finish()?;
    let record = run(&app, "create_channel", body).await?;
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

/// `DELETE /api/channels/{room}/{channel}?force=true` → `delete_channel`.
async fn delete_channel(
    State(app): State<Arc<App>>,
    path: ChannelPath,
    query: QueryPairs,
) -> ApiResult {
    let mut args = query_args(query, &[("force", Param::Boolean)])?;
    path_args(path, &mut args)?;
    Ok(axum::Json(run(&app, "delete_channel", args).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> QueryPairs {
        Ok(Query(
            list.iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        ))
    }

    const HISTORY: &[(&str, Param)] = &[
        ("limit", Param::Integer),
        ("after_seq", Param::Integer),
        ("since", Param::Text),
        ("force", Param::Boolean),
    ];

    #[test]
    fn query_values_become_typed_arguments() {
        let args = query_args(
            pairs(&[
                ("limit", "10"),
                ("after_seq", "-3"),
                ("since", "2026-01-01T00:00:00Z"),
                ("force", "TRUE"),
                ("other", "ignored"),
            ]),
            HISTORY,
        )
        .expect("valid");
        assert_eq!(
            Value::Object(args),
            json!({"limit": 10, "after_seq": -3, "since": "2026-01-01T00:00:00Z", "force": true})
        );
        let empty = query_args(pairs(&[("limit", ""), ("force", "")]), HISTORY).expect("valid");
        assert!(empty.is_empty());
    }

    #[test]
    fn every_bad_query_value_is_named() {
        let err = query_args(
            pairs(&[("limit", "ten"), ("after_seq", "1.5"), ("force", "yes")]),
            HISTORY,
        )
        .expect_err("invalid");
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let fields: Vec<&str> = err.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["limit", "after_seq", "force"]);
    }
}
