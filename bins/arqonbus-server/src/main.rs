//! `arqonbus-server`: parse the command line, load the configuration,
//! install logging, bind, serve until SIGTERM/SIGINT.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use arqon_config::{CONFIG_FILE_ENV, Config, LogFormat, Sources, help_table, load};
use arqonbus_server::{Server, ServerError};
use clap::Parser;

/// Exit status for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status when a listener cannot be bound (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

/// ArqonBus: a structured real-time WebSocket message bus.
#[derive(Debug, Parser)]
#[command(name = "arqonbus-server", version, after_long_help = config_help(), after_help = "Run with --help for every configuration variable.")]
struct Cli {
    /// TOML configuration file (also ARQONBUS_CONFIG).
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// Bus listener host (ARQONBUS_HOST).
    #[arg(long)]
    host: Option<String>,
    /// Bus listener port, 0 = any free port (ARQONBUS_PORT).
    #[arg(long)]
    port: Option<String>,
    /// Telemetry listener port (ARQONBUS_TELEMETRY_PORT).
    #[arg(long = "telemetry-port")]
    telemetry_port: Option<String>,
    /// History storage: memory or redis (ARQONBUS_STORAGE).
    #[arg(long)]
    storage: Option<String>,
    /// Redis URL (ARQONBUS_REDIS_URL).
    #[arg(long = "redis-url")]
    redis_url: Option<String>,
    /// Log level: trace, debug, info, warn, error (ARQONBUS_LOG_LEVEL).
    #[arg(long = "log-level")]
    log_level: Option<String>,
    /// Log format: text or json (ARQONBUS_LOG_FORMAT).
    #[arg(long = "log-format")]
    log_format: Option<String>,
    /// Print the bound addresses as one JSON line on stdout once listening.
    #[arg(long = "print-addrs")]
    print_addrs: bool,
}

fn config_help() -> String {
    format!(
        "Configuration (defaults < TOML file < ARQONBUS_* environment < flags):\n\n{}",
        help_table()
    )
}

impl Cli {
    fn sources(&self) -> Sources {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let config_file = self.config.clone().or_else(|| {
            env.iter()
                .find(|(name, value)| name == CONFIG_FILE_ENV && !value.is_empty())
                .map(|(_, value)| value.into())
        });
        let flags = [
            ("--host", &self.host),
            ("--port", &self.port),
            ("--telemetry-port", &self.telemetry_port),
            ("--storage", &self.storage),
            ("--redis-url", &self.redis_url),
            ("--log-level", &self.log_level),
            ("--log-format", &self.log_format),
        ];
        let cli = flags
            .into_iter()
            .filter_map(|(flag, value)| value.clone().map(|value| (flag.to_owned(), value)))
            .collect();
        Sources {
            config_file,
            env,
            cli,
        }
    }
}

fn install_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colour codes only for a person at a terminal, never in log files or
    // collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        _ => builder.init(),
    }
}

/// Registers the SIGTERM and SIGINT handlers now, not when the returned
/// future is first polled: `--print-addrs` tells scripts the server is up,
/// and a signal sent the moment that line appears must already be a
/// graceful shutdown (SPEC §11), not the signal's default action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.sources()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("arqonbus-server: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    install_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("arqonbus-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.print_addrs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            err @ (ServerError::Config(_)
            | ServerError::Unsupported { .. }
            | ServerError::Tls { .. }),
        ) => {
            eprintln!("arqonbus-server: invalid configuration: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(
            err @ (ServerError::Bind { .. } | ServerError::Storage(_) | ServerError::Cluster(_)),
        ) => {
            eprintln!("arqonbus-server: {err}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(err) => {
            eprintln!("arqonbus-server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, print_addrs: bool) -> Result<(), ServerError> {
    // Installed before anything takes metric handles (SPEC §12: every
    // family is exported from startup).
    let metrics = match arqon_telemetry::metrics::install_recorder() {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(error = %err, "metrics recorder not installed; /metrics is disabled");
            None
        }
    };
    // Before anything is bound or printed (see `shutdown_signal`).
    let shutdown = shutdown_signal()?;
    let mut server = Server::bind(config).await?;
    if let Some(handle) = metrics {
        server = server.with_metrics(handle);
    }
    if print_addrs {
        let addrs = serde_json::to_string(&server.local_addrs()?).map_err(std::io::Error::other)?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addrs}")?;
        stdout.flush()?;
    }
    server.run(shutdown).await
}
