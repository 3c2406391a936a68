//! The hub: rooms, their members, fan-out, presence and usernames.
//!
//! Locking: `rooms` (the registry) is taken to find, create or drop a room and
//! to move members in and out; a room's own `state` lock is taken for one
//! fan-out. When both are needed the registry is taken first. No lock is ever
//! held across an `.await`: fan-out only pushes to outboxes, which never wait.
//!
//! Seq continuity: with history on, the hub knows every room's last seq
//! without asking storage (the archive's `last_seqs` at start, then the
//! rooms it drops), so a room re-created later, or after a restart, goes on
//! where it stopped; each published message is handed to the archive, which
//! acknowledges it once kept.
//!
//! Names: one table holds every name in use, guests' and accounts', keyed by
//! the name's case-folded form, so that checking a name and claiming it is
//! one step under one short lock, whoever claims it (a guest renaming, an
//! account registering).

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

pub use super::archive::Payload;
use super::archive::{AckTo, Archive, Envelope, Message, NoArchive, Record, Slot, Stored};
use super::directory::{Card, Directory};
use super::outbox::{EndReason, Outbound, Outbox};
use super::uploads::{FileStore, NoFiles};
use crate::ids::{IdGen, format_ts_millis, now_millis, now_ts};
use crate::names;
use crate::protocol::{DEFAULT_ROOM, ErrorCode, PROTOCOL_VERSION, Refusal, RoomInfo, ServerEvent, WhoUser};
use crate::server::metrics::Metrics;
use crate::sync::lock;

/// Identifies one connection inside this process.
pub type ConnId = u64;

#[derive(Debug)]
pub struct Hub {
    /// Most rooms that may exist at once; joining a new room past it is refused.
    max_rooms: usize,
    /// Rooms with more members than this do not announce joins, leaves and
    /// renames to everyone (each would cost a delivery per member, so a room
    /// filling up would cost the square of its size); `who` still lists them.
    presence_limit: usize,
    ids: IdGen,
    next_conn: AtomicU64,
    /// The room registry. Guards room creation and removal and every
    /// membership change, so a room is never dropped while someone enters it.
    rooms: Mutex<Registry>,
    /// Names in use, by their comparison key, and who holds each; taken only
    /// to check and claim or free a name.
    names: Mutex<HashMap<String, Owner>>,
    metrics: Arc<Metrics>,
    archive: Arc<dyn Archive>,
    files: Arc<dyn FileStore>,
    /// Several nodes: the shared state; `None` for a single node.
    directory: Option<Arc<dyn Directory>>,
}

/// The rooms open now, and the last seq of those that were closed.
#[derive(Debug, Default)]
struct Registry {
    open: HashMap<Arc<str>, Arc<Room>>,
    /// The open rooms by name key (`names::key`), so that a new room cannot
    /// look like one already open.
    keys: HashMap<String, Arc<str>>,
    /// With history on: the last seq of every room not open now (from the
    /// archive at start, then from each room dropped), so a room re-created
    /// goes on from there. Empty with history off.
    closed_seqs: HashMap<Arc<str>, u64>,
}

/// Who holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A guest connection.
    Guest(ConnId),
    /// A registered account (however many of its connections are open).
    Account,
}

#[derive(Debug)]
pub struct Room {
    name: Arc<str>,
    /// Sequence counter and members; held for the length of one fan-out so
    /// that every member receives the room's messages in `seq` order.
    state: Mutex<RoomState>,
}

#[derive(Debug)]
struct RoomState {
    last_seq: u64,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    /// With a directory: the room's seq when the directory registered this
    /// member; only later messages count it, and reach it (`u64::MAX` until
    /// the directory says). Without: 0.
    since_seq: u64,
    conn: ConnId,
    user_id: Arc<str>,
    username: Arc<str>,
    since: Arc<str>,
    outbox: Outbox,
}

