//! The history writer: one thread that owns every write to the store.
//!
//! It takes what is queued (up to `MAX_BATCH` messages), stores it in one
//! transaction, then answers each sender: `ack` when the commit succeeded,
//! `error` `storage_failed` when it did not (the message was delivered live
//! but is not in history). A failing disk costs the senders their acks, never
//! the server: the next batch simply tries again, so storage recovers as soon
//! as the disk does. The writer also deletes messages past the retention age,
//! a chunk at a time, at most every `PRUNE_EVERY`.
//!
//! Group commit: for a store whose commits have a fixed cost (SQLite: an
//! fsync and the WAL frames of every page touched) the writer has a commit
//! window. A message
//! that arrives within that window after the last commit started waits for
//! the rest of it, so under load the writer commits at most once per window
//! with everything that came meanwhile, instead of once per handful of
//! messages; a message arriving after a quiet spell is committed at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::store::{PRUNE_CHUNK, Record, Store, StoreError};
use super::{AckTo, PRUNE_EVERY};
use crate::ids::now_millis;
use crate::protocol::{ErrorCode, ServerEvent};
use crate::server::metrics::Metrics;
use crate::sync::lock;

/// Most messages stored in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A message to store, and whom to tell.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) record: Record,
    pub(super) ack: Option<AckTo>,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Job {
    Store(Box<Pending>),
    /// Answer once everything queued before it is stored (or failed).
    Flush(oneshot::Sender<()>),
    /// Store what is queued, mark the store closed, stop.
    Close(oneshot::Sender<()>),
    /// Time to delete expired messages.
    Prune,
}

/// Start the writer thread, committing at most once per `window` under load.
pub(super) fn spawn(
    store: Arc<dyn Store>,
    window: Duration,
    rx: mpsc::Receiver<Job>,
    pending: Arc<Mutex<HashMap<Arc<str>, u64>>>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let writer = Writer {
        store,
        pending,
        metrics,
        healthy: true,
        last_prune: None,
        prune_more: true,
        window,
        last_commit: None,
        unstored: HashMap::new(),
    };
    std::thread::Builder::new().name("chorus-history".into()).spawn(move || writer.run(rx))?;
    Ok(())
}

/// Ask the writer to prune every `PRUNE_EVERY`, from a task that ends with
/// the writer (it holds only a weak sender). Outside a runtime, the writer
/// prunes as batches come.
pub(super) fn schedule_pruning(tx: &mpsc::Sender<Job>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = tx.downgrade();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(PRUNE_EVERY).await;
            let Some(tx) = weak.upgrade() else { return };
            if tx.send(Job::Prune).await.is_err() {
                return;
            }
        }
    });
}

struct Writer {
    store: Arc<dyn Store>,
    pending: Arc<Mutex<HashMap<Arc<str>, u64>>>,
    metrics: Arc<Metrics>,
    /// Did the last commit succeed? Logs only the transitions.
    healthy: bool,
    last_prune: Option<Instant>,
    /// The last prune deleted a full chunk: more may be expired.
    prune_more: bool,
    /// The group-commit window, and when the last commit started.
    window: Duration,
    last_commit: Option<Instant>,
    /// Rooms whose latest messages were delivered but not stored (their
    /// commit failed), with the highest such seq: recorded as the room's last
    /// seq as soon as the store takes writes again, so that no seq is handed
    /// out twice, even after a restart.
    unstored: HashMap<Arc<str>, u64>,
}

/// One round's work, taken from the queue.
#[derive(Default)]
struct Round {
    records: Vec<Record>,
    acks: Vec<Option<AckTo>>,
    flushes: Vec<oneshot::Sender<()>>,
    close: Option<oneshot::Sender<()>>,
}

impl Round {
    fn take(&mut self, job: Job) {
        match job {
            Job::Store(pending) => {
                let Pending { record, ack } = *pending;
                self.records.push(record);
                self.acks.push(ack);
            }
            Job::Flush(done) => self.flushes.push(done),
            Job::Close(done) => self.close = Some(done),
            // Only wakes an idle writer: `work` prunes when it is due.
            Job::Prune => {}
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            if matches!(job, Job::Store(_))
                && let Some(wait) = self.last_commit.and_then(|at| self.window.checked_sub(at.elapsed()))
            {
                std::thread::sleep(wait);
            }
            let mut round = Round::default();
            round.take(job);
            while round.records.len() < MAX_BATCH {
                let Ok(job) = rx.try_recv() else { break };
                round.take(job);
            }
            let close = round.close.take();
            self.work(round);
            if let Some(done) = close {
                // Refuse new messages, store the ones already admitted.
                rx.close();
                let mut rest = Round::default();
                while let Some(job) = rx.blocking_recv() {
                    rest.take(job);
                }
                self.work(rest);
                self.close();
                let _ = done.send(());
                return;
            }
        }
        // Every handle is gone without a close: still mark a clean stop.
        self.close();
    }

