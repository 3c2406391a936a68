//! One WebSocket connection: a reader that turns frames into hub requests and
//! a writer that drains the connection's outbox onto the socket.
//!
//! Both run inside the connection's task (`tokio::join!`); when either ends it
//! ends the session, the other sees it and stops, and the connection leaves
//! the hub. The session is generic over `Sink + Stream` so tests can drive it
//! without a socket.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::auth::Admission;
use super::frames::{Violation, violation};
use super::hub::{Hub, Payload, Presence};
use super::limits::{MessageLimiter, RateLimit, Verdict};
use super::metrics::bump;
use super::outbox::{EndReason, LagPolicy, Outbound, Outbox, OutboxReceiver, SessionEnd};
use crate::protocol::{ClientFrame, ErrorCode, Refusal, ServerEvent, check_client_id, check_room, decode_client_text};

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
        }
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
    let lag = hub.history().is_on().then(|| LagPolicy {
        max_gap: config.max_gap,
        max_lag: config.max_lag,
        metrics: hub.metrics().clone(),
    });
    let (outbox, queue) = Outbox::with_lag_policy(config.max_queue_items, config.max_queue_bytes, end.clone(), lag);
    // Echo mode (protocol conformance): no hub, no welcome, frames go back as they came.
    let presence =
        (!admission.echo).then(|| hub.connect_as(outbox.clone(), admission.username(), admission.room.as_deref()));
    let mut conn = Conn { hub, presence, outbox, admission, limiter: MessageLimiter::new(config.rate_limit) };
    tracing::debug!(conn = conn.id(), user = conn.username(), "connected");
    let (sink, stream) = ws.split();
    let (stream, sink) =
        tokio::join!(read_loop(stream, &mut conn, config, &end), write_loop(sink, queue, config, &end));
    let reason = end.reason();
    tracing::debug!(conn = conn.id(), user = conn.username(), reason = reason.as_str(), "disconnected");
    hub.metrics().record_end(reason);
    if let Some(presence) = conn.presence {
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
}

impl Conn<'_> {
    fn id(&self) -> u64 {
        self.presence.as_ref().map_or(0, |p| p.conn)
    }

    fn username(&self) -> &str {
        self.presence.as_ref().map_or("(echo)", |p| &p.username)
    }

    /// A text or binary message from the client: rate-limited, then echoed
    /// or handled as chat.
    async fn on_data(&mut self, message: Message, end: &SessionEnd) {
        match self.limiter.check() {
            Verdict::Allow => {}
            Verdict::Drop => {
                let client_id = client_id_of(&message);
                return refuse(self.hub, &self.outbox, &rate_limited(&self.limiter), client_id.as_deref());
            }
            Verdict::Close => return end.end(EndReason::RateLimited),
        }
        let Some(presence) = self.presence.as_mut() else {
            let echo = match message {
                Message::Text(text) => Outbound::Text(text),
                Message::Binary(data) => Outbound::Bare(data),
                _ => return,
            };
            let _ = self.outbox.push(echo);
            return;
        };
        match message {
            Message::Text(text) => handle_text(self.hub, presence, &text, &self.admission).await,
            Message::Binary(data) => {
                if let Err(refusal) = send(self.hub, presence, Payload::Binary(&data)).await {
                    refuse(self.hub, &presence.outbox, &refusal, None);
                }
            }
            _ => {}
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

/// The `client_id` of a chat frame, to echo in its `error`.
fn client_id_of(message: &Message) -> Option<String> {
    let Message::Text(text) = message else { return None };
    match decode_client_text(text) {
        Ok(ClientFrame::Chat { client_id, .. }) => client_id.map(Cow::into_owned),
        _ => None,
    }
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
    let expiry = conn.admission.expiry();
    let token_expired = tokio::time::sleep_until(expiry.unwrap_or_else(|| last_seen + FOREVER));
    tokio::pin!(token_expired);
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
            () = &mut token_expired, if expiry.is_some() => {
                tracing::debug!(conn = conn.id(), "token expired");
                end.end(EndReason::Expired);
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
                        Box::pin(conn.on_data(message, end)).await
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
        WsError::Io(err) => match violation(err) {
            Some(Violation::TooManyFragments { .. }) => EndReason::Fragmented,
            Some(Violation::InvalidUtf8) => EndReason::BadUtf8,
            None => EndReason::Lost,
        },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => EndReason::Lost,
        WsError::Protocol(_) => EndReason::Protocol,
        WsError::ConnectionClosed | WsError::AlreadyClosed => EndReason::Quit,
        _ => EndReason::Lost,
    }
}

/// One text frame from the client.
async fn handle_text(hub: &Hub, presence: &mut Presence, text: &str, admission: &Admission) {
    let outbox = presence.outbox.clone();
    let frame = match decode_client_text(text) {
        Ok(frame) => frame,
        Err(refusal) => return refuse(hub, &outbox, &refusal, None),
    };
    let result = match frame {
        ClientFrame::Chat { text, room, client_id } => {
            let client_id = client_id.as_deref();
            if let Err(refusal) = chat(hub, presence, &text, room.as_deref(), client_id).await {
                refuse(hub, &outbox, &refusal, client_id);
            }
            return;
        }
        ClientFrame::Username { name } => admission.rename(hub, presence, &name),
        ClientFrame::Join { room } => hub.join(presence, &room),
        ClientFrame::Who => {
            let _ = outbox.push_text(hub.who(presence));
            Ok(())
        }
        ClientFrame::Rooms => {
            let _ = outbox.push_text(hub.rooms());
            Ok(())
        }
        ClientFrame::History { room, after_seq, before_seq, limit } => {
            let room = room.as_deref().unwrap_or(presence.room.name());
            match check_room(room) {
                Some(why) => Err(Refusal::new(ErrorCode::InvalidRoom, why)),
                None => hub.history().answer(room, after_seq, before_seq, limit).await.map(|answer| {
                    let _ = outbox.push_text(answer);
                }),
            }
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
        && room != presence.room.name()
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
async fn send(hub: &Hub, presence: &Presence, payload: Payload<'_>) -> Result<(), Refusal> {
    let end = presence.outbox.session_end();
    let slot = tokio::select! {
        biased;
        slot = hub.history().reserve() => slot?,
        () = end.ended() => return Ok(()),
    };
    let acked_later = slot.is_some();
    let published = hub.publish(presence, payload, slot);
    if !acked_later {
        let client_id = match payload {
            Payload::Text { client_id, .. } => client_id,
            Payload::Binary(_) => None,
        };
        let _ = presence.outbox.push_text(published.ack(client_id));
    }
    Ok(())
}

/// Answer a refused request with an `error` event.
fn refuse(hub: &Hub, outbox: &Outbox, refusal: &Refusal, client_id: Option<&str>) {
    bump(&hub.metrics().errors);
    let event = ServerEvent::refused(refusal, client_id);
    let _ = outbox.push_text(event.encode());
}

/// Write queued items until the session ends, then send the close frame.
async fn write_loop<Si>(mut sink: Si, mut queue: OutboxReceiver, config: &SessionConfig, end: &SessionEnd) -> Si
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
        if written.is_err() {
            end.end(EndReason::Lost);
            break;
        }
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

/// Write `first` and whatever else is queued (up to a batch), then flush once.
async fn write_batch<Si>(sink: &mut Si, first: Outbound, queue: &mut OutboxReceiver) -> Result<(), WsError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    feed(sink, first).await?;
    for _ in 1..MAX_BATCH {
        let Some(item) = queue.try_recv() else { break };
        feed(sink, item).await?;
    }
    sink.flush().await
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
