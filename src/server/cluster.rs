//! Several chorus nodes sharing rooms through Redis (`--redis URL`): the
//! chat core's `Directory` and the `Archive` of a shared history.
//!
//! # Keys
//!
//! A room's keys share one hash slot (the `{room:NAME}` tag), so the script
//! that sequences a message touches one slot (Redis Cluster ready):
//! `chorus:{room:NAME}:seq` (the counter), `:stream` (the history: one entry
//! per message, id `<seq>-1`), `:nodes` (members per node), `:who` (members:
//! user id -> card), and the channel `:events`. Across rooms: `chorus:rooms`
//! (rooms with members), `chorus:names` (name key -> `node/conn` or
//! `account`), `chorus:nodes` (live nodes), `chorus:node:ID` (a heartbeat with
//! a TTL) and `chorus:node:ID:rooms`.
//!
//! # Order and loss
//!
//! One Lua script (`PUBLISH_SCRIPT`) increments the room's counter, appends
//! the message to the stream and publishes it, so every node receives a
//! room's messages in one seq order, and the ack (sent when the script
//! returns) means the message is in the stream. Each node delivers a room's
//! messages only from the channel, its own members' included, and keeps a
//! cursor per room: a seq past cursor + 1 means messages were missed (the
//! subscription dropped, Redis restarted), and the hole is filled from the
//! stream before anything newer is delivered; what the stream no longer has
//! is announced as a `gap`. A seq at or below the cursor is dropped, so
//! nothing is delivered twice.
//!
//! # Presence and names
//!
//! A member's entry, exit and rename are applied in Redis in the order they
//! happened (one queue per node) and announced on the room's channel to the
//! other nodes. Registering a member answers the room's seq at that moment:
//! only later messages count it (`recipients`) and reach it. Names are
//! claimed in `chorus:names`, so they are unique across nodes. Each node
//! refreshes its heartbeat every third of `--redis-node-ttl`; when one's
//! expires (it was killed), another node takes its members out of every
//! room, announces them `left` with reason `node_lost`, and frees their
//! names.
//!
//! # Redis down
//!
//! Sends are refused (`unavailable`, the `client_id` echoed) and `who` and
//! `rooms` too; connections stay open and their presence is kept. When Redis
//! answers again, the node registers its members again, raises a room
//! counter that restarted below what it delivered (a Redis without
//! persistence), and catches up every room from its cursor.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, PushInfo, PushKind, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::chat::archive::{Archive, ArchiveFuture, Body, FileMeta, HistoryRequest, Message, Slot};
use super::chat::directory::{Card, Directory, Sequenced, unavailable};
use super::chat::hub::{ConnId, Hub};
use super::history::store::Retention;
use crate::protocol::{ErrorCode, Refusal};
use crate::sync::lock;

/// How a node joins the others.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port` (RESP3 is asked for, for pub/sub on the same connection).
    pub url: String,
    /// How long a node's heartbeat lives: a node silent this long is lost.
    pub node_ttl: Duration,
    /// How much history each room keeps in its stream.
    pub retention: Retention,
}

