//! The chat core's view of history: what a published message is, where the
//! hub hands it to be kept, and how a session asks for a room's past, without
//! knowing how or where history is kept (`server::history` implements
//! [`Archive`]; the hub holds an `Arc<dyn Archive>`).
//!
//! The path of a message: the sender's session first takes a [`Slot`] (room
//! in the archive's queue, waited for when storage is behind), then
//! `Hub::publish` assigns the seq, fans out, and submits the [`Record`] with
//! the sender's [`AckTo`] to the slot, under the room lock so that the archive
//! receives each room's messages in seq order. The archive acks the sender
//! once the message is kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::outbox::Outbox;
use crate::protocol::{ErrorCode, Refusal};

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A chat message and the sender's `client_id`, echoed as live.
    Text { text: String, client_id: Option<String> },
    /// A binary message, byte-exact.
    Binary(Bytes),
}

/// One message of a room, as published and as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    pub msg_id: String,
    pub user_id: String,
    /// The sender's name when it sent the message.
    pub username: String,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub body: Body,
}

/// A message and its room, as handed to the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub room: Arc<str>,
    pub message: Message,
}

/// Where the archive sends the sender's `ack` (or `error`) once it knows.
#[derive(Debug)]
pub struct AckTo {
    pub outbox: Outbox,
    pub client_id: Option<String>,
    /// Connections the message was fanned out to (the ack's `recipients`).
    pub recipients: usize,
}

/// A future the archive returns, boxed so that `Archive` stays object-safe.
pub type ArchiveFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Room for one message in the archive's queue, taken before its seq is.
pub trait ArchiveSlot: Send {
    /// Queue `record` to be kept; `ack` is answered once it is (or failed).
    fn submit(self: Box<Self>, record: Record, ack: Option<AckTo>);
}

/// A reserved place in the archive's queue.
pub type Slot<'a> = Box<dyn ArchiveSlot + 'a>;

/// A `history` request's parameters, as the client sent them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    pub limit: Option<u32>,
}

/// Where published messages are kept and read back.
pub trait Archive: Send + Sync + std::fmt::Debug {
    /// Is history kept? When it is not, a lagging reader cannot recover with
    /// `history`, so it is closed instead of sent a `gap`.
    fn is_on(&self) -> bool;

    /// The highest seq every room has used, as kept at open (rooms not listed
    /// start at 0). Read once, when the hub is built.
    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>>;

    /// Room for one message; `None` when history is off (the caller acks).
    /// Waits while the queue is full, for a bounded time, then refuses.
    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>>;

    /// The encoded `history` event answering `request` for `room`.
    fn answer<'a>(&'a self, room: &'a str, request: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>>;
}

/// No history: nothing kept, `history` refused.
#[derive(Debug, Default)]
pub struct NoArchive;

impl Archive for NoArchive {
    fn is_on(&self) -> bool {
        false
    }

    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn answer<'a>(&'a self, _: &'a str, _: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>> {
        Box::pin(std::future::ready(Err(history_off())))
    }
}

/// The refusal of a `history` request on a server without history.
pub fn history_off() -> Refusal {
    Refusal::new(ErrorCode::Unsupported, "history is off on this server (it was started with --history off)")
}
