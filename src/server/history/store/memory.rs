//! The in-memory store (`--history memory`, and the library default): each
//! room's retained messages in a `VecDeque`, ordered by seq. Nothing survives
//! a restart; retention bounds the memory it takes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{Message, PRUNE_CHUNK, Range, Record, Retention, Store, StoreError};
use crate::sync::lock;

#[derive(Debug)]
pub struct MemoryStore {
    retention: Retention,
    /// Every room's log; one short critical section per call.
    rooms: Mutex<HashMap<String, RoomLog>>,
}

#[derive(Debug, Default)]
struct RoomLog {
    last_seq: u64,
    /// Sorted by seq (the writer appends in seq order per room; a late
    /// arrival is inserted in place).
    messages: VecDeque<Message>,
}

impl RoomLog {
    fn insert(&mut self, message: Message) {
        self.last_seq = self.last_seq.max(message.seq);
        match self.messages.back() {
            Some(last) if last.seq > message.seq => {
                let at = self.messages.partition_point(|m| m.seq < message.seq);
                self.messages.insert(at, message);
            }
            _ => self.messages.push_back(message),
        }
    }
}

impl RoomLog {
    /// Return the memory that retention freed: a room whose messages all
    /// expired keeps only its last seq (as SQLite keeps only its row in
    /// `history_rooms`), and a log that shrank a lot gives its spare buffer
    /// back.
    fn give_back(&mut self) {
        let len = self.messages.len();
        if len == 0 {
            self.messages = VecDeque::new();
        } else if self.messages.capacity() > 2 * len + 64 {
            self.messages.shrink_to(len + len / 2);
        }
    }
}

impl MemoryStore {
    pub fn new(retention: Retention) -> MemoryStore {
        MemoryStore { retention, rooms: Mutex::new(HashMap::new()) }
    }
}

impl Store for MemoryStore {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut rooms = lock(&self.rooms);
        for record in batch {
            let log = rooms.entry(record.room.to_string()).or_default();
            log.insert(record.message.clone());
            if let Some(max) = self.retention.max_messages {
                let excess = (log.messages.len() as u64).saturating_sub(max);
                log.messages.drain(..excess as usize);
            }
            log.give_back();
        }
        Ok(())
    }

    fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.rooms).get(room).map_or(0, |log| log.last_seq))
    }

    fn raise_last_seq(&self, room: &str, seq: u64) -> Result<(), StoreError> {
        let mut rooms = lock(&self.rooms);
        let log = rooms.entry(room.to_string()).or_default();
        log.last_seq = log.last_seq.max(seq);
        Ok(())
    }

    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(lock(&self.rooms).iter().map(|(room, log)| (room.clone(), log.last_seq)).collect())
    }

    fn scan(
        &self,
        room: &str,
        range: Range,
        now_ms: i64,
        visit: &mut dyn FnMut(Message) -> bool,
    ) -> Result<(), StoreError> {
        let rooms = lock(&self.rooms);
        let Some(log) = rooms.get(room) else { return Ok(()) };
        let cutoff = self.retention.cutoff_ms(now_ms).unwrap_or(i64::MIN);
        let live = |m: &&Message| range.contains(m.seq) && m.ts_ms >= cutoff;
        let start = log.messages.partition_point(|m| range.after.is_some_and(|after| m.seq <= after));
        let end = log.messages.partition_point(|m| range.before.is_none_or(|before| m.seq < before));
        let window = log.messages.range(start..end.max(start));
        let mut visit_all = |messages: &mut dyn Iterator<Item = &Message>| {
            for message in messages.filter(live).take(range.limit) {
                if !visit(message.clone()) {
                    break;
                }
            }
        };
        if range.after.is_some() {
            visit_all(&mut window.into_iter());
        } else {
            visit_all(&mut window.rev());
        }
        Ok(())
    }

    fn prune(&self, now_ms: i64) -> Result<u64, StoreError> {
        let Some(cutoff) = self.retention.cutoff_ms(now_ms) else { return Ok(0) };
        let mut deleted = 0;
        for log in lock(&self.rooms).values_mut() {
            while deleted < PRUNE_CHUNK && log.messages.front().is_some_and(|m| m.ts_ms < cutoff) {
                log.messages.pop_front();
                deleted += 1;
            }
            log.give_back();
        }
        Ok(deleted)
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests as shared;
    use super::*;

    #[test]
    fn round_trip_and_ranges() {
        shared::round_trip_and_ranges(&MemoryStore::new(Retention::FOREVER));
    }

    #[test]
    fn retention_by_count() {
        let store = MemoryStore::new(Retention { max_messages: Some(3), max_age: None });
        shared::retention_by_count_keeps_last_seq(&store);
    }

    #[test]
    fn retention_by_age() {
        let store = MemoryStore::new(Retention { max_messages: None, max_age: Some(Duration::from_secs(1)) });
        shared::retention_by_age(&store);
    }

    #[test]
    fn late_arrivals_are_kept_in_seq_order() {
        let store = MemoryStore::new(Retention::FOREVER);
        let batch = [3, 1, 2].map(|seq| shared::record("r", shared::text(seq, "x")));
        store.append(&batch).unwrap();
        let seqs: Vec<u64> = store.query("r", Range::latest(10), 0).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}