impl Room {
    /// A room whose next message gets `last_seq + 1`.
    fn new(name: &str, last_seq: u64) -> Arc<Room> {
        Arc::new(Room { name: Arc::from(name), state: Mutex::new(RoomState { last_seq, members: Vec::new() }) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Members right now.
    pub fn member_count(&self) -> usize {
        lock(&self.state).members.len()
    }
}

/// One room's members on this node (`Hub::local_members`).
pub type LocalRoom = (Arc<str>, Vec<(ConnId, Card)>);

/// A connection's place in the hub, owned by its session.
#[derive(Debug)]
pub struct Presence {
    pub conn: ConnId,
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    pub room: Arc<Room>,
    pub outbox: Outbox,
}

/// What became of a published message: what its `ack` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub room: Arc<str>,
    pub seq: u64,
    pub msg_id: String,
    pub recipients: usize,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

impl Published {
    /// The `ack` event for the sender of `payload`.
    pub fn ack(&self, payload: &Payload<'_>) -> String {
        let stored = Stored { msg_id: &self.msg_id, seq: self.seq, ts_ms: self.ts_ms, file: payload.file() };
        stored.ack(payload.client_id(), self.recipients, payload.upload_id())
    }
}

/// Queue a presence notice to every member but `except`.
fn fan_out(members: &[Member], except: Option<ConnId>, item: &Outbound) {
    for member in members.iter().filter(|m| Some(m.conn) != except) {
        let _ = member.outbox.push_notice(item.clone());
    }
}

/// Queue message `seq` of `room` to every member but `except`; how many took it.
fn fan_out_message(members: &[Member], except: ConnId, room: &Arc<str>, seq: u64, item: &Outbound) -> usize {
    members.iter().filter(|m| m.conn != except && m.outbox.push_message(room, seq, item.clone()).is_ok()).count()
}

impl Hub {
    /// A hub without history.
    pub fn new(max_rooms: usize, metrics: Arc<Metrics>) -> Hub {
        Hub::build(max_rooms, metrics, Arc::new(NoArchive), HashMap::new())
    }

    /// A hub whose rooms keep their messages in `archive`; every room's seq
    /// goes on from what the archive kept. Fails when the archive cannot say.
    pub fn with_archive(max_rooms: usize, metrics: Arc<Metrics>, archive: Arc<dyn Archive>) -> anyhow::Result<Hub> {
        let closed_seqs = archive.last_seqs()?.into_iter().map(|(room, seq)| (Arc::from(room), seq)).collect();
        Ok(Hub::build(max_rooms, metrics, archive, closed_seqs))
    }

    fn build(
        max_rooms: usize,
        metrics: Arc<Metrics>,
        archive: Arc<dyn Archive>,
        mut closed_seqs: HashMap<Arc<str>, u64>,
    ) -> Hub {
        let lobby = Room::new(DEFAULT_ROOM, closed_seqs.remove(DEFAULT_ROOM).unwrap_or(0));
        let keys = HashMap::from([(names::key(DEFAULT_ROOM), lobby.name.clone())]);
        let open = HashMap::from([(lobby.name.clone(), lobby)]);
        Hub {
            max_rooms: max_rooms.max(1),
            presence_limit: usize::MAX,
            ids: IdGen::new(),
            next_conn: AtomicU64::new(1),
            rooms: Mutex::new(Registry { open, keys, closed_seqs }),
            names: Mutex::new(HashMap::new()),
            metrics,
            archive,
            files: Arc::new(NoFiles),
            directory: None,
        }
    }

    /// Announce joins, leaves and renames only in rooms of at most `limit` members.
    pub fn with_presence_limit(mut self, limit: usize) -> Hub {
        self.presence_limit = limit;
        self
    }

    /// Queue a presence notice about `who`: to `who` itself when `to_self`
    /// (the answer to its own join or rename, never dropped), and to the rest
    /// of the room while the room is within the presence limit.
    fn announce(&self, members: &[Member], who: &Presence, to_self: bool, item: &Outbound) {
        if to_self {
            let _ = who.outbox.push(item.clone());
        }
        if members.len() <= self.presence_limit {
            fan_out(members, Some(who.conn), item);
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn archive(&self) -> &Arc<dyn Archive> {
        &self.archive
    }

    /// Where uploaded files go.
    pub fn files(&self) -> &Arc<dyn FileStore> {
        &self.files
    }

    /// A fresh message id.
    pub fn mint_msg_id(&self) -> String {
        self.ids.mint('m')
    }

    /// Count a message accepted from a client (sequenced by the directory).
    pub fn count_received(&self, payload: &Payload<'_>) {
        let counter = match payload {
            Payload::Text { .. } => &self.metrics.chat_in,
            Payload::Binary(_) => &self.metrics.binary_in,
            Payload::File { .. } => &self.metrics.file_in,
        };
        counter.increment(1);
    }

    /// Share rooms with other nodes through `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Hub {
        self.directory = Some(directory);
        self
    }

    /// The shared state, when this node is one of several.
    pub fn directory(&self) -> Option<&Arc<dyn Directory>> {
        self.directory.as_ref()
    }

    /// Keep uploaded files in `files` (without: uploads are refused).
    pub fn with_files(mut self, files: Arc<dyn FileStore>) -> Hub {
        self.files = files;
        self
    }

    /// Rooms that exist now.
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).open.len()
    }

    /// Admit a new connection: give it an id and a guest name, send it
    /// `welcome`, put it in the lobby and tell the lobby.
    pub fn connect(&self, outbox: Outbox) -> Presence {
        self.connect_as(outbox, None, None)
    }

    /// `connect`, for a signed-in user when `account` is given: the account
    /// name is used as is and not claimed in the guest name table, since
    /// several connections of one account share it and the account store
    /// keeps guests off it (see `auth`). `room`, asked for at the handshake
    /// (`?room=`), is where the connection starts instead of the lobby (a
    /// room that cannot be opened leaves it in the lobby, with an `error`).
    pub fn connect_as(&self, outbox: Outbox, account: Option<&str>, room: Option<&str>) -> Presence {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let user_id: Arc<str> = Arc::from(self.ids.mint('u'));
        let username: Arc<str> = match account {
            Some(name) => Arc::from(name),
            None => Arc::from(self.claim_guest_name(conn)),
        };
        let mut rooms = lock(&self.rooms);
        let (start, refused) = match self.room_named(&mut rooms, room.unwrap_or(DEFAULT_ROOM)) {
            Ok(start) => (start, None),
            // The lobby is created with the hub and never removed.
            Err(refusal) => (rooms.open[DEFAULT_ROOM].clone(), Some(refusal)),
        };
        let welcome = ServerEvent::Welcome {
            user_id: Cow::Borrowed(&user_id),
            username: Cow::Borrowed(&username),
            room: Cow::Borrowed(start.name()),
            protocol: PROTOCOL_VERSION,
        };
        // Welcome goes first: nothing can reach this outbox before it is in a room.
        let _ = outbox.push_text(welcome.encode());
        if let Some(refusal) = refused {
            let _ = outbox.push_text(ServerEvent::refused(&refusal, None).encode());
        }
        let presence = Presence { conn, user_id, username, room: start, outbox };
        self.enter(&presence, false);
        presence
    }

    /// The room called `name` (normalized, see `names`), opened (its seq
    /// going on from where it stopped) if it is not open yet; refused if it
    /// looks like another open room. The caller holds the registry lock.
    fn room_named(&self, rooms: &mut Registry, name: &str) -> Result<Arc<Room>, Refusal> {
        if let Some(room) = rooms.open.get(name) {
            return Ok(room.clone());
        }
        let name = &names::room(name).map_err(|why| Refusal::new(ErrorCode::InvalidRoom, why))?;
        if let Some(room) = rooms.open.get(name.as_str()) {
            return Ok(room.clone());
        }
        let key = names::key(name);
        if let Some(existing) = rooms.keys.get(&key) {
            return Err(Refusal::new(
                ErrorCode::InvalidRoom,
                format!(
                    "#{name} looks like the open room #{existing}; join #{existing}, or pick a name that looks different"
                ),
            ));
        }
        if rooms.open.len() >= self.max_rooms {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!("this server holds {} rooms already; join an existing one", self.max_rooms),
            ));
        }
        let room = Room::new(name, rooms.closed_seqs.remove(name.as_str()).unwrap_or(0));
        rooms.open.insert(room.name.clone(), room.clone());
        rooms.keys.insert(key, room.name.clone());
        Ok(room)
    }

