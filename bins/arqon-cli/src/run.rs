//! The subcommands: connect, do one thing, write the result.

use std::io;
use std::time::Duration;

use arqon_client::{
    ChannelKey, ChannelMessage, Client, ClientError, ClientId, ConnectOptions, GapReport,
    ReconnectPolicy, SubscriptionEvent,
};
use clap::CommandFactory;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{Cli, Command, Global, Shell};
use crate::output::{Output, plain};

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the arguments cannot work (clap reports most of these itself).
    Usage(String),
    /// Exit 1: the server answered with an error.
    Server { code: String, message: String },
    /// Exit 3: the server cannot be reached, or the connection was lost.
    Unreachable(String),
    /// Writing the output failed; a closed pipe (`arqon tail | head`) is a
    /// normal end.
    Output(io::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Server { .. } => 1,
            Failure::Unreachable(_) => 3,
            Failure::Output(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
            Failure::Output(_) => 1,
        }
    }

    /// The line for stderr, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Failure::Usage(message) => Some(message.clone()),
            Failure::Server { code, message } => Some(format!("{code}: {message}")),
            Failure::Unreachable(message) => Some(message.clone()),
            Failure::Output(err) if err.kind() == io::ErrorKind::BrokenPipe => None,
            Failure::Output(err) => Some(format!("cannot write the output: {err}")),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Output(err)
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Server(server) => Failure::Server {
                code: server.error_code.clone(),
                message: server.message.clone(),
            },
            ClientError::Refused { status, body } => refused(status, &body),
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidOption { .. }
            | ClientError::InvalidName(_)
            | ClientError::PayloadNotObject => Failure::Usage(err.to_string()),
            ClientError::Connect { .. }
            | ClientError::Tls { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected
            | ClientError::NotConnected
            | ClientError::Closed => Failure::Unreachable(err.to_string()),
            other => Failure::Server {
                code: "CLIENT_ERROR".to_owned(),
                message: other.to_string(),
            },
        }
    }
}

/// A refused handshake is the server's answer: an error code from its
/// HTTP status (SPEC §2, §9), and the message of its JSON body.
fn refused(status: u16, body: &str) -> Failure {
    let code = match status {
        400 => "VALIDATION_ERROR",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        503 => "UNAVAILABLE",
        _ => "REFUSED",
    };
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|body| {
            let error = body.get("error")?.as_str()?.to_owned();
            Some(match body.get("message").and_then(Value::as_str) {
                Some(message) => format!("{error}: {message}"),
                None => error,
            })
        })
        .unwrap_or_else(|| body.trim().to_owned());
    Failure::Server {
        code: code.to_owned(),
        message: format!("handshake refused with HTTP {status}: {detail}"),
    }
}

pub async fn run(cli: Cli, out: &Output) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Pub { channel, payload } => publish(global, out, &channel, payload).await,
        Command::Sub { channels, recover } => subscribe(global, out, &channels, recover).await,
        Command::Send { client_id, payload } => send(global, out, &client_id, payload).await,
        Command::Tail { events, channel } => tail(global, out, &channel, events).await,
        Command::Status => status(global, out).await,
        Command::Channels { room } => channels(global, out, room.as_deref()).await,
        Command::History {
            channel,
            limit,
            after_seq,
        } => history(global, out, &channel, limit, after_seq).await,
        Command::Ping => ping(global, out).await,
        Command::Completions { shell } => completions(shell),
    }
}

async fn connect(global: &Global, reconnect: bool) -> Result<Client, Failure> {
    let timeout = Duration::from_secs(global.timeout.max(1));
    let mut options = ConnectOptions::new(global.url.clone())
        .screen_name("arqon")
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .reconnect(if reconnect {
            ReconnectPolicy::default()
        } else {
            ReconnectPolicy::disabled()
        });
    if let Some(token) = &global.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &global.ca_cert {
        let pem = std::fs::read(path)
            .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", path.display())))?;
        options = options.add_root_certificate_pem(&pem)?;
    }
    Ok(Client::connect(options).await?)
}

