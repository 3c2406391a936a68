//! A session's requests when rooms are shared with other nodes (a
//! `Directory` is set): messages are sequenced by the directory and acked
//! from its answer; `who` and `rooms` count every node; names are claimed on
//! every node before they are taken here.

use std::borrow::Cow;
use std::sync::Arc;

use super::archive::{Message, Payload, Stored};
use super::directory::{Card, Directory};
use super::hub::{Hub, Presence};
use crate::names;
use crate::protocol::{ErrorCode, Refusal, RoomInfo, ServerEvent, WhoUser};

/// Publish through the directory, then ack from its answer (the message
/// reaches this node's members, the sender excluded, with everyone else's).
pub(super) async fn send(
    hub: &Hub,
    directory: &Arc<dyn Directory>,
    presence: &Presence,
    payload: Payload<'_>,
) -> Result<(), Refusal> {
    let message = Message {
        seq: 0,
        msg_id: hub.mint_msg_id(),
        user_id: presence.user_id.to_string(),
        username: presence.username.to_string(),
        ts_ms: crate::ids::now_millis(),
        body: payload.body(),
    };
    let sequenced = directory.publish(presence.room.name(), &message, presence.conn).await?;
    hub.count_received(&payload);
    let stored = Stored { msg_id: &message.msg_id, seq: sequenced.seq, ts_ms: message.ts_ms, file: payload.file() };
    let ack = stored.ack(payload.client_id(), sequenced.recipients, payload.upload_id());
    let _ = presence.outbox.push_text(ack);
    Ok(())
}

/// Claim a new connection's guest name on every node; in the rare case
/// another node's guest holds it, pick another.
pub(super) async fn claim_guest_name(hub: &Hub, directory: &Arc<dyn Directory>, presence: &mut Presence) {
    for _ in 0..5 {
        match directory.claim_name(&names::key(&presence.username), presence.conn).await {
            Ok(true) => return,
            Ok(false) => {
                let fresh = format!("guest-{:08x}", rand::random::<u32>());
                if hub.rename(presence, &fresh).is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::debug!("could not claim {} on every node: {}", presence.username, err.message);
                return;
            }
        }
    }
}

/// A rename: the new name is claimed on every node first, the old one freed after.
pub(super) async fn rename(
    hub: &Hub,
    directory: &Arc<dyn Directory>,
    presence: &mut Presence,
    name: &str,
) -> Result<(), Refusal> {
    let name = names::username(name).map_err(|why| Refusal::new(ErrorCode::InvalidName, why))?;
    let (key, old_key) = (names::key(&name), names::key(&presence.username));
    if key != old_key && !directory.claim_name(&key, presence.conn).await? {
        return Err(Refusal::new(ErrorCode::NameTaken, format!("the name {name:?} is taken; pick another")));
    }
    match hub.rename(presence, &name) {
        Ok(()) => {
            if key != old_key {
                directory.release_name(&old_key, presence.conn);
            }
            Ok(())
        }
        Err(refusal) => {
            if key != old_key {
                directory.release_name(&key, presence.conn);
            }
            Err(refusal)
        }
    }
}

/// The connection is gone: free its name on every node.
pub(super) fn release_name(directory: &Arc<dyn Directory>, presence: &Presence) {
    directory.release_name(&names::key(&presence.username), presence.conn);
}

/// `who` for the room, every node's members.
pub(super) async fn who(directory: &Arc<dyn Directory>, presence: &Presence) -> Result<String, Refusal> {
    let cards: Vec<Card> = directory.who(presence.room.name()).await?;
    let users = cards
        .iter()
        .map(|c| WhoUser {
            user_id: Cow::Borrowed(&c.user_id),
            username: Cow::Borrowed(&c.username),
            since: Cow::Borrowed(&c.since),
        })
        .collect();
    Ok(ServerEvent::Who { room: Cow::Borrowed(presence.room.name()), users }.encode())
}

/// `rooms`, with every node's members.
pub(super) async fn rooms(directory: &Arc<dyn Directory>) -> Result<String, Refusal> {
    let mut rooms = directory.rooms().await?;
    rooms.sort();
    let list = rooms.iter().map(|(room, members)| RoomInfo { room: Cow::Borrowed(room), members: *members }).collect();
    Ok(ServerEvent::Rooms { rooms: list }.encode())
}
