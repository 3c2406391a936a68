//! The SQLite store (`--history sqlite`, the default of `chorus server`):
//! `<data_dir>/chorus.db` in WAL mode, so readers never block the writer.
//!
//! Schema (history's part of the file; other parts of chorus add their own
//! tables and record their own row in `schema_versions`):
//!
//! - `schema_versions(component, version)`: `('history', 1)`.
//! - `history_rooms(id, name, last_seq)`: one row per room that ever had a
//!   message; `last_seq` survives retention, so a room's seq continues.
//! - `messages(id, room_id, seq, msg_id, user_id, username, ts_ms,
//!   client_id, text, data)`: `text` for chat, `data` for binary; unique on
//!   `(room_id, seq)`, indexed on `ts_ms` for retention by age.
//! - `history_state(key, value)`: `running` is 1 while a server has the file
//!   open. Found at 1 on open, the last server did not shut down cleanly
//!   (crash, SIGKILL, power loss): messages it had delivered but not yet
//!   stored are gone, so every room's seq jumps by `crash_margin` (more than
//!   the writer can ever have had in flight) and no seq is ever given to two
//!   different messages.
//!
//! `chorus.lock` beside the database is locked while a server has it open:
//! a second server on the same data directory is refused at start.
//!
//! The writer connection is used by one thread at a time (the history
//! writer); readers come from a small pool and are `query_only`. The writer
//! keeps each room's message count (counted once per room and process, then
//! kept up to date), so retention by count trims exactly the oldest excess
//! without scanning the room, whatever holes its seqs have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{Body, Message, PRUNE_CHUNK, Range, Record, Retention, Store, StoreError};
use crate::sync::lock;

/// The history part of the schema, as this build writes it.
const SCHEMA_VERSION: i64 = 2;
/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history_rooms (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id        INTEGER PRIMARY KEY,
    room_id   INTEGER NOT NULL REFERENCES history_rooms(id),
    seq       INTEGER NOT NULL,
    msg_id    TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    username  TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    client_id TEXT,
    text      TEXT,
    data      BLOB,
    file      TEXT,
    CHECK ((text IS NULL) <> (data IS NULL)),
    UNIQUE (room_id, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages(ts_ms);
CREATE TABLE IF NOT EXISTS history_state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the WAL at every commit: an acknowledged message survives a power loss.
    Full,
    /// fsync at checkpoints only: an acknowledged message survives a crash of
    /// the server, not necessarily of the machine. Faster.
    Normal,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Messages stored per room id, for the rooms written since start.
    counts: HashMap<i64, u64>,
}

#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// `chorus.lock` beside the database, locked while this store is open:
    /// two servers on one data directory would hand out the same seqs.
    /// Released by `close`, so a restart in the same process can take it.
    lock: std::fs::File,
    retention: Retention,
    /// The connection that writes, and what it knows; only the history
    /// writer thread takes it.
    writer: Mutex<Writer>,
    /// Idle read-only connections; a reader takes one for one query.
    readers: Mutex<Vec<Connection>>,
}

/// Create room ?1 with last seq ?2, or raise its last seq to ?2: what every
/// commit does for its rooms, and what a failed commit leaves to record.
macro_rules! raise_last_seq_sql {
    () => {
        "INSERT INTO history_rooms (name, last_seq) VALUES (?1, ?2) ON CONFLICT(name) \
         DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
    };
}

/// A room's messages in a range, in one order (`ASC` from `after_seq`,
/// `DESC` from `before_seq` or the newest).
macro_rules! scan_sql {
    ($order:literal) => {
        concat!(
            "SELECT m.seq, m.msg_id, m.user_id, m.username, m.ts_ms, m.client_id, m.text, m.data, m.file \
             FROM messages m JOIN history_rooms r ON r.id = m.room_id \
             WHERE r.name = ?1 AND m.seq > ?2 AND m.seq < ?3 AND m.ts_ms >= ?4 \
             ORDER BY m.seq ",
            $order,
            " LIMIT ?5"
        )
    };
}

