//! A connection's outgoing queue, and how a session ends.
//!
//! Every event for a connection goes through its `Outbox`: a bounded channel
//! to the connection's writer, with a second bound on the bytes queued. A push
//! never waits: a slow reader costs itself, never the room.
//!
//! Room traffic (messages, presence notices) may fill the queue up to
//! `max_items` / `max_bytes`. Answers to the connection's own requests (ack,
//! error, who, rooms, history, gap) get a reserve beyond that
//! (`ANSWER_RESERVE_*`), so a busy room never crowds them out.
//!
//! When the room traffic does not fit: with history on (a `LagPolicy`), the
//! message is dropped for this connection only and its seq remembered; once
//! the queue has room again, the connection gets `gap` (from_seq, to_seq)
//! before the next message, or as soon as its writer has drained the queue,
//! and can fetch the range with `history`. Presence notices dropped meanwhile
//! are lost. A connection that keeps missing messages (a stretch of lagging
//! ends only once it has stayed caught up, its queue drained and no gap
//! pending, for `CATCH_UP_GRACE`) for longer than `max_lag`, or misses more than `max_gap`
//! messages in one stretch, is closed with reason `slow`, as is one that
//! cannot take its own answers. With history off, any overflow
//! closes the connection with reason `slow`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

pub use super::reasons::EndReason;
use crate::protocol::ServerEvent;
use crate::server::metrics::Metrics;
use crate::sync::lock;

/// Items a connection's own answers may queue beyond `max_items`.
pub const ANSWER_RESERVE_ITEMS: usize = 64;
/// Items a drained queue keeps room for; a bigger buffer is given back.
const IDLE_CAPACITY: usize = 8;
/// Bytes a connection's own answers may queue beyond `max_bytes` (a full
/// `history` answer fits).
pub const ANSWER_RESERVE_BYTES: usize = 1 << 20;
/// A connection that misses a message within this long after it last
/// caught up is still in the same stretch of lagging.
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(1);

/// One item for a connection's writer. Events are encoded once and shared
/// (`Utf8Bytes`/`Bytes` are reference counted) by every recipient.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// One JSON event.
    Text(Utf8Bytes),
    /// A `binary` announcement and the binary frame that must follow it
    /// immediately; one item, so nothing can slip in between.
    Binary { header: Utf8Bytes, data: Bytes },
    /// A keepalive ping.
    Ping,
    /// A binary frame on its own (echo mode).
    Bare(Bytes),
}

impl Outbound {
    /// What this item costs against the connection's byte budget.
    fn cost(&self) -> usize {
        // A fixed overhead per item, so that a flood of tiny events is bounded too.
        const ITEM_OVERHEAD: usize = 64;
        ITEM_OVERHEAD
            + match self {
                Outbound::Text(text) => text.len(),
                Outbound::Binary { header, data } => header.len() + data.len(),
                Outbound::Ping => 0,
                Outbound::Bare(data) => data.len(),
            }
    }

    /// The frames to write, in order.
    pub fn into_messages(self) -> (Message, Option<Message>) {
        match self {
            Outbound::Text(text) => (Message::Text(text), None),
            Outbound::Binary { header, data } => (Message::Text(header), Some(Message::Binary(data))),
            Outbound::Ping => (Message::Ping(Bytes::new()), None),
            Outbound::Bare(data) => (Message::Binary(data), None),
        }
    }
}

/// How a session ends, shared by its reader, its writer and the hub.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// Cancelled when the session must stop; a child of the server's shutdown
    /// token, so shutdown reaches every session.
    token: CancellationToken,
    /// The first reason given wins; unset when the server is shutting down.
    reason: Arc<OnceLock<EndReason>>,
}

impl SessionEnd {
    pub fn new(token: CancellationToken) -> Self {
        SessionEnd { token, reason: Arc::new(OnceLock::new()) }
    }

    /// End the session for `reason`, unless it is already ending for another.
    pub fn end(&self, reason: EndReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn is_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Ended for a reason of its own (slow, expired, ...): one atomic load,
    /// for the push paths (`is_ended` takes a lock). A session ended only by
    /// the server's shutdown is not seen here; pushes to it are harmless.
    fn is_ending(&self) -> bool {
        self.reason.get().is_some()
    }

    pub async fn ended(&self) {
        self.token.cancelled().await
    }

    /// Why the session ended (shutdown when only the server's token fired).
    pub fn reason(&self) -> EndReason {
        self.reason.get().copied().unwrap_or(EndReason::Shutdown)
    }
}

/// How a connection that falls behind is treated when history lets it
/// recover what it missed (see the module documentation).
#[derive(Debug, Clone)]
pub struct LagPolicy {
    /// Close (reason `slow`) a connection that misses more messages than
    /// this in one stretch of lagging.
    pub max_gap: u64,
    /// Close (reason `slow`) a connection that keeps missing messages for
    /// longer than this.
    pub max_lag: Duration,
    /// Counts gaps and dropped messages.
    pub metrics: Arc<Metrics>,
}

/// The sending side of a connection's queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<OutboxShared>,
}

