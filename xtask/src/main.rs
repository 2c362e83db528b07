//! `cargo xtask test`: the one command that runs every test of the
//! repository — the Rust workspace, then each SDK's suite and the browser
//! tests against the freshly built server binary.
//!
//! A suite whose toolchain is missing (Node for the TypeScript SDK and the
//! browser tests, Python for the Python SDK) is skipped with a printed
//! notice, unless `ARQONBUS_REQUIRE_NODE=1` / `ARQONBUS_REQUIRE_PYTHON=1`
//! make that a failure, as CI does. Arguments after `test` go to
//! `cargo test` (`cargo xtask test --locked`).
//!
//! Plain std only: no dependency, so the task builds in seconds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => match test(&args.collect::<Vec<_>>()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("xtask: {failure}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask test [cargo test arguments]");
            ExitCode::from(2)
        }
    }
}

/// The repository root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(what: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {what}");
    let status = command
        .current_dir(root())
        .status()
        .map_err(|err| format!("{what}: cannot start: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

/// Whether `program` runs (`program --version` succeeds).
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

fn required(variable: &str) -> bool {
    env::var(variable).is_ok_and(|value| value == "1")
}

/// Runs `suite` when `tool` is installed; otherwise prints why it is
/// skipped, or fails when `require` is set.
fn with_tool(
    suite: &str,
    tool: &str,
    require: &str,
    run_suite: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    if available(tool) {
        return run_suite();
    }
    if required(require) {
        return Err(format!("{suite}: {tool} is not installed and {require}=1"));
    }
    eprintln!(
        "\n==> {suite}: SKIPPED ({tool} is not installed; set {require}=1 to make this a failure)"
    );
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<(), String> {
    run(
        "cargo test --workspace",
        cargo().args(["test", "--workspace"]).args(cargo_args),
    )?;
    // The SDK and browser suites start the real server binary.
    let locked: Vec<&String> = cargo_args.iter().filter(|a| *a == "--locked").collect();
    run(
        "cargo build -p arqonbus-server",
        cargo()
            .args(["build", "-p", "arqonbus-server"])
            .args(locked),
    )?;
    let server = root().join("target/debug/arqonbus-server");
    let sdk = |script: &str| {
        let mut command = Command::new("bash");
        command.arg(script).env("ARQONBUS_SERVER_BIN", &server);
        command
    };
    with_tool("TypeScript SDK", "node", "ARQONBUS_REQUIRE_NODE", || {
        run(
            "TypeScript SDK (sdks/typescript)",
            &mut sdk("sdks/typescript/ci.sh"),
        )
    })?;
    with_tool("Python SDK", "python3", "ARQONBUS_REQUIRE_PYTHON", || {
        run("Python SDK (sdks/python)", &mut sdk("sdks/python/ci.sh"))
    })?;
    if root().join("tests/browser/ci.sh").exists() {
        with_tool("browser tests", "node", "ARQONBUS_REQUIRE_NODE", || {
            run(
                "browser tests (tests/browser)",
                &mut sdk("tests/browser/ci.sh"),
            )
        })?;
    }
    eprintln!("\n==> every suite passed");
    Ok(())
}