/// SQLite integers are signed; seqs and limits never come near the top.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`. Fails when the file
    /// cannot be written: a server that cannot store history says so at start.
    pub fn open(
        path: &Path,
        retention: Retention,
        durability: Durability,
        crash_margin: u64,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            check_writable(dir)?;
        }
        let lock_file = take_lock(&path.with_extension("lock"))?;
        let mut conn = Connection::open(path)?;
        if conn.is_readonly("main")? {
            return Err(StoreError::ReadOnly);
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("history: {} does not support WAL (journal mode {mode})", path.display());
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        migrate(&mut conn)?;
        recover_from_crash(&mut conn, crash_margin, path)?;
        let store = SqliteStore {
            path: path.to_path_buf(),
            lock: lock_file,
            retention,
            writer: Mutex::new(Writer { conn, counts: HashMap::new() }),
            readers: Mutex::new(Vec::new()),
        };
        Ok(store)
    }

    /// Run `f` on an idle reader connection, opening one if none is idle.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = lock(&self.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn.pragma_update(None, "query_only", true)?;
                conn
            }
        };
        let result = f(&conn);
        let mut readers = lock(&self.readers);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }

    /// For tests: make every write fail as on a read-only database.
    #[cfg(test)]
    pub(crate) fn set_read_only(&self, read_only: bool) {
        let writer = lock(&self.writer);
        writer.conn.pragma_update(None, "query_only", read_only).unwrap();
    }
}

/// Create `dir` if needed and make sure files can be created in it (SQLite
/// needs its `-wal` and `-shm` files beside the database).
fn check_writable(dir: &Path) -> Result<(), StoreError> {
    let not_writable = |cause| StoreError::NotWritable { dir: dir.display().to_string(), cause };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(".chorus-write-check");
    std::fs::write(&probe, b"").map_err(not_writable)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Lock `path` (created if needed) for this process, or say who holds it.
fn take_lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(path.display().to_string())),
        Err(std::fs::TryLockError::Error(err)) => Err(err.into()),
    }
}

/// Create or check the history tables.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM schema_versions WHERE component = 'history'", [], |row| row.get(0))
        .optional()?;
    match version {
        None => {
            tx.execute("INSERT INTO schema_versions (component, version) VALUES ('history', ?1)", [SCHEMA_VERSION])?;
        }
        Some(SCHEMA_VERSION) => {}
        // Version 1 had no file messages: a column for them (a shared file's
        // description as JSON; such a row has text NULL and an empty `data`).
        Some(1) => {
            tx.execute_batch("ALTER TABLE messages ADD COLUMN file TEXT")?;
            tx.execute("UPDATE schema_versions SET version = ?1 WHERE component = 'history'", [SCHEMA_VERSION])?;
        }
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "its history schema is version {other}, written by another chorus version (this one reads \
                 {SCHEMA_VERSION}); run that version, or pass --data with another directory"
            )));
        }
    }
    tx.commit()?;
    Ok(())
}

/// Mark the file as in use; if it already was, the last server crashed:
/// move every room's seq past what it may have delivered without storing.
fn recover_from_crash(conn: &mut Connection, crash_margin: u64, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let running: Option<i64> =
        tx.query_row("SELECT value FROM history_state WHERE key = 'running'", [], |row| row.get(0)).optional()?;
    if running == Some(1) {
        let rooms = tx.execute("UPDATE history_rooms SET last_seq = last_seq + ?1", [int(crash_margin)])?;
        tracing::warn!(
            "history: {} was not closed cleanly (crash or kill); messages delivered but not yet stored \
             are lost, and the seq of {rooms} room(s) continues {crash_margin} further so none is reused",
            path.display()
        );
    }
    tx.execute(
        "INSERT INTO history_state (key, value) VALUES ('running', 1) ON CONFLICT(key) DO UPDATE SET value = 1",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

/// Insert `batch`, whose rooms have the ids in `ids`.
fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Record],
    ids: &HashMap<&str, i64>,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (room_id, seq, msg_id, user_id, username, ts_ms, client_id, text, data, file) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for Record { room, message: m } in batch {
        let (client_id, text, data, file) = match &m.body {
            Body::Text { text, client_id } => (client_id.as_deref(), Some(text.as_str()), None, None),
            Body::Binary(data) => (None, None, Some(&data[..]), None),
            Body::File { file, client_id } => {
                let json = serde_json::to_string(file).map_err(|err| StoreError::Io(std::io::Error::other(err)))?;
                (client_id.as_deref(), None, Some(&[][..]), Some(json))
            }
        };
        let room_id = ids.get(&**room).copied().unwrap_or_default();
        insert.execute(params![
            room_id,
            int(m.seq),
            m.msg_id,
            m.user_id,
            m.username,
            m.ts_ms,
            client_id,
            text,
            data,
            file
        ])?;
    }
    Ok(())
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let text: Option<String> = row.get(6)?;
    let file: Option<String> = row.get(8)?;
    let body = match (text, file) {
        (Some(text), _) => Body::Text { text, client_id: row.get(5)? },
        (None, Some(file)) => {
            let file = serde_json::from_str(&file).map_err(|err| {
                rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(err))
            })?;
            Body::File { file, client_id: row.get(5)? }
        }
        (None, None) => Body::Binary(row.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default().into()),
    };
    Ok(Message {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        msg_id: row.get(1)?,
        user_id: row.get(2)?,
        username: row.get(3)?,
        ts_ms: row.get(4)?,
        body,
    })
}

