//! One WebSocket connection: a reader that turns frames into hub requests and
//! a writer that drains the connection's outbox onto the socket.
//!
//! Both run inside the connection's task (`tokio::join!`); when either ends it
//! ends the session, the other sees it and stops, and the connection leaves
//! the hub. The session is generic over `Sink + Stream` so tests can drive it
//! without a socket.

use std::time::{Duration, SystemTime};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::archive::HistoryRequest;
use super::hub::{Hub, Payload, Presence};
use super::outbox::{LagPolicy, Outbound, Outbox, OutboxReceiver, SessionEnd};
use super::reasons::{EndReason, Violation};
use super::shared;
use super::transfer;
use super::uploads::{UploadLimits, Uploads};
use crate::names;
use crate::protocol::{ClientFrame, ErrorCode, Refusal, ServerEvent, check_client_id, decode_client_text};
use crate::server::limits::{MessageLimiter, RateLimit, Verdict};
use crate::server::metrics::Metrics;

/// Per-connection settings, taken from the server's configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Send a ping after this long without hearing from the client.
    pub ping_interval: Duration,
    /// After a ping, how long the client has to send anything back.
    pub pong_timeout: Duration,
    /// How long to wait for the client's side of a close handshake.
    pub close_timeout: Duration,
    /// Most events queued for one connection.
    pub max_queue_items: usize,
    /// Most bytes queued for one connection.
    pub max_queue_bytes: usize,
    /// Messages per second from one connection (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// With history on: close a connection that misses more messages than
    /// this in one stretch of lagging (see `outbox`).
    pub max_gap: u64,
    /// With history on: close a connection that keeps missing messages for longer than this.
    pub max_lag: Duration,
    /// Uploads in progress at once, and how long one may go without a chunk.
    pub uploads: UploadLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_queue_items: 4096,
            max_queue_bytes: 4 << 20,
            rate_limit: Some(RateLimit::default()),
            max_gap: 10_000,
            max_lag: Duration::from_secs(30),
            uploads: UploadLimits { max_uploads: 2, timeout: Duration::from_secs(60) },
        }
    }
}

/// What one connection was admitted as, decided at the handshake.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The account, for a signed-in connection.
    pub account: Option<Account>,
    /// Echo mode: every data frame goes back as it came; no chat.
    pub echo: bool,
    /// The room asked for at the handshake (`?room=`), instead of the lobby.
    pub room: Option<String>,
}

/// A signed-in connection's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account name, which is the connection's username.
    pub name: String,
    /// When its token expires; the session closes then (1008, `expired`).
    pub expires_at: SystemTime,
}

impl Admission {
    /// The account name, for a signed-in connection.
    pub fn username(&self) -> Option<&str> {
        self.account.as_ref().map(|a| a.name.as_str())
    }

    /// When the token runs out, on the runtime's clock (`None`: a guest, or
    /// beyond what the clock can represent).
    pub fn expiry(&self) -> Option<Instant> {
        let account = self.account.as_ref()?;
        let left = account.expires_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Instant::now().checked_add(left)
    }

    /// A rename request: a signed-in user's name is its account's.
    fn rename(&self, hub: &Hub, presence: &mut Presence, name: &str) -> Result<(), Refusal> {
        if let Some(me) = self.username() {
            return Err(Refusal::new(
                ErrorCode::NameLocked,
                format!("you are signed in as {me}: your username is your account name"),
            ));
        }
        hub.rename(presence, name)
    }
}

/// Most queued items written before one flush.
const MAX_BATCH: usize = 256;