    /// A `guest-xxxx` name nobody holds, claimed for `conn`.
    fn claim_guest_name(&self, conn: ConnId) -> String {
        let mut rng = rand::rng();
        let mut names = lock(&self.names);
        for attempt in 0u32.. {
            // Four hex digits while they are easy to find, then eight.
            // With several nodes, the name must be free on every node too:
            // eight hex digits make a clash there unlikely.
            let name = if attempt < 16 && self.directory.is_none() {
                format!("guest-{:04x}", rng.random::<u16>())
            } else {
                format!("guest-{:08x}", rng.random::<u32>())
            };
            if let Entry::Vacant(slot) = names.entry(name_key(&name)) {
                slot.insert(Owner::Guest(conn));
                return name;
            }
        }
        unreachable!("the loop only ends by returning")
    }

    /// Add `who` to its room and announce it (to itself too when `confirm`).
    /// The caller holds the registry lock.
    fn enter(&self, who: &Presence, confirm: bool) {
        let ts: Arc<str> = Arc::from(now_ts());
        let mut state = lock(&who.room.state);
        let since_seq = if self.directory.is_some() { u64::MAX } else { 0 };
        state.members.push(Member {
            since_seq,
            conn: who.conn,
            user_id: who.user_id.clone(),
            username: who.username.clone(),
            since: ts.clone(),
            outbox: who.outbox.clone(),
        });
        let joined = ServerEvent::Joined {
            room: Cow::Borrowed(&who.room.name),
            user_id: Cow::Borrowed(&who.user_id),
            username: Cow::Borrowed(&who.username),
            ts: Cow::Borrowed(&ts),
        };
        let joined = joined.encode();
        if let Some(directory) = &self.directory {
            let card =
                Card { user_id: who.user_id.to_string(), username: who.username.to_string(), since: ts.to_string() };
            directory.entered(&who.room.name, card, who.conn, joined.clone());
        }
        self.announce(&state.members, who, confirm, &Outbound::Text(joined.into()));
    }