    fn work(&mut self, round: Round) {
        if !round.records.is_empty() {
            self.commit(round.records, round.acks);
        }
        let due = self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if self.prune_more || due {
            self.prune();
        }
        for done in round.flushes {
            let _ = done.send(());
        }
    }

    fn close(&mut self) {
        self.record_unstored();
        if !self.unstored.is_empty() {
            // Left marked as running: the next start moves every room's seq
            // past what may have been handed out.
            tracing::warn!(
                "history: the last seq of {} room(s) could not be recorded; {} is left as after a crash",
                self.unstored.len(),
                self.store.describe()
            );
            return;
        }
        match self.store.close() {
            Ok(()) => tracing::info!("history: everything stored; {} closed", self.store.describe()),
            Err(err) => tracing::warn!("history: closing {} failed: {err}", self.store.describe()),
        }
    }

    fn commit(&mut self, records: Vec<Record>, acks: Vec<Option<AckTo>>) {
        let started = Instant::now();
        self.last_commit = Some(started);
        let result = self.store.append(&records);
        let count = records.len() as u64;
        self.metrics.history_commit_seconds.record(started.elapsed().as_secs_f64());
        self.metrics.history_batch_messages.record(count as f64);
        match &result {
            Ok(()) => {
                self.metrics.history_stored.increment(count);
                self.forget_stored(&records);
                self.record_unstored();
                if !self.healthy {
                    tracing::info!("history: storing works again");
                    self.healthy = true;
                }
            }
            Err(err) => {
                self.metrics.history_failed.increment(count);
                for record in &records {
                    let top = self.unstored.entry(record.room.clone()).or_default();
                    *top = (*top).max(record.message.seq);
                }
                if self.healthy {
                    tracing::warn!(
                        "history: storing {count} message(s) failed: {err}; they were delivered live, their \
                         senders get storage_failed instead of an ack; retrying with the next messages"
                    );
                    self.healthy = false;
                } else {
                    tracing::debug!("history: storing {count} message(s) failed again: {err}");
                }
            }
        }
        for (record, ack) in records.iter().zip(acks) {
            if let Some(ack) = ack {
                let _ = ack.outbox.push_text(answer(record, &ack, result.as_ref().err()));
            }
        }
    }

    /// Record the seqs of messages that could not be stored as their rooms'
    /// last seq; those rooms then no longer need their pending entry.
    fn record_unstored(&mut self) {
        if self.unstored.is_empty() {
            return;
        }
        let store = &self.store;
        let mut recorded = Vec::new();
        self.unstored.retain(|room, seq| match store.raise_last_seq(room, *seq) {
            Ok(()) => {
                recorded.push((room.clone(), *seq));
                false
            }
            Err(err) => {
                tracing::debug!("history: recording the last seq of #{room} failed: {err}");
                true
            }
        });
        let mut pending = lock(&self.pending);
        for (room, seq) in recorded {
            if pending.get(&room).is_some_and(|handed| *handed <= seq) {
                pending.remove(&room);
            }
        }
    }

    /// Stored rooms no longer need their pending entry (unless newer
    /// messages were handed over meanwhile).
    fn forget_stored(&self, records: &[Record]) {
        let mut top: HashMap<&Arc<str>, u64> = HashMap::new();
        for record in records {
            let seq = top.entry(&record.room).or_default();
            *seq = (*seq).max(record.message.seq);
        }
        let mut pending = lock(&self.pending);
        for (room, stored) in top {
            if pending.get(room).is_some_and(|handed| *handed <= stored) {
                pending.remove(room);
            }
        }
    }

    fn prune(&mut self) {
        self.last_prune = Some(Instant::now());
        match self.store.prune(now_millis()) {
            Ok(deleted) => {
                self.prune_more = deleted >= PRUNE_CHUNK;
                if deleted > 0 {
                    tracing::debug!("history: deleted {deleted} message(s) past the retention age");
                }
            }
            Err(err) => {
                self.prune_more = false;
                tracing::warn!("history: deleting expired messages failed: {err}");
            }
        }
    }
}