#[derive(Debug)]
struct OutboxShared {
    /// The queued items. A plain deque behind a short lock (pushes already
    /// run one at a time under their room's lock): unlike a channel, an idle
    /// connection's holds no buffer at all.
    items: Mutex<VecDeque<Outbound>>,
    /// Wakes the writer when an item is queued.
    ready: Notify,
    /// Most items at once: room traffic plus the answers' reserve.
    max_items: usize,
    /// Bytes pushed but not yet written; pushes add, the writer subtracts.
    queued_bytes: AtomicUsize,
    /// The byte budget of room traffic; answers may use `ANSWER_RESERVE_BYTES` more.
    max_bytes: usize,
    end: SessionEnd,
    /// `None`: history is off, overflow closes the connection.
    policy: Option<LagPolicy>,
    /// What this connection missed. Taken by every message push and by the
    /// writer when it has drained the queue while the connection is
    /// `lagging`, so a gap is always announced in seq order.
    lag: Mutex<Lag>,
    /// In a stretch of lagging (`lag.since` is set, a gap may be pending):
    /// set and cleared under the `lag` lock. While it is false a message push
    /// and a drained queue skip that lock, the common case by far.
    lagging: AtomicBool,
}

/// How far behind a connection is.
#[derive(Debug, Default)]
struct Lag {
    /// Dropped and not yet announced by `gap`.
    gap: Option<Missed>,
    /// When it first missed a message in this stretch of lagging.
    since: Option<Instant>,
    /// Messages missed in this stretch.
    missed: u64,
    /// When the writer first found the queue drained (and no gap pending)
    /// since the last miss.
    caught_up: Option<Instant>,
}

/// A run of consecutive seqs a connection missed.
#[derive(Debug)]
struct Missed {
    room: Arc<str>,
    from: u64,
    to: u64,
}

impl Missed {
    /// At least what `event().cost()` is, without encoding it: the room
    /// name, two seqs of up to 20 digits and the rest of the JSON.
    fn max_cost(&self) -> usize {
        Outbound::Text(Utf8Bytes::from_static("")).cost() + self.room.len() + 2 * 20 + 64
    }

    fn event(&self) -> Outbound {
        let gap = ServerEvent::Gap { room: Cow::Borrowed(&self.room), from_seq: self.from, to_seq: self.to };
        Outbound::Text(gap.encode().into())
    }
}

/// The connection cannot take more: it is being closed as a slow consumer,
/// or (room traffic only) the item was dropped because it is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Which budget a push counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// Room traffic: `max_items` and `max_bytes`.
    Room,
    /// The connection's own answers: with the reserve.
    Answer,
}

/// The writer's side of the queue.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<OutboxShared>,
}

impl Outbox {
    /// A queue of at most `max_items` items and `max_bytes` bytes of room
    /// traffic, that closes the connection when they overflow.
    pub fn new(max_items: usize, max_bytes: usize, end: SessionEnd) -> (Outbox, OutboxReceiver) {
        Outbox::with_lag_policy(max_items, max_bytes, end, None)
    }

    /// The same, announcing dropped messages with `gap` under `lag`.
    pub fn with_lag_policy(
        max_items: usize,
        max_bytes: usize,
        end: SessionEnd,
        policy: Option<LagPolicy>,
    ) -> (Outbox, OutboxReceiver) {
        let shared = Arc::new(OutboxShared {
            items: Mutex::default(),
            ready: Notify::new(),
            max_items: max_items.max(1).saturating_add(ANSWER_RESERVE_ITEMS),
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            end,
            policy,
            lag: Mutex::default(),
            lagging: AtomicBool::new(false),
        });
        (Outbox { shared: shared.clone() }, OutboxReceiver { shared })
    }

    /// Room left in the queue, in items.
    fn free_items(&self) -> usize {
        self.shared.max_items.saturating_sub(lock(&self.shared.items).len())
    }

