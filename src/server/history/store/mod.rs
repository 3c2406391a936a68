//! Where history lives: the `Store` trait and the message types it keeps,
//! with two backends, `sqlite` (the default of `chorus server`, a file in the
//! data directory) and `memory` (the library default, for tests, the demo and
//! the harness's embedded server).
//!
//! A store is shared by the history writer (the only caller of `append` and
//! `prune`) and by the readers (`last_seq` when a room is created, `query`
//! for `history` requests). Every method is blocking and takes `&self`: a
//! backend does its own locking, so readers never wait for the writer's
//! transaction (SQLite in WAL mode) or only for a short in-memory critical
//! section.
//!
//! Retention is a property of the store: `append` trims each room it touches
//! to `max_messages`, `prune` deletes what is older than `max_age`, and
//! `query` never returns an expired message even before `prune` has run.

pub mod memory;
pub mod sqlite;

use std::time::Duration;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

pub use crate::server::chat::archive::{Body, Message, Record};

/// Which messages of a room a query asks for. With `after`, the oldest
/// `limit` messages with `seq > after` (paging forward); without, the newest
/// `limit` (paging backward from `before`). `before` is exclusive. The answer
/// is always oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub limit: usize,
}

impl Range {
    /// The newest `limit` messages.
    pub fn latest(limit: usize) -> Range {
        Range { after: None, before: None, limit }
    }

    /// Does `seq` fall inside the bounds (ignoring the limit)?
    pub fn contains(&self, seq: u64) -> bool {
        self.after.is_none_or(|after| seq > after) && self.before.is_none_or(|before| seq < before)
    }
}

/// How much history each room keeps. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many of a room's latest messages (by seq).
    pub max_messages: Option<u64>,
    /// Forget messages older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Keep everything.
    pub const FOREVER: Retention = Retention { max_messages: None, max_age: None };

    /// The oldest timestamp still kept at `now_ms`, if there is an age limit.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        let age = i64::try_from(self.max_age?.as_millis()).unwrap_or(i64::MAX);
        Some(now_ms.saturating_sub(age))
    }
}

impl Default for Retention {
    /// 10 000 messages per room, 30 days.
    fn default() -> Self {
        Retention { max_messages: Some(10_000), max_age: Some(Duration::from_secs(30 * 24 * 3600)) }
    }
}

/// Why storage failed, worded for the log and for the `error` event.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the disk is full")]
    Full,
    #[error("the database is read-only (is the data directory writable?)")]
    ReadOnly,
    #[error("the database is locked by another process")]
    Busy,
    #[error("another chorus server is using this data directory ({0} is locked); stop it, or pass another --data")]
    InUse(String),
    #[error("the database file is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "cannot write in {dir}: {cause}; pass --data with a writable directory, or --history memory to keep history in memory only"
    )]
    NotWritable { dir: String, cause: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full,
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(err.to_string()),
            _ => StoreError::Sqlite(err),
        }
    }
}

/// A history backend. See the module documentation for who calls what.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Store `batch` in one transaction (all or nothing), then trim the rooms
    /// it touched to the retention count.
    fn append(&self, batch: &[Record]) -> Result<(), StoreError>;

    /// The highest seq ever stored for `room` (0 for a room never seen), even
    /// if retention has since deleted that message.
    fn last_seq(&self, room: &str) -> Result<u64, StoreError>;

    /// Every room's highest seq (see `last_seq`), read once at open.
    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Hand the messages of `room` in `range` to `visit`, from the range's
    /// anchor outward (ascending from `after`, else descending from `before`
    /// or the newest), at most `range.limit`, none older than the retention
    /// age at `now_ms`; stop as soon as `visit` returns `false`. Nothing past
    /// the stop is read, so a caller with a byte budget pays only for what
    /// fits in it.
    fn scan(
        &self,
        room: &str,
        range: Range,
        now_ms: i64,
        visit: &mut dyn FnMut(Message) -> bool,
    ) -> Result<(), StoreError>;

    /// Messages of `room` in `range`, oldest first (`scan`, collected).
    fn query(&self, room: &str, range: Range, now_ms: i64) -> Result<Vec<Message>, StoreError> {
        let mut messages = Vec::new();
        self.scan(room, range, now_ms, &mut |message| {
            messages.push(message);
            true
        })?;
        if range.after.is_none() {
            messages.reverse();
        }
        Ok(messages)
    }

    /// Messages up to `seq` of `room` were delivered but could not be stored
    /// (their commit failed): raise the room's last seq to `seq` so that it
    /// is never handed out again, even after a restart.
    fn raise_last_seq(&self, room: &str, seq: u64) -> Result<(), StoreError>;

    /// Delete messages older than the retention age at `now_ms`, a bounded
    /// amount at a time; returns how many were deleted (call again while it
    /// returns a full chunk).
    fn prune(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Everything is stored: mark a clean shutdown.
    fn close(&self) -> Result<(), StoreError>;

    /// For logs: `sqlite /path/chorus.db` or `memory`.
    fn describe(&self) -> String;
}

