//! The chat server.
//!
//! # Layout
//!
//! The folders are the layers, each importing only those below it:
//!
//! - `net/`: the edge. Accepts connections (per-address caps, TLS), serves
//!   HTTP, turns a WebSocket handshake into a session. Knows nothing of rooms.
//! - `auth/`: accounts, tokens and the accounts API; claims account names in
//!   the hub.
//! - `history/`: the archive: the writer (group commit), `history` requests,
//!   and the stores (SQLite, memory).
//! - `chat/`: the core. Rooms, fan-out, presence and names (`hub`), one
//!   connection's conversation (`session`), its queue (`outbox`); knows no
//!   transport, no account store and no storage type.
//! - `limits`, `metrics`: leaves that every layer may use.
//!
//! `run(listener, config, shutdown)` serves until `shutdown` completes, then
//! stops accepting, closes every connection with 1001, stores the history
//! still queued and returns. The binary passes ctrl-c / SIGTERM; tests and
//! the harness pass their own future.

pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod files;
pub mod history;
pub mod limits;
pub mod metrics;
pub mod net;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use chat::{Hub, SessionConfig};
pub use config::{Profile, ServerSettings};
pub use history::{Backend, History, HistoryConfig};
pub use metrics::Metrics;
pub use net::security::{Security, SecurityConfig};

/// Everything a server can be told. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest message (and frame) accepted; larger closes with 1009.
    pub max_message_size: usize,
    /// Most WebSocket connections at once; more are refused with HTTP 503.
    pub max_connections: usize,
    /// Most rooms at once; joining a new room past it is refused.
    pub max_rooms: usize,
    /// Rooms with more members than this do not announce joins, leaves and
    /// renames to all their members (who still see them with `who`).
    pub presence_limit: usize,
    /// Time a new TCP connection has to send a complete request head.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to finish closing.
    pub shutdown_grace: Duration,
    /// Where the server keeps its files (history and accounts in `chorus.db`).
    pub data_dir: PathBuf,
    /// Where and how long messages are kept (default: in memory).
    pub history: HistoryConfig,
    /// Keepalive and queue settings of each connection.
    pub session: SessionConfig,
    /// Echo mode (`--echo`): every data frame goes back unchanged; no chat.
    pub echo: bool,
    /// Accounts, origins, TLS and abuse limits.
    pub security: SecurityConfig,
    /// Shared files: size limits (kept on disk with SQLite history, else in memory).
    pub files: FileLimits,
    /// `--redis`: share rooms with other nodes through Redis.
    pub redis: Option<cluster::ClusterConfig>,
}

/// The limits of shared files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Most bytes of files kept in all (`None`: 2 GiB on disk, 256 MiB in memory).
    pub max_total: Option<u64>,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits { max_file_size: 100 << 20, max_total: None }
    }
}

/// The default data directory: `$CHORUS_DATA`, else `$XDG_DATA_HOME/chorus`,
/// else `~/.local/share/chorus`, else `./chorus-data`.
pub fn default_data_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("CHORUS_DATA") {
        return dir;
    }
    if let Some(dir) = env("XDG_DATA_HOME") {
        return dir.join("chorus");
    }
    if let Some(home) = env("HOME") {
        return home.join(".local/share/chorus");
    }
    PathBuf::from("chorus-data")
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_size: 64 * 1024,
            max_connections: 10_000,
            max_rooms: 10_000,
            presence_limit: 1000,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            data_dir: default_data_dir(),
            history: HistoryConfig::default(),
            session: SessionConfig::default(),
            echo: false,
            security: SecurityConfig::default(),
            files: FileLimits::default(),
            redis: None,
        }
    }
}

/// State shared by every connection of one server.
#[derive(Debug)]
pub struct Shared {
    /// Every task serving a connection, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// TCP connections open now, from accept to close (what
    /// `--max-connections` bounds).
    open: Arc<AtomicU64>,
    pub config: ServerConfig,
    pub hub: Arc<Hub>,
    /// The hub's archive, kept here to flush and close it at shutdown.
    pub history: Arc<History>,
    /// The shared files, for downloads.
    pub files: Arc<files::Files>,
    /// With `--redis`: this node's handle on the shared state.
    pub cluster: Option<cluster::Cluster>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down; every session holds a child.
    pub shutdown: CancellationToken,
    /// Accounts, TLS, origin checks and per-address limits.
    pub security: Security,
}

