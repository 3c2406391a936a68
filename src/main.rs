//! The `chorus` binary: parses the command line, sets up logging and calls
//! into the library. Nothing else lives here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use chorus::client::connection::{ConnectOptions, DEFAULT_URL};
use chorus::client::interactive::ClientOptions;
use chorus::client::tls::TlsOptions;
use chorus::server::{Profile, ServerSettings};
use chorus::units::parse_duration;

#[derive(Debug, Parser)]
#[command(name = "chorus", version, about = "A WebSocket chat server, its clients, and the tools to prove it works")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server (WebSocket on / and /ws, web client on GET /, /healthz, /metrics).
    Server(Box<ServerArgs>),
    /// Chat from the terminal: /username, /join, /who, /rooms, /history, /binary, /help, /quit.
    /// Reconnects by itself and shows what was missed meanwhile.
    Client {
        /// Server URL (ws:// or wss://).
        #[arg(default_value = DEFAULT_URL)]
        url: String,
        /// Print each server event as its raw JSON.
        #[arg(long)]
        json: bool,
        /// Where files others share are saved. [default: $XDG_DOWNLOAD_DIR/chorus, else ~/Downloads/chorus]
        #[arg(long, value_name = "DIR")]
        downloads: Option<std::path::PathBuf>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Connect, send a text, a binary and a rename, print what comes back, close.
    SimpleClient {
        /// Server URL (ws:// or wss://).
        #[arg(default_value = DEFAULT_URL)]
        url: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Run a load scenario: many simulated clients, latency and delivery report, exit code from thresholds.
    Run(Box<RunArgs>),
    /// Re-print a saved run, compare it with a baseline, or merge the shards of one run.
    Report(ReportArgs),
    /// Mint an access token for an account (created, token-only, if missing); prints the token alone.
    Token(TokenArgs),
    /// An embedded server and scripted bots chatting, with a short latency report.
    Demo {
        /// Pause between scripted steps.
        #[arg(long, default_value = "300ms", value_parser = parse_duration)]
        pace: Duration,
    },
}

/// How a client connects: TLS trust and the token.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// Trust the certificates in this PEM file for wss:// (a private CA, or a self-signed server's certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Trust any certificate for wss:// (testing only: the connection can be intercepted).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Access token, sent as "Authorization: Bearer" (from POST /api/login or `chorus token`).
    #[arg(long, env = "CHORUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ConnectArgs {
    fn options(self) -> ConnectOptions {
        ConnectOptions {
            tls: TlsOptions { ca: self.ca, insecure: self.insecure },
            token: self.token,
            ..ConnectOptions::default()
        }
    }
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The account name.
    #[arg(long)]
    user: String,
    /// How long the token stays valid.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    ttl: Duration,
    /// Data directory of the server the token is for (default as for `chorus server`).
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
    /// The server's signing secret, if it was given one (else the one kept in the data directory).
    #[arg(long, env = "CHORUS_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/smoke.toml.
    scenario: std::path::PathBuf,
    /// Load this server instead of an embedded one (overrides the scenario's target / targets).
    /// Repeat it for several nodes: clients spread over them as the scenario's `spread` says.
    #[arg(long, value_name = "URL")]
    target: Vec<String>,
    /// Write the results into exactly this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Where result folders are created.
    #[arg(long, value_name = "DIR", default_value = "results")]
    results: std::path::PathBuf,
    /// Run only shard i of n (bots i, i+n, ...): for runs bigger than one process; needs a target.
    #[arg(long, value_name = "i/n")]
    shard: Option<chorus::harness::Shard>,
    /// Run in N processes on this machine (each from its own loopback addresses when the target is
    /// local), started together, their results merged into one report.
    #[arg(long, value_name = "N", conflicts_with_all = ["shard", "start_at"])]
    shards: Option<u32>,
    /// With --shard on loopback: connect from 127.0.NET.x (set by --shards for each of its shards).
    #[arg(long, value_name = "NET", hide = true, default_value_t = 0)]
    source_net: u8,
    /// Start at this moment (Unix seconds or RFC 3339), so the shards of a run start together.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<std::time::SystemTime>,
    /// Connect from 127.0.0.1 to 127.0.0.N in turn (loopback targets; about 28,000 connections fit
    /// per address). Default: only past 25,000 clients, 25,000 per address.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    source_addresses: Option<u8>,
    /// Override the total length of the steady phase(s), e.g. 3s (several steady phases are scaled together).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Multiply every group's message rate, e.g. 0.5.
    #[arg(long, value_name = "FACTOR")]
    rate_multiplier: Option<f64>,
    /// Multiply every group's client count (each keeps at least 1), e.g. 0.1.
    #[arg(long, value_name = "FACTOR")]
    clients_multiplier: Option<f64>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Set any scenario key (repeatable): --set ramp_up=1s --set group.0.rate=2 --set server.history=off.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Serve a live dashboard of the run (default 127.0.0.1 on a free port; the address is printed).
    /// `--dashboard ADDR` and `--dashboard=ADDR` both work; a word that is
    /// not an address (`--dashboard scenarios/x.toml`) is not taken for one.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true, default_missing_value = "127.0.0.1:0")]
    dashboard: Option<String>,
    /// Write one JSON line per second of the run to FILE, or to stdout with `-` (the report then goes to stderr).
    #[arg(long, value_name = "FILE|-")]
    out_ndjson: Option<std::path::PathBuf>,
    /// Serve the harness's counters and latency histograms at http://ADDR/metrics (OpenMetrics; Prometheus protobuf with native histograms).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// wss:// trust and the access token every simulated client presents.
    #[command(flatten)]
    connect: ConnectArgs,
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
    /// Address to listen on, host:port (0.0.0.0:8080 for every interface, [::1]:8080 for IPv6).
    #[arg(long, default_value = "127.0.0.1:8080", env = "CHORUS_ADDR")]
    addr: String,
    #[command(flatten)]
    settings: ServerSettings,
}