/// Sequence a message: increment, append, publish; the seq and the members
/// on every node. KEYS: seq, stream, nodes. ARGV: record, channel, maxlen
/// (0: none), node, conn.
const PUBLISH_SCRIPT: &str = r"
local seq = redis.call('INCR', KEYS[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-1', 'r', ARGV[1])
else
  redis.call('XADD', KEYS[2], seq .. '-1', 'r', ARGV[1])
end
local members = 0
for _, n in ipairs(redis.call('HVALS', KEYS[3])) do members = members + tonumber(n) end
redis.call('PUBLISH', ARGV[2], 'm ' .. seq .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[1])
return {seq, members}
";

/// Register a member: count it for its node, list it; the room's seq now.
/// KEYS: nodes, who, seq. ARGV: node, user id, card.
const ENTER_SCRIPT: &str = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return tonumber(redis.call('GET', KEYS[3]) or '0')
";

/// Unregister a member. KEYS: nodes, who. ARGV: node, user id.
const LEAVE_SCRIPT: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
";

/// Free a name only if `owner` holds it. KEYS: names. ARGV: key, owner.
const RELEASE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
";

/// Raise a room's counter to at least ARGV[1] (after Redis lost it). KEYS: seq.
const RAISE_SCRIPT: &str = r"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// A room's keys.
fn key(room: &str, part: &str) -> String {
    format!("chorus:{{room:{room}}}:{part}")
}

/// A message as it travels between nodes and sits in a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    msg_id: String,
    user_id: String,
    username: String,
    ts_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// A binary payload, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<FileMeta>,
}

impl Wire {
    fn of(message: &Message) -> Wire {
        let mut wire = Wire {
            msg_id: message.msg_id.clone(),
            user_id: message.user_id.clone(),
            username: message.username.clone(),
            ts_ms: message.ts_ms,
            text: None,
            client_id: None,
            data: None,
            file: None,
        };
        match &message.body {
            Body::Text { text, client_id } => (wire.text, wire.client_id) = (Some(text.clone()), client_id.clone()),
            Body::Binary(data) => wire.data = Some(base64::engine::general_purpose::STANDARD.encode(data)),
            Body::File { file, client_id } => (wire.file, wire.client_id) = (Some(file.clone()), client_id.clone()),
        }
        wire
    }

    fn message(self, seq: u64) -> Message {
        let body = match (self.text, self.data, self.file) {
            (Some(text), _, _) => Body::Text { text, client_id: self.client_id },
            (None, _, Some(file)) => Body::File { file, client_id: self.client_id },
            (None, data, None) => Body::Binary(
                base64::engine::general_purpose::STANDARD.decode(data.unwrap_or_default()).unwrap_or_default().into(),
            ),
        };
        Message { seq, msg_id: self.msg_id, user_id: self.user_id, username: self.username, ts_ms: self.ts_ms, body }
    }
}

/// A member card with its node, as kept in a room's `who` hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Listed {
    #[serde(flatten)]
    card: Card,
    node: String,
}

/// Presence work, done in order by one task.
#[derive(Debug)]
enum Op {
    Entered {
        room: String,
        card: Card,
        conn: ConnId,
        joined: String,
    },
    Left {
        room: String,
        user_id: String,
        left: String,
    },
    Renamed {
        room: String,
        card: Card,
        renamed: String,
    },
    Release {
        key: String,
        conn: ConnId,
    },
    /// Queries go through the queue too, so they see every change this
    /// node made before them.
    Who {
        room: String,
        reply: oneshot::Sender<Result<Vec<Card>, Refusal>>,
    },
    Rooms {
        reply: oneshot::Sender<Result<Vec<(String, usize)>, Refusal>>,
    },
    Claim {
        key: String,
        conn: ConnId,
        reply: oneshot::Sender<Result<bool, Refusal>>,
    },
}

#[derive(Debug)]
struct Inner {
    node: String,
    config: ClusterConfig,
    redis: ConnectionManager,
    hub: OnceLock<Weak<Hub>>,
    ops: mpsc::UnboundedSender<Op>,
    /// Did the last Redis call succeed? (`/healthz`.)
    healthy: AtomicBool,
    /// A call failed since the last resync: Redis may have lost its state,
    /// so register again and raise the room counters before publishing.
    stale: AtomicBool,
    /// One resync at a time.
    resyncing: tokio::sync::Mutex<()>,
    /// Per room this node follows: the last seq delivered to the hub. Taken
    /// by the delivery task and by subscribing; never across a Redis call.
    cursors: Mutex<HashMap<String, u64>>,
    /// Rooms whose channel this node is subscribed to.
    subscribed: Mutex<HashSet<String>>,
    publish: Script,
    enter: Script,
    leave: Script,
    release: Script,
    raise: Script,
}

/// What `connect` opened that `start` puts to work.
#[derive(Debug)]
pub struct Started {
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    ops: mpsc::UnboundedReceiver<Op>,
}

/// This node's handle on the shared state.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

fn down(err: &redis::RedisError) -> Refusal {
    tracing::debug!("redis: {err}");
    unavailable("the request")
}

/// chorus speaks to one standalone Redis (a primary): a Redis Cluster node
/// answers keys of other slots with `MOVED`, which would surface later as
/// refused sends. Refused at start instead, saying so.
async fn refuse_cluster_mode(redis: &ConnectionManager, url: &str) -> anyhow::Result<()> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut redis.clone())
        .await
        .map_err(|err| anyhow::anyhow!("Redis at {url} did not answer INFO: {err}"))?;
    if info.lines().any(|line| line.trim() == "cluster_enabled:1") {
        anyhow::bail!(
            "the Redis at {url} runs in cluster mode; chorus nodes share rooms through one standalone Redis \
             (a primary, optionally with replicas): point --redis at that"
        );
    }
    Ok(())
}

