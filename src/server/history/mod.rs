//! History: every chat and binary message is stored, and any connection can
//! read any room's past with `history`.
//!
//! The path of a message: the sender's session first takes a `StoreSlot`
//! (room in the bounded writer queue, waiting up to `RESERVE_WAIT` when the
//! disk is behind), then `Hub::publish` assigns the seq and fans out to the
//! room at once, then hands the record and the sender's `ack` to the slot.
//! The writer thread (`writer.rs`) stores what is queued in one transaction
//! (group commit) and only then pushes each sender's `ack`, or an `error`
//! `storage_failed` when the transaction failed. Delivery to recipients never
//! waits for the disk; the sender's ack always does.
//!
//! `pending` remembers, per room, the highest seq handed to the writer and
//! not yet stored. It makes a `history` request wait for the writer when it
//! could otherwise miss a message already delivered live, and it gives a
//! room re-created before its last messages were stored the right seq.

mod request;
pub mod store;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{self, Permit};
use tokio::sync::oneshot;

use crate::protocol::{ErrorCode, Refusal};
use crate::server::chat::archive::{AckTo, Archive, ArchiveFuture, ArchiveSlot, HistoryRequest, Slot, history_off};
use crate::server::metrics::Metrics;
use crate::sync::lock;
use store::sqlite::Durability;
use store::{MemoryStore, Record, Retention, SqliteStore, Store, StoreError};

pub use request::{ANSWER_MAX_BYTES, answer, message_event, range_from_request};
pub use writer::MAX_BATCH;

/// How long a sender waits for room in a full writer queue before its
/// message is refused with `storage_busy`.
pub const RESERVE_WAIT: Duration = Duration::from_secs(5);
/// How often the writer deletes messages past the retention age.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The default group-commit window for SQLite (see `writer`; the server's
/// `--history-commit-window`): under load, one commit (one fsync with
/// `--history-sync full`) per 10 ms at most. Acks wait up to that much
/// longer; a lone message is committed at once. Why 10 ms: a commit has a
/// fixed cost (fsync, WAL frames, the senders woken for their acks) that a
/// shorter window pays more often; the measurements are in bench/README.md
/// (*Before / after*, the commit window rows).
pub const COMMIT_WINDOW: Duration = Duration::from_millis(10);
/// The longest commit window accepted: every ack under load, and a shutdown,
/// may wait this long.
pub const MAX_COMMIT_WINDOW: Duration = Duration::from_secs(1);

/// A commit window, if it is at most `MAX_COMMIT_WINDOW`.
pub fn check_commit_window(window: Duration) -> Result<Duration, String> {
    if window > MAX_COMMIT_WINDOW {
        return Err(format!(
            "{window:?} is too long for a commit window: at most 1s (under load every ack waits up to this long)"
        ));
    }
    Ok(window)
}

/// Parse a commit window (`"10ms"`, `0`) for the command line.
pub fn parse_commit_window(text: &str) -> Result<Duration, String> {
    crate::units::parse_duration(text).and_then(check_commit_window)
}
/// The database file inside the data directory.
pub const DB_FILE: &str = "chorus.db";

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Not kept: no `history`, acks right after fan-out, lagging readers are closed.
    Off,
    /// In this process's memory; gone at restart.
    Memory,
    /// In `<data_dir>/chorus.db`.
    Sqlite,
}

/// How history is kept. `Default` is in memory: the library default, so
/// tests, the demo and embedded servers never write to the user's disk.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    pub backend: Backend,
    pub retention: Retention,
    /// SQLite only.
    pub durability: Durability,
    /// SQLite only: the group-commit window (see `writer`, `COMMIT_WINDOW`).
    pub commit_window: Duration,
    /// Most messages waiting for the writer.
    pub queue: usize,
}

impl HistoryConfig {
    pub fn off() -> HistoryConfig {
        HistoryConfig { backend: Backend::Off, ..HistoryConfig::default() }
    }

    pub fn sqlite() -> HistoryConfig {
        HistoryConfig { backend: Backend::Sqlite, ..HistoryConfig::default() }
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            backend: Backend::Memory,
            retention: Retention::default(),
            durability: Durability::Full,
            commit_window: COMMIT_WINDOW,
            queue: 4096,
        }
    }
}

/// The history of one server: the writer queue and the store to read from.
#[derive(Debug)]
pub struct History {
    /// `None` when history is off.
    store: Option<Arc<dyn Store>>,
    /// The writer queue; `None` when history is off.
    tx: Option<mpsc::Sender<writer::Job>>,
    /// Per room, the highest seq handed to the writer and not yet known to
    /// be stored. Taken under a room's lock by `publish`, under the registry
    /// lock by room creation, and by the writer after each commit; never
    /// held for more than a map operation.
    pending: Arc<Mutex<HashMap<Arc<str>, u64>>>,
    metrics: Arc<Metrics>,
}

/// Room for one message in the writer queue, taken before its seq is.
#[derive(Debug)]
pub struct StoreSlot<'a> {
    permit: Permit<'a, writer::Job>,
    pending: &'a Mutex<HashMap<Arc<str>, u64>>,
}

impl ArchiveSlot for StoreSlot<'_> {
    /// Queue `record` for storage; `ack` is answered after the commit.
    fn submit(self: Box<Self>, record: Record, ack: Option<AckTo>) {
        {
            let mut pending = lock(self.pending);
            let top = pending.entry(record.room.clone()).or_default();
            *top = (*top).max(record.message.seq);
        }
        self.permit.send(writer::Job::Store(Box::new(writer::Pending { record, ack })));
    }
}

