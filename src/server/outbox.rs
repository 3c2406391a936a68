//! A connection's outgoing queue, and how a session ends.
//!
//! Every event for a connection goes through its `Outbox`: a bounded channel
//! to the connection's writer, with a second bound on the bytes queued. A push
//! never waits: when the connection cannot keep up, the push fails, the
//! connection is ended with reason `slow`, and the room goes on without it (a
//! slow reader costs itself, never the room).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

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

/// Why a session ended: the `reason` of the `left` event others see, and the
/// close frame the server sends, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed the connection with a close frame.
    Quit,
    /// The TCP connection dropped without a close frame.
    Lost,
    /// No pong (nor any other frame) within the keepalive timeout.
    Timeout,
    /// The client did not read fast enough; its queue overflowed.
    Slow,
    /// The server is shutting down.
    Shutdown,
    /// A frame over the message size limit (close 1009).
    TooBig,
    /// Invalid UTF-8 in a text frame (close 1007).
    BadUtf8,
    /// A WebSocket protocol violation (close 1002).
    Protocol,
    /// The client kept sending faster than the rate limit allows (close 1008).
    RateLimited,
    /// The connection's token expired (close 1008).
    Expired,
    /// A message arrived in more frames than the fragment limit (close 1009).
    Fragmented,
}

impl EndReason {
    /// The `reason` field of the `left` event.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Quit => "quit",
            EndReason::Lost => "lost",
            EndReason::Timeout => "timeout",
            EndReason::Slow => "slow",
            EndReason::Shutdown => "shutdown",
            EndReason::TooBig => "too_big",
            EndReason::BadUtf8 => "bad_utf8",
            EndReason::Protocol => "protocol_error",
            EndReason::RateLimited => "rate_limited",
            EndReason::Expired => "expired",
            EndReason::Fragmented => "too_fragmented",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [EndReason; 11] = [
        EndReason::Quit,
        EndReason::Lost,
        EndReason::Timeout,
        EndReason::Slow,
        EndReason::Shutdown,
        EndReason::TooBig,
        EndReason::BadUtf8,
        EndReason::Protocol,
        EndReason::RateLimited,
        EndReason::Expired,
        EndReason::Fragmented,
    ];

    /// The close frame the server sends for this reason (`None`: the peer
    /// already closed, or is gone).
    pub fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            EndReason::Quit | EndReason::Lost => return None,
            EndReason::Timeout => (CloseCode::Away, "keepalive timeout: no pong received"),
            EndReason::Slow => (CloseCode::Policy, "slow consumer: too far behind, messages dropped"),
            EndReason::Shutdown => (CloseCode::Away, "server shutting down"),
            EndReason::TooBig => (CloseCode::Size, "message too big"),
            EndReason::BadUtf8 => (CloseCode::Invalid, "invalid UTF-8 in a text frame"),
            EndReason::Protocol => (CloseCode::Protocol, "WebSocket protocol error"),
            EndReason::RateLimited => (CloseCode::Policy, "rate limit exceeded repeatedly"),
            EndReason::Expired => (CloseCode::Policy, "token expired"),
            EndReason::Fragmented => (CloseCode::Size, "message in too many fragments"),
        };
        Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })
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

    pub async fn ended(&self) {
        self.token.cancelled().await
    }

    /// Why the session ended (shutdown when only the server's token fired).
    pub fn reason(&self) -> EndReason {
        self.reason.get().copied().unwrap_or(EndReason::Shutdown)
    }
}

/// The sending side of a connection's queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    shared: Arc<OutboxShared>,
}

#[derive(Debug)]
struct OutboxShared {
    /// Bytes pushed but not yet written; pushes add, the writer subtracts.
    queued_bytes: AtomicUsize,
    /// The byte budget; a push that would exceed it ends the session as slow.
    max_bytes: usize,
    end: SessionEnd,
}

/// The connection cannot take more: it is being closed as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The writer's side of the queue.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outbound>,
    shared: Arc<OutboxShared>,
}

impl Outbox {
    /// A queue of at most `max_items` items and `max_bytes` bytes.
    pub fn new(max_items: usize, max_bytes: usize, end: SessionEnd) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(max_items.max(1));
        let shared = Arc::new(OutboxShared { queued_bytes: AtomicUsize::new(0), max_bytes, end });
        (Outbox { tx, shared: shared.clone() }, OutboxReceiver { rx, shared })
    }

    /// Queue an item without waiting. On overflow the session is ended as slow.
    pub fn push(&self, item: Outbound) -> Result<(), Overflow> {
        let shared = &self.shared;
        if shared.end.is_ended() {
            return Err(Overflow);
        }
        let cost = item.cost();
        let before = shared.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        if before + cost > shared.max_bytes || self.tx.try_send(item).is_err() {
            shared.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            shared.end.end(EndReason::Slow);
            return Err(Overflow);
        }
        Ok(())
    }

    /// Queue one encoded event.
    pub fn push_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), Overflow> {
        self.push(Outbound::Text(text.into()))
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
        let item = self.rx.recv().await?;
        self.release(&item);
        Some(item)
    }

    /// The next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok()?;
        self.release(&item);
        Some(item)
    }

    fn release(&self, item: &Outbound) {
        self.shared.queued_bytes.fetch_sub(item.cost(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_by_bytes_ends_the_session_as_slow() {
        let end = SessionEnd::new(CancellationToken::new());
        let (outbox, mut rx) = Outbox::new(100, 1000, end.clone());
        outbox.push_text("x".repeat(500)).unwrap();
        assert_eq!(outbox.push_text("y".repeat(500)), Err(Overflow));
        assert!(end.is_ended());
        assert_eq!(end.reason(), EndReason::Slow);
        assert!(rx.try_recv().is_some(), "what was queued before stays queued");
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn overflow_by_items() {
        let end = SessionEnd::new(CancellationToken::new());
        let (outbox, _rx) = Outbox::new(2, usize::MAX, end.clone());
        outbox.push(Outbound::Ping).unwrap();
        outbox.push(Outbound::Ping).unwrap();
        assert_eq!(outbox.push(Outbound::Ping), Err(Overflow));
        assert_eq!(end.reason(), EndReason::Slow);
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