/// Most rows one `prune` call deletes, so a large expiry never stalls the
/// writer for long.
pub const PRUNE_CHUNK: u64 = 10_000;

#[cfg(test)]
pub(crate) mod tests {
    //! Behaviour every backend shares, run against both.
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    pub(crate) fn text(seq: u64, text: &str) -> Message {
        Message {
            seq,
            msg_id: format!("m{seq}"),
            user_id: "u1".into(),
            username: "alice".into(),
            ts_ms: 1_000 + seq as i64,
            body: Body::Text { text: text.into(), client_id: Some(format!("c{seq}")) },
        }
    }

    pub(crate) fn record(room: &str, message: Message) -> Record {
        Record { room: Arc::from(room), message }
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    pub(crate) fn round_trip_and_ranges(store: &dyn Store) {
        let binary = Message { body: Body::Binary(Bytes::from_static(&[0, 1, 0xff, 0x7f])), ..text(2, "") };
        let batch: Vec<Record> = (1..=10u64)
            .map(|seq| record("r", if seq == 2 { binary.clone() } else { text(seq, &format!("t{seq}")) }))
            .collect();
        store.append(&batch).unwrap();
        store.append(&[record("other", text(1, "elsewhere"))]).unwrap();
        let now = 2_000;
        let all = store.query("r", Range::latest(100), now).unwrap();
        assert_eq!(seqs(&all), (1..=10).collect::<Vec<_>>());
        assert_eq!(all[1], binary, "binary payloads come back byte-exact");
        assert_eq!(all[0], text(1, "t1"), "every field comes back");
        assert_eq!(seqs(&store.query("r", Range::latest(3), now).unwrap()), [8, 9, 10]);
        let forward = Range { after: Some(0), before: None, limit: 3 };
        assert_eq!(seqs(&store.query("r", forward, now).unwrap()), [1, 2, 3]);
        let between = Range { after: Some(4), before: Some(8), limit: 100 };
        assert_eq!(seqs(&store.query("r", between, now).unwrap()), [5, 6, 7]);
        let backward = Range { after: None, before: Some(5), limit: 2 };
        assert_eq!(seqs(&store.query("r", backward, now).unwrap()), [3, 4]);
        assert!(store.query("nowhere", Range::latest(10), now).unwrap().is_empty());
        assert_eq!(store.last_seq("r").unwrap(), 10);
        assert_eq!(store.last_seq("other").unwrap(), 1);
        assert_eq!(store.last_seq("nowhere").unwrap(), 0);
    }

    pub(crate) fn retention_by_count_keeps_last_seq(store: &dyn Store) {
        // The store was opened with max_messages = 3.
        let batch: Vec<Record> = (1..=5u64).map(|seq| record("r", text(seq, "x"))).collect();
        store.append(&batch).unwrap();
        store.append(&[record("r", text(6, "x"))]).unwrap();
        assert_eq!(seqs(&store.query("r", Range::latest(100), 2_000).unwrap()), [4, 5, 6]);
        assert_eq!(store.last_seq("r").unwrap(), 6);
        // Counted in messages, not seq numbers: a jump in seq (after a crash) keeps older ones.
        store.append(&[record("r", text(5_000, "x"))]).unwrap();
        assert_eq!(seqs(&store.query("r", Range::latest(100), 2_000).unwrap()), [5, 6, 5_000]);
        store.append(&[record("other", text(1, "x"))]).unwrap();
        assert_eq!(seqs(&store.query("r", Range::latest(100), 2_000).unwrap()), [5, 6, 5_000], "per room");
    }

    pub(crate) fn retention_by_age(store: &dyn Store) {
        // The store was opened with max_age = 1 s; message n is at 1_000 + n ms.
        let batch: Vec<Record> = (1..=5u64).map(|seq| record("r", text(seq, "x"))).collect();
        store.append(&batch).unwrap();
        let now = 1_000 + 3 + 1_000;
        assert_eq!(seqs(&store.query("r", Range::latest(100), now).unwrap()), [3, 4, 5], "expired never served");
        assert_eq!(store.prune(now).unwrap(), 2);
        assert_eq!(store.prune(now).unwrap(), 0);
        assert_eq!(seqs(&store.query("r", Range::latest(100), 0).unwrap()), [3, 4, 5], "pruned for good");
        assert_eq!(store.last_seq("r").unwrap(), 5, "a room's seq outlives its messages");
    }
}
