//! `arqon` as a process against a real server (SPEC §19): every command in
//! both output modes (JSON lines when stdout is not a terminal, human with
//! `--human`), `--url` before or after the subcommand and from
//! `ARQONBUS_URL`, and the exit codes: 0 success, 1 server error (its
//! `error_code` on stderr), 2 usage, 3 unreachable.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use arqon_config::{AuthMode, Config, ConfigBuilder};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_arqon");
const WAIT: Duration = Duration::from_secs(10);

/// A server on its own runtime thread, stopped on drop.
struct Bus {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Bus {
    fn start() -> Self {
        Self::with(|b| b)
    }

    fn with(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let config = adjust(Config::builder().port(0)).build().unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                arqonbus_server::serve(listener, config, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(WAIT).unwrap();
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `arqon --url URL ARGS…` with a clean environment.
    fn arqon(&self, args: &[&str]) -> Command {
        let mut command = arqon();
        command.arg("--url").arg(self.url()).args(args);
        command
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The binary, with nothing inherited that could change its behaviour.
fn arqon() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("ARQONBUS_URL")
        .env_remove("ARQONBUS_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every stdout line as JSON (the non-tty format), asserting exit 0.
fn json_lines(output: &Output) -> Vec<Value> {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
}

/// A long-running `arqon` (sub, tail) whose stdout lines are read with a
/// timeout.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).expect("a line in time")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.line()).unwrap()
    }

    /// Ctrl-C, then the exit code.
    fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no exit after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ping_in_both_modes_with_the_url_anywhere() {
    let bus = Bus::start();
    let lines = json_lines(&run(&mut bus.arqon(&["ping"])));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["pong"], true);
    assert!(lines[0]["server_time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[0]["rtt_ms"].as_f64().unwrap() >= 0.0);

    let human = run(arqon().args(["ping", "--human", "--url", &bus.url()]));
    assert_exit(&human, 0);
    assert!(stdout(&human).starts_with("pong from ws://"), "{human:?}");
    assert!(!stdout(&human).contains('\x1b'), "no colour off a terminal");

    let from_env = run(arqon().env("ARQONBUS_URL", bus.url()).arg("ping"));
    assert_eq!(json_lines(&from_env)[0]["pong"], true);
    // --json wins over nothing, and --json with --human is a usage error.
    assert_exit(&run(&mut bus.arqon(&["ping", "--json", "--human"])), 2);
}

#[test]
fn pub_history_channels_and_status() {
    let bus = Bus::start();
    let published = json_lines(&run(&mut bus.arqon(&[
        "pub",
        "lobby:general",
        r#"{"text":"hi"}"#,
    ])));
    assert_eq!(
        published,
        vec![
            json!({"room": "lobby", "channel": "general", "delivered": 0, "seq": 1, "stored": true})
        ]
    );
    let human = run(&mut bus.arqon(&["--human", "pub", "lobby:general", r#"{"text":"again"}"#]));
    assert_exit(&human, 0);
    assert!(
        stdout(&human).contains("published to lobby:general: seq 2"),
        "{human:?}"
    );

    let history = json_lines(&run(&mut bus.arqon(&["history", "lobby:general"])));
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["seq"], 1);
    assert_eq!(history[0]["payload"], json!({"text": "hi"}));
    let after = json_lines(&run(&mut bus.arqon(&[
        "history",
        "lobby:general",
        "--after-seq",
        "1",
        "--limit",
        "5",
    ])));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["payload"], json!({"text": "again"}));
    let human = stdout(&run(&mut bus.arqon(&[
        "history",
        "lobby:general",
        "--human",
    ])));
    let header = human.lines().next().unwrap();
    assert!(
        header.starts_with("SEQ") && header.contains("PAYLOAD"),
        "{human}"
    );
    assert!(human.contains(r#"{"text":"again"}"#), "{human}");
    assert!(human.contains("2 message(s) of lobby:general"), "{human}");

    let channels = json_lines(&run(&mut bus.arqon(&["channels"])));
    let general = channels
        .iter()
        .find(|c| c["room"] == "lobby" && c["channel"] == "general")
        .expect("lobby:general listed");
    assert_eq!(general["participant_count"], 0);
    assert!(channels.iter().any(|c| c["type"] == "system"));
    let human = stdout(&run(&mut bus.arqon(&["channels", "--human"])));
    let mut rows = human.lines();
    let header = rows.next().unwrap();
    let members_column = header.find("MEMBERS").unwrap();
    assert!(header.starts_with("ROOM"), "{human}");
    let row = rows.find(|l| l.contains("general")).unwrap();
    // Aligned: the member count ends where its header ends.
    assert_eq!(
        row.chars().nth(members_column + "MEMBERS".len() - 1),
        Some('0'),
        "{human}"
    );

    let status = json_lines(&run(&mut bus.arqon(&["status"])));
    assert_eq!(status[0]["server"]["name"], "ArqonBus");
    assert_eq!(status[0]["storage"]["backend"], "memory");
    let human = stdout(&run(&mut bus.arqon(&["status", "--human"])));
    assert!(
        human.contains("storage") && human.contains("memory (ok)"),
        "{human}"
    );
    assert!(human.lines().any(|l| l.starts_with("clients ")), "{human}");
}

#[test]
fn sub_prints_messages_of_several_channels_and_leaves_on_ctrl_c() {
    let bus = Bus::start();
    let sub = Running::spawn(bus.arqon(&["sub", "r:a", "r:b"]));
    assert_eq!(sub.json()["type"], "joined");
    assert_eq!(sub.json()["type"], "joined");
    assert_exit(&run(&mut bus.arqon(&["pub", "r:a", r#"{"n":1}"#])), 0);
    assert_exit(&run(&mut bus.arqon(&["pub", "r:b", r#"{"n":2}"#])), 0);
    let first = sub.json();
    assert_eq!(first["type"], "message");
    assert_eq!(
        (&first["room"], &first["channel"]),
        (&json!("r"), &json!("a"))
    );
    assert_eq!(first["payload"], json!({"n": 1}));
    assert_eq!(first["seq"], 1);
    let second = sub.json();
    assert_eq!(second["channel"], "b");
    assert_eq!(second["payload"], json!({"n": 2}));
    assert_eq!(sub.interrupt(), Some(0));
    // It left both channels before closing.
    let channels = json_lines(&run(&mut bus.arqon(&["channels", "--room", "r"])));
    assert!(
        channels.iter().all(|c| c["participant_count"] == 0),
        "{channels:?}"
    );

    let human = Running::spawn(bus.arqon(&["sub", "r:a", "--human", "--recover"]));
    assert!(human.line().contains("joined r:a"));
    assert_exit(&run(&mut bus.arqon(&["pub", "r:a", r#"{"n":3}"#])), 0);
    let line = human.line();
    assert!(
        line.contains("r:a#2") && line.contains(r#"{"n":3}"#),
        "{line}"
    );
    assert_eq!(human.interrupt(), Some(0));
}

#[test]
fn send_reaches_one_client() {
    let bus = Bus::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(arqon_client::Client::connect(
            arqon_client::ConnectOptions::new(bus.url()),
        ))
        .unwrap();
    let mut direct = client.direct_messages().unwrap();
    let id = client.client_id().unwrap();
    let sent = json_lines(&run(&mut bus.arqon(&[
        "send",
        id.as_str(),
        r#"{"hello":1}"#,
    ])));
    assert_eq!(sent, vec![json!({"to": id.as_str(), "delivered": 1})]);
    let message = runtime
        .block_on(async { tokio::time::timeout(WAIT, direct.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(message.payload, json!({"hello": 1}));
    let human = run(&mut bus.arqon(&["send", id.as_str(), "{}", "--human"]));
    assert_eq!(stdout(&human).trim(), format!("sent to {id}: delivered 1"));

    let missing = run(&mut bus.arqon(&["send", "arq_client_nobody", "{}"]));
    assert_exit(&missing, 1);
    assert!(stderr(&missing).contains("TARGET_NOT_FOUND"), "{missing:?}");
    runtime.block_on(client.close());
}

#[test]
fn tail_follows_the_telemetry_channel_filtered_by_event_type() {
    let bus = Bus::start();
    let tail = Running::spawn(bus.arqon(&["tail", "--events", "channel_joined,channel_left"]));
    // Wait until the tail has joined: its own join is in `status`.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = json_lines(&run(&mut bus.arqon(&["status"])));
        if status[0]["participants"]["channels"]["integriguard:telemetry-stream"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "tail never joined");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_exit(&run(&mut bus.arqon(&["pub", "t:x", "{}"])), 0);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Value| e["eventType"] == "channel_left" && e["room"] == "t")
    {
        let event = tail.json();
        assert!(
            event["eventType"] == "channel_joined" || event["eventType"] == "channel_left",
            "filtered: {event}"
        );
        assert!(event["timestamp"].is_string());
        seen.push(event);
    }
    assert!(
        seen.iter()
            .any(|e| e["eventType"] == "channel_joined" && e["room"] == "t" && e["channel"] == "x")
    );
    assert_eq!(tail.interrupt(), Some(0));

    let human = Running::spawn(bus.arqon(&["tail", "--events", "channel_joined", "--human"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_exit(&run(&mut bus.arqon(&["pub", "t:y", "{}"])), 0);
    loop {
        let line = human.line();
        assert!(line.contains("channel_joined"), "{line}");
        if line.contains("channel=y") && line.contains("room=t") {
            break;
        }
    }
    assert_eq!(human.interrupt(), Some(0));
}

#[test]
fn exit_codes() {
    let bus = Bus::start();
    // 1: the server's error, its code on stderr.
    let missing = run(&mut bus.arqon(&["history", "nowhere:none"]));
    assert_exit(&missing, 1);
    assert!(
        stderr(&missing).contains("CHANNEL_NOT_FOUND"),
        "{missing:?}"
    );
    assert!(stdout(&missing).is_empty());
    let limit = run(&mut bus.arqon(&["pub", "integriguard:telemetry-stream", "{}"]));
    assert_exit(&limit, 1);
    assert!(stderr(&limit).contains("FORBIDDEN"), "{limit:?}");

    // 2: usage errors, before any connection.
    for args in [
        vec!["pub", "no-colon", "{}"],
        vec!["pub", "r:c", "not json"],
        vec!["pub", "r:c", "[1,2]"],
        vec!["pub", "r:c"],
        vec!["sub"],
        vec!["history", "r:c", "--limit", "0"],
        vec!["send", "not a client id", "{}"],
        vec!["frobnicate"],
        vec!["tail", "--events", ""],
        vec!["completions", "powershell"],
    ] {
        let output = run(&mut bus.arqon(&args));
        assert_exit(&output, 2);
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
    assert_exit(&run(arqon().arg("--help")), 0);

    // 3: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = run(arqon().args(["ping", "--url", &format!("ws://127.0.0.1:{port}/")]));
    assert_exit(&unreachable, 3);
    assert!(
        stderr(&unreachable).contains("cannot connect"),
        "{unreachable:?}"
    );
    let unreachable = run(arqon()
        .env("ARQONBUS_URL", format!("ws://127.0.0.1:{port}/"))
        .arg("status"));
    assert_exit(&unreachable, 3);
}

#[test]
fn a_refused_token_is_a_server_error() {
    let bus = Bus::with(|b| b.auth(AuthMode::Token).admin_token("s3cret"));
    let refused = run(&mut bus.arqon(&["ping", "--token", "wrong"]));
    assert_exit(&refused, 1);
    assert!(stderr(&refused).contains("UNAUTHORIZED"), "{refused:?}");
    assert!(
        !stderr(&refused).contains("wrong"),
        "the token is not echoed"
    );
    let ok = run(arqon()
        .env("ARQONBUS_TOKEN", "s3cret")
        .args(["ping", "--url", &bus.url()]));
    assert_eq!(json_lines(&ok)[0]["pong"], true);
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = run(arqon().args(["completions", shell]));
        assert_exit(&output, 0);
        let script = stdout(&output);
        assert!(script.contains("arqon"), "{shell}");
        assert!(
            script.contains("history") && script.contains("after-seq"),
            "{shell}"
        );
    }
}