impl History {
    /// No history.
    pub fn off(metrics: Arc<Metrics>) -> History {
        History { store: None, tx: None, pending: Arc::default(), metrics }
    }

    /// Open the configured store and start its writer.
    pub fn open(config: &HistoryConfig, data_dir: &Path, metrics: Arc<Metrics>) -> Result<History, StoreError> {
        let queue = config.queue.max(1);
        // Only SQLite's commits have a fixed cost (an fsync, WAL frames) worth
        // sharing: memory commits whatever is queued at once.
        let (store, window): (Arc<dyn Store>, Duration) = match config.backend {
            Backend::Off => return Ok(History::off(metrics)),
            Backend::Memory => (Arc::new(MemoryStore::new(config.retention)), Duration::ZERO),
            Backend::Sqlite => {
                // More than the writer can have had in flight at a crash.
                let crash_margin = (queue + MAX_BATCH) as u64;
                let path = data_dir.join(DB_FILE);
                let store = SqliteStore::open(&path, config.retention, config.durability, crash_margin)?;
                (Arc::new(store), config.commit_window)
            }
        };
        let (tx, rx) = mpsc::channel(queue);
        let pending: Arc<Mutex<HashMap<Arc<str>, u64>>> = Arc::default();
        writer::spawn(store.clone(), window, rx, pending.clone(), metrics.clone())?;
        writer::schedule_pruning(&tx);
        tracing::info!("history: {} (retention {})", store.describe(), describe_retention(&config.retention));
        Ok(History { store: Some(store), tx: Some(tx), pending, metrics })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Room in the writer queue for one message; `None` when history is off.
    /// Waits while the queue is full, up to `RESERVE_WAIT`.
    async fn reserve_slot(&self) -> Result<Option<Slot<'_>>, Refusal> {
        let Some(tx) = &self.tx else { return Ok(None) };
        let closed = || Refusal::new(ErrorCode::StorageBusy, "the server is shutting down; your message was not sent");
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Closed(())) => return Err(closed()),
            Err(TrySendError::Full(())) => match tokio::time::timeout(RESERVE_WAIT, tx.reserve()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(closed()),
                Err(_) => {
                    return Err(Refusal::new(
                        ErrorCode::StorageBusy,
                        format!(
                            "the history writer is {} messages behind the disk; your message was not sent, \
                             try again shortly",
                            tx.max_capacity()
                        ),
                    ));
                }
            },
        };
        Ok(Some(Box::new(StoreSlot { permit, pending: &self.pending })))
    }

    /// Wait until every message of `room` handed to the writer is stored, so
    /// that an answer includes everything already delivered live; as long as
    /// a sender would wait (`RESERVE_WAIT`), no longer.
    async fn wait_for_writer(&self, room: &str, tx: &mpsc::Sender<writer::Job>) -> Result<(), Refusal> {
        if !lock(&self.pending).contains_key(room) {
            return Ok(());
        }
        let (done, flushed) = oneshot::channel();
        let waited = tokio::time::timeout(RESERVE_WAIT, async {
            if tx.send(writer::Job::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
        .await;
        waited.map_err(|_| {
            Refusal::new(
                ErrorCode::HistoryFailed,
                format!("the history of #{room} is still being written to disk; try again shortly"),
            )
        })
    }

    /// The `history` answer for a request, read and encoded on the blocking
    /// pool, never more than `ANSWER_MAX_BYTES` (see `request::answer`).
    async fn answer_request(&self, room: &str, request: HistoryRequest) -> Result<String, Refusal> {
        let range = range_from_request(request.after_seq, request.before_seq, request.limit)?;
        let (Some(store), Some(tx)) = (&self.store, &self.tx) else { return Err(history_off()) };
        let started = std::time::Instant::now();
        self.wait_for_writer(room, tx).await?;
        let store = store.clone();
        let owned_room = room.to_string();
        let now = crate::ids::now_millis();
        let found =
            tokio::task::spawn_blocking(move || request::answer(&*store, &owned_room, range, now, ANSWER_MAX_BYTES))
                .await;
        self.metrics.history_request_seconds.record(started.elapsed().as_secs_f64());
        match found {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                tracing::warn!("history: reading #{room} failed: {err}");
                Err(Refusal::new(ErrorCode::HistoryFailed, format!("could not read the history of #{room}: {err}")))
            }
            Err(_) => Err(Refusal::new(ErrorCode::HistoryFailed, "reading the history failed; try again")),
        }
    }

    /// Store everything queued, mark the store closed cleanly and stop the
    /// writer. Messages published after this are refused.
    pub async fn close(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, closed) = oneshot::channel();
        if tx.send(writer::Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

impl Archive for History {
    fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let Some(store) = &self.store else { return Ok(Vec::new()) };
        Ok(store.last_seqs()?)
    }

    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>> {
        Box::pin(self.reserve_slot())
    }

    fn answer<'a>(&'a self, room: &'a str, request: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>> {
        Box::pin(self.answer_request(room, request))
    }
}

/// `10000 messages and 30 days per room`, for the log.
pub fn describe_retention(retention: &Retention) -> String {
    let count = retention.max_messages.map_or("no count limit".to_string(), |n| format!("{n} messages"));
    let age = retention.max_age.map_or("no age limit".to_string(), |age| match age.as_secs() {
        secs if secs > 0 && secs % 86_400 == 0 => format!("{} days", secs / 86_400),
        _ => crate::units::format_duration(age),
    });
    format!("{count} and {age} per room")
}