    /// Take `who` out of its room, announce it with `reason`, and drop the
    /// room if it is now empty (the lobby always stays). The caller holds the
    /// registry lock and passes it in.
    fn exit(&self, rooms: &mut Registry, who: &Presence, reason: &str) {
        let mut state = lock(&who.room.state);
        if let Some(index) = state.members.iter().position(|m| m.conn == who.conn) {
            state.members.swap_remove(index);
        }
        let left = ServerEvent::Left {
            room: Cow::Borrowed(&who.room.name),
            user_id: Cow::Borrowed(&who.user_id),
            username: Cow::Borrowed(&who.username),
            ts: Cow::Owned(now_ts()),
            reason: Cow::Borrowed(reason),
        };
        let left = left.encode();
        if let Some(directory) = &self.directory {
            directory.left(&who.room.name, &who.user_id, left.clone());
        }
        self.announce(&state.members, who, false, &Outbound::Text(left.into()));
        if state.members.is_empty() && &*who.room.name != DEFAULT_ROOM {
            rooms.open.remove(&who.room.name);
            rooms.keys.remove(&names::key(&who.room.name));
            if self.archive.is_on() {
                rooms.closed_seqs.insert(who.room.name.clone(), state.last_seq);
            }
        }
    }

    /// The connection is gone: leave its room, free its name.
    pub fn disconnect(&self, who: Presence, reason: EndReason) {
        {
            let mut rooms = lock(&self.rooms);
            self.exit(&mut rooms, &who, reason.as_str());
        }
        let mut names = lock(&self.names);
        let key = name_key(&who.username);
        if names.get(&key) == Some(&Owner::Guest(who.conn)) {
            names.remove(&key);
        }
    }