/// Run one connection until it ends; returns the socket (for a last linger)
/// and why it ended. `admission` says who the connection is (a signed-in user
/// or a guest) and whether it echoes instead of chatting.
pub async fn run<S>(
    ws: S,
    hub: &Hub,
    config: &SessionConfig,
    shutdown: &CancellationToken,
    admission: Admission,
) -> (Option<S>, EndReason)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let end = SessionEnd::new(shutdown.child_token());
    // Falling behind is recoverable (gap, then history) only when history is on.
    let lag = hub.archive().is_on().then(|| LagPolicy {
        max_gap: config.max_gap,
        max_lag: config.max_lag,
        metrics: hub.metrics().clone(),
    });
    let (outbox, queue) = Outbox::with_lag_policy(config.max_queue_items, config.max_queue_bytes, end.clone(), lag);
    // Echo mode (protocol conformance): no hub, no welcome, frames go back as they came.
    let mut presence =
        (!admission.echo).then(|| hub.connect_as(outbox.clone(), admission.username(), admission.room.as_deref()));
    if let (Some(directory), Some(presence), None) = (hub.directory(), presence.as_mut(), &admission.account) {
        shared::claim_guest_name(hub, directory, presence).await;
    }
    let limiter = MessageLimiter::new(config.rate_limit);
    let upload_limits = config.uploads;
    let expiry = admission.expiry();
    let mut conn = Conn { hub, presence, outbox, admission, limiter, uploads: None, upload_limits, expiry };
    tracing::debug!(conn = conn.id(), user = conn.username(), "connected");
    let (sink, stream) = ws.split();
    let (stream, sink) =
        tokio::join!(read_loop(stream, &mut conn, config, &end), write_loop(sink, queue, config, &end, hub.metrics()));
    let reason = end.reason();
    tracing::debug!(conn = conn.id(), user = conn.username(), reason = reason.as_str(), "disconnected");
    hub.metrics().record_end(reason.as_str());
    if let Some(presence) = conn.presence {
        if let Some(directory) = hub.directory() {
            shared::release_name(directory, &presence);
        }
        hub.disconnect(presence, reason);
    }
    (stream.reunite(sink).ok(), reason)
}

/// What the reader knows about its connection.
struct Conn<'a> {
    hub: &'a Hub,
    /// The connection's place in the hub; `None` in echo mode.
    presence: Option<Presence>,
    outbox: Outbox,
    admission: Admission,
    limiter: MessageLimiter,
    /// Uploads in progress, made at the first offer (an idle connection
    /// does not pay for them).
    uploads: Option<Box<Uploads>>,
    upload_limits: UploadLimits,
    /// When the token runs out (computed once: an instant, not a countdown).
    expiry: Option<Instant>,
}

impl Conn<'_> {
    fn id(&self) -> u64 {
        self.presence.as_ref().map_or(0, |p| p.conn)
    }

    fn username(&self) -> &str {
        self.presence.as_ref().map_or("(echo)", |p| &p.username)
    }

    /// A text or binary message from the client: echoed (echo mode), or a
    /// chunk of an upload, or rate-limited and handled as chat.
    async fn on_data(&mut self, message: Message, end: &SessionEnd) {
        let Conn { hub, presence, outbox, admission, limiter, uploads, upload_limits, .. } = self;
        let hub: &Hub = hub;
        let Some(presence) = presence.as_mut() else {
            let echo = match message {
                Message::Text(text) => Outbound::Text(text),
                Message::Binary(data) => Outbound::Bare(data),
                _ => return,
            };
            let _ = outbox.push(echo);
            return;
        };
        if let Some(uploads) = uploads.as_deref_mut().filter(|u| u.expecting()) {
            if let Message::Binary(data) = message {
                return transfer::chunk(hub, presence, uploads, data).await;
            }
            transfer::chunk_missing(hub, presence, uploads);
        }
        let mut allowed = |client_id: Option<&str>| allowed(limiter, hub, outbox, end, client_id);
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(data) => {
                if allowed(None)
                    && let Err(refusal) = send(hub, presence, Payload::Binary(&data)).await
                {
                    refuse(hub, &presence.outbox, &refusal, None);
                }
                return;
            }
            _ => return,
        };
        let frame = match decode_client_text(&text) {
            Ok(frame) => frame,
            Err(refusal) => {
                if allowed(None) {
                    refuse(hub, &presence.outbox, &refusal, None);
                }
                return;
            }
        };
        // A chunk header for an upload in progress is not a message: the
        // rate limit is for chat, and a file is bounded by its offer.
        if let ClientFrame::FileChunk { upload_id, offset } = &frame
            && let Some(uploads) = uploads.as_deref_mut()
            && transfer::chunk_header(hub, presence, uploads, upload_id, *offset)
        {
            return;
        }
        let client_id = match &frame {
            ClientFrame::Chat { client_id, .. } => client_id.as_deref(),
            _ => None,
        };
        if allowed(client_id) {
            handle_frame(hub, presence, frame, admission, (uploads, *upload_limits)).await;
        }
    }

    /// When the session must next look at the clock: the token's expiry, or
    /// an upload's timeout.
    fn next_deadline(&self) -> Option<Instant> {
        let upload = self.uploads.as_ref().and_then(|u| u.next_deadline());
        [self.expiry, upload].into_iter().flatten().min()
    }

    /// The deadline came: the token expired, or uploads timed out.
    fn deadline_passed(&mut self, end: &SessionEnd) {
        let now = Instant::now();
        if self.expiry.is_some_and(|at| at <= now) {
            tracing::debug!(conn = self.id(), "token expired");
            return end.end(EndReason::Expired);
        }
        if let (Some(uploads), Some(presence)) = (self.uploads.as_deref_mut(), self.presence.as_ref()) {
            for failed in uploads.expire(now) {
                transfer::report(self.hub, presence, &failed);
            }
        }
    }
}

