//! The `arqonbus-server` binary as an operator runs it: configuration
//! precedence (defaults < TOML < env < flags), invalid configuration exits
//! 64 with one line naming the key, `--print-addrs`, `--help` listing every
//! variable, and SIGTERM closing clients with 1001 and exiting 0.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use arqon_storage::testing::free_port;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_arqonbus-server");

/// The binary with an empty environment (nothing leaks in from CI).
fn server() -> Command {
    let mut command = Command::new(BIN);
    command.env_clear();
    command
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("run arqonbus-server")
}

/// Runs a configuration that should be refused at once; a server that
/// starts anyway (on free ports) is killed after 10 s, so a missing check
/// fails the test instead of hanging it.
fn run_refused(command: &mut Command) -> Output {
    let mut child = command
        .args(["--port", "0", "--telemetry-port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn arqonbus-server");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if tokio::time::Instant::now() > deadline {
            child.kill().expect("kill");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_config_error(output: &Output, names: &str) {
    assert_eq!(output.status.code(), Some(64), "exit status: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(names), "{stderr:?} should name {names}");
}

#[test]
fn invalid_values_exit_64_naming_the_key_as_written() {
    assert_config_error(&run(server().env("ARQONBUS_PORT", "abc")), "ARQONBUS_PORT");
    assert_config_error(
        &run(server().env("ARQONBUS_SERVER_PORT", "70000")),
        "ARQONBUS_SERVER_PORT",
    );
    assert_config_error(&run(server().args(["--port", "x"])), "--port");
    assert_config_error(&run(server().args(["--log-format", "xml"])), "--log-format");
    assert_config_error(
        &run(server().env("ARQONBUS_AUTH", "jwt")),
        "ARQONBUS_JWT_SECRET",
    );
    assert_config_error(
        &run(server().env("ARQONBUS_SLOW_CONSUMER", "sometimes")),
        "ARQONBUS_SLOW_CONSUMER",
    );
    assert_config_error(
        &run(server().args(["--config", "/nonexistent/arqonbus.toml"])),
        "/nonexistent/arqonbus.toml",
    );
    assert_config_error(
        &run(server().env("ARQONBUS_CONFIG", "/nonexistent/env.toml")),
        "/nonexistent/env.toml",
    );
}

/// SPEC §18: errors that echo configuration hide credentials.
#[test]
fn an_invalid_redis_url_is_named_with_its_password_hidden() {
    for url in [
        "http://:hunter2@host:6379",
        "http://user:hunter2@host:6379/0",
        "ftp://hunter2@host",
        // Written unencoded, a `/` in the password is still the password.
        "http://:hun/ter2@host:6379",
        "http://:hun/hunter2@host:6379/0",
    ] {
        let output = run_refused(server().env("ARQONBUS_REDIS_URL", url));
        assert_config_error(&output, "ARQONBUS_REDIS_URL");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("ter2"),
            "{url}: the password leaked: {stderr}"
        );
        assert!(
            stderr.contains("***"),
            "{url}: the password is shown as ***: {stderr}"
        );
    }
    let output = run_refused(server().args(["--redis-url", "http://:hunter2@host:6379"]));
    assert_config_error(&output, "--redis-url");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

/// A URL that passes configuration but not the Redis client's parser is
/// refused at startup (EX_UNAVAILABLE, 69) with its password hidden too.
#[test]
fn a_redis_url_the_client_cannot_parse_hides_its_password() {
    for url in [
        "redis://:hun/ter2@127.0.0.1:1",
        "redis://:hun?ter2@127.0.0.1:1",
    ] {
        let output = run_refused(
            server()
                .env("ARQONBUS_STORAGE", "redis")
                .env("ARQONBUS_REDIS_URL", url),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{url}: {stderr}");
        assert!(
            !stderr.contains("ter2"),
            "{url}: the password leaked: {stderr}"
        );
    }
}

/// SPEC §18: a credential that is set but empty or blank is invalid
/// configuration in every auth mode.
#[test]
fn blank_credentials_exit_64_in_every_auth_mode() {
    for name in [
        "ARQONBUS_ADMIN_TOKEN",
        "ARQONBUS_JWT_SECRET",
        "ARQONBUS_API_KEY",
    ] {
        for value in ["", "  ", "\t"] {
            for mode in [None, Some("none"), Some("token"), Some("jwt")] {
                let mut command = server();
                command.env(name, value);
                if let Some(mode) = mode {
                    command.env("ARQONBUS_AUTH", mode);
                }
                // The blank key is named whatever else is missing.
                assert_config_error(&run_refused(&mut command), name);
            }
        }
    }
}

#[test]
fn cluster_mode_without_redis_storage_exits_64() {
    let output = run(server().env("ARQONBUS_CLUSTER", "redis").args([
        "--port",
        "0",
        "--telemetry-port",
        "0",
    ]));
    assert_config_error(&output, "ARQONBUS_CLUSTER");
}

#[test]
fn invalid_toml_keys_and_values_name_the_key() {
    let mut file = tempfile("port = \"nine\"\n");
    assert_config_error(&run(server().arg("--config").arg(file.path())), "port");
    file = tempfile("prot = 9100\n");
    assert_config_error(&run(server().arg("--config").arg(file.path())), "prot");
}

#[test]
fn help_lists_every_variable() {
    let output = run(server().arg("--help"));
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for key in arqon_config_keys() {
        assert!(help.contains(&key), "--help does not mention {key}");
    }
    for flag in [
        "--config",
        "--host",
        "--port",
        "--telemetry-port",
        "--storage",
        "--redis-url",
        "--log-level",
        "--log-format",
        "--print-addrs",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

/// Every canonical variable name the spec defines.
fn arqon_config_keys() -> Vec<String> {
    [
        "HOST",
        "PORT",
        "TELEMETRY_HOST",
        "TELEMETRY_PORT",
        "HTTP_PORT",
        "MAX_CONNECTIONS",
        "MAX_MESSAGE_SIZE",
        "PING_INTERVAL_SECS",
        "IDLE_TIMEOUT_SECS",
        "RATE_LIMIT_PER_SEC",
        "RATE_LIMIT_BURST",
        "MAX_VIOLATIONS",
        "CLIENT_QUEUE_BYTES",
        "SLOW_CONSUMER",
        "SHUTDOWN_GRACE_SECS",
        "PUBLISH_REQUIRES_JOIN",
        "AUTO_CREATE_CHANNELS",
        "MAX_CHANNEL_MEMBERS",
        "MAX_SUBSCRIPTIONS",
        "SYSTEM_CHANNELS",
        "STORAGE",
        "STORAGE_MODE",
        "HISTORY_SIZE",
        "REDIS_URL",
        "REDIS_STREAM_MAXLEN",
        "HISTORY_TTL_SECS",
        "AUTH",
        "ADMIN_TOKEN",
        "JWT_SECRET",
        "TELEMETRY_CHANNEL",
        "DASHBOARD_CHANNEL",
        "TELEMETRY_STATS_INTERVAL_MS",
        "CLUSTER",
        "NODE_ID",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ]
    .iter()
    .map(|name| format!("ARQONBUS_{name}"))
    .collect()
}

/// A running server process that prints its addresses.
struct Running {
    child: tokio::process::Child,
    addrs: serde_json::Value,
}

impl Running {
    async fn start(configure: impl FnOnce(&mut tokio::process::Command)) -> Self {
        let mut command = tokio::process::Command::new(BIN);
        command
            .env_clear()
            .arg("--print-addrs")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        configure(&mut command);
        let mut child = command.spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("addresses printed in time")
        .expect("read stdout");
        let addrs =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("one JSON line, got {line:?}"));
        Self { child, addrs }
    }

    fn bus_port(&self) -> u16 {
        let bus = self.addrs["bus"].as_str().expect("bus address");
        bus.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

#[tokio::test]
async fn print_addrs_prints_one_json_line() {
    let running = Running::start(|c| {
        c.args(["--port", "0", "--telemetry-port", "0"]);
    })
    .await;
    let obj = running.addrs.as_object().expect("object");
    assert!(obj["bus"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(obj["telemetry"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_ne!(running.bus_port(), 0);
}

#[tokio::test]
async fn flags_beat_env_beat_file_beat_defaults() {
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = tempfile(&format!("port = {file_port}\ntelemetry_port = 0\n"));

    let from_file = Running::start(|c| {
        c.arg("--config").arg(file.path());
    })
    .await;
    assert_eq!(from_file.bus_port(), file_port);
    drop(from_file);

    let from_env = Running::start(|c| {
        c.env("ARQONBUS_CONFIG", file.path())
            .env("ARQONBUS_PORT", env_port.to_string());
    })
    .await;
    assert_eq!(from_env.bus_port(), env_port);
    drop(from_env);

    // The alias loses to the canonical name; the flag beats both.
    let from_flag = Running::start(|c| {
        c.arg("--config")
            .arg(file.path())
            .env("ARQONBUS_SERVER_PORT", "1")
            .env("ARQONBUS_PORT", env_port.to_string())
            .args(["--port", &flag_port.to_string()]);
    })
    .await;
    assert_eq!(from_flag.bus_port(), flag_port);
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut running = Running::start(|c| {
        c.args(["--port", "0", "--telemetry-port", "0"])
            .env("ARQONBUS_SHUTDOWN_GRACE_SECS", "5");
    })
    .await;
    let url = format!("ws://127.0.0.1:{}/", running.bus_port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let welcome = ws.next().await.expect("welcome").expect("frame");
    assert!(matches!(welcome, Message::Text(_)));

    running.terminate();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(close, Some(1001));
    let status = tokio::time::timeout(Duration::from_secs(6), running.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// `--print-addrs` is how scripts know the server is up: a SIGTERM sent the
/// moment the line appears must already be a graceful shutdown (exit 0),
/// not the default action of the signal (killed, 143). Repeated, since the
/// window it guards against is short.
#[tokio::test]
async fn sigterm_right_after_the_addresses_are_printed_is_graceful() {
    for attempt in 0..12 {
        let mut running = Running::start(|c| {
            c.args(["--port", "0", "--telemetry-port", "0"]);
        })
        .await;
        running.terminate();
        let status = tokio::time::timeout(Duration::from_secs(10), running.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status:?} (killed by the signal instead of shutting down)"
        );
    }
}

/// A temporary file that is removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile(contents: &str) -> TempFile {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "arqonbus-cli-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    TempFile(path)
}
