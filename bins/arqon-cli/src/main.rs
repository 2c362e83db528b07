//! `arqon`, the ArqonBus command line (SPEC §19): publish, subscribe, send
//! direct messages, follow telemetry, and query a server, over the
//! `arqon-client` crate.
//!
//! Output is human-readable on a terminal and one JSON object per line
//! otherwise (or with `--json`; `--human` forces the former). Exit codes:
//! 0 success, 1 the server answered with an error (its `error_code` is
//! printed on stderr), 2 usage error, 3 the server cannot be reached.
//!
//! This binary is wiring: clap parses, [`run`] talks to the server through
//! `arqon_client::Client`, [`output`] writes.

mod cli;
mod output;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::output::Output;

fn main() -> ExitCode {
    // Usage errors exit 2 and `--help` / `--version` exit 0, through clap.
    let cli = Cli::parse();
    let out = Output::new(cli.global.json, cli.global.human);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("arqon: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run::run(cli, &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message() {
                eprintln!("arqon: {message}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}