    /// Queue an item within `budget` without waiting; gives it back if it does not fit.
    fn try_push(&self, item: Outbound, budget: Budget) -> Result<(), Outbound> {
        let shared = &self.shared;
        let (max_bytes, spare_items) = match budget {
            Budget::Room => (shared.max_bytes, ANSWER_RESERVE_ITEMS),
            Budget::Answer => (shared.max_bytes.saturating_add(ANSWER_RESERVE_BYTES), 0),
        };
        let cost = item.cost();
        let before = shared.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        let mut items = lock(&shared.items);
        if before + cost > max_bytes || items.len() + spare_items >= shared.max_items {
            drop(items);
            shared.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            return Err(item);
        }
        items.push_back(item);
        drop(items);
        shared.ready.notify_one();
        Ok(())
    }

    /// Queue an item within `budget`; on overflow the session is ended as slow.
    fn push_or_end(&self, item: Outbound, budget: Budget) -> Result<(), Overflow> {
        if self.shared.end.is_ending() {
            return Err(Overflow);
        }
        self.try_push(item, budget).map_err(|_| {
            self.shared.end.end(EndReason::Slow);
            Overflow
        })
    }

    /// Queue an answer to this connection's own request (or a ping).
    pub fn push(&self, item: Outbound) -> Result<(), Overflow> {
        self.push_or_end(item, Budget::Answer)
    }

