//! The chat server: an accept loop that hands each connection to `http`,
//! which upgrades WebSocket requests into `session`s joined through the `hub`.
//!
//! `run(listener, config, shutdown)` serves until `shutdown` completes, then
//! stops accepting, closes every connection with 1001, stores the history
//! still queued and returns. The binary passes ctrl-c / SIGTERM; tests and
//! the harness pass their own future.

pub mod history;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod session;
pub mod store;

// Security and protection: accounts and tokens, TLS, abuse limits.
pub mod accept;
pub mod accounts;
pub mod api;
pub mod auth;
pub mod frames;
pub mod limits;
pub mod security;
pub mod tls;
pub mod tokens;
pub mod utf8;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use history::{Backend, History, HistoryConfig};
pub use hub::Hub;
pub use metrics::Metrics;
pub use security::{Security, SecurityConfig};
pub use session::SessionConfig;

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
        }
    }
}

/// State shared by every connection of one server.
#[derive(Debug)]
pub struct Shared {
    pub config: ServerConfig,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down; every session holds a child.
    pub shutdown: CancellationToken,
    /// Accounts, TLS, origin checks and per-address limits.
    pub security: Security,
}

/// A WebSocket connection's claim on one of `max_connections`; released on drop.
#[derive(Debug)]
pub struct Slot<'a>(&'a Metrics);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Everything a server needs before it accepts: the history store, the
    /// hub, the security settings. Fails on a bad setting (unreadable
    /// certificate, unusable data directory...).
    pub fn new(config: ServerConfig, listen: Option<SocketAddr>) -> anyhow::Result<Shared> {
        use anyhow::Context as _;
        let security = Security::new(&config, listen)?;
        let metrics = Arc::new(Metrics::default());
        let history = History::open(&config.history, &config.data_dir, metrics.clone());
        let history = history.with_context(|| history_open_failed(&config))?;
        let hub = Hub::with_history(config.max_rooms, metrics.clone(), Arc::new(history));
        let hub = hub.with_context(|| history_open_failed(&config))?;
        let hub = Arc::new(hub.with_presence_limit(config.presence_limit));
        Ok(Shared { config, hub, metrics, shutdown: CancellationToken::new(), security })
    }

    /// Take a connection slot, unless the server is full.
    pub fn admit(&self) -> Option<Slot<'_>> {
        let max = self.config.max_connections as u64;
        self.metrics
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(&self.metrics))
    }

    pub fn ws_config(&self) -> WebSocketConfig {
        http::ws_config(self.config.max_message_size)
    }
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
    let shared = Arc::new(Shared::new(config, listener.local_addr().ok())?);
    serve(listener, shared, shutdown).await
}

/// `run`, with the server's state already built.
async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        let (ws, http) = if shared.security.tls.is_some() { ("wss", "https") } else { ("ws", "http") };
        tracing::info!("chorus server listening on {ws}://{addr}/ (web client: {http}://{addr}/)");
        security::announce(&shared, addr);
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tracker.spawn(accept::serve(tcp, peer, shared.clone()));
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
    let open = shared.metrics.connections.load(Ordering::Relaxed);
    tracing::info!("shutting down: closing {open} connection(s)");
    shared.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not close within {:?}", shared.config.shutdown_grace);
    }
    shared.hub.history().close().await;
    tracing::info!("server stopped");
    Ok(())
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
        let shared = Arc::new(Shared::new(config, Some(addr))?);
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