impl Cluster {
    /// Connect to Redis. Fails when it cannot be reached at start.
    pub async fn connect(config: ClusterConfig) -> anyhow::Result<(Cluster, Started)> {
        use anyhow::Context as _;
        let url = if config.url.contains("protocol=") {
            config.url.clone()
        } else {
            format!("{}{}protocol=resp3", config.url, if config.url.contains('?') { '&' } else { '?' })
        };
        let client = redis::Client::open(url.as_str())
            .with_context(|| format!("--redis {:?} is not a Redis URL", config.url))?;
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let manager = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_with_config(client, manager)
            .await
            .with_context(|| format!("cannot reach Redis at {}: is redis-server running there?", config.url))?;
        refuse_cluster_mode(&redis, &config.url).await?;
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let node = format!("n{:08x}", rand::random::<u32>());
        let inner = Inner {
            node,
            config,
            redis,
            hub: OnceLock::new(),
            ops,
            healthy: AtomicBool::new(true),
            stale: AtomicBool::new(false),
            resyncing: tokio::sync::Mutex::new(()),
            cursors: Mutex::default(),
            subscribed: Mutex::default(),
            publish: Script::new(PUBLISH_SCRIPT),
            enter: Script::new(ENTER_SCRIPT),
            leave: Script::new(LEAVE_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            raise: Script::new(RAISE_SCRIPT),
        };
        Ok((Cluster { inner: Arc::new(inner) }, Started { pushes, ops: ops_rx }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Did the last call to Redis succeed?
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Start the node's background work for `hub`, until `shutdown`.
    pub fn start(
        &self,
        started: Started,
        hub: &Arc<Hub>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) {
        let _ = self.inner.hub.set(Arc::downgrade(hub));
        let (url, ttl) = (&self.inner.config.url, self.inner.config.node_ttl);
        tracing::info!("sharing rooms through Redis at {url} as node {} (node TTL {ttl:?})", self.inner.node);
        tasks.spawn(self.clone().presence_loop(started.ops, shutdown.clone()));
        tasks.spawn(self.clone().delivery_loop(started.pushes, shutdown.clone()));
        tasks.spawn(self.clone().heartbeat_loop(shutdown.clone()));
        tasks.spawn(self.clone().reaper_loop(shutdown.clone()));
        tasks.spawn(self.clone().prune_loop(shutdown));
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.inner.hub.get().and_then(Weak::upgrade)
    }

    fn redis(&self) -> ConnectionManager {
        self.inner.redis.clone()
    }

    /// Note how a Redis call went; true when it went well.
    fn went<T>(&self, result: &redis::RedisResult<T>) -> bool {
        let ok = result.is_ok();
        let was = self.inner.healthy.swap(ok, Ordering::Relaxed);
        if !ok {
            self.inner.stale.store(true, Ordering::Relaxed);
        }
        if was
            && !ok
            && let Err(err) = result
        {
            tracing::warn!("redis: {err}; sends are refused until it answers again");
        }
        ok
    }
}

/// A message on a room's channel.
#[derive(Debug)]
enum Event {
    /// `m <seq> <node> <conn> <record>`
    Message { seq: u64, node: String, conn: ConnId, wire: Box<Wire> },
    /// `p <node> <event>`: a presence event from `node` (`*`: for every node).
    Presence { node: String, event: String },
}

fn parse_event(payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    match kind {
        "m" => {
            let mut parts = rest.splitn(4, ' ');
            let seq = parts.next()?.parse().ok()?;
            let node = parts.next()?.to_string();
            let conn = parts.next()?.parse().ok()?;
            let wire = Box::new(serde_json::from_str(parts.next()?).ok()?);
            Some(Event::Message { seq, node, conn, wire })
        }
        "p" => {
            let (node, event) = rest.split_once(' ')?;
            Some(Event::Presence { node: node.to_string(), event: event.to_string() })
        }
        _ => None,
    }
}

/// The room a channel belongs to (`chorus:{room:NAME}:events`).
fn room_of(channel: &[u8]) -> Option<String> {
    let channel = std::str::from_utf8(channel).ok()?;
    channel.strip_prefix("chorus:{room:")?.strip_suffix("}:events").map(str::to_string)
}

impl Cluster {
    /// Deliver what the room channels bring, in order, filling holes.
    async fn delivery_loop(self, mut pushes: mpsc::UnboundedReceiver<PushInfo>, shutdown: CancellationToken) {
        loop {
            let push = tokio::select! {
                () = shutdown.cancelled() => return,
                push = pushes.recv() => match push { Some(push) => push, None => return },
            };
            match push.kind {
                PushKind::Message => {
                    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                        (push.data.first(), push.data.get(1))
                    else {
                        continue;
                    };
                    let (Some(room), Some(event)) = (room_of(channel), parse_event(payload)) else { continue };
                    self.on_event(&room, event).await;
                }
                PushKind::Disconnection => {
                    self.inner.healthy.store(false, Ordering::Relaxed);
                    self.inner.stale.store(true, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    async fn on_event(&self, room: &str, event: Event) {
        let Some(hub) = self.hub() else { return };
        match event {
            Event::Presence { node, event } => {
                if node != self.inner.node {
                    hub.announce_remote(room, &event);
                }
            }
            Event::Message { seq, node, conn, wire } => {
                let cursor = lock(&self.inner.cursors).get(room).copied();
                let Some(cursor) = cursor else { return };
                if seq <= cursor {
                    return;
                }
                if seq > cursor + 1 {
                    self.catch_up(room, cursor, seq - 1).await;
                }
                let exclude = (node == self.inner.node).then_some(conn);
                self.deliver(&hub, room, seq, wire.message(seq), exclude);
            }
        }
    }

    /// Hand one message to the hub and move the room's cursor.
    fn deliver(&self, hub: &Hub, room: &str, seq: u64, message: Message, exclude: Option<ConnId>) {
        let mut cursors = lock(&self.inner.cursors);
        let Some(cursor) = cursors.get_mut(room) else { return };
        if seq <= *cursor {
            return;
        }
        *cursor = seq;
        drop(cursors);
        hub.deliver(room, seq, &message, exclude);
    }

    /// Deliver `room`'s messages after `cursor` up to `upto` (`u64::MAX`:
    /// all) from its stream; what the stream no longer has is a `gap`.
    async fn catch_up(&self, room: &str, cursor: u64, upto: u64) {
        let Some(hub) = self.hub() else { return };
        let mut redis = self.redis();
        let mut next = cursor + 1;
        loop {
            let end = if upto == u64::MAX { "+".to_string() } else { format!("{upto}-1") };
            let found: redis::RedisResult<Vec<(String, HashMap<String, String>)>> = redis::cmd("XRANGE")
                .arg(key(room, "stream"))
                .arg(format!("{next}-1"))
                .arg(&end)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut redis)
                .await;
            if !self.went(&found) {
                return;
            }
            let entries = found.unwrap_or_default();
            let count = entries.len();
            for (id, fields) in entries {
                let seq: u64 = id.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let Some(wire) = fields.get("r").and_then(|r| serde_json::from_str::<Wire>(r).ok()) else { continue };
                if seq > next {
                    hub.gap(room, next, seq - 1);
                }
                self.deliver(&hub, room, seq, wire.message(seq), None);
                next = seq + 1;
            }
            if count < 500 {
                break;
            }
        }
        if upto != u64::MAX && next <= upto {
            hub.gap(room, next, upto);
            if let Some(cursor) = lock(&self.inner.cursors).get_mut(room) {
                *cursor = (*cursor).max(upto);
            }
        }
    }

    /// Follow `room` from after `from` (subscribe, then catch up); a room
    /// followed already goes on from its cursor.
    async fn follow(&self, room: &str, from: u64) {
        let fresh = lock(&self.inner.subscribed).insert(room.to_string());
        if !fresh {
            return;
        }
        let start = from.max(self.hub().map_or(0, |hub| hub.delivered_seq(room)));
        lock(&self.inner.cursors).insert(room.to_string(), start);
        let mut redis = self.redis();
        let subscribed = redis.subscribe(key(room, "events")).await;
        self.went(&subscribed);
        self.catch_up(room, start, u64::MAX).await;
    }

    /// Stop following `room` once this node has no member in it.
    async fn unfollow_if_empty(&self, room: &str) {
        let Some(hub) = self.hub() else { return };
        if hub.local_members().iter().any(|(name, members)| &**name == room && !members.is_empty()) {
            return;
        }
        if lock(&self.inner.subscribed).remove(room) {
            lock(&self.inner.cursors).remove(room);
            let mut redis = self.redis();
            let _ = redis.unsubscribe(key(room, "events")).await;
        }
    }

    /// Apply presence changes to Redis, in the order they happened.
    async fn presence_loop(self, mut ops: mpsc::UnboundedReceiver<Op>, shutdown: CancellationToken) {
        loop {
            let op = tokio::select! {
                () = shutdown.cancelled() => return,
                op = ops.recv() => match op { Some(op) => op, None => return },
            };
            self.apply(op).await;
        }
    }

    async fn apply(&self, op: Op) {
        let mut redis = self.redis();
        let node = self.inner.node.clone();
        match op {
            Op::Entered { room, card, conn, joined } => {
                let listed =
                    serde_json::to_string(&Listed { card: card.clone(), node: node.clone() }).unwrap_or_default();
                let seq: redis::RedisResult<u64> = self
                    .inner
                    .enter
                    .key(key(&room, "nodes"))
                    .key(key(&room, "who"))
                    .key(key(&room, "seq"))
                    .arg(&node)
                    .arg(&card.user_id)
                    .arg(listed)
                    .invoke_async(&mut redis)
                    .await;
                if !self.went(&seq) {
                    return;
                }
                let seq = seq.unwrap_or(0);
                let _: redis::RedisResult<()> = redis::pipe()
                    .sadd("chorus:rooms", &room)
                    .sadd(format!("chorus:node:{node}:rooms"), &room)
                    .publish(key(&room, "events"), format!("p {node} {joined}"))
                    .query_async(&mut redis)
                    .await;
                self.follow(&room, seq).await;
                if let Some(hub) = self.hub() {
                    hub.since(&room, conn, seq);
                }
            }
            Op::Left { room, user_id, left } => {
                let done: redis::RedisResult<i64> = self
                    .inner
                    .leave
                    .key(key(&room, "nodes"))
                    .key(key(&room, "who"))
                    .arg(&node)
                    .arg(&user_id)
                    .invoke_async(&mut redis)
                    .await;
                if self.went(&done) {
                    let _: redis::RedisResult<()> =
                        redis.publish(key(&room, "events"), format!("p {node} {left}")).await;
                }
                self.unfollow_if_empty(&room).await;
            }
            Op::Renamed { room, card, renamed } => {
                let listed =
                    serde_json::to_string(&Listed { card: card.clone(), node: node.clone() }).unwrap_or_default();
                let done: redis::RedisResult<()> = redis::pipe()
                    .hset(key(&room, "who"), &card.user_id, listed)
                    .publish(key(&room, "events"), format!("p {node} {renamed}"))
                    .query_async(&mut redis)
                    .await;
                self.went(&done);
            }
            Op::Release { key: name, conn } => {
                let done: redis::RedisResult<i64> = self
                    .inner
                    .release
                    .key("chorus:names")
                    .arg(&name)
                    .arg(format!("{node}/{conn}"))
                    .invoke_async(&mut redis)
                    .await;
                self.went(&done);
            }
            Op::Who { room, reply } => drop(reply.send(self.who_now(&room).await)),
            Op::Rooms { reply } => drop(reply.send(self.rooms_now().await)),
            Op::Claim { key: name, conn, reply } => drop(reply.send(self.claim_now(&name, conn).await)),
        }
    }

    /// Ask the presence queue, and wait for its answer.
    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T, Refusal>>) -> Op) -> Result<T, Refusal> {
        let (reply, answer) = oneshot::channel();
        if self.inner.ops.send(op(reply)).is_err() {
            return Err(unavailable("the request"));
        }
        answer.await.unwrap_or_else(|_| Err(unavailable("the request")))
    }

    async fn who_now(&self, room: &str) -> Result<Vec<Card>, Refusal> {
        let listed: redis::RedisResult<Vec<String>> = self.redis().hvals(key(room, "who")).await;
        if !self.went(&listed) {
            return Err(unavailable("who"));
        }
        let mut cards: Vec<Card> = listed
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str::<Listed>(l).ok())
            .map(|l| l.card)
            .collect();
        cards.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(cards)
    }

    async fn rooms_now(&self) -> Result<Vec<(String, usize)>, Refusal> {
        let mut redis = self.redis();
        let names: redis::RedisResult<Vec<String>> = redis.smembers("chorus:rooms").await;
        if !self.went(&names) {
            return Err(unavailable("rooms"));
        }
        let mut rooms = Vec::new();
        for room in names.unwrap_or_default() {
            let counts: Vec<i64> = redis.hvals(key(&room, "nodes")).await.unwrap_or_default();
            let members: i64 = counts.iter().sum();
            if members > 0 {
                rooms.push((room, usize::try_from(members).unwrap_or(0)));
            } else if room != crate::protocol::DEFAULT_ROOM {
                let _: redis::RedisResult<()> = redis.srem("chorus:rooms", &room).await;
            }
        }
        Ok(rooms)
    }

    async fn claim_now(&self, name: &str, conn: ConnId) -> Result<bool, Refusal> {
        let owner = format!("{}/{conn}", self.inner.node);
        let mut redis = self.redis();
        let set: redis::RedisResult<bool> = redis.hset_nx("chorus:names", name, &owner).await;
        if !self.went(&set) {
            return Err(unavailable("the name"));
        }
        if set.unwrap_or(false) {
            return Ok(true);
        }
        let holder: Option<String> = redis.hget("chorus:names", name).await.map_err(|err| down(&err))?;
        Ok(holder.as_deref() == Some(owner.as_str()))
    }
}

impl Cluster {
    /// Keep this node's heartbeat alive; after Redis comes back, register
    /// this node's members again and catch up every room.
    async fn heartbeat_loop(self, shutdown: CancellationToken) {
        let every = self.inner.config.node_ttl / 3;
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return self.goodbye().await,
                _ = ticks.tick() => {}
            }
            let node = &self.inner.node;
            let ttl = self.inner.config.node_ttl.as_millis().max(1) as u64;
            let beat: redis::RedisResult<()> = redis::pipe()
                .cmd("SET")
                .arg(format!("chorus:node:{node}"))
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .sadd("chorus:nodes", node)
                .ignore()
                .query_async(&mut self.redis())
                .await;
            if self.went(&beat) {
                self.resync_if_stale().await;
            }
        }
    }

    /// After a failure, once Redis answers: register again, raise the
    /// counters, catch up (before this node publishes anything more).
    async fn resync_if_stale(&self) {
        if !self.inner.stale.load(Ordering::Relaxed) {
            return;
        }
        let _one = self.inner.resyncing.lock().await;
        if !self.inner.stale.swap(false, Ordering::Relaxed) {
            return;
        }
        tracing::info!("redis answers again: registering this node's members and catching up");
        self.resync().await;
    }

    /// Register every member of this node again (Redis may have lost them),
    /// raise room counters that restarted below what was delivered, and
    /// catch up every room followed.
    async fn resync(&self) {
        let Some(hub) = self.hub() else { return };
        let node = self.inner.node.clone();
        let mut redis = self.redis();
        for (room, members) in hub.local_members() {
            let mut pipe = redis::pipe();
            pipe.hset(key(&room, "nodes"), &node, members.len()).ignore();
            pipe.sadd("chorus:rooms", &*room).ignore().sadd(format!("chorus:node:{node}:rooms"), &*room).ignore();
            for (conn, card) in &members {
                let listed =
                    serde_json::to_string(&Listed { card: card.clone(), node: node.clone() }).unwrap_or_default();
                pipe.hset(key(&room, "who"), &card.user_id, listed).ignore();
                pipe.hset_nx("chorus:names", crate::names::key(&card.username), format!("{node}/{conn}")).ignore();
            }
            let done: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
            self.went(&done);
            let delivered = hub.delivered_seq(&room);
            let raised: redis::RedisResult<i64> =
                self.inner.raise.key(key(&room, "seq")).arg(delivered).invoke_async(&mut redis).await;
            self.went(&raised);
        }
        let rooms: Vec<(String, u64)> = lock(&self.inner.cursors).iter().map(|(r, c)| (r.clone(), *c)).collect();
        for (room, cursor) in rooms {
            self.catch_up(&room, cursor, u64::MAX).await;
        }
    }

    /// Shutting down: take this node's members out at once rather than
    /// waiting for the heartbeat to lapse.
    async fn goodbye(&self) {
        let node = self.inner.node.clone();
        let _: redis::RedisResult<()> =
            redis::cmd("DEL").arg(format!("chorus:node:{node}")).query_async(&mut self.redis()).await;
        self.reap(&node, "shutdown").await;
    }

    /// Find nodes whose heartbeat lapsed, and take their members out.
    async fn reaper_loop(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval((self.inner.config.node_ttl / 2).max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let mut redis = self.redis();
            let nodes: redis::RedisResult<Vec<String>> = redis.smembers("chorus:nodes").await;
            if !self.went(&nodes) {
                continue;
            }
            for other in nodes.unwrap_or_default().into_iter().filter(|n| *n != self.inner.node) {
                let alive: redis::RedisResult<bool> = redis.exists(format!("chorus:node:{other}")).await;
                if alive.unwrap_or(true) {
                    continue;
                }
                // One node reaps each lost node.
                let mine: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(format!("chorus:reap:{other}"))
                    .arg(&self.inner.node)
                    .arg("NX")
                    .arg("EX")
                    .arg(30)
                    .query_async(&mut redis)
                    .await;
                if matches!(mine, Ok(Some(_))) {
                    tracing::warn!("node {other} stopped answering: its members leave their rooms (node_lost)");
                    self.reap(&other, "node_lost").await;
                }
            }
        }
    }

    /// Free node `lost`'s names, then take its members out of every room
    /// (announced `left` with `reason`).
    async fn reap(&self, lost: &str, reason: &str) {
        let mut redis = self.redis();
        let names: HashMap<String, String> = redis.hgetall("chorus:names").await.unwrap_or_default();
        let prefix = format!("{lost}/");
        for (name, owner) in names.into_iter().filter(|(_, owner)| owner.starts_with(&prefix)) {
            let _: redis::RedisResult<i64> =
                self.inner.release.key("chorus:names").arg(&name).arg(&owner).invoke_async(&mut redis).await;
        }
        let rooms: Vec<String> = redis.smembers(format!("chorus:node:{lost}:rooms")).await.unwrap_or_default();
        for room in rooms {
            let _: redis::RedisResult<()> = redis.hdel(key(&room, "nodes"), lost).await;
            let who: HashMap<String, String> = redis.hgetall(key(&room, "who")).await.unwrap_or_default();
            for (user_id, listed) in who {
                let Ok(listed) = serde_json::from_str::<Listed>(&listed) else { continue };
                if listed.node != lost {
                    continue;
                }
                let _: redis::RedisResult<()> = redis.hdel(key(&room, "who"), &user_id).await;
                let left = crate::protocol::ServerEvent::Left {
                    room: room.as_str().into(),
                    user_id: user_id.as_str().into(),
                    username: listed.card.username.as_str().into(),
                    ts: crate::ids::now_ts().into(),
                    reason: reason.into(),
                };
                let _: redis::RedisResult<()> =
                    redis.publish(key(&room, "events"), format!("p * {}", left.encode())).await;
            }
        }
        let _: redis::RedisResult<()> = redis::pipe()
            .del(format!("chorus:node:{lost}:rooms"))
            .ignore()
            .srem("chorus:nodes", lost)
            .ignore()
            .query_async(&mut redis)
            .await;
    }

    /// Delete stream entries past the retention age, every minute, in the
    /// rooms this node follows.
    async fn prune_loop(self, shutdown: CancellationToken) {
        let Some(age) = self.inner.config.retention.max_age else { return };
        let mut ticks = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let cutoff = crate::ids::now_millis() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let rooms: Vec<String> = lock(&self.inner.subscribed).iter().cloned().collect();
            let mut redis = self.redis();
            for room in rooms {
                let oldest: Vec<(String, HashMap<String, String>)> =
                    redis.xrange_count(key(&room, "stream"), "-", "+", 1000).await.unwrap_or_default();
                let keep = oldest.iter().find(|(_, fields)| {
                    let wire = fields.get("r").and_then(|r| serde_json::from_str::<Wire>(r).ok());
                    wire.is_none_or(|w| w.ts_ms >= cutoff)
                });
                let min = match (keep, oldest.last()) {
                    (Some((id, _)), _) => id.clone(),
                    (None, Some((id, _))) => format!("{}-2", id.split('-').next().unwrap_or("0")),
                    (None, None) => continue,
                };
                let _: redis::RedisResult<i64> =
                    redis::cmd("XTRIM").arg(key(&room, "stream")).arg("MINID").arg(min).query_async(&mut redis).await;
            }
        }
    }
}

impl Directory for Cluster {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        message: &'a Message,
        from: ConnId,
    ) -> ArchiveFuture<'a, Result<Sequenced, Refusal>> {
        Box::pin(async move {
            let record = serde_json::to_string(&Wire::of(message)).map_err(|_| unavailable("the message"))?;
            self.resync_if_stale().await;
            if self.inner.stale.load(Ordering::Relaxed) {
                return Err(unavailable("your message was not sent"));
            }
            let maxlen = self.inner.config.retention.max_messages.unwrap_or(0);
            let mut redis = self.redis();
            let result: redis::RedisResult<(u64, i64)> = self
                .inner
                .publish
                .key(key(room, "seq"))
                .key(key(room, "stream"))
                .key(key(room, "nodes"))
                .arg(record)
                .arg(key(room, "events"))
                .arg(maxlen)
                .arg(&self.inner.node)
                .arg(from)
                .invoke_async(&mut redis)
                .await;
            if !self.went(&result) {
                return Err(unavailable("your message was not sent"));
            }
            let (seq, members) = result.map_err(|err| down(&err))?;
            Ok(Sequenced { seq, recipients: usize::try_from(members - 1).unwrap_or(0) })
        })
    }

