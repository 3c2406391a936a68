//! What a bot does with each frame it receives: deliveries (latency and
//! sequence tracking), acks (ack latency and expected deliveries), errors,
//! closes, and `gap`s, which it recovers through `history`.

use std::sync::LazyLock;

use base64::Engine as _;
use futures_util::SinkExt;
use memchr::memmem::Finder;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::bot::{Bot, Conn, HistoryFor};
use super::metrics::{Kind, Live, Metric};
use super::scenario::Protocol;
use super::stamp::Stamp;
use super::tracker::{Arrival, PendingSend};
use super::upload::UPLOAD_ERRORS;
use crate::protocol::{ClientFrame, ErrorCode, EventHeader, HISTORY_MAX_LIMIT, ServerEvent};

impl Bot {
    /// Handle one frame; an error ends the connection.
    pub(super) async fn receive(&mut self, conn: &mut Conn, message: Message) -> Result<(), WsError> {
        match message {
            Message::Text(text) => match self.protocol() {
                Protocol::Raw => match Stamp::from_raw_text(&text) {
                    Some(stamp) if self.script_listening() => {
                        self.script_heard(text.split_once(' ').map_or("", |(_, t)| t));
                        self.deliver(conn, stamp, Kind::Text)
                    }
                    Some(stamp) => self.deliver(conn, stamp, Kind::Text),
                    None => self.metrics.counters.foreign += 1,
                },
                Protocol::Chorus | Protocol::ChorusPlain => self.on_event(conn, &text).await?,
            },
            Message::Binary(data) => {
                let announced = std::mem::take(&mut conn.expect_binary);
                match Stamp::from_binary(&data) {
                    Some(stamp) if announced || self.protocol() == Protocol::Raw => {
                        self.deliver(conn, stamp, Kind::Binary)
                    }
                    _ => self.metrics.counters.foreign += 1,
                }
            }
            Message::Close(frame) => {
                let what = frame
                    .map_or_else(|| "no close code".to_string(), |f| format!("{} {}", u16::from(f.code), f.reason));
                self.metrics.count_close(what);
                return Err(WsError::ConnectionClosed);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Ok(())
    }

    /// A stamped message from another bot arrived live.
    fn deliver(&mut self, conn: &mut Conn, stamp: Stamp, kind: Kind) {
        if stamp.tag != self.ctx.tag {
            self.metrics.counters.foreign += 1;
            return;
        }
        if stamp.bot == self.plan.id {
            self.metrics.counters.echoes += 1;
            return;
        }
        if kind == Kind::File {
            return self.deliver_file(conn, stamp);
        }
        // One clock read per delivery: both latencies and the live second.
        let instant = tokio::time::Instant::now();
        let now = self.ctx.wall_us(instant);
        let latency = (now - stamp.intended_us).max(0) as u64;
        let metric = if kind == Kind::Binary { Metric::DeliveryBinary } else { Metric::DeliveryText };
        self.metrics.record(metric, latency);
        self.metrics.record(Metric::DeliveryRaw, (now - stamp.sent_us()).max(0) as u64);
        let counters = &mut self.metrics.counters;
        match conn.tracker.observe(stamp.bot, stamp.seq) {
            Arrival::Duplicate => {
                counters.duplicated += 1;
                return;
            }
            Arrival::Reordered => counters.reordered += 1,
            Arrival::Fresh => {}
        }
        match kind {
            Kind::Binary => counters.received_binary += 1,
            _ => counters.received_text += 1,
        }
        self.live.count(self.ctx.second_at(instant), Live::Received(latency));
    }

    /// A `file` event: a delivery of its own kind (its latency includes the upload).
    fn deliver_file(&mut self, conn: &mut Conn, stamp: Stamp) {
        let instant = tokio::time::Instant::now();
        let latency = (self.ctx.wall_us(instant) - stamp.intended_us).max(0) as u64;
        self.metrics.record(Metric::DeliveryFile, latency);
        match conn.file_tracker.observe(stamp.bot, stamp.seq) {
            Arrival::Duplicate => {
                self.metrics.counters.duplicated += 1;
                return;
            }
            Arrival::Reordered => self.metrics.counters.reordered += 1,
            Arrival::Fresh => {}
        }
        self.metrics.counters.received_file += 1;
        self.live.count(self.ctx.second_at(instant), Live::ReceivedFile);
    }

    /// One JSON event from a chorus server.
    async fn on_event(&mut self, conn: &mut Conn, text: &str) -> Result<(), WsError> {
        // Nearly every frame is a chat: find its stamp without decoding it all.
        if let Some(stamp) = quick_chat_stamp(text) {
            if self.script_listening() {
                self.hear(text);
            }
            self.deliver(conn, stamp, Kind::Text);
            return Ok(());
        }
        let Ok(header) = EventHeader::decode(text) else {
            self.metrics.count_error("undecodable event");
            return Ok(());
        };
        match header.kind.as_ref() {
            "chat" => {
                if let Some(said) = header.text.as_deref() {
                    self.script_heard(said);
                }
                match header
                    .client_id
                    .as_deref()
                    .and_then(Stamp::from_text)
                    .or_else(|| header.text.as_deref().and_then(Stamp::from_raw_text))
                {
                    Some(stamp) => self.deliver(conn, stamp, Kind::Text),
                    None => self.metrics.counters.foreign += 1,
                }
            }
            "binary" => conn.expect_binary = true,
            "file" => match header.client_id.as_deref().and_then(Stamp::from_text) {
                Some(stamp) => self.deliver(conn, stamp, Kind::File),
                None => self.metrics.counters.foreign += 1,
            },
            "ack" => self.ack(conn, &header).await?,
            "upload_ready" | "upload_progress" => self.upload_event(conn, text).await?,
            "joined" if header.user_id.is_some() && header.user_id.as_deref() == conn.user_id.as_deref() => {
                self.script_joined(header.room.as_deref().unwrap_or_default());
            }
            "renamed" if header.user_id.is_some() && header.user_id.as_deref() == conn.user_id.as_deref() => {
                if let Some(pending) = self.pending.rename.pop_front() {
                    self.acked(Kind::Rename, &pending);
                }
            }
            "error" if UPLOAD_ERRORS.contains(&header.code.as_deref().unwrap_or_default()) => {
                self.metrics.count_error(header.code.as_deref().unwrap_or_default());
                self.live.count(self.ctx.second(), Live::Error);
                self.upload_refused(conn, text).await?;
            }
            "error" => self.refused(conn, &header),
            "gap" => {
                self.metrics.counters.gaps += 1;
                if let (Some(from), Some(to)) = (header.from_seq, header.to_seq)
                    && from <= to
                {
                    self.metrics.counters.gap_messages += to - from + 1;
                    // Gaps come in runs while a client stays behind: extend
                    // the last range to fetch rather than queue one more.
                    let idle = conn.recovering.is_empty();
                    match conn.recovering.last_mut() {
                        Some(last) if from <= last.1 + 1 => last.1 = last.1.max(to),
                        _ => conn.recovering.push((from.saturating_sub(1), to)),
                    }
                    if idle {
                        self.request_history(conn).await?;
                    }
                }
            }
            "history" => match conn.history_for.pop_front() {
                Some(HistoryFor::Script) => {
                    let messages = match ServerEvent::decode(text) {
                        Ok(ServerEvent::History { messages, .. }) => messages.len() as u64,
                        _ => 0,
                    };
                    self.script_history(messages);
                }
                _ => self.recovered(conn, text).await?,
            },
            _ => {}
        }
        Ok(())
    }

    /// An `ack`: the deliveries it announces, and the send it answers.
    async fn ack(&mut self, conn: &mut Conn, header: &EventHeader<'_>) -> Result<(), WsError> {
        let recipients = header.recipients.unwrap_or(0);
        self.metrics.counters.expected += recipients;
        self.live.count(self.ctx.second(), Live::Expected(recipients));
        if let (Some(seq), Some(top)) = (header.seq, self.ctx.rooms.get(&self.room)) {
            top.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
        }
        match header.client_id.as_deref() {
            Some(client_id) => {
                if let Some(pending) = self.pending.take_text(client_id) {
                    self.acked(Kind::Text, &pending);
                } else if let Some(pending) = self.pending.take_file(client_id) {
                    self.file_stored(conn, &pending).await?;
                }
            }
            None => {
                if let Some((kind, pending)) = self.pending.unlabeled.pop_front() {
                    self.acked(kind, &pending);
                }
            }
        }
        Ok(())
    }

    /// A chat event's text, for a listening `wait_for`.
    fn hear(&mut self, event: &str) {
        if let Ok(header) = EventHeader::decode(event)
            && let Some(text) = header.text.as_deref()
        {
            self.script_heard(text);
        }
    }

    pub(super) fn acked(&mut self, kind: Kind, pending: &PendingSend) {
        let instant = tokio::time::Instant::now();
        let now = self.ctx.wall_us(instant);
        let latency = (now - pending.intended_us).max(0) as u64;
        self.metrics.record(kind.ack_metric(), latency);
        self.metrics.record(Metric::AckRaw, (now - pending.sent_us).max(0) as u64);
        self.metrics.counters.acked += 1;
        // An upload's ack is in the live count but not in the live ack
        // latency, as `ack` leaves `ack.file` out of the report.
        let live = if kind == Kind::File { Live::AckedFile } else { Live::Acked(latency) };
        self.live.count(self.ctx.second_at(instant), live);
        self.answered();
    }

    /// An `error` event: count it and retire the send (or the gap fetch) it answers.
    fn refused(&mut self, conn: &mut Conn, header: &EventHeader<'_>) {
        let code = header.code.as_deref().unwrap_or("unknown");
        let history_refused = [ErrorCode::HistoryFailed, ErrorCode::Unsupported].map(ErrorCode::as_str);
        let history = header.client_id.is_none() && history_refused.contains(&code);
        if !history && header.client_id.is_none() && self.script_step_out_refused() {
            return;
        }
        self.metrics.count_error(code);
        self.live.count(self.ctx.second(), Live::Error);
        if history {
            match conn.history_for.pop_front() {
                Some(HistoryFor::Script) => self.script_history(0),
                // Give up on that gap (its messages stay counted as never recovered).
                _ if !conn.recovering.is_empty() => {
                    conn.recovering.remove(0);
                }
                _ => {}
            }
            return;
        }
        if header.client_id.is_none() && code.contains("room") && self.script_join_refused() {
            return;
        }
        let retired = match header.client_id.as_deref() {
            Some(client_id) => self.pending.take_text(client_id).is_some(),
            None if code.contains("name") => self.pending.rename.pop_front().is_some(),
            None => self.pending.unlabeled.pop_front().is_some(),
        };
        if retired {
            self.answered();
        }
    }

    /// Ask for the next chunk of the oldest gap being recovered.
    async fn request_history(&mut self, conn: &mut Conn) -> Result<(), WsError> {
        let Some(&(after, to)) = conn.recovering.first() else { return Ok(()) };
        let limit = (to - after).min(u64::from(HISTORY_MAX_LIMIT)) as u32;
        let request = ClientFrame::History {
            room: Some(self.room.as_str().into()),
            after_seq: Some(after),
            // Only the gap: messages past it were delivered live.
            before_seq: Some(to + 1),
            limit: Some(limit),
        };
        conn.history_for.push_back(HistoryFor::Recovery);
        conn.ws.send(Message::Text(request.encode().into())).await
    }

    /// A `history` answer to a gap fetch: count what it recovers, ask for more.
    async fn recovered(&mut self, conn: &mut Conn, text: &str) -> Result<(), WsError> {
        let Some(&(after, to)) = conn.recovering.first() else { return Ok(()) };
        let Ok(ServerEvent::History { messages, .. }) = ServerEvent::decode(text) else {
            self.metrics.count_error("undecodable history");
            conn.recovering.remove(0);
            return Ok(());
        };
        let now = self.ctx.now_us();
        let mut last = after;
        for message in &messages {
            let (seq, stamp, file) = match message {
                ServerEvent::Chat { seq, client_id, .. } => {
                    (*seq, client_id.as_deref().and_then(Stamp::from_text), false)
                }
                ServerEvent::File { seq, client_id, .. } => {
                    (*seq, client_id.as_deref().and_then(Stamp::from_text), true)
                }
                ServerEvent::Binary { seq, data, .. } => {
                    let bytes = data.as_deref().and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
                    (*seq, bytes.as_deref().and_then(Stamp::from_binary), false)
                }
                _ => continue,
            };
            if seq <= after || seq > to {
                continue;
            }
            last = last.max(seq);
            let Some(stamp) = stamp.filter(|s| s.tag == self.ctx.tag && s.bot != self.plan.id) else { continue };
            let tracker = if file { &mut conn.file_tracker } else { &mut conn.tracker };
            if tracker.observe(stamp.bot, stamp.seq) == Arrival::Duplicate {
                self.metrics.counters.duplicated += 1;
                continue;
            }
            self.metrics.counters.recovered += 1;
            self.metrics.record(Metric::Recovery, (now - stamp.intended_us).max(0) as u64);
        }
        // Done, or nothing more to get: retention may have deleted the rest.
        if messages.is_empty() || last >= to || last == after {
            conn.recovering.remove(0);
        } else {
            conn.recovering[0].0 = last;
        }
        self.request_history(conn).await
    }
}

/// The stamp of a chorus `chat` event, found by scanning rather than
/// decoding: in `client_id`, or at the start of `text` (plain-text senders).
/// Inside a JSON string a quote is always escaped, so `"client_id":"` can only
/// be the key itself. Anything unexpected falls back to a full decode.
fn quick_chat_stamp(text: &str) -> Option<Stamp> {
    if !text.starts_with("{\"type\":\"chat\"") {
        return None;
    }
    // chorus writes `client_id` last: read it from the end, in the stamp's
    // few bytes, without searching the whole event.
    const LAST: &str = "\"client_id\":\"";
    if let Some(body) = text.strip_suffix("\"}")
        && let Some(open) = body.rfind('"')
        && body[..open + 1].ends_with(LAST)
    {
        return Stamp::from_text(&body[open + 1..]);
    }
    // Otherwise search (SIMD, finders built once): `client_id` elsewhere, or
    // the stamp at the start of `text` (plain-text senders get no client_id).
    static CLIENT_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(LAST));
    static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"text\":\""));
    let value = |key: &Finder<'_>| key.find(text.as_bytes()).map(|at| &text[at + key.needle().len()..]);
    if let Some(rest) = value(&CLIENT_ID) {
        return Stamp::from_text(&rest[..rest.find('"')?]);
    }
    let rest = value(&TEXT)?;
    let end = memchr::memchr2(b' ', b'"', rest.as_bytes())?;
    Stamp::from_text(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerEvent;

    fn chat(text: &str, client_id: Option<&str>) -> String {
        ServerEvent::Chat {
            room: "lobby".into(),
            seq: 4,
            msg_id: "m1".into(),
            from: "bot-\"7\"".into(),
            user_id: "u1".into(),
            text: text.into(),
            ts: "2026-11-28T15:29:58.123Z".into(),
            client_id: client_id.map(Into::into),
        }
        .encode()
    }

    #[test]
    fn stamps_are_found_without_a_full_decode() {
        let stamp = Stamp { tag: 77, bot: 3, seq: 9, intended_us: 1_764_344_998_123_456, lag_us: 12 };
        let id = stamp.to_text();
        assert_eq!(quick_chat_stamp(&chat("x \"client_id\":\"fake\" y", Some(&id))), Some(stamp));
        assert_eq!(quick_chat_stamp(&chat(&stamp.raw_text(40, "zzzzzzzzzzzz"), None)), Some(stamp));
        assert_eq!(quick_chat_stamp(&chat("no stamp here", None)), None);
        // A text that ends like a client_id is still text (its quotes are escaped).
        assert_eq!(quick_chat_stamp(&chat(&format!("a \"client_id\":\"{id}"), None)), None);
        // Another field order (another server) still finds it.
        let reordered = format!("{{\"type\":\"chat\",\"client_id\":\"{id}\",\"seq\":4}}");
        assert_eq!(quick_chat_stamp(&reordered), Some(stamp));
        assert_eq!(quick_chat_stamp("{\"type\":\"ack\",\"client_id\":\"x\"}"), None, "only chats");
    }
}