/// Bind `--addr`, saying what a listen address looks like when it is not one.
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let looks_like_one =
        addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !looks_like_one {
        anyhow::bail!(
            "--addr {addr:?} is not host:port; write it like 127.0.0.1:8080 (this machine only), 0.0.0.0:8080 \
             (every interface) or [::1]:8080"
        );
    }
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// `chorus token`: the token alone on stdout, the details on stderr.
fn mint_token(args: TokenArgs) -> anyhow::Result<()> {
    let data = args.data.unwrap_or_else(chorus::server::default_data_dir);
    let issued = chorus::server::auth::issue_token(&data, args.auth_secret.as_deref(), &args.user, args.ttl)
        .with_context(|| format!("cannot mint a token for {:?}", args.user))?;
    if issued.created {
        eprintln!("created account {} (token-only: it has no password, so /api/login refuses it)", issued.claims.sub);
    }
    let expires: chrono::DateTime<chrono::Utc> = issued.claims.expires_at().into();
    eprintln!(
        "token for {} valid until {}",
        issued.claims.sub,
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    println!("{}", issued.token);
    Ok(())
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
            run_scenario(*args).await
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
    let overrides = harness::scenario::Overrides {
        duration: args.duration,
        rate_multiplier: args.rate_multiplier,
        clients_multiplier: args.clients_multiplier,
        seed: args.seed,
        set: args.set.clone(),
    };
    let scenario = harness::Scenario::load_with(&args.scenario, &overrides)?;
    let targets = if args.target.is_empty() { &scenario.targets } else { &args.target };
    eprintln!(
        "running {} ({} clients, {:.0}s) against {}",
        scenario.name,
        scenario.total_clients(),
        scenario.total_duration().as_secs_f64(),
        if targets.is_empty() { "an embedded server".to_string() } else { targets.join(", ") }
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("stopping: no more sends; draining in-flight messages, then writing the partial report");
        on_signal.cancel();
    });
    let shard_args = shard_args(&args);
    let (file, shards) = (args.scenario.clone(), args.shards);
    let options = harness::RunOptions {
        targets: args.target,
        results: args.results,
        out: args.out,
        shard: args.shard,
        start_at: args.start_at,
        source_addresses: args.source_addresses,
        source_net: args.source_net,
        connect: args.connect.options(),
        watch: harness::live::WatchOptions {
            ndjson: args.out_ndjson,
            dashboard: args.dashboard,
            metrics_addr: args.metrics_addr,
        },
    };
    let to_stderr = options.watch.ndjson_to_stdout();
    let outcome = match shards {
        Some(count) => harness::shards::run(scenario, &file, count, options, shard_args, stop).await?,
        None => harness::run(scenario, options, stop).await?,
    };
    // With NDJSON on stdout, stdout stays NDJSON only.
    if to_stderr {
        eprintln!("{}\nresults: {}", outcome.report, outcome.dir.display());
    } else {
        println!("{}", outcome.report);
        println!("results: {}", outcome.dir.display());
    }
    Ok(harness::exit_code(&outcome.summary))
}

