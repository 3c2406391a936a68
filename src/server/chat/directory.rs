//! Rooms shared by several server processes (nodes), seen from the chat
//! core: `Directory` is what a node asks of the shared state, implemented by
//! `server::cluster` over Redis. Without one (a single node), the hub
//! assigns seqs and fans out by itself.
//!
//! With a directory, a message is not fanned out by the node that received
//! it: `publish` has the directory assign its seq and append it to the
//! room's history in one step, and every node, the sender's included, gets
//! the room's messages from the directory in seq order and delivers them to
//! its own members (`Hub::deliver`). So each room has one order on every
//! node. Presence changes are delivered at once to the node's own members,
//! and handed to the directory (`entered`, `left`, `renamed`) to be
//! registered and announced to the other nodes, in the order they happened.

use super::archive::{ArchiveFuture, Message};
use super::hub::ConnId;
use crate::protocol::{ErrorCode, Refusal};

/// A room member as every node lists it (`who`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Card {
    pub user_id: String,
    pub username: String,
    /// When it entered the room (RFC 3339).
    pub since: String,
}

/// What a sender's ack says of a message the directory sequenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    /// Members of the room on every node when the message got its seq,
    /// the sender excluded.
    pub recipients: usize,
}

/// The state nodes share. Presence calls return at once: the directory
/// carries them out in order, in the background.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Assign `message` its seq in `room`, append it to the room's history
    /// and send it to every node; `from` is the sender's connection (its
    /// node delivers to everyone else). Fails (`unavailable`) when the
    /// shared state cannot be reached: the message was not sent.
    fn publish<'a>(
        &'a self,
        room: &'a str,
        message: &'a Message,
        from: ConnId,
    ) -> ArchiveFuture<'a, Result<Sequenced, Refusal>>;

    /// A member of this node entered `room` (`joined`: the event for the
    /// other nodes' members). The directory answers with `Hub::since` once
    /// it knows which messages count the member.
    fn entered(&self, room: &str, card: Card, conn: ConnId, joined: String);

    /// A member of this node left `room`.
    fn left(&self, room: &str, user_id: &str, left: String);

    /// A member of this node changed its name in `room`.
    fn renamed(&self, room: &str, card: Card, renamed: String);

    /// Every member of `room`, on every node.
    fn who<'a>(&'a self, room: &'a str) -> ArchiveFuture<'a, Result<Vec<Card>, Refusal>>;

    /// Every room with members, and how many, on every node.
    fn rooms(&self) -> ArchiveFuture<'_, Result<Vec<(String, usize)>, Refusal>>;

    /// Claim the name `key` (`names::key`) for this node's connection
    /// `conn` on every node: false when someone else holds it.
    fn claim_name<'a>(&'a self, key: &'a str, conn: ConnId) -> ArchiveFuture<'a, Result<bool, Refusal>>;

    /// Free a name this node's connection `conn` held.
    fn release_name(&self, key: &str, conn: ConnId);
}

/// The refusal of a request the shared state could not serve.
pub fn unavailable(what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        format!("{what}: the servers' shared state (Redis) cannot be reached; nothing was done, try again shortly"),
    )
}