/// Account for one message under the rate limit: true to handle it; false
/// when it is dropped (answered with `rate_limited`, echoing `client_id`) or
/// the connection is closed for flooding.
fn allowed(
    limiter: &mut MessageLimiter,
    hub: &Hub,
    outbox: &Outbox,
    end: &SessionEnd,
    client_id: Option<&str>,
) -> bool {
    match limiter.check() {
        Verdict::Allow => true,
        Verdict::Drop => {
            refuse(hub, outbox, &rate_limited(limiter), client_id);
            false
        }
        Verdict::Close => {
            end.end(EndReason::RateLimited);
            false
        }
    }
}

/// The `error` for a message dropped by the rate limit.
fn rate_limited(limiter: &MessageLimiter) -> Refusal {
    let why = match limiter.limit() {
        Some(limit) => format!(
            "slow down: at most {} messages per second (bursts of {}); this message was dropped",
            limit.per_second, limit.burst
        ),
        None => "slow down; this message was dropped".to_string(),
    };
    Refusal::new(ErrorCode::RateLimited, why)
}

/// Read frames until the session ends, handling each.
async fn read_loop<St>(mut stream: St, conn: &mut Conn<'_>, config: &SessionConfig, end: &SessionEnd) -> St
where
    St: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut last_seen = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let keepalive = tokio::time::sleep(config.ping_interval);
    tokio::pin!(keepalive);
    // One timer for the token's expiry and the uploads' timeouts.
    let mut deadline = conn.next_deadline();
    let timer = tokio::time::sleep_until(deadline.unwrap_or_else(|| last_seen + FOREVER));
    tokio::pin!(timer);
    // One wait for the end, polled by every turn: a fresh one per turn would
    // register with (and leave) the cancellation token under its lock each time.
    let ended = end.ended();
    tokio::pin!(ended);
    loop {
        tokio::select! {
            biased;
            () = &mut ended => {
                // Ended elsewhere (shutdown, slow, timeout): the writer sends our
                // close frame; read until the client's answer so that nothing
                // in flight turns into a reset.
                let _ = timeout(config.close_timeout, async {
                    while let Some(Ok(message)) = stream.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                })
                .await;
                return stream;
            }
            () = &mut timer, if deadline.is_some() => {
                conn.deadline_passed(end);
                deadline = conn.next_deadline();
                timer.as_mut().reset(deadline.unwrap_or_else(|| Instant::now() + FOREVER));
            }
            () = &mut keepalive => {
                let now = Instant::now();
                match ping_sent {
                    Some(sent) if last_seen < sent => {
                        tracing::debug!(conn = conn.id(), "no pong within {:?}", config.pong_timeout);
                        end.end(EndReason::Timeout);
                    }
                    _ if now.duration_since(last_seen) >= config.ping_interval => {
                        let _ = conn.outbox.push(Outbound::Ping);
                        ping_sent = Some(now);
                        keepalive.as_mut().reset(now + config.pong_timeout);
                    }
                    _ => {
                        ping_sent = None;
                        keepalive.as_mut().reset(last_seen + config.ping_interval);
                    }
                }
            }
            frame = stream.next() => {
                last_seen = Instant::now();
                match frame {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        // Boxed: handling a message (a history answer, a wait
                        // for the history writer) needs more state than an
                        // idle connection should carry.
                        Box::pin(conn.on_data(message, end)).await;
                        let next = conn.next_deadline();
                        if next != deadline {
                            deadline = next;
                            timer.as_mut().reset(deadline.unwrap_or_else(|| Instant::now() + FOREVER));
                        }
                    }
                    Some(Ok(Message::Close(_))) => {
                        end.end(EndReason::Quit);
                        return stream;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(err)) => {
                        let reason = classify_read_error(&err);
                        tracing::debug!(conn = conn.id(), "read error: {err}");
                        end.end(reason);
                        return stream;
                    }
                    None => {
                        end.end(EndReason::Lost);
                        return stream;
                    }
                }
            }
        }
    }
}

