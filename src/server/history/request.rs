//! The `history` request and its answer: checking the parameters, and
//! encoding stored messages as the events a live recipient got (binary
//! payloads base64 in `data`), within a size budget.

use std::borrow::Cow;

use super::store::{Message, Range, Store, StoreError};
use crate::ids::format_ts_millis;
use crate::protocol::{ErrorCode, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, Refusal, ServerEvent};
use crate::server::chat::archive::Envelope;

/// An answer stops adding messages past this many bytes (it always holds at
/// least one), so that it fits a connection's queue and any client's frame
/// limit; a client pages on with `after_seq` / `before_seq`.
pub const ANSWER_MAX_BYTES: usize = 512 * 1024;

/// Check a request's parameters: `limit` 1..=500 (default 100), `before_seq`
/// at least 1, `after_seq` below `before_seq`.
pub fn range_from_request(after: Option<u64>, before: Option<u64>, limit: Option<u32>) -> Result<Range, Refusal> {
    let bad = |message: String| Err(Refusal::new(ErrorCode::InvalidFrame, message));
    let limit = limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return bad(format!(
            "history limit must be between 1 and {HISTORY_MAX_LIMIT} (got {limit}); page with after_seq"
        ));
    }
    if before == Some(0) {
        return bad("before_seq must be at least 1 (seq starts at 1)".to_string());
    }
    if let (Some(after), Some(before)) = (after, before)
        && after >= before
    {
        return bad(format!("after_seq ({after}) must be less than before_seq ({before})"));
    }
    Ok(Range { after, before, limit: limit as usize })
}

/// A stored message as the event a live recipient got, with a binary
/// payload in `data` (base64).
pub fn message_event<'a>(room: &'a str, message: &'a Message) -> ServerEvent<'a> {
    let envelope = Envelope {
        room,
        seq: message.seq,
        msg_id: &message.msg_id,
        from: &message.username,
        user_id: &message.user_id,
        ts: Cow::Owned(format_ts_millis(message.ts_ms)),
    };
    envelope.event(message.body.payload(), true)
}

