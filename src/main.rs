//! The `chorus` binary: parses the command line, sets up logging and calls
//! into the library. Nothing else lives here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use chorus::client::connection::{ConnectOptions, DEFAULT_URL};
use chorus::client::interactive::ClientOptions;
use chorus::server::{ServerConfig, SessionConfig};
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
    /// Chat from the terminal: /username, /join, /who, /rooms, /binary, /help, /quit.
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
    /// Run a load scenario: many simulated clients, latency and delivery report, exit code from thresholds.
    Run(RunArgs),
    /// Re-print a saved run, compare it with a baseline, or merge the shards of one run.
    Report(ReportArgs),
    /// An embedded server and scripted bots chatting, with a short latency report.
    Demo {
        /// Pause between scripted steps.
        #[arg(long, default_value = "300ms", value_parser = parse_duration)]
        pace: Duration,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/smoke.toml.
    scenario: std::path::PathBuf,
    /// Load this server instead of an embedded one (overrides the scenario's target).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Write the results into exactly this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Where result folders are created.
    #[arg(long, value_name = "DIR", default_value = "results")]
    results: std::path::PathBuf,
    /// Run only shard i of n (bots i, i+n, ...): for runs bigger than one process; needs a target.
    #[arg(long, value_name = "i/n")]
    shard: Option<chorus::harness::Shard>,
    /// Start at this moment (Unix seconds or RFC 3339), so the shards of a run start together.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<std::time::SystemTime>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A results folder (results/<name>-<timestamp>/).
    #[arg(required = true)]
    dirs: Vec<std::path::PathBuf>,
    /// Merge the given folders (the shards of one run) into a new results folder.
    #[arg(long)]
    merge: bool,
    /// With --merge: write the merged results into exactly this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)));
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(std::time::SystemTime::from)
        .map_err(|_| format!("{text:?} is neither Unix seconds nor an RFC 3339 time"))
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
    /// Most bytes queued for one connection; a reader that falls further behind is closed (reason `slow`).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    max_queue_bytes: usize,
    /// Most events queued for one connection (same policy).
    #[arg(long, default_value_t = 4096)]
    max_queue_messages: usize,
    /// On shutdown, how long to wait for connections to close.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Data directory (history and accounts live in DIR/chorus.db). Default: $CHORUS_DATA,
    /// else $XDG_DATA_HOME/chorus, else ~/.local/share/chorus.
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
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
            session: SessionConfig {
                ping_interval: self.ping_interval,
                pong_timeout: self.pong_timeout,
                max_queue_items: self.max_queue_messages,
                max_queue_bytes: self.max_queue_bytes,
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

/// A command's outcome: the exit code to return (errors are reported by `main`).
async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => {
            init_tracing("warn");
            run_scenario(args).await
        }
        Command::Report(args) => {
            init_tracing("warn");
            report(args)
        }
        other => run_chat(other).await.map(|()| 0),
    }
}

async fn run_scenario(args: RunArgs) -> anyhow::Result<u8> {
    use chorus::harness;
    let scenario = harness::Scenario::load(&args.scenario)?;
    let target = args.target.clone().or_else(|| scenario.target.clone());
    eprintln!(
        "running {} ({} clients, {:.0}s) against {}",
        scenario.name,
        scenario.total_clients(),
        scenario.total_duration().as_secs_f64(),
        target.as_deref().unwrap_or("an embedded server")
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("stopping: no more sends; draining in-flight messages, then writing the partial report");
        on_signal.cancel();
    });
    let options = harness::RunOptions {
        target: args.target,
        results: args.results,
        out: args.out,
        shard: args.shard,
        start_at: args.start_at,
        ..harness::RunOptions::default()
    };
    let outcome = harness::run(scenario, options, stop).await?;
    println!("{}", outcome.report);
    println!("results: {}", outcome.dir.display());
    Ok(harness::exit_code(&outcome.summary))
}

fn report(args: ReportArgs) -> anyhow::Result<u8> {
    use chorus::harness;
    if args.merge {
        let outcome = harness::merge(&args.dirs, std::path::Path::new("results"), args.out.as_deref())?;
        println!("{}", outcome.report);
        println!("merged results: {}", outcome.dir.display());
        return Ok(harness::exit_code(&outcome.summary));
    }
    if args.out.is_some() {
        anyhow::bail!("--out only goes with --merge");
    }
    let (text, summary) = match args.dirs.as_slice() {
        [dir] => harness::report(dir, None)?,
        [dir, baseline] => harness::report(dir, Some(baseline))?,
        _ => anyhow::bail!("give one results folder, or two to compare (or --merge for shards)"),
    };
    println!("{text}");
    Ok(harness::exit_code(&summary))
}

async fn run_chat(command: Command) -> anyhow::Result<()> {
    match command {
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
        Command::Run(_) | Command::Report(_) => unreachable!("handled by run()"),
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
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("chorus: {err:#}");
            ExitCode::FAILURE
        }
    }
}