/// The sender's answer: `ack`, or `error` when storing failed.
fn answer(record: &Record, ack: &AckTo, failed: Option<&StoreError>) -> String {
    let message = &record.message;
    match failed {
        None => ack.ack(record),
        Some(err) => ServerEvent::Error {
            code: Cow::Borrowed(ErrorCode::StorageFailed.as_str()),
            message: Cow::Owned(format!(
                "your message reached #{} (seq {}, {} recipient(s)) but could not be stored: {err}; it is not \
                 in the history",
                record.room, message.seq, ack.recipients
            )),
            client_id: ack.client_id.as_deref().map(Cow::Borrowed),
            upload_id: ack.upload_id.as_deref().map(Cow::Borrowed),
        }
        .encode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::history::store::memory::MemoryStore;
    use crate::server::history::store::tests::{record, text};
    use crate::server::history::store::{Message, Range};
    use std::sync::atomic::Ordering;

    /// A memory store that notes the size of every batch.
    #[derive(Debug)]
    struct Batches {
        inner: MemoryStore,
        sizes: Mutex<Vec<usize>>,
        /// Every write fails while set, as on a full disk.
        failing: std::sync::atomic::AtomicBool,
    }

    impl Batches {
        fn new() -> Arc<Batches> {
            Arc::new(Batches {
                inner: MemoryStore::new(Default::default()),
                sizes: Mutex::default(),
                failing: Default::default(),
            })
        }

        fn check(&self) -> Result<(), StoreError> {
            match self.failing.load(Ordering::Relaxed) {
                true => Err(StoreError::Full),
                false => Ok(()),
            }
        }
    }

    impl Store for Batches {
        fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
            self.check()?;
            lock(&self.sizes).push(batch.len());
            self.inner.append(batch)
        }
        fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
            self.inner.last_seq(room)
        }
        fn raise_last_seq(&self, room: &str, seq: u64) -> Result<(), StoreError> {
            self.check()?;
            self.inner.raise_last_seq(room, seq)
        }
        fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.inner.last_seqs()
        }
        fn scan(
            &self,
            room: &str,
            range: Range,
            now_ms: i64,
            visit: &mut dyn FnMut(Message) -> bool,
        ) -> Result<(), StoreError> {
            self.inner.scan(room, range, now_ms, visit)
        }
        fn prune(&self, now_ms: i64) -> Result<u64, StoreError> {
            self.inner.prune(now_ms)
        }
        fn close(&self) -> Result<(), StoreError> {
            self.inner.close()
        }
        fn describe(&self) -> String {
            "batches".into()
        }
    }

    fn sizes_with_window(window: Duration) -> Vec<usize> {
        let store = Batches::new();
        let (tx, rx) = mpsc::channel(16);
        spawn(store.clone(), window, rx, Arc::default(), Arc::new(Metrics::default())).unwrap();
        let store_one = |seq| {
            let pending = Pending { record: record("r", text(seq, "hi")), ack: None };
            tx.blocking_send(Job::Store(Box::new(pending))).unwrap();
        };
        let committed = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while lock(&store.sizes).iter().sum::<usize>() < n {
                assert!(Instant::now() < deadline, "the writer stored nothing for 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // A lone message, then two more 150 ms apart right after its commit.
        store_one(1);
        committed(1);
        store_one(2);
        std::thread::sleep(Duration::from_millis(150));
        store_one(3);
        committed(3);
        lock(&store.sizes).clone()
    }

    #[test]
    fn messages_within_the_commit_window_share_one_commit() {
        assert_eq!(
            sizes_with_window(Duration::from_secs(1)),
            [1, 2],
            "the first commits at once, the next two wait out the window together"
        );
        assert_eq!(sizes_with_window(Duration::ZERO), [1, 1, 1], "no window: each commits as it comes");
    }

    #[test]
    fn seqs_delivered_but_not_stored_are_never_handed_out_again() {
        let store = Batches::new();
        let (tx, rx) = mpsc::channel(16);
        let pending: Arc<Mutex<HashMap<Arc<str>, u64>>> = Arc::default();
        spawn(store.clone(), Duration::ZERO, rx, pending.clone(), Arc::new(Metrics::default())).unwrap();
        let send = |job| tx.blocking_send(job).unwrap();
        let store_one = |room: &str, seq| {
            lock(&pending).insert(Arc::from(room), seq);
            send(Job::Store(Box::new(Pending { record: record(room, text(seq, "hi")), ack: None })));
        };
        let flush = || {
            let (done, flushed) = oneshot::channel();
            send(Job::Flush(done));
            flushed.blocking_recv().unwrap();
        };
        // The disk is full: seq 5 of #a and 9 of #b are delivered, not stored.
        store.failing.store(true, Ordering::Relaxed);
        store_one("a", 5);
        store_one("b", 9);
        flush();
        assert_eq!(store.last_seq("a").unwrap(), 0);
        // The disk recovers: the next commit (in another room) records them.
        store.failing.store(false, Ordering::Relaxed);
        store_one("c", 1);
        flush();
        assert_eq!(store.last_seq("a").unwrap(), 5, "a restart continues after seq 5");
        assert_eq!(store.last_seq("b").unwrap(), 9);
        assert!(lock(&pending).is_empty(), "recorded rooms need no pending entry");
        // Still failing when the server stops: the close records them.
        store.failing.store(true, Ordering::Relaxed);
        store_one("d", 3);
        flush();
        store.failing.store(false, Ordering::Relaxed);
        let (done, closed) = oneshot::channel();
        send(Job::Close(done));
        closed.blocking_recv().unwrap();
        assert_eq!(store.last_seq("d").unwrap(), 3);
    }
}