/// The `history` event for `room` and `range`, read from `store`: messages
/// are read and encoded from the range's anchor outward (the oldest first
/// when paging forward with `after_seq`, the newest first otherwise) until
/// the next one would take the answer past `max_bytes` (an answer always
/// holds at least one message); nothing past that is read from the store.
/// Blocking: run it on the blocking pool.
pub fn answer(
    store: &dyn Store,
    room: &str,
    range: Range,
    now_ms: i64,
    max_bytes: usize,
) -> Result<String, StoreError> {
    let mut encoded: Vec<String> = Vec::new();
    let mut size = 0;
    store.scan(room, range, now_ms, &mut |message| {
        let event = message_event(room, &message).encode();
        if !encoded.is_empty() && size + event.len() + 1 > max_bytes {
            return false;
        }
        size += event.len() + 1;
        encoded.push(event);
        true
    })?;
    if range.after.is_none() {
        encoded.reverse();
    }
    let room_json = serde_json::to_string(room).unwrap_or_default();
    Ok(format!("{{\"type\":\"history\",\"room\":{room_json},\"messages\":[{}]}}", encoded.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::history::store::tests::{record, text};
    use crate::server::history::store::{Body, MemoryStore, Record, Retention};
    use bytes::Bytes;

    #[test]
    fn parameters_are_checked() {
        assert_eq!(range_from_request(None, None, None).unwrap(), Range::latest(100));
        assert_eq!(range_from_request(Some(0), None, Some(500)).unwrap().limit, 500);
        for (after, before, limit, needle) in [
            (None, None, Some(0), "between 1 and 500"),
            (None, None, Some(501), "between 1 and 500"),
            (None, Some(0), None, "at least 1"),
            (Some(5), Some(5), None, "less than"),
        ] {
            let refusal = range_from_request(after, before, limit).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::InvalidFrame);
            assert!(refusal.message.contains(needle), "{}", refusal.message);
        }
    }

    /// A memory store holding `messages` in room `room`.
    fn store(room: &str, messages: &[Message]) -> MemoryStore {
        let store = MemoryStore::new(Retention::FOREVER);
        let batch: Vec<Record> = messages.iter().map(|m| record(room, m.clone())).collect();
        store.append(&batch).unwrap();
        store
    }

    #[test]
    fn answers_decode_as_history_events_with_base64_payloads() {
        let binary = Message { body: Body::Binary(vec![0, 159, 255].into()), ..text(2, "") };
        let store = store("r\"oom", &[text(1, "say \"hi\""), binary]);
        let encoded = answer(&store, "r\"oom", Range::latest(10), 2_000, ANSWER_MAX_BYTES).unwrap();
        let event = ServerEvent::decode(&encoded).unwrap();
        let ServerEvent::History { room, messages } = event else { panic!("{encoded}") };
        assert_eq!(room, "r\"oom");
        assert!(
            matches!(&messages[0], ServerEvent::Chat { text, client_id: Some(c), .. } if text == "say \"hi\"" && c == "c1")
        );
        assert!(matches!(&messages[1], ServerEvent::Binary { data: Some(d), bytes: 3, .. } if d == "AJ//"));
    }

    #[test]
    fn a_full_answer_keeps_the_messages_next_to_the_anchor() {
        let messages: Vec<Message> = (1..=10).map(|seq| text(seq, &"x".repeat(100))).collect();
        let store = store("r", &messages);
        let seqs = |range: Range, max_bytes: usize| -> Vec<u64> {
            let encoded = answer(&store, "r", range, 2_000, max_bytes).unwrap();
            let value: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            value["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
        };
        let size = messages.iter().map(|m| message_event("r", m).encode().len() + 1).max().unwrap();
        let forward = Range { after: Some(0), before: None, limit: 10 };
        assert_eq!(seqs(forward, size * 3), [1, 2, 3]);
        assert_eq!(seqs(Range::latest(10), size * 3), [8, 9, 10]);
        assert_eq!(seqs(Range::latest(10), 10), [10], "at least one message");
    }

    /// A store that counts the messages it hands out.
    #[derive(Debug)]
    struct Counting(MemoryStore, std::sync::atomic::AtomicUsize);

    impl Store for Counting {
        fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
            self.0.append(batch)
        }
        fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
            self.0.last_seq(room)
        }
        fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.0.last_seqs()
        }
        fn scan(
            &self,
            room: &str,
            range: Range,
            now_ms: i64,
            visit: &mut dyn FnMut(Message) -> bool,
        ) -> Result<(), StoreError> {
            self.0.scan(room, range, now_ms, &mut |m| {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                visit(m)
            })
        }
        fn raise_last_seq(&self, room: &str, seq: u64) -> Result<(), StoreError> {
            self.0.raise_last_seq(room, seq)
        }
        fn prune(&self, now_ms: i64) -> Result<u64, StoreError> {
            self.0.prune(now_ms)
        }
        fn close(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[test]
    fn reading_stops_at_the_byte_budget() {
        // 500 binary messages of 64 KiB: the answer holds what fits in 512 KiB
        // (base64 makes each about 87 KiB), and no more is read.
        let big = Bytes::from(vec![7u8; 64 * 1024]);
        let messages: Vec<Message> =
            (1..=500).map(|seq| Message { body: Body::Binary(big.clone()), ..text(seq, "") }).collect();
        let counting = Counting(store("r", &messages), Default::default());
        let encoded = answer(&counting, "r", Range::latest(500), 2_000, ANSWER_MAX_BYTES).unwrap();
        assert!(encoded.len() <= ANSWER_MAX_BYTES, "{} bytes", encoded.len());
        let read = counting.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read <= 7, "read {read} messages for an answer of {} bytes", encoded.len());
        let value: serde_json::Value = serde_json::from_str(&encoded).unwrap();
        let seqs: Vec<u64> = value["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (501 - seqs.len() as u64..=500).collect::<Vec<_>>(), "the newest, oldest first");
    }
}