    fn entered(&self, room: &str, card: Card, conn: ConnId, joined: String) {
        let _ = self.inner.ops.send(Op::Entered { room: room.to_string(), card, conn, joined });
    }

    fn left(&self, room: &str, user_id: &str, left: String) {
        let _ = self.inner.ops.send(Op::Left { room: room.to_string(), user_id: user_id.to_string(), left });
    }

    fn renamed(&self, room: &str, card: Card, renamed: String) {
        let _ = self.inner.ops.send(Op::Renamed { room: room.to_string(), card, renamed });
    }

    fn who<'a>(&'a self, room: &'a str) -> ArchiveFuture<'a, Result<Vec<Card>, Refusal>> {
        Box::pin(self.ask(move |reply| Op::Who { room: room.to_string(), reply }))
    }

    fn rooms(&self) -> ArchiveFuture<'_, Result<Vec<(String, usize)>, Refusal>> {
        Box::pin(self.ask(|reply| Op::Rooms { reply }))
    }

    fn claim_name<'a>(&'a self, name: &'a str, conn: ConnId) -> ArchiveFuture<'a, Result<bool, Refusal>> {
        Box::pin(self.ask(move |reply| Op::Claim { key: name.to_string(), conn, reply }))
    }

    fn release_name(&self, name: &str, conn: ConnId) {
        let _ = self.inner.ops.send(Op::Release { key: name.to_string(), conn });
    }
}