/// A deadline that never comes, for a connection whose token never expires.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Why a read failed, as a session end reason (which picks the close code).
fn classify_read_error(err: &WsError) -> EndReason {
    match err {
        WsError::Capacity(_) => EndReason::TooBig,
        WsError::Utf8(_) => EndReason::BadUtf8,
        WsError::Io(err) => Violation::of(err).map_or(EndReason::Lost, Violation::end_reason),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => EndReason::Lost,
        WsError::Protocol(_) => EndReason::Protocol,
        WsError::ConnectionClosed | WsError::AlreadyClosed => EndReason::Quit,
        _ => EndReason::Lost,
    }
}

/// One request from the client (`files`: the connection's uploads and their limits).
async fn handle_frame(
    hub: &Hub,
    presence: &mut Presence,
    frame: ClientFrame<'_>,
    admission: &Admission,
    files: (&mut Option<Box<Uploads>>, UploadLimits),
) {
    let outbox = presence.outbox.clone();
    let result = match frame {
        ClientFrame::Chat { text, room, client_id } => {
            let client_id = client_id.as_deref();
            if let Err(refusal) = chat(hub, presence, &text, room.as_deref(), client_id).await {
                refuse(hub, &outbox, &refusal, client_id);
            }
            return;
        }
        ClientFrame::Username { name } => match hub.directory() {
            Some(directory) if admission.account.is_none() => shared::rename(hub, directory, presence, &name).await,
            _ => admission.rename(hub, presence, &name),
        },
        ClientFrame::Join { room } => hub.join(presence, &room),
        ClientFrame::Who => {
            let who = match hub.directory() {
                Some(directory) => shared::who(directory, presence).await,
                None => Ok(hub.who(presence)),
            };
            who.map(|who| {
                let _ = outbox.push_text(who);
            })
        }
        ClientFrame::Rooms => {
            let rooms = match hub.directory() {
                Some(directory) => shared::rooms(directory).await,
                None => Ok(hub.rooms()),
            };
            rooms.map(|rooms| {
                let _ = outbox.push_text(rooms);
            })
        }
        ClientFrame::History { room, after_seq, before_seq, limit } => {
            let room = room.as_deref().unwrap_or(presence.room.name());
            match names::room(room) {
                Err(why) => Err(Refusal::new(ErrorCode::InvalidRoom, why)),
                Ok(room) => {
                    let request = HistoryRequest { after_seq, before_seq, limit };
                    hub.archive().answer(&room, request).await.map(|answer| {
                        let _ = outbox.push_text(answer);
                    })
                }
            }
        }
        ClientFrame::FileOffer(offer) => {
            let (uploads, limits) = files;
            let uploads = uploads.get_or_insert_with(|| Box::new(Uploads::new(limits)));
            return transfer::offer(hub, presence, uploads, &offer).await;
        }
        ClientFrame::FileChunk { upload_id, offset } => {
            // Not an upload in progress (those are taken before the rate limit).
            let mut none = Uploads::new(files.1);
            let uploads = files.0.as_deref_mut().unwrap_or(&mut none);
            transfer::chunk_header(hub, presence, uploads, &upload_id, offset);
            return;
        }
        ClientFrame::FileCancel { upload_id } => {
            if let Some(uploads) = files.0.as_deref_mut() {
                uploads.cancel(&upload_id);
            }
            return;
        }
    };
    if let Err(refusal) = result {
        refuse(hub, &outbox, &refusal, None);
    }
}