async fn publish(
    global: &Global,
    out: &Output,
    key: &ChannelKey,
    payload: Map<String, Value>,
) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let result = async {
        // Publishing requires membership (SPEC §4.1).
        let subscription = client.join_channel(key.room(), key.channel()).await?;
        let ack = client
            .publish_with_ack(key.room(), key.channel(), Value::Object(payload))
            .await?;
        drop(subscription);
        let _ = client.leave_channel(key.room(), key.channel()).await;
        Ok::<_, Failure>(ack)
    }
    .await;
    client.close().await;
    let ack = result?;
    if out.is_json() {
        out.json(&json!({"room": key.room(), "channel": key.channel(),
            "delivered": ack.delivered, "seq": ack.seq, "stored": ack.stored}))?;
    } else {
        let seq = ack.seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
        out.line(&format!(
            "published to {key}: seq {seq}, delivered to {} member(s){}",
            ack.delivered,
            if ack.stored {
                ", stored"
            } else {
                ", not stored"
            }
        ))?;
    }
    Ok(())
}

async fn send(
    global: &Global,
    out: &Output,
    to: &ClientId,
    payload: Map<String, Value>,
) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let result = client
        .send_direct_with_ack(to.as_str(), Value::Object(payload))
        .await;
    client.close().await;
    let ack = result?;
    if out.is_json() {
        out.json(&json!({"to": to.as_str(), "delivered": ack.delivered}))?;
    } else {
        out.line(&format!("sent to {to}: delivered {}", ack.delivered))?;
    }
    Ok(())
}

/// What a channel subscription produced, for the one loop that prints.
enum Item {
    Event(ChannelKey, Box<SubscriptionEvent>),
    Ended,
}