/// The shared history: each room's Redis stream.
#[derive(Debug, Clone)]
pub struct SharedHistory {
    cluster: Cluster,
}

impl SharedHistory {
    pub fn new(cluster: Cluster) -> SharedHistory {
        SharedHistory { cluster }
    }
}

impl Archive for SharedHistory {
    fn is_on(&self) -> bool {
        true
    }

    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn answer<'a>(&'a self, room: &'a str, request: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>> {
        Box::pin(async move {
            let range = super::history::range_from_request(request.after_seq, request.before_seq, request.limit)?;
            let stream = key(room, "stream");
            let mut redis = self.cluster.redis();
            let found: redis::RedisResult<Vec<(String, HashMap<String, String>)>> = match (range.after, range.before) {
                (Some(after), before) => {
                    let end = before.map_or("+".to_string(), |b| format!("{}-1", b.saturating_sub(1)));
                    redis.xrange_count(&stream, format!("{}-1", after + 1), end, range.limit).await
                }
                (None, before) => {
                    let end = before.map_or("+".to_string(), |b| format!("{}-1", b.saturating_sub(1)));
                    redis.xrevrange_count(&stream, end, "-", range.limit).await
                }
            };
            if !self.cluster.went(&found) {
                return Err(unavailable("history"));
            }
            let now = crate::ids::now_millis();
            let cutoff = self.cluster.inner.config.retention.cutoff_ms(now).unwrap_or(i64::MIN);
            let messages = found.unwrap_or_default().into_iter().filter_map(|(id, fields)| {
                let seq = id.split('-').next()?.parse().ok()?;
                let wire: Wire = serde_json::from_str(fields.get("r")?).ok()?;
                (wire.ts_ms >= cutoff).then(|| wire.message(seq))
            });
            let store = super::history::store::MemoryStore::new(Retention::FOREVER);
            let batch: Vec<super::chat::archive::Record> =
                messages.map(|message| super::chat::archive::Record { room: Arc::from(room), message }).collect();
            super::history::store::Store::append(&store, &batch)
                .map_err(|err| Refusal::new(ErrorCode::HistoryFailed, err.to_string()))?;
            let window = super::history::store::Range { after: range.after, before: range.before, limit: range.limit };
            super::history::answer(&store, room, window, now, super::history::ANSWER_MAX_BYTES)
                .map_err(|err| Refusal::new(ErrorCode::HistoryFailed, err.to_string()))
        })
    }
}