/// A `chat` request: checked, published, acknowledged.
async fn chat(
    hub: &Hub,
    presence: &Presence,
    text: &str,
    room: Option<&str>,
    client_id: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(why) = client_id.and_then(check_client_id) {
        return Err(Refusal::new(ErrorCode::InvalidClientId, why));
    }
    if let Some(room) = room
        && names::room(room).as_deref() != Ok(presence.room.name())
    {
        return Err(Refusal::new(
            ErrorCode::NotInRoom,
            format!("you are in {:?}, not {room:?}; join it first", presence.room.name()),
        ));
    }
    if text.is_empty() {
        return Err(Refusal::new(ErrorCode::EmptyMessage, "empty message: \"text\" must not be empty"));
    }
    send(hub, presence, Payload::Text { text, client_id }).await
}

/// Publish a message. With history on, it first waits for room in the
/// writer queue, and the writer acks once the message is stored.
pub(super) async fn send(hub: &Hub, presence: &Presence, payload: Payload<'_>) -> Result<(), Refusal> {
    if let Some(directory) = hub.directory() {
        return shared::send(hub, directory, presence, payload).await;
    }
    let end = presence.outbox.session_end();
    let slot = tokio::select! {
        biased;
        slot = hub.archive().reserve() => slot?,
        () = end.ended() => return Ok(()),
    };
    let acked_later = slot.is_some();
    let published = hub.publish(presence, payload, slot);
    if !acked_later {
        let _ = presence.outbox.push_text(published.ack(&payload));
    }
    Ok(())
}

/// Answer a refused request with an `error` event.
pub(super) fn refuse(hub: &Hub, outbox: &Outbox, refusal: &Refusal, client_id: Option<&str>) {
    hub.metrics().errors.increment(1);
    let event = ServerEvent::refused(refusal, client_id);
    let _ = outbox.push_text(event.encode());
}

/// Write queued items until the session ends, then send the close frame.
async fn write_loop<Si>(
    mut sink: Si,
    mut queue: OutboxReceiver,
    config: &SessionConfig,
    end: &SessionEnd,
    metrics: &Metrics,
) -> Si
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    // One wait for the end for the whole loop (see the read loop).
    let ended = end.ended();
    tokio::pin!(ended);
    loop {
        let item = tokio::select! {
            biased;
            () = &mut ended => break,
            item = queue.recv() => item,
        };
        let Some(item) = item else { break };
        let written = tokio::select! {
            biased;
            () = &mut ended => break,
            written = write_batch(&mut sink, item, &mut queue) => written,
        };
        let Ok(items) = written else {
            end.end(EndReason::Lost);
            break;
        };
        metrics.outbox_depth.record(items as f64);
    }
    // Send our close frame (unless the client closed first), then flush: after
    // a client's close that sends the reply tungstenite queued. A client that
    // does not read gets a bounded wait.
    let reason = end.reason();
    if reason != EndReason::Lost {
        let _ = timeout(config.close_timeout, async {
            if flushes_before_close(reason) {
                while let Some(item) = queue.try_recv() {
                    feed(&mut sink, item).await?;
                }
            }
            if let Some(frame) = reason.close_frame() {
                sink.send(Message::Close(Some(frame))).await?;
            }
            sink.close().await
        })
        .await;
    }
    sink
}