    /// Reserve `name` for accounts (registered earlier, loaded at start).
    pub fn add_accounts<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut table = lock(&self.names);
        for name in names {
            table.insert(name_key(name), Owner::Account);
        }
    }

    /// Claim `name` for a new account, unless a guest or another account
    /// holds it (or a name that compares equal). The caller stores the
    /// account, then calls `release_account` if that fails.
    pub fn claim_account(&self, name: &str) -> Result<(), Refusal> {
        match lock(&self.names).entry(name_key(name)) {
            Entry::Occupied(_) => Err(Refusal::new(
                ErrorCode::NameTaken,
                format!("the name {name:?} is taken (by an account or a connected guest); pick another"),
            )),
            Entry::Vacant(slot) => {
                slot.insert(Owner::Account);
                Ok(())
            }
        }
    }

    /// Undo `claim_account` (the account could not be stored).
    pub fn release_account(&self, name: &str) {
        let mut names = lock(&self.names);
        let key = name_key(name);
        if names.get(&key) == Some(&Owner::Account) {
            names.remove(&key);
        }
    }

    /// Send a message to everyone else in the sender's room. With a `slot`,
    /// the message is then handed to the history writer, which sends the
    /// sender's ack once it is stored; without, the caller acks.
    pub fn publish(&self, who: &Presence, payload: Payload<'_>, slot: Option<Slot<'_>>) -> Published {
        let msg_id = self.ids.mint('m');
        let ts_ms = now_millis();
        let mut state = lock(&who.room.state);
        state.last_seq += 1;
        let seq = state.last_seq;
        let envelope = Envelope {
            room: &who.room.name,
            seq,
            msg_id: &msg_id,
            from: &who.username,
            user_id: &who.user_id,
            ts: Cow::Owned(format_ts_millis(ts_ms)),
        };
        let event = envelope.event(payload, false).encode().into();
        let (item, counter) = match payload {
            Payload::Text { .. } => (Outbound::Text(event), &self.metrics.chat_in),
            Payload::Binary(data) => (Outbound::Binary { header: event, data: data.clone() }, &self.metrics.binary_in),
            Payload::File { .. } => (Outbound::Text(event), &self.metrics.file_in),
        };
        let fanout_started = std::time::Instant::now();
        let recipients = fan_out_message(&state.members, who.conn, &who.room.name, seq, &item);
        if let Some(slot) = slot {
            // Handed over under the room lock, so the writer gets a room's messages in seq order.
            let message = Message {
                seq,
                msg_id: msg_id.clone(),
                user_id: who.user_id.to_string(),
                username: who.username.to_string(),
                ts_ms,
                body: payload.body(),
            };
            let ack = AckTo {
                outbox: who.outbox.clone(),
                client_id: payload.client_id().map(str::to_string),
                recipients,
                upload_id: payload.upload_id().map(str::to_string),
            };
            slot.submit(Record { room: who.room.name.clone(), message }, Some(ack));
        }
        drop(state);
        counter.increment(1);
        self.metrics.delivered.increment(recipients as u64);
        self.metrics.fanout_seconds.record(fanout_started.elapsed().as_secs_f64());
        Published { room: who.room.name.clone(), seq, msg_id, recipients, ts_ms }
    }

    /// Change `who`'s name (normalized, see `names`) and tell its room
    /// (itself included). A name that looks like one in use is taken.
    pub fn rename(&self, who: &mut Presence, new: &str) -> Result<(), Refusal> {
        let new = &names::username(new).map_err(|why| Refusal::new(ErrorCode::InvalidName, why))?;
        let key = name_key(new);
        let old_key = name_key(&who.username);
        let me = Owner::Guest(who.conn);
        {
            let mut names = lock(&self.names);
            match names.get(&key) {
                Some(Owner::Account) => {
                    return Err(Refusal::new(
                        ErrorCode::NameReserved,
                        format!("{new:?} is a registered account; sign in as {new} to use it (POST /api/login)"),
                    ));
                }
                Some(&owner) if owner != me => {
                    return Err(Refusal::new(ErrorCode::NameTaken, format!("the name {new:?} is taken; pick another")));
                }
                _ => {}
            }
            if key != old_key && names.get(&old_key) == Some(&me) {
                names.remove(&old_key);
            }
            names.insert(key, me);
        }
        let old = std::mem::replace(&mut who.username, Arc::from(new.as_str()));
        let mut state = lock(&who.room.state);
        let mut since = String::new();
        if let Some(member) = state.members.iter_mut().find(|m| m.conn == who.conn) {
            member.username = who.username.clone();
            since = member.since.to_string();
        }
        let renamed = ServerEvent::Renamed {
            room: Cow::Borrowed(&who.room.name),
            user_id: Cow::Borrowed(&who.user_id),
            old: Cow::Borrowed(&old),
            new: Cow::Borrowed(&who.username),
            ts: Cow::Owned(now_ts()),
        }
        .encode();
        if let Some(directory) = &self.directory {
            let card = Card { user_id: who.user_id.to_string(), username: who.username.to_string(), since };
            directory.renamed(&who.room.name, card, renamed.clone());
        }
        self.announce(&state.members, who, true, &Outbound::Text(renamed.into()));
        Ok(())
    }

    /// A message another node (or the directory for this one) sequenced:
    /// queue it to this node's members of `room` that it counts (entered
    /// before it), but `exclude` (its sender, when it is ours). Seqs at or
    /// below the last delivered are dropped (seen already). How many took it.
    pub fn deliver(&self, room: &str, seq: u64, message: &Message, exclude: Option<ConnId>) -> usize {
        let Some(room) = lock(&self.rooms).open.get(room).cloned() else { return 0 };
        let envelope = Envelope {
            room: &room.name,
            seq,
            msg_id: &message.msg_id,
            from: &message.username,
            user_id: &message.user_id,
            ts: Cow::Owned(format_ts_millis(message.ts_ms)),
        };
        let payload = message.body.payload();
        let event = envelope.event(payload, false).encode().into();
        let item = match payload {
            Payload::Binary(data) => Outbound::Binary { header: event, data: data.clone() },
            _ => Outbound::Text(event),
        };
        let mut state = lock(&room.state);
        if seq <= state.last_seq {
            return 0;
        }
        state.last_seq = seq;
        let delivered = state
            .members
            .iter()
            .filter(|m| Some(m.conn) != exclude && m.since_seq < seq)
            .filter(|m| m.outbox.push_message(&room.name, seq, item.clone()).is_ok())
            .count();
        drop(state);
        self.metrics.delivered.increment(delivered as u64);
        delivered
    }

    /// The directory registered member `conn` of `room` when the room's seq
    /// was `since`: later messages count it. Those already delivered on this
    /// node before it was counted in... it missed none; those delivered
    /// since `since` while it waited are announced to it as a `gap`.
    pub fn since(&self, room: &str, conn: ConnId, since: u64) {
        let Some(room) = lock(&self.rooms).open.get(room).cloned() else { return };
        let mut state = lock(&room.state);
        let last = state.last_seq;
        let Some(member) = state.members.iter_mut().find(|m| m.conn == conn) else { return };
        member.since_seq = since;
        if last > since {
            let gap = ServerEvent::Gap { room: Cow::Borrowed(&room.name), from_seq: since + 1, to_seq: last };
            let _ = member.outbox.push_text(gap.encode());
        }
    }

    /// Messages `from..=to` of `room` are gone for good (missed, and no
    /// longer in the shared history): every member here gets a `gap`.
    pub fn gap(&self, room: &str, from: u64, to: u64) {
        let Some(room) = lock(&self.rooms).open.get(room).cloned() else { return };
        let mut state = lock(&room.state);
        state.last_seq = state.last_seq.max(to);
        let gap = ServerEvent::Gap { room: Cow::Borrowed(&room.name), from_seq: from, to_seq: to }.encode();
        for member in state.members.iter().filter(|m| m.since_seq < to) {
            let _ = member.outbox.push_text(gap.clone());
        }
    }

    /// A presence event from another node: to this node's members of `room`.
    pub fn announce_remote(&self, room: &str, event: &str) {
        let Some(room) = lock(&self.rooms).open.get(room).cloned() else { return };
        let state = lock(&room.state);
        if state.members.len() <= self.presence_limit {
            fan_out(&state.members, None, &Outbound::Text(event.to_string().into()));
        }
    }

    /// Every member of this node, by room: what the directory registers
    /// again after losing its state.
    pub fn local_members(&self) -> Vec<LocalRoom> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).open.values().cloned().collect();
        rooms
            .into_iter()
            .map(|room| {
                let state = lock(&room.state);
                let cards = state.members.iter().map(|m| {
                    let card = Card {
                        user_id: m.user_id.to_string(),
                        username: m.username.to_string(),
                        since: m.since.to_string(),
                    };
                    (m.conn, card)
                });
                (room.name.clone(), cards.collect())
            })
            .collect()
    }

    /// The last seq this node delivered in `room` (0: none, or not open).
    pub fn delivered_seq(&self, room: &str) -> u64 {
        lock(&self.rooms).open.get(room).map_or(0, |room| lock(&room.state).last_seq)
    }

    /// Move `who` to `room`, creating it if needed. The old room sees `left`
    /// (reason `moved`), the new one, `who` included, sees `joined`.
    pub fn join(&self, who: &mut Presence, room: &str) -> Result<(), Refusal> {
        let room = &names::room(room).map_err(|why| Refusal::new(ErrorCode::InvalidRoom, why))?;
        let mut rooms = lock(&self.rooms);
        if *who.room.name == **room {
            // Already there: confirm to the caller alone.
            let joined = ServerEvent::Joined {
                room: Cow::Borrowed(room),
                user_id: Cow::Borrowed(&who.user_id),
                username: Cow::Borrowed(&who.username),
                ts: Cow::Owned(now_ts()),
            };
            let _ = who.outbox.push_text(joined.encode());
            return Ok(());
        }
        let target = self.room_named(&mut rooms, room)?;
        self.exit(&mut rooms, who, "moved");
        who.room = target;
        self.enter(who, true);
        Ok(())
    }

    /// The `who` event for `who`'s room.
    pub fn who(&self, who: &Presence) -> String {
        let state = lock(&who.room.state);
        let users = state
            .members
            .iter()
            .map(|m| WhoUser {
                user_id: Cow::Borrowed(&*m.user_id),
                username: Cow::Borrowed(&*m.username),
                since: Cow::Borrowed(&*m.since),
            })
            .collect();
        ServerEvent::Who { room: Cow::Borrowed(&who.room.name), users }.encode()
    }

    /// The `rooms` event: every room and its member count, by name.
    pub fn rooms(&self) -> String {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).open.values().cloned().collect();
        let mut list: Vec<RoomInfo<'_>> = rooms
            .iter()
            .map(|room| RoomInfo { room: Cow::Borrowed(&*room.name), members: room.member_count() })
            .collect();
        list.sort_by(|a, b| a.room.cmp(&b.room));
        ServerEvent::Rooms { rooms: list }.encode()
    }
}

