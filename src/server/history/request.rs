//! The `history` request and its answer: checking the parameters, and
//! encoding stored messages as the events a live recipient got (binary
//! payloads base64 in `data`), within a size budget.

use std::borrow::Cow;

use base64::Engine as _;

use crate::ids::format_ts_millis;
use crate::protocol::{ErrorCode, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, Refusal, ServerEvent};
use crate::server::store::{Body, Message, Range};

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
    let ts = Cow::Owned(format_ts_millis(message.ts_ms));
    match &message.body {
        Body::Text { text, client_id } => ServerEvent::Chat {
            room: Cow::Borrowed(room),
            seq: message.seq,
            msg_id: Cow::Borrowed(&message.msg_id),
            from: Cow::Borrowed(&message.username),
            user_id: Cow::Borrowed(&message.user_id),
            text: Cow::Borrowed(text),
            ts,
            client_id: client_id.as_deref().map(Cow::Borrowed),
        },
        Body::Binary(data) => ServerEvent::Binary {
            room: Cow::Borrowed(room),
            seq: message.seq,
            msg_id: Cow::Borrowed(&message.msg_id),
            from: Cow::Borrowed(&message.username),
            user_id: Cow::Borrowed(&message.user_id),
            bytes: data.len(),
            ts,
            data: Some(Cow::Owned(base64::engine::general_purpose::STANDARD.encode(data))),
        },
    }
}

/// The `history` event for `messages` (oldest first). Over `max_bytes`, the
/// messages farthest from the request's anchor are left out: the newest when
/// paging forward (`after_seq`), the oldest otherwise.
pub fn encode_answer(room: &str, messages: &[Message], range: &Range, max_bytes: usize) -> String {
    let encoded: Vec<String> = messages.iter().map(|m| message_event(room, m).encode()).collect();
    let mut kept = 0;
    let mut size = 0;
    let order: Box<dyn Iterator<Item = &String>> =
        if range.after.is_some() { Box::new(encoded.iter()) } else { Box::new(encoded.iter().rev()) };
    for event in order {
        if kept > 0 && size + event.len() + 1 > max_bytes {
            break;
        }
        size += event.len() + 1;
        kept += 1;
    }
    let parts = if range.after.is_some() { &encoded[..kept] } else { &encoded[encoded.len() - kept..] };
    let room_json = serde_json::to_string(room).unwrap_or_default();
    format!("{{\"type\":\"history\",\"room\":{room_json},\"messages\":[{}]}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::tests::text;

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

    #[test]
    fn answers_decode_as_history_events_with_base64_payloads() {
        let binary = Message { body: Body::Binary(vec![0, 159, 255].into()), ..text(2, "") };
        let messages = [text(1, "say \"hi\""), binary];
        let encoded = encode_answer("r\"oom", &messages, &Range::latest(10), ANSWER_MAX_BYTES);
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
        let seqs = |encoded: String| -> Vec<u64> {
            let value: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            value["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
        };
        let size = messages.iter().map(|m| message_event("r", m).encode().len() + 1).max().unwrap();
        let forward = Range { after: Some(0), before: None, limit: 10 };
        assert_eq!(seqs(encode_answer("r", &messages, &forward, size * 3)), [1, 2, 3]);
        assert_eq!(seqs(encode_answer("r", &messages, &Range::latest(10), size * 3)), [8, 9, 10]);
        assert_eq!(seqs(encode_answer("r", &messages, &Range::latest(10), 10)), [10], "at least one message");
    }
}