/// Does what is already queued still go out before our close frame? Yes when
/// the client can still read (it broke a rule, or the server is stopping); no
/// when it is gone, closed first, or is too slow to read.
fn flushes_before_close(reason: EndReason) -> bool {
    !matches!(reason, EndReason::Quit | EndReason::Lost | EndReason::Slow | EndReason::Timeout)
}

/// Write `first` and whatever else is queued (up to a batch), then flush
/// once; how many items went out.
async fn write_batch<Si>(sink: &mut Si, first: Outbound, queue: &mut OutboxReceiver) -> Result<usize, WsError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    feed(sink, first).await?;
    let mut items = 1;
    while items < MAX_BATCH {
        let Some(item) = queue.try_recv() else { break };
        feed(sink, item).await?;
        items += 1;
    }
    sink.flush().await?;
    Ok(items)
}

async fn feed<Si>(sink: &mut Si, item: Outbound) -> Result<(), WsError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    let (first, second) = item.into_messages();
    sink.feed(first).await?;
    if let Some(second) = second {
        sink.feed(second).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metrics::Metrics;
    use futures::channel::mpsc;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    /// A fake socket: frames in from one channel, frames out to another.
    struct Fake {
        incoming: mpsc::UnboundedReceiver<Result<Message, WsError>>,
        outgoing: mpsc::UnboundedSender<Message>,
    }

    impl Stream for Fake {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_next_unpin(cx)
        }
    }

    impl Sink<Message> for Fake {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.outgoing.unbounded_send(item).map_err(|_| WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    fn event(message: &Message) -> serde_json::Value {
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_timed_out() {
        let hub = Arc::new(Hub::new(10, Arc::new(Metrics::default())));
        let (_to_server, incoming) = mpsc::unbounded();
        let (outgoing, mut from_server) = mpsc::unbounded();
        let config = SessionConfig::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let hub = hub.clone();
            async move { run(Fake { incoming, outgoing }, &hub, &config, &shutdown, Admission::default()).await.1 }
        });
        assert_eq!(event(&from_server.next().await.unwrap())["type"], "welcome");
        assert!(matches!(from_server.next().await.unwrap(), Message::Ping(_)), "a ping after 30 s of silence");
        let close = from_server.next().await.unwrap();
        let Message::Close(Some(frame)) = close else { panic!("expected a close frame, got {close:?}") };
        assert_eq!(u16::from(frame.code), 1001);
        assert_eq!(task.await.unwrap(), EndReason::Timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_client_stays() {
        let hub = Arc::new(Hub::new(10, Arc::new(Metrics::default())));
        let (to_server, incoming) = mpsc::unbounded();
        let (outgoing, mut from_server) = mpsc::unbounded();
        let config = SessionConfig::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let hub = hub.clone();
            async move { run(Fake { incoming, outgoing }, &hub, &config, &shutdown, Admission::default()).await.1 }
        });
        from_server.next().await.unwrap();
        for _ in 0..5 {
            assert!(matches!(from_server.next().await.unwrap(), Message::Ping(_)));
            to_server.unbounded_send(Ok(Message::Pong(Default::default()))).unwrap();
        }
        to_server.unbounded_send(Ok(Message::Text("/who".into()))).unwrap();
        assert_eq!(event(&from_server.next().await.unwrap())["type"], "who");
        to_server.unbounded_send(Ok(Message::Close(None))).unwrap();
        assert_eq!(task.await.unwrap(), EndReason::Quit);
    }
}