impl Store for SqliteStore {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut writer = lock(&self.writer);
        let Writer { conn, counts } = &mut *writer;
        let tx = conn.transaction()?;
        // Per room: (highest seq, messages in this batch).
        let mut rooms: HashMap<&str, (u64, u64)> = HashMap::new();
        for record in batch {
            let (top, added) = rooms.entry(&record.room).or_default();
            *top = (*top).max(record.message.seq);
            *added += 1;
        }
        let mut ids: HashMap<&str, i64> = HashMap::with_capacity(rooms.len());
        let mut new_counts: Vec<(i64, u64)> = Vec::with_capacity(rooms.len());
        for (room, (top, added)) in &rooms {
            let id: i64 = tx
                .prepare_cached(concat!(raise_last_seq_sql!(), " RETURNING id"))?
                .query_row(params![room, int(*top)], |row| row.get(0))?;
            let stored = match counts.get(&id) {
                Some(count) => *count,
                None => tx
                    .prepare_cached("SELECT count(*) FROM messages WHERE room_id = ?1")?
                    .query_row([id], |row| row.get::<_, i64>(0))? as u64,
            };
            ids.insert(room, id);
            new_counts.push((id, stored + added));
        }
        insert_messages(&tx, batch, &ids)?;
        if let Some(max) = self.retention.max_messages {
            let mut trim = tx.prepare_cached(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE room_id = ?1 ORDER BY seq LIMIT ?2)",
            )?;
            for (id, count) in new_counts.iter_mut().filter(|(_, count)| *count > max) {
                trim.execute(params![*id, int(*count - max)])?;
                *count = max;
            }
        }
        tx.commit()?;
        counts.extend(new_counts);
        Ok(())
    }

    fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        self.read(|conn| {
            let seq: Option<i64> = conn
                .prepare_cached("SELECT last_seq FROM history_rooms WHERE name = ?1")?
                .query_row([room], |row| row.get(0))
                .optional()?;
            Ok(seq.map_or(0, |seq| u64::try_from(seq).unwrap_or(0)))
        })
    }

    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare("SELECT name, last_seq FROM history_rooms")?;
            let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            let rows = rows.map(|row| row.map(|(name, seq)| (name, u64::try_from(seq).unwrap_or(0))));
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn scan(
        &self,
        room: &str,
        range: Range,
        now_ms: i64,
        visit: &mut dyn FnMut(Message) -> bool,
    ) -> Result<(), StoreError> {
        let cutoff = self.retention.cutoff_ms(now_ms).unwrap_or(i64::MIN);
        let after = int(range.after.unwrap_or(0));
        let before = int(range.before.unwrap_or(u64::MAX));
        // Two fixed statements (not one formatted per call), so both stay in
        // the statement cache.
        let sql = if range.after.is_some() { scan_sql!("ASC") } else { scan_sql!("DESC") };
        self.read(|conn| {
            let mut statement = conn.prepare_cached(sql)?;
            let mut rows = statement.query(params![room, after, before, cutoff, int(range.limit as u64)])?;
            // Rows are stepped one at a time: nothing past the stop is read.
            while let Some(row) = rows.next()? {
                if !visit(message_from_row(row)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn prune(&self, now_ms: i64) -> Result<u64, StoreError> {
        let Some(cutoff) = self.retention.cutoff_ms(now_ms) else { return Ok(0) };
        let mut writer = lock(&self.writer);
        let Writer { conn, counts } = &mut *writer;
        let mut statement = conn.prepare_cached(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE ts_ms < ?1 LIMIT ?2) RETURNING room_id",
        )?;
        let rooms = statement.query_map(params![cutoff, int(PRUNE_CHUNK)], |row| row.get::<_, i64>(0))?;
        let rooms: Vec<i64> = rooms.collect::<rusqlite::Result<_>>()?;
        for room in &rooms {
            if let Some(count) = counts.get_mut(room) {
                *count = count.saturating_sub(1);
            }
        }
        Ok(rooms.len() as u64)
    }

    fn raise_last_seq(&self, room: &str, seq: u64) -> Result<(), StoreError> {
        lock(&self.writer).conn.execute(raise_last_seq_sql!(), params![room, int(seq)])?;
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        lock(&self.readers).clear();
        let writer = lock(&self.writer);
        let conn = &writer.conn;
        conn.execute("UPDATE history_state SET value = 0 WHERE key = 'running'", [])?;
        // Fold the WAL back into the database file; a failure here loses nothing.
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = self.lock.unlock();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests as shared;
    use super::*;

    fn open(dir: &Path, retention: Retention) -> SqliteStore {
        SqliteStore::open(&dir.join("chorus.db"), retention, Durability::Normal, 1000).unwrap()
    }

    #[test]
    fn round_trip_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        shared::round_trip_and_ranges(&open(dir.path(), Retention::FOREVER));
    }

    #[test]
    fn retention_by_count() {
        let dir = tempfile::tempdir().unwrap();
        shared::retention_by_count_keeps_last_seq(&open(
            dir.path(),
            Retention { max_messages: Some(3), max_age: None },
        ));
    }

    #[test]
    fn retention_by_count_counts_what_an_earlier_run_stored() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention { max_messages: Some(3), max_age: None };
        let store = open(dir.path(), retention);
        store.append(&(1..=3u64).map(|seq| shared::record("r", shared::text(seq, "x"))).collect::<Vec<_>>()).unwrap();
        store.close().unwrap();
        drop(store);
        let store = open(dir.path(), retention);
        store.append(&[shared::record("r", shared::text(4, "x"))]).unwrap();
        let seqs: Vec<u64> = store.query("r", Range::latest(10), 0).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[test]
    fn retention_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention { max_messages: None, max_age: Some(Duration::from_secs(1)) };
        shared::retention_by_age(&open(dir.path(), retention));
    }

    #[test]
    fn history_and_seq_survive_a_clean_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Retention::FOREVER);
        store
            .append(&[shared::record("r", shared::text(1, "kept")), shared::record("r", shared::text(2, "x"))])
            .unwrap();
        store.close().unwrap();
        drop(store);
        let store = open(dir.path(), Retention::FOREVER);
        assert_eq!(store.last_seq("r").unwrap(), 2, "a clean restart continues where it stopped");
        assert_eq!(store.query("r", Range::latest(10), 0).unwrap()[0], shared::text(1, "kept"));
    }

    #[test]
    fn after_a_crash_seqs_jump_past_anything_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Retention::FOREVER);
        store.append(&[shared::record("r", shared::text(7, "x"))]).unwrap();
        drop(store); // no close(): as if killed
        let store = open(dir.path(), Retention::FOREVER);
        assert_eq!(store.last_seq("r").unwrap(), 1007);
        assert_eq!(store.last_seq("new").unwrap(), 0, "rooms never stored still start at 1");
        store.close().unwrap();
        drop(store);
        assert_eq!(open(dir.path(), Retention::FOREVER).last_seq("r").unwrap(), 1007, "the jump happens once");
    }

    #[test]
    fn a_failed_batch_stores_nothing_and_the_next_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Retention::FOREVER);
        store.set_read_only(true);
        let err = store.append(&[shared::record("r", shared::text(1, "lost"))]).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
        assert!(err.to_string().contains("read-only"));
        store.set_read_only(false);
        store.append(&[shared::record("r", shared::text(2, "stored"))]).unwrap();
        let seqs: Vec<u64> = store.query("r", Range::latest(10), 0).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2]);
    }

    #[test]
    fn one_data_directory_serves_one_server_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), Retention::FOREVER);
        let err =
            SqliteStore::open(&dir.path().join("chorus.db"), Retention::FOREVER, Durability::Full, 0).unwrap_err();
        assert!(matches!(err, StoreError::InUse(_)), "{err:?}");
        assert!(err.to_string().contains("another chorus server"), "{err}");
        drop(first);
        drop(open(dir.path(), Retention::FOREVER));
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), Retention::FOREVER));
        let conn = Connection::open(dir.path().join("chorus.db")).unwrap();
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'history'", []).unwrap();
        drop(conn);
        let err =
            SqliteStore::open(&dir.path().join("chorus.db"), Retention::FOREVER, Durability::Full, 0).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
        assert!(err.to_string().contains("--data"), "{err}");
    }
}