    /// Queue one encoded answer.
    pub fn push_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), Overflow> {
        self.push(Outbound::Text(text.into()))
    }

    /// Queue a presence notice (joined, left, renamed). While the connection
    /// is behind, notices that do not fit are dropped.
    pub fn push_notice(&self, item: Outbound) -> Result<(), Overflow> {
        if self.shared.policy.is_none() || self.shared.end.is_ending() {
            return self.push_or_end(item, Budget::Room);
        }
        self.try_push(item, Budget::Room).map_err(|_| Overflow)
    }

    /// Queue a room message with its seq; a message that does not fit is
    /// dropped and announced later by `gap` (see the module documentation).
    pub fn push_message(&self, room: &Arc<str>, seq: u64, item: Outbound) -> Result<(), Overflow> {
        let shared = &self.shared;
        let Some(policy) = &shared.policy else { return self.push_or_end(item, Budget::Room) };
        if shared.end.is_ending() {
            return Err(Overflow);
        }
        // Not behind: queue it without looking at the lag. (Message pushes to
        // one connection come one at a time, under its room's lock, so no
        // other push can start a gap meanwhile.)
        let item = if shared.lagging.load(Ordering::Acquire) {
            item
        } else {
            match self.try_push(item, Budget::Room) {
                Ok(()) => return Ok(()),
                Err(item) => item,
            }
        };
        let mut lag = lock(&shared.lag);
        if let Some(gap) = lag.gap.as_ref() {
            // Announce the gap once the queue has room for it and this message
            // (or at once when this message is from another room). Encoded
            // only then: while behind, most pushes find no room.
            let fits = shared.queued_bytes.load(Ordering::Relaxed) + gap.max_cost() + item.cost() <= shared.max_bytes
                && self.free_items() >= ANSWER_RESERVE_ITEMS + 2;
            if gap.room != *room || fits {
                self.push_or_end(gap.event(), Budget::Answer)?;
                policy.metrics.gaps.increment(1);
                lag.gap = None;
            }
        }
        // Still behind (a gap is pending): this one is dropped too.
        if lag.gap.is_none() && self.try_push(item, Budget::Room).is_ok() {
            return Ok(());
        }
        policy.metrics.lag_drops.increment(1);
        lag.gap.get_or_insert_with(|| Missed { room: room.clone(), from: seq, to: seq }).to = seq;
        // The writer hands the gap out once the queue is drained; make sure it
        // looks (the flag first: a writer woken by the notice must see it).
        shared.lagging.store(true, Ordering::Release);
        shared.ready.notify_one();
        if lag.caught_up.take().is_some_and(|at| at.elapsed() >= CATCH_UP_GRACE) {
            lag.since = None;
            lag.missed = 0;
        }
        lag.missed += 1;
        let since = *lag.since.get_or_insert_with(Instant::now);
        if lag.missed > policy.max_gap || since.elapsed() > policy.max_lag {
            shared.end.end(EndReason::Slow);
        }
        Err(Overflow)
    }

    pub fn session_end(&self) -> &SessionEnd {
        &self.shared.end
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

impl OutboxReceiver {
    /// The next item, waiting for one.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            // A push between the check and here leaves a permit: no lost wake-up.
            self.shared.ready.notified().await;
        }
    }

    /// The next item if one is ready: what is queued, then, once the queue
    /// is drained, the `gap` of what was dropped. A drained queue without a
    /// gap means the connection has caught up.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let popped = {
            let mut items = lock(&self.shared.items);
            let item = items.pop_front();
            if items.is_empty() && items.capacity() > IDLE_CAPACITY {
                // A burst is over: give its buffer back.
                items.shrink_to(IDLE_CAPACITY);
            }
            item
        };
        if let Some(item) = popped {
            self.release(&item);
            return Some(item);
        }
        let policy = self.shared.policy.as_ref()?;
        if !self.shared.lagging.load(Ordering::Acquire) {
            return None;
        }
        let mut lag = lock(&self.shared.lag);
        match lag.gap.take() {
            Some(gap) => {
                policy.metrics.gaps.increment(1);
                Some(gap.event())
            }
            None => {
                // Caught up: note when first; caught up for a whole grace
                // period, the stretch of lagging is over.
                let now = Instant::now();
                match lag.caught_up {
                    None => lag.caught_up = Some(now),
                    Some(at) if now.duration_since(at) >= CATCH_UP_GRACE => {
                        *lag = Lag::default();
                        self.shared.lagging.store(false, Ordering::Release);
                    }
                    Some(_) => {}
                }
                None
            }
        }
    }

    fn release(&self, item: &Outbound) {
        self.shared.queued_bytes.fetch_sub(item.cost(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn overflow_by_bytes_ends_the_session_as_slow() {
        let end = SessionEnd::new(CancellationToken::new());
        let (outbox, mut rx) = Outbox::new(100, 1000, end.clone());
        outbox.push_notice(Outbound::Text("x".repeat(500).into())).unwrap();
        assert_eq!(outbox.push_notice(Outbound::Text("y".repeat(500).into())), Err(Overflow));
        assert!(end.is_ended());
        assert_eq!(end.reason(), EndReason::Slow);
        assert!(rx.try_recv().is_some(), "what was queued before stays queued");
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn overflow_by_items() {
        let end = SessionEnd::new(CancellationToken::new());
        let (outbox, _rx) = Outbox::new(2, usize::MAX / 2, end.clone());
        outbox.push_notice(Outbound::Ping).unwrap();
        outbox.push_notice(Outbound::Ping).unwrap();
        assert_eq!(outbox.push_notice(Outbound::Ping), Err(Overflow));
        assert_eq!(end.reason(), EndReason::Slow);
    }

    #[test]
    fn answers_have_a_reserve_beyond_room_traffic() {
        let end = SessionEnd::new(CancellationToken::new());
        let (outbox, _rx) = Outbox::new(2, 1000, end.clone());
        outbox.push_notice(Outbound::Ping).unwrap();
        outbox.push_notice(Outbound::Ping).unwrap();
        outbox.push_text("x".repeat(5000)).unwrap();
        assert!(!end.is_ended(), "an answer fits when room traffic has filled the queue");
        for _ in 0..ANSWER_RESERVE_ITEMS - 1 {
            outbox.push(Outbound::Ping).unwrap();
        }
        assert_eq!(outbox.push(Outbound::Ping), Err(Overflow), "the reserve is bounded too");
        assert_eq!(end.reason(), EndReason::Slow);
    }

    fn lagging(max_items: usize, max_gap: u64) -> (Outbox, OutboxReceiver, SessionEnd, Arc<Metrics>) {
        let end = SessionEnd::new(CancellationToken::new());
        let metrics = Arc::new(Metrics::default());
        let policy = LagPolicy { max_gap, max_lag: Duration::from_secs(60), metrics: metrics.clone() };
        let (outbox, rx) = Outbox::with_lag_policy(max_items, usize::MAX / 2, end.clone(), Some(policy));
        (outbox, rx, end, metrics)
    }

    fn message(room: &Arc<str>, seq: u64) -> Outbound {
        Outbound::Text(format!("{{\"room\":\"{room}\",\"seq\":{seq}}}").into())
    }

    /// What the writer sees: the seq of a message, or `gap from-to`.
    fn label(item: Option<Outbound>) -> Option<String> {
        let Some(Outbound::Text(text)) = item else { return None };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        Some(match value["type"].as_str() {
            Some("gap") => format!("gap {}-{}", value["from_seq"], value["to_seq"]),
            _ => format!("{}", value["seq"]),
        })
    }

    fn drain(rx: &mut OutboxReceiver) -> Vec<String> {
        std::iter::from_fn(|| label(rx.try_recv())).collect()
    }

    #[test]
    fn a_lagging_reader_gets_a_gap_before_the_next_message() {
        let (outbox, mut rx, end, metrics) = lagging(2, 100);
        let room: Arc<str> = Arc::from("r");
        for seq in 1..=5 {
            let _ = outbox.push_message(&room, seq, message(&room, seq));
        }
        outbox.push_notice(Outbound::Text("{\"type\":\"joined\"}".into())).unwrap_err();
        assert!(!end.is_ended(), "behind, not closed");
        assert!(rx.try_recv().is_some() && rx.try_recv().is_some(), "the writer catches up with 1 and 2");
        outbox.push_message(&room, 6, message(&room, 6)).unwrap();
        assert_eq!(drain(&mut rx), ["gap 3-5", "6"]);
        let text = metrics.render(1, 0);
        use crate::server::metrics::tests::sample;
        assert_eq!(sample(&text, "chorus_gaps_total "), Some(1.0), "{text}");
        assert_eq!(sample(&text, "chorus_lag_drops_total "), Some(3.0));
    }

    #[test]
    fn a_drained_queue_announces_its_gap_without_waiting_for_another_message() {
        let (outbox, mut rx, _end, _) = lagging(1, 100);
        let room: Arc<str> = Arc::from("r");
        for seq in 1..=3 {
            let _ = outbox.push_message(&room, seq, message(&room, seq));
        }
        assert_eq!(drain(&mut rx), ["1", "gap 2-3"]);
        outbox.push_message(&room, 4, message(&room, 4)).unwrap();
        assert_eq!(drain(&mut rx), ["4"], "announced once");
    }

    #[test]
    fn moving_rooms_announces_the_old_rooms_gap_first() {
        let (outbox, mut rx, _end, _) = lagging(1, 100);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        outbox.push_message(&a, 1, message(&a, 1)).unwrap();
        outbox.push_message(&a, 2, message(&a, 2)).unwrap_err();
        outbox.push_message(&b, 7, message(&b, 7)).unwrap_err();
        assert_eq!(drain(&mut rx), ["1", "gap 2-2", "gap 7-7"]);
    }

    #[test]
    fn falling_too_far_behind_still_closes_as_slow() {
        let (outbox, _rx, end, _) = lagging(1, 3);
        let room: Arc<str> = Arc::from("r");
        for seq in 1..=4 {
            let _ = outbox.push_message(&room, seq, message(&room, seq));
        }
        assert!(!end.is_ended(), "3 missed is within the bound");
        let _ = outbox.push_message(&room, 5, message(&room, 5));
        assert_eq!(end.reason(), EndReason::Slow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_never_catches_up_is_closed_even_with_small_gaps() {
        for catches_up in [false, true] {
            let (outbox, mut rx, end, _) = lagging(1, 3);
            let room: Arc<str> = Arc::from("r");
            let push = |seq| outbox.push_message(&room, seq, message(&room, seq)).is_ok();
            assert!(push(1) && !push(2));
            assert_eq!(label(rx.try_recv()).unwrap(), "1");
            assert_eq!(label(rx.try_recv()).unwrap(), "gap 2-2");
            if catches_up {
                assert!(rx.try_recv().is_none(), "drained: caught up");
                tokio::time::advance(CATCH_UP_GRACE).await;
            }
            assert!(push(3) && !push(4) && !push(5));
            assert!(!end.is_ended(), "3 missed so far");
            assert_eq!(label(rx.try_recv()).unwrap(), "3");
            assert_eq!(label(rx.try_recv()).unwrap(), "gap 4-5");
            assert!(push(6) && !push(7));
            assert_eq!(end.is_ended(), !catches_up, "4 missed in one stretch closes; catching up for a while resets");
        }
    }

    #[test]
    fn first_reason_wins_and_shutdown_is_the_default() {
        let root = CancellationToken::new();
        let end = SessionEnd::new(root.child_token());
        root.cancel();
        assert!(end.is_ended());
        assert_eq!(end.reason(), EndReason::Shutdown);
        let end = SessionEnd::new(CancellationToken::new());
        end.end(EndReason::TooBig);
        end.end(EndReason::Slow);
        assert_eq!(end.reason(), EndReason::TooBig);
        assert_eq!(end.reason().close_frame().unwrap().code, CloseCode::Size);
    }
}
