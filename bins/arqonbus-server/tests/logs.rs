//! The binary's log output when stderr is not a terminal (SPEC §9, §18):
//! plain lines without ANSI colour codes (in text and JSON formats), and
//! no credential from the configuration, even when Redis is unreachable
//! and its URL carries a password.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_arqonbus-server");

/// Runs the server with `env` and stderr piped, connects one client,
/// stops it with SIGTERM and returns everything it wrote to stderr.
async fn stderr_of_a_run(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("ARQONBUS_LOG_LEVEL", "debug")
        .envs(env.iter().copied())
        .args(["--print-addrs", "--port", "0", "--telemetry-port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let collected = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line),
    )
    .await
    .expect("addresses printed in time")
    .expect("read stdout");
    let addrs: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let bus = addrs["bus"].as_str().expect("bus address");

    // Some traffic, so that connection logs are written too.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bus}/"))
        .await
        .expect("connect");
    let _welcome = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("welcome in time");
    drop(ws);

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    tokio::time::timeout(Duration::from_secs(5), collected)
        .await
        .expect("stderr closed")
        .expect("reader")
}

fn assert_no_ansi(stderr: &str) {
    assert!(!stderr.trim().is_empty(), "the server logged something");
    assert!(
        !stderr.contains("\x1b["),
        "ANSI escapes in non-terminal logs: {stderr:?}"
    );
}

#[tokio::test]
async fn text_logs_to_a_pipe_have_no_ansi_escapes() {
    assert_no_ansi(&stderr_of_a_run(&[], &[]).await);
}

#[tokio::test]
async fn json_logs_to_a_pipe_have_no_ansi_escapes() {
    let stderr = stderr_of_a_run(&[], &["--log-format", "json"]).await;
    assert_no_ansi(&stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "every line is JSON: {line:?}"
        );
    }
}

#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let stderr = stderr_of_a_run(
        &[
            ("ARQONBUS_STORAGE", "redis"),
            ("ARQONBUS_REDIS_URL", "redis://:hunter2@127.0.0.1:1"),
            ("ARQONBUS_AUTH", "token"),
            ("ARQONBUS_ADMIN_TOKEN", "adm1n-t0ken-xyz"),
            ("ARQONBUS_API_KEY", "ap1-k3y-xyz"),
        ],
        &[],
    )
    .await;
    assert_no_ansi(&stderr);
    assert!(
        stderr.contains("storage degraded"),
        "the unreachable Redis is logged: {stderr}"
    );
    for secret in ["hunter2", "adm1n-t0ken-xyz", "ap1-k3y-xyz"] {
        assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
    }
}

/// Against a live Redis that requires a password, with the right one and a
/// wrong one, at the most verbose level (the Redis client's own logs
/// included): the password never appears.
#[tokio::test]
async fn redis_passwords_never_reach_trace_logs() {
    let Some(redis) = arqon_storage::testing::redis_server() else {
        eprintln!("redis-server not installed; skipped");
        return;
    };
    redis.cmd(&["CONFIG", "SET", "requirepass", "r1ght-pw-xyz"]);
    let port = redis.port();
    for (password, works) in [("r1ght-pw-xyz", true), ("wr0ng-pw-xyz", false)] {
        let url = format!("redis://:{password}@127.0.0.1:{port}");
        let stderr = stderr_of_a_run(
            &[
                ("ARQONBUS_LOG_LEVEL", "trace"),
                ("ARQONBUS_STORAGE", "redis"),
                ("ARQONBUS_REDIS_URL", &url),
            ],
            &[],
        )
        .await;
        assert_no_ansi(&stderr);
        assert!(!stderr.contains(password), "{password} leaked: {stderr}");
        assert_eq!(
            stderr.contains("storage degraded"),
            !works,
            "degraded only with the wrong password: {stderr}"
        );
    }
}