/// The form of a name that names are compared by: two names with the same
/// key are the same name (`names::key`: case-folded confusable skeleton).
fn name_key(name: &str) -> String {
    names::key(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::chat::outbox::{OutboxReceiver, SessionEnd};
    use tokio_util::sync::CancellationToken;

    fn hub() -> Hub {
        Hub::new(3, Arc::new(Metrics::default()))
    }

    fn connect(hub: &Hub) -> (Presence, OutboxReceiver) {
        let (outbox, rx) = Outbox::new(64, 1 << 20, SessionEnd::new(CancellationToken::new()));
        (hub.connect(outbox), rx)
    }

    fn events(rx: &mut OutboxReceiver) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Text(text) = item {
                out.push(serde_json::from_str(&text).unwrap());
            }
        }
        out
    }

    fn kinds(rx: &mut OutboxReceiver) -> Vec<String> {
        events(rx).iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn welcome_first_then_others_see_joined() {
        let hub = hub();
        let (a, mut arx) = connect(&hub);
        assert_eq!(kinds(&mut arx), ["welcome"]);
        let (b, mut brx) = connect(&hub);
        assert_eq!(kinds(&mut brx), ["welcome"]);
        let seen = events(&mut arx);
        assert_eq!(seen[0]["type"], "joined");
        assert_eq!(seen[0]["username"], *b.username);
        assert_ne!(a.username, b.username);
        assert!(a.username.starts_with("guest-"));
    }

    #[test]
    fn publish_skips_the_sender_and_counts_recipients() {
        let hub = hub();
        let (a, mut arx) = connect(&hub);
        let (_b, mut brx) = connect(&hub);
        let (_c, mut crx) = connect(&hub);
        events(&mut arx);
        events(&mut brx);
        let first = hub.publish(&a, Payload::Text { text: "hi", client_id: Some("c1") }, None);
        let second = hub.publish(&a, Payload::Text { text: "again", client_id: None }, None);
        assert_eq!((first.seq, second.seq, first.recipients), (1, 2, 2));
        assert!(kinds(&mut arx).is_empty(), "the sender gets no copy");
        let got = events(&mut brx);
        assert_eq!(got[0]["text"], "hi");
        assert_eq!(got[0]["client_id"], "c1");
        assert_eq!(got[1]["seq"], 2);
        assert_eq!(events(&mut crx).iter().filter(|e| e["type"] == "chat").count(), 2);
    }

    #[test]
    fn names_are_unique_case_insensitively() {
        let hub = hub();
        let (mut a, _arx) = connect(&hub);
        let (mut b, _brx) = connect(&hub);
        hub.rename(&mut a, "Alice").unwrap();
        assert_eq!(hub.rename(&mut b, "alice").unwrap_err().code, ErrorCode::NameTaken);
        assert_eq!(hub.rename(&mut b, "a b").unwrap_err().code, ErrorCode::InvalidName);
        hub.rename(&mut a, "alice").unwrap();
        assert_eq!(&*a.username, "alice", "changing only the case of your own name is allowed");
        hub.disconnect(a, EndReason::Quit);
        hub.rename(&mut b, "ALICE").unwrap();
    }

    #[test]
    fn look_alikes_of_a_name_in_use_are_taken_and_invisible_names_refused() {
        let hub = hub();
        let (mut a, _arx) = connect(&hub);
        let (mut b, _brx) = connect(&hub);
        hub.rename(&mut a, "alice").unwrap();
        for look_alike in ["ALICE", "\u{430}lice", "ａｌｉｃｅ"] {
            assert_eq!(hub.rename(&mut b, look_alike).unwrap_err().code, ErrorCode::NameTaken, "{look_alike}");
        }
        for invisible in ["alice\u{200B}", "\u{3164}", "\u{2800}", "ev\u{202E}il"] {
            let refusal = hub.rename(&mut b, invisible).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::InvalidName, "{invisible:?}");
        }
        hub.rename(&mut b, "ｂｏｂ").unwrap();
        assert_eq!(&*b.username, "bob", "kept in its normalized form");
        hub.claim_account("Dora").unwrap();
        assert_eq!(hub.rename(&mut b, "dora").unwrap_err().code, ErrorCode::NameReserved);
        assert_eq!(hub.claim_account("B0B").unwrap_err().code, ErrorCode::NameTaken, "0 looks like O");
    }

    #[test]
    fn a_room_that_looks_like_an_open_one_is_refused() {
        let hub = hub();
        let (mut a, _arx) = connect(&hub);
        let refusal = hub.join(&mut a, "Lobby").unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InvalidRoom);
        assert!(refusal.message.contains("looks like"), "{}", refusal.message);
        hub.join(&mut a, "ｒｕｓｔ").unwrap();
        assert_eq!(a.room.name(), "rust", "normalized");
        assert_eq!(hub.join(&mut a, "bad\u{200B}room").unwrap_err().code, ErrorCode::InvalidRoom);
    }

    #[test]
    fn rooms_are_created_on_join_and_dropped_when_empty() {
        let hub = hub();
        let (mut a, mut arx) = connect(&hub);
        hub.join(&mut a, "rust").unwrap();
        let joined = events(&mut arx);
        assert_eq!(joined.last().unwrap()["type"], "joined", "the joiner gets a confirmation");
        assert_eq!(hub.room_count(), 2);
        hub.join(&mut a, "lobby").unwrap();
        assert_eq!(hub.room_count(), 1, "an empty room other than the lobby is dropped");
        hub.join(&mut a, "r1").unwrap();
        let (mut b, _brx) = connect(&hub);
        hub.join(&mut b, "r2").unwrap();
        assert_eq!(hub.room_count(), 3);
        let (mut c, _crx) = connect(&hub);
        assert_eq!(hub.join(&mut c, "r3").unwrap_err().code, ErrorCode::TooManyRooms);
        assert_eq!(hub.join(&mut c, "bad room").unwrap_err().code, ErrorCode::InvalidRoom);
    }
}