/// The options each shard of `--shards` repeats: what changes the scenario, and how to connect
/// (the token goes by the environment, not on a command line others can read).
fn shard_args(args: &RunArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut pair = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            out.extend([flag.to_string(), value]);
        }
    };
    pair("--duration", args.duration.map(|d| format!("{}ms", d.as_millis())));
    pair("--rate-multiplier", args.rate_multiplier.map(|f| f.to_string()));
    pair("--clients-multiplier", args.clients_multiplier.map(|f| f.to_string()));
    pair("--seed", args.seed.map(|s| s.to_string()));
    pair("--source-addresses", args.source_addresses.map(|n| n.to_string()));
    pair("--ca", args.connect.ca.as_ref().map(|p| p.display().to_string()));
    for set in &args.set {
        pair("--set", Some(set.clone()));
    }
    if args.connect.insecure {
        out.push("--insecure".into());
    }
    out
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
            let (config, _) = args
                .settings
                .resolve(Profile::Server)
                .map_err(|err| anyhow::anyhow!("--{}: {}", err.key.replace('_', "-"), err.why))?;
            let listener = listen(&args.addr).await?;
            chorus::server::run(listener, config, shutdown_signal()).await
        }
        Command::Client { url, json, downloads, connect } => {
            init_tracing("warn");
            let downloads = downloads.unwrap_or_else(chorus::client::files::default_downloads);
            chorus::client::interactive::run(ClientOptions { url, json, connect: connect.options(), downloads }).await
        }
        Command::SimpleClient { url, connect } => {
            init_tracing("warn");
            chorus::client::simple::run(&url, &connect.options()).await
        }
        Command::Token(args) => {
            init_tracing("warn");
            mint_token(args)
        }
        Command::Demo { pace } => {
            init_tracing("warn");
            chorus::demo::run(pace).await
        }
        Command::Run(_) | Command::Report(_) => unreachable!("handled by run()"),
    }
}

/// The command line with `--dashboard ADDR` written `--dashboard=ADDR` when
/// ADDR is an address (`host:port` or a port): the flag's value is optional,
/// so clap would otherwise take `--dashboard scenarios/x.toml`'s path for
/// the address, or refuse the address written apart.
fn with_dashboard_joined(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_address = |word: &str| {
        let port = word.rsplit_once(':').map_or(word, |(host, port)| if host.is_empty() { "" } else { port });
        !word.contains('/') && port.parse::<u16>().is_ok()
    };
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for arg in args {
        if out.last().is_some_and(|last| last == "--dashboard")
            && let Some(word) = arg.to_str().filter(|w| is_address(w))
        {
            out.pop();
            out.push(format!("--dashboard={word}").into());
            continue;
        }
        out.push(arg);
    }
    out
}

/// The word after a bare `--dashboard`, when clap refused it: meant as the
/// flag's value but not an address.
fn dashboard_value_apart(args: &[std::ffi::OsString]) -> Option<String> {
    args.windows(2)
        .find(|w| w[0] == "--dashboard" && !w[1].to_string_lossy().starts_with('-'))
        .map(|w| w[1].to_string_lossy().into_owned())
}

fn main() -> ExitCode {
    let args = with_dashboard_joined(std::env::args_os());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            if err.kind() == clap::error::ErrorKind::UnknownArgument
                && let Some(value) = dashboard_value_apart(&args)
            {
                eprintln!("chorus: --dashboard takes an address (host:port or a port), not {value:?}");
                return ExitCode::from(2);
            }
            err.exit()
        }
    };
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
            // The chain may quote a server (a close reason, an HTTP body): never raw.
            eprintln!("chorus: {}", chorus::printable::printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