/// Joins `keys` and forwards their events into one queue.
async fn join_all(
    client: &Client,
    keys: &[ChannelKey],
    out: &Output,
) -> Result<mpsc::Receiver<Item>, Failure> {
    let (tx, rx) = mpsc::channel(256);
    for key in keys {
        let mut subscription = client.join_channel(key.room(), key.channel()).await?;
        let joined = subscription.joined().clone();
        if out.is_json() {
            out.json(
                &json!({"type": "joined", "room": joined.room, "channel": joined.channel,
                "participant_count": joined.participant_count, "seq": joined.seq,
                "epoch": joined.epoch}),
            )?;
        } else {
            out.line(&out.dim(&format!(
                "joined {key} ({} member(s), seq {})",
                joined.participant_count, joined.seq
            )))?;
        }
        let tx = tx.clone();
        let key = key.clone();
        tokio::spawn(async move {
            while let Some(event) = subscription.recv().await {
                if tx
                    .send(Item::Event(key.clone(), Box::new(event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(Item::Ended).await;
        });
    }
    Ok(rx)
}

/// Leaves every channel, then closes with 1000.
async fn leave_all(client: &Client, keys: &[ChannelKey]) {
    for key in keys {
        let _ = client.leave_channel(key.room(), key.channel()).await;
    }
    client.close().await;
}

async fn subscribe(
    global: &Global,
    out: &Output,
    keys: &[ChannelKey],
    recover: bool,
) -> Result<(), Failure> {
    let client = connect(global, recover).await?;
    let mut items = match join_all(&client, keys, out).await {
        Ok(items) => items,
        Err(failure) => {
            client.close().await;
            return Err(failure);
        }
    };
    let mut open = keys.len();
    let mut removed = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                leave_all(&client, keys).await;
                return Ok(());
            }
            item = items.recv() => match item {
                Some(Item::Event(key, event)) => {
                    if matches!(*event, SubscriptionEvent::Removed { .. }) {
                        removed += 1;
                    }
                    print_event(out, &key, &event)?;
                }
                Some(Item::Ended) => {
                    open -= 1;
                    if open == 0 {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    client.close().await;
    if removed == keys.len() {
        return Ok(());
    }
    Err(Failure::Unreachable("connection lost".to_owned()))
}

fn print_event(out: &Output, key: &ChannelKey, event: &SubscriptionEvent) -> io::Result<()> {
    match event {
        SubscriptionEvent::Message(message) => print_message(out, message),
        SubscriptionEvent::Gap(gap) => print_gap(out, gap),
        SubscriptionEvent::Removed { reason } => {
            if out.is_json() {
                out.json(&json!({"type": "removed", "room": key.room(),
                    "channel": key.channel(), "reason": reason}))
            } else {
                out.line(&out.red(&format!("removed from {key}: {reason}")))
            }
        }
        SubscriptionEvent::Lagged(lag) => {
            if out.is_json() {
                out.json(&json!({"type": "lagged", "room": key.room(),
                    "channel": key.channel(), "dropped": lag.dropped,
                    "first_dropped_seq": lag.first_dropped_seq}))
            } else {
                out.line(&out.red(&format!(
                    "{key}: the server dropped {} message(s) for this slow client",
                    lag.dropped
                )))
            }
        }
        // Presence is not asked for; later event kinds are not printed.
        _ => Ok(()),
    }
}

fn print_message(out: &Output, message: &ChannelMessage) -> io::Result<()> {
    let key = &message.channel;
    if out.is_json() {
        let mut line = json!({"type": "message", "room": key.room(), "channel": key.channel(),
            "seq": message.seq, "epoch": message.epoch, "sender": message.sender,
            "timestamp": message.timestamp, "payload": message.payload});
        if let Some(metadata) = &message.metadata {
            line["metadata"] = metadata.clone();
        }
        if message.replayed {
            line["replayed"] = true.into();
        }
        out.json(&line)
    } else {
        let seq = message
            .seq
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let sender = message.sender.as_deref().unwrap_or("-");
        out.line(&format!(
            "{} {} {} {}",
            out.dim(&clock(&message.timestamp)),
            out.bold(&format!("{key}#{seq}")),
            out.green(sender),
            message.payload
        ))
    }
}

fn print_gap(out: &Output, gap: &GapReport) -> io::Result<()> {
    let key = &gap.channel;
    if out.is_json() {
        out.json(
            &json!({"type": "gap", "room": key.room(), "channel": key.channel(),
            "from_seq": gap.from_seq, "to_seq": gap.to_seq, "recovered": gap.recovered,
            "filled": gap.filled, "epoch_changed": gap.epoch_changed}),
        )
    } else if gap.filled {
        out.line(&out.dim(&format!(
            "reconnected to {key}: recovered {} message(s)",
            gap.recovered
        )))
    } else {
        out.line(&out.red(&format!(
            "reconnected to {key}: seq {}..{} could not be recovered{}",
            gap.from_seq,
            gap.to_seq,
            if gap.epoch_changed {
                " (history restarted)"
            } else {
                ""
            }
        )))
    }
}

/// `HH:MM:SS.mmm` of an RFC 3339 timestamp, or the timestamp as is.
fn clock(timestamp: &str) -> String {
    timestamp
        .get(11..23)
        .map_or_else(|| timestamp.to_owned(), str::to_owned)
}

async fn tail(
    global: &Global,
    out: &Output,
    key: &ChannelKey,
    events: Option<Vec<String>>,
) -> Result<(), Failure> {
    let events = events.map(|list| {
        list.into_iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
    });
    if events.as_ref().is_some_and(Vec::is_empty) {
        return Err(Failure::Usage(
            "--events needs at least one event type".to_owned(),
        ));
    }
    let client = connect(global, true).await?;
    let mut subscription = match client.join_channel(key.room(), key.channel()).await {
        Ok(subscription) => subscription,
        Err(err) => {
            client.close().await;
            return Err(err.into());
        }
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => {
                leave_all(&client, std::slice::from_ref(key)).await;
                return Ok(());
            }
            event = subscription.recv() => event,
        };
        let Some(event) = event else { break };
        let SubscriptionEvent::Message(message) = event else {
            continue;
        };
        let kind = message
            .payload
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if events
            .as_ref()
            .is_some_and(|wanted| !wanted.iter().any(|w| w == kind))
        {
            continue;
        }
        print_telemetry(out, &message)?;
    }
    client.close().await;
    Err(Failure::Unreachable("connection lost".to_owned()))
}

fn print_telemetry(out: &Output, message: &ChannelMessage) -> io::Result<()> {
    let payload = message.payload.as_object().cloned().unwrap_or_default();
    if out.is_json() {
        let mut line = Map::new();
        line.insert("timestamp".into(), message.timestamp.clone().into());
        if let Some(sender) = &message.sender {
            line.insert("sender".into(), sender.clone().into());
        }
        line.extend(payload);
        out.json(&Value::Object(line))
    } else {
        let kind = payload
            .get("eventType")
            .map(plain)
            .unwrap_or_else(|| "?".to_owned());
        let fields: Vec<String> = payload
            .iter()
            .filter(|(name, _)| *name != "eventType")
            .map(|(name, value)| format!("{name}={}", plain(value)))
            .collect();
        out.line(&format!(
            "{} {} {}",
            out.dim(&clock(&message.timestamp)),
            out.bold(&kind),
            fields.join(" ")
        ))
    }
}

async fn command(global: &Global, name: &str, args: Map<String, Value>) -> Result<Value, Failure> {
    let client = connect(global, false).await?;
    let result = client.command(name, args).await;
    client.close().await;
    Ok(result?)
}

async fn status(global: &Global, out: &Output) -> Result<(), Failure> {
    let status = command(global, "status", Map::new()).await?;
    if out.is_json() {
        out.json(&status)?;
        return Ok(());
    }
    let get = |path: &str| {
        status
            .pointer(path)
            .map(plain)
            .unwrap_or_else(|| "-".to_owned())
    };
    let by_type = status
        .pointer("/clients/by_type")
        .and_then(Value::as_object)
        .map(|types| {
            types
                .iter()
                .map(|(kind, n)| format!("{kind} {}", plain(n)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let degraded = status
        .pointer("/storage/degraded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let storage = format!(
        "{} ({})",
        get("/storage/backend"),
        if degraded {
            out.red("degraded")
        } else {
            out.green("ok")
        }
    );
    out.pairs(&[
        (
            "server",
            format!(
                "{} {} (protocol {})",
                get("/server/name"),
                get("/server/version"),
                get("/server/protocol")
            ),
        ),
        ("node", get("/server/node_id")),
        ("uptime", format!("{} s", get("/server/uptime_seconds"))),
        ("clients", format!("{} ({by_type})", get("/clients/active"))),
        ("rooms", get("/rooms")),
        ("channels", get("/channels")),
        ("subscriptions", get("/subscriptions")),
        (
            "messages",
            format!(
                "received {}, delivered {}, dropped {}",
                get("/messages/received"),
                get("/messages/delivered"),
                get("/messages/dropped")
            ),
        ),
        ("storage", storage),
    ])?;
    if let Some(channels) = status
        .pointer("/participants/channels")
        .and_then(Value::as_object)
        && !channels.is_empty()
    {
        let mut rows: Vec<(String, u64)> = channels
            .iter()
            .map(|(key, n)| (key.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.line("")?;
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .take(10)
            .map(|(key, n)| vec![key, n.to_string()])
            .collect();
        out.table(&["CHANNEL", "MEMBERS"], &rows, &[1])?;
    }
    Ok(())
}

async fn channels(global: &Global, out: &Output, room: Option<&str>) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let mut records = Vec::new();
    let mut cursor: Option<String> = None;
    let result = loop {
        let mut args = Map::new();
        if let Some(room) = room {
            args.insert("room".into(), room.into());
        }
        if let Some(cursor) = &cursor {
            args.insert("cursor".into(), cursor.clone().into());
        }
        let page = match client.command("list_channels", args).await {
            Ok(page) => page,
            Err(err) => break Err(Failure::from(err)),
        };
        if let Some(channels) = page.get("channels").and_then(Value::as_array) {
            records.extend(channels.iter().cloned());
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if Some(next) != cursor.as_deref() => cursor = Some(next.to_owned()),
            _ => break Ok(()),
        }
    };
    client.close().await;
    result?;
    if out.is_json() {
        for record in &records {
            out.json(record)?;
        }
        return Ok(());
    }
    let field = |record: &Value, name: &str| record.get(name).map(plain).unwrap_or_default();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            vec![
                field(record, "room"),
                field(record, "channel"),
                field(record, "type"),
                field(record, "participant_count"),
                field(record, "created_at"),
            ]
        })
        .collect();
    out.table(
        &["ROOM", "CHANNEL", "TYPE", "MEMBERS", "CREATED"],
        &rows,
        &[3],
    )?;
    out.line(&out.dim(&format!("{} channel(s)", records.len())))?;
    Ok(())
}

async fn history(
    global: &Global,
    out: &Output,
    key: &ChannelKey,
    limit: Option<u32>,
    after_seq: Option<u64>,
) -> Result<(), Failure> {
    let mut args = Map::new();
    args.insert("room".into(), key.room().into());
    args.insert("channel".into(), key.channel().into());
    if let Some(limit) = limit {
        args.insert("limit".into(), limit.into());
    }
    if let Some(after) = after_seq {
        args.insert("after_seq".into(), after.into());
    }
    let reply = command(global, "history", args).await?;
    let messages = reply
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let truncated = reply
        .get("truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if out.is_json() {
        for message in &messages {
            out.json(message)?;
        }
    } else {
        let field = |m: &Value, name: &str| m.get(name).map(plain).unwrap_or_default();
        let rows: Vec<Vec<String>> = messages
            .iter()
            .map(|m| {
                vec![
                    field(m, "seq"),
                    field(m, "timestamp"),
                    field(m, "sender"),
                    m.get("payload").map(Value::to_string).unwrap_or_default(),
                ]
            })
            .collect();
        out.table(&["SEQ", "TIMESTAMP", "SENDER", "PAYLOAD"], &rows, &[0])?;
        out.line(&out.dim(&format!(
            "{} message(s) of {key}, last seq {}, epoch {}",
            messages.len(),
            reply.get("last_seq").map(plain).unwrap_or_default(),
            reply.get("epoch").map(plain).unwrap_or_default()
        )))?;
    }
    if truncated {
        eprintln!("arqon: the reply was cut to the server's message size limit (truncated)");
    }
    Ok(())
}

async fn ping(global: &Global, out: &Output) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let started = Instant::now();
    let result = client.ping().await;
    let rtt = started.elapsed();
    client.close().await;
    let pong = result?;
    let rtt_ms = (rtt.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    if out.is_json() {
        out.json(&json!({"pong": pong.pong, "server_time": pong.server_time,
            "rtt_ms": rtt_ms, "url": global.url}))?;
    } else {
        out.line(&format!(
            "pong from {}: {rtt_ms} ms (server time {})",
            global.url, pong.server_time
        ))?;
    }
    Ok(())
}

fn completions(shell: Shell) -> Result<(), Failure> {
    let mut command = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buffer = Vec::new();
    clap_complete::generate(shell, &mut command, "arqon", &mut buffer);
    io::Write::write_all(&mut io::stdout().lock(), &buffer)?;
    Ok(())
}