/// A connection's claim on one of `max_connections`; released on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Everything a server needs before it accepts: the history store, the
    /// hub, the security settings. Fails on a bad setting (unreadable
    /// certificate, unusable data directory...).
    pub async fn open(config: ServerConfig, listen: Option<SocketAddr>) -> anyhow::Result<Shared> {
        use anyhow::Context as _;
        let metrics = Arc::new(Metrics::default());
        let cluster = match &config.redis {
            Some(redis) => Some(cluster::Cluster::connect(redis.clone()).await?),
            None => None,
        };
        // With Redis, history is the rooms' streams there; the local writer is off.
        let local = if cluster.is_some() { HistoryConfig::off() } else { config.history.clone() };
        let history = History::open(&local, &config.data_dir, metrics.clone());
        let history = Arc::new(history.with_context(|| history_open_failed(&config))?);
        let archive: Arc<dyn chat::Archive> = match &cluster {
            Some((cluster, _)) => Arc::new(cluster::SharedHistory::new(cluster.clone())),
            None => history.clone(),
        };
        let hub = Hub::with_archive(config.max_rooms, metrics.clone(), archive);
        let mut hub = hub.with_context(|| history_open_failed(&config))?;
        if let Some((cluster, _)) = &cluster {
            hub = hub.with_directory(Arc::new(cluster.clone()));
        }
        let files = Arc::new(open_files(&config)?);
        let hub = Arc::new(hub.with_presence_limit(config.presence_limit).with_files(files.clone()));
        let security = Security::new(&config, listen, &hub)?;
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let cluster = cluster.map(|(cluster, started)| {
            cluster.start(started, &hub, &tasks, shutdown.clone());
            cluster
        });
        let open = Arc::new(AtomicU64::new(0));
        Ok(Shared { tasks, open, config, hub, history, files, metrics, shutdown, security, cluster })
    }

    /// Count a new connection: its slot, and whether the server was full
    /// already (the connection is then only told so). `None` when it is more
    /// than `slack` past full: close it at once.
    pub fn admit(&self, slack: u64) -> Option<(Slot, bool)> {
        let max = self.config.max_connections as u64;
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.open.clone());
        if before >= max.saturating_add(slack) {
            return None;
        }
        Some((slot, before >= max))
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn ws_config(&self) -> WebSocketConfig {
        net::upgrade::ws_config(self.config.max_message_size)
    }
}

/// The file store: on disk in `<data dir>/files` when history is in
/// SQLite, else in memory; the history retention age applies to files too.
fn open_files(config: &ServerConfig) -> anyhow::Result<files::Files> {
    use anyhow::Context as _;
    let (place, default_total) = match config.history.backend {
        Backend::Sqlite => (files::Place::Disk(config.data_dir.join("files")), 2 << 30),
        Backend::Memory | Backend::Off => (files::Place::Memory, 256 << 20),
    };
    let files_config = files::FilesConfig {
        place,
        max_file_size: config.files.max_file_size,
        max_total: config.files.max_total.unwrap_or(default_total),
        max_age: config.history.retention.max_age,
        chunk_size: config.max_message_size.min(64 * 1024),
    };
    files::Files::open(files_config).with_context(|| {
        format!(
            "cannot open the file store in {}; pass --data with a writable directory",
            config.data_dir.join("files").display()
        )
    })
}

/// What to say when the history store cannot be opened.
fn history_open_failed(config: &ServerConfig) -> String {
    // The cause says what went wrong and what to do; no advice before it.
    format!("cannot open the history database {}", config.data_dir.join(history::DB_FILE).display())
}

/// Serve on `listener` until `shutdown` completes; then close every
/// connection with 1001, store the history still queued, and return once
/// the connections are gone (or the grace period has passed).
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::open(config, listener.local_addr().ok()).await?);
    serve(listener, shared, shutdown).await
}

/// `run`, with the server's state already built.
async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tracker = shared.tasks.clone();
    let edge = net::http::Edge::new(shared.clone());
    tracker.spawn(upkeep(shared.clone()));
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        let (ws, http) = if shared.security.tls.is_some() { ("wss", "https") } else { ("ws", "http") };
        tracing::info!("chorus server listening on {ws}://{addr}/ (web client: {http}://{addr}/)");
        net::security::announce(&shared, addr);
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tracker.spawn(net::accept::serve(tcp, peer, edge.clone()));
                }
                Err(err) => {
                    // Out of file descriptors, most likely: wait a little
                    // instead of spinning; established connections go on.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let open = shared.metrics.sessions();
    tracing::info!("shutting down: closing {open} connection(s)");
    shared.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not close within {:?}", shared.config.shutdown_grace);
    }
    shared.history.close().await;
    tracing::info!("server stopped");
    Ok(())
}

/// Fold histogram samples into their buckets now and then, until shutdown.
async fn upkeep(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(metrics::UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = every.tick() => shared.metrics.upkeep(),
        }
    }
}

/// A server running in the background, as the demo, the harness and the
/// tests use it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    tls: bool,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ServerHandle {
    /// Bind `addr` (port 0 for a free port) and serve in a background task.
    /// Fails on a bad setting (the address is taken, history cannot be
    /// opened, a certificate cannot be read) before anything is served.
    pub async fn start(addr: &str, config: ServerConfig) -> anyhow::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::open(config, Some(addr)).await?);
        let tls = shared.security.tls.is_some();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shared, stop.clone().cancelled_owned()));
        Ok(ServerHandle { addr, tls, stop, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>/`, or `wss://<addr>/` when the server speaks TLS.
    pub fn url(&self) -> String {
        format!("{}://{}/", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// Shut down gracefully and wait until done.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}
