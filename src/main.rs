//! The `chorus` binary: parses the command line, sets up logging and calls
//! into the library. Nothing else lives here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use chorus::client::connection::{ConnectOptions, DEFAULT_URL};
use chorus::client::interactive::ClientOptions;
use chorus::server::store::Retention;
use chorus::server::store::sqlite::Durability;
use chorus::server::{Backend, HistoryConfig, ServerConfig, SessionConfig};
use chorus::units::{parse_duration, parse_size};

#[derive(Debug, Parser)]
#[command(name = "chorus", version, about = "A WebSocket chat server, its clients, and the tools to prove it works")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server (WebSocket on / and /ws, web client on GET /, /healthz, /metrics).
    Server(ServerArgs),
    /// Chat from the terminal: /username, /join, /who, /rooms, /history, /binary, /help, /quit.
    /// Reconnects by itself and shows what was missed meanwhile.
    Client {
        /// Server URL.
        #[arg(default_value = DEFAULT_URL)]
        url: String,
        /// Print each server event as its raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect, send a text, a binary and a rename, print what comes back, close.
    SimpleClient {
        /// Server URL.
        #[arg(default_value = DEFAULT_URL)]
        url: String,
    },
    /// An embedded server and scripted bots chatting, with a short latency report.
    Demo {
        /// Pause between scripted steps.
        #[arg(long, default_value = "300ms", value_parser = parse_duration)]
        pace: Duration,
    },
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CHORUS_ADDR")]
    addr: String,
    /// Largest message accepted; a bigger one closes the connection with 1009.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    max_message_size: usize,
    /// Most WebSocket connections at once; more are refused with HTTP 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most rooms at once.
    #[arg(long, default_value_t = 10_000)]
    max_rooms: usize,
    /// Time a new connection has to complete its HTTP request / handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Ping a connection after this long without a frame from it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// After a ping, close the connection (reason `timeout`) if nothing comes back within this.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pong_timeout: Duration,
    /// Most bytes queued for one connection; a reader further behind misses messages (announced by
    /// `gap`), or is closed (reason `slow`) with --history off.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    max_queue_bytes: usize,
    /// Most events queued for one connection (same policy).
    #[arg(long, default_value_t = 4096)]
    max_queue_messages: usize,
    /// Close (reason `slow`) a connection that misses more than N messages in one stretch of
    /// lagging (misses less than 1s after it last caught up belong to the same stretch).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_gap: u64,
    /// Close (reason `slow`) a connection that keeps missing messages for longer than this.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_lag: Duration,
    /// On shutdown, how long to wait for connections to close.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Data directory (history and accounts live in DIR/chorus.db). Default: $CHORUS_DATA,
    /// else $XDG_DATA_HOME/chorus, else ~/.local/share/chorus.
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
    /// Where history is kept: in DIR/chorus.db (see --data), in memory (lost at exit), or not at all.
    #[arg(long, value_enum, default_value_t = HistoryArg::Sqlite)]
    history: HistoryArg,
    /// Keep at most the last N messages of each room (0: no count limit).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    retain_messages: u64,
    /// Forget messages older than this, e.g. 30d, 12h (0: no age limit).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    retain_age: Duration,
    /// SQLite durability: an ack survives a power loss (full) or a server crash (normal, faster).
    #[arg(long, value_enum, default_value_t = SyncArg::Full)]
    history_sync: SyncArg,
}

/// `--history`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HistoryArg {
    Sqlite,
    Memory,
    Off,
}

/// `--history-sync`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncArg {
    Full,
    Normal,
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            max_message_size: self.max_message_size,
            max_connections: self.max_connections,
            max_rooms: self.max_rooms,
            handshake_timeout: self.handshake_timeout,
            shutdown_grace: self.shutdown_grace,
            data_dir: self.data.clone().unwrap_or_else(chorus::server::default_data_dir),
            history: HistoryConfig {
                backend: match self.history {
                    HistoryArg::Sqlite => Backend::Sqlite,
                    HistoryArg::Memory => Backend::Memory,
                    HistoryArg::Off => Backend::Off,
                },
                retention: Retention {
                    max_messages: Some(self.retain_messages).filter(|n| *n > 0),
                    max_age: Some(self.retain_age).filter(|age| !age.is_zero()),
                },
                durability: match self.history_sync {
                    SyncArg::Full => Durability::Full,
                    SyncArg::Normal => Durability::Normal,
                },
                ..HistoryConfig::default()
            },
            session: SessionConfig {
                ping_interval: self.ping_interval,
                pong_timeout: self.pong_timeout,
                max_queue_items: self.max_queue_messages,
                max_queue_bytes: self.max_queue_bytes,
                max_gap: self.max_gap,
                max_lag: self.max_lag,
                ..SessionConfig::default()
            },
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => {
            init_tracing("info");
            let listener = tokio::net::TcpListener::bind(&args.addr)
                .await
                .with_context(|| format!("cannot listen on {}", args.addr))?;
            chorus::server::run(listener, args.config(), shutdown_signal()).await
        }
        Command::Client { url, json } => {
            init_tracing("warn");
            chorus::client::interactive::run(ClientOptions { url, json, connect: ConnectOptions::default() }).await
        }
        Command::SimpleClient { url } => {
            init_tracing("warn");
            chorus::client::simple::run(&url, &ConnectOptions::default()).await
        }
        Command::Demo { pace } => {
            init_tracing("warn");
            chorus::demo::run(pace).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chorus: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for a line editor thread still blocked on the terminal.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chorus: {err:#}");
            ExitCode::FAILURE
        }
    }
}
