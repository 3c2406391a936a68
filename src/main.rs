//! The `chorus` binary: parses the command line, sets up logging and calls
//! into the library. Nothing else lives here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use chorus::client::connection::{ConnectOptions, DEFAULT_URL};
use chorus::client::interactive::ClientOptions;
use chorus::client::tls::TlsOptions;
use chorus::server::auth::AuthMode;
use chorus::server::limits::{DEFAULT_API_RATE, RateLimit, parse_rate};
use chorus::server::store::Retention;
use chorus::server::store::sqlite::Durability;
use chorus::server::tls::TlsSource;
use chorus::server::{Backend, HistoryConfig, SecurityConfig, ServerConfig, SessionConfig};
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
    Run(RunArgs),
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

/// `--rate-limit`: a rate, or off.
#[derive(Debug, Clone, Copy)]
struct Rate(Option<f64>);

fn parse_rate_arg(text: &str) -> Result<Rate, String> {
    parse_rate(text).map(Rate)
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
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CHORUS_ADDR")]
    addr: String,
    /// Largest message accepted; a bigger one closes the connection with 1009. [default: 64KiB, 16MiB with --echo]
    #[arg(long, value_parser = parse_size)]
    max_message_size: Option<usize>,
    /// Most WebSocket connections at once; more are refused with HTTP 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most rooms at once.
    #[arg(long, default_value_t = 10_000)]
    max_rooms: usize,
    /// Rooms bigger than this do not announce joins, leaves and renames to every member
    /// (each would cost one delivery per member); `/who` still lists everyone.
    #[arg(long, default_value_t = 1000, value_name = "MEMBERS")]
    presence_limit: usize,
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
    /// [default: 4MiB; with --echo, 4 x the message size limit]
    #[arg(long, value_parser = parse_size)]
    max_queue_bytes: Option<usize>,
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
    /// Echo every data frame on / back unchanged instead of chatting (protocol conformance, benchmarks).
    #[arg(long)]
    echo: bool,
    /// Accounts and tokens: off (everyone a guest), optional (a token signs you in), required (no token: 401).
    #[arg(long, default_value = "off", value_parser = clap::value_parser!(AuthMode))]
    auth: AuthMode,
    /// Secret that signs tokens (32+ bytes). Default: generated once into DIR/auth-secret (mode 0600).
    #[arg(long, env = "CHORUS_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// How long a token from /api/login or /api/register stays valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    token_ttl: Duration,
    /// Accept WebSocket handshakes from this browser origin only (repeatable; e.g. https://chat.example.com).
    /// Handshakes without an Origin header (non-browser clients) are accepted. Default: any origin.
    #[arg(long, value_name = "ORIGIN")]
    allowed_origin: Vec<String>,
    /// Serve https/wss with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve https/wss with a self-signed certificate kept in DIR/tls (for local use; logs its fingerprint).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Messages per second per connection, sustained ("100/s", "6000/min", "off"). [default: 100/s; off with --echo]
    #[arg(long, value_parser = parse_rate_arg)]
    rate_limit: Option<Rate>,
    /// Messages a connection may send at once above the sustained rate.
    #[arg(long, default_value_t = 200)]
    rate_burst: u32,
    /// Most open connections from one address (IPv6: one /64); 0 for no limit. Raise it for load tests
    /// from few addresses, and behind a reverse proxy (all clients then share its address).
    #[arg(long, default_value_t = chorus::server::security::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize,
    /// Most frames one message may arrive in. [default: max(1024, message size limit / 64)]
    #[arg(long)]
    max_fragments: Option<usize>,
    /// Account API calls (/api/register, /api/login) per address, after a burst of 10 ("off" to disable).
    #[arg(long, default_value = "1/s", value_parser = parse_rate_arg)]
    api_rate_limit: Rate,
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
    /// SQLite group commit: under load, one commit (one fsync) per this long at most, with every message
    /// that came meanwhile; acks wait up to this much longer (0: commit each batch at once).
    #[arg(long, default_value = "10ms", value_parser = chorus::server::history::parse_commit_window)]
    history_commit_window: Duration,
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
        let default_size = if self.echo { 16 << 20 } else { 64 << 10 };
        let max_message_size = self.max_message_size.unwrap_or(default_size);
        let default_queue = if self.echo { (4 * max_message_size).max(4 << 20) } else { 4 << 20 };
        let rate = match self.rate_limit {
            Some(Rate(rate)) => rate,
            None if self.echo => None,
            None => Some(RateLimit::default().per_second),
        };
        ServerConfig {
            max_message_size,
            max_connections: self.max_connections,
            max_rooms: self.max_rooms,
            presence_limit: self.presence_limit,
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
                commit_window: self.history_commit_window,
                ..HistoryConfig::default()
            },
            session: SessionConfig {
                ping_interval: self.ping_interval,
                pong_timeout: self.pong_timeout,
                max_queue_items: self.max_queue_messages,
                max_queue_bytes: self.max_queue_bytes.unwrap_or(default_queue),
                rate_limit: rate.map(|per_second| RateLimit { per_second, burst: self.rate_burst }),
                max_gap: self.max_gap,
                max_lag: self.max_lag,
                ..SessionConfig::default()
            },
            echo: self.echo,
            security: self.security(),
        }
    }

    fn security(&self) -> SecurityConfig {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files { cert: cert.clone(), key: key.clone() }),
            _ if self.tls_self_signed => Some(TlsSource::SelfSigned),
            _ => None,
        };
        SecurityConfig {
            auth: self.auth,
            auth_secret: self.auth_secret.clone(),
            token_ttl: self.token_ttl,
            allowed_origins: self.allowed_origin.clone(),
            tls,
            max_connections_per_ip: self.max_connections_per_ip,
            max_fragments: self.max_fragments,
            api_rate_limit: self.api_rate_limit.0.map(|per_second| RateLimit { per_second, ..DEFAULT_API_RATE }),
        }
    }
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
    let overrides = harness::scenario::Overrides {
        duration: args.duration,
        rate_multiplier: args.rate_multiplier,
        clients_multiplier: args.clients_multiplier,
        seed: args.seed,
        set: args.set.clone(),
    };
    let scenario = harness::Scenario::load_with(&args.scenario, &overrides)?;
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
        source_addresses: args.source_addresses,
        connect: args.connect.options(),
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
        Command::Client { url, json, connect } => {
            init_tracing("warn");
            chorus::client::interactive::run(ClientOptions { url, json, connect: connect.options() }).await
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
            // The chain may quote a server (a close reason, an HTTP body): never raw.
            eprintln!("chorus: {}", chorus::printable::printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
