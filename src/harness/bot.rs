//! One simulated client: connects at its planned time, sends on its
//! schedule, receives and accounts for every delivery, drops and comes back
//! when its group churns, and closes at the end. It records into its own
//! `BotMetrics`; only per-second ticks leave it while it runs.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::metrics::{BotMetrics, Kind, Live, LiveWindow, Metric, Tick};
use super::scenario::{Arrival, Group, Protocol, Scenario};
use super::schedule::{SendSchedule, Timeline};
use super::stamp::Stamp;
use super::tracker::{Pending, PendingSend, SeqTracker};
use crate::client::connection::{ConnectError, ConnectOptions, WsStream, connect};
use crate::protocol::{ClientFrame, DEFAULT_ROOM, EventHeader};

/// How early a bot wakes before a scheduled send (the timer's granularity).
pub(super) const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The receive buffer a stalled client gets back when it reads again.
const RESUMED_RECV_BUFFER: usize = 4 << 20;

/// Most frames handled in a row without looking at the timers.
const READ_BATCH: usize = 32;

/// What every bot of a run shares (read-only but for the `connected` gauge).
#[derive(Debug)]
pub struct RunContext {
    pub scenario: Arc<Scenario>,
    pub timeline: Timeline,
    /// The servers, as `BotPlan::target` indexes them (the embedded one alone).
    pub targets: Vec<String>,
    pub connect: ConnectOptions,
    /// Marks this run's messages (see `stamp::run_tag`).
    pub tag: u32,
    /// The run's time zero, and the same instant as Unix microseconds.
    pub epoch: Instant,
    pub epoch_wall_us: i64,
    /// Cancelled on ctrl-c: stop sending, drain, finish.
    pub stop: CancellationToken,
    /// How long bots keep receiving after `stop`.
    pub drain_after_stop: Duration,
    /// Bots connected right now (raw mode derives expected deliveries from it).
    pub connected: AtomicUsize,
    /// Random letters message texts are cut from.
    pub filler: String,
    /// Per room, its top seq as acks tell it (raw: messages sent there): what
    /// a connection was owed while it was open, for the tail estimate.
    pub rooms: std::collections::HashMap<String, AtomicU64>,
}

impl RunContext {
    /// The traffic counter of `room` (0 for a room nobody planned).
    pub fn room_top(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |top| top.load(Ordering::Relaxed))
    }

    /// Now, as Unix microseconds on the run's clock.
    pub fn now_us(&self) -> i64 {
        self.wall_us(Instant::now())
    }

    pub fn wall_us(&self, instant: Instant) -> i64 {
        self.epoch_wall_us + instant.saturating_duration_since(self.epoch).as_micros() as i64
    }

    pub fn at(&self, offset: Duration) -> Instant {
        self.epoch + offset
    }

    /// Seconds since the start of the run.
    pub fn second(&self) -> u32 {
        self.second_at(Instant::now())
    }

    /// The second of the run `instant` falls in (no second clock read).
    pub fn second_at(&self, instant: Instant) -> u32 {
        instant.saturating_duration_since(self.epoch).as_secs() as u32
    }
}

/// Who a bot is and when it starts.
#[derive(Debug, Clone)]
pub struct BotPlan {
    /// Global index across every shard: the sender id in stamps.
    pub id: u32,
    /// Index of its group in the scenario.
    pub group: usize,
    /// Index of its server in `RunContext::targets`.
    pub target: usize,
    pub room: String,
    pub connect_at: Duration,
    pub seed: u64,
    /// Local address to connect from.
    pub bind: Option<SocketAddr>,
}

/// One open connection of a bot.
pub(super) struct Conn {
    /// Read and written from the bot's one task, so not split: a split
    /// stream takes a lock on every read and every write.
    pub ws: WsStream,
    /// Per-sender sequence tracking of this connection.
    pub tracker: SeqTracker,
    /// A `binary` announcement was read; the frame comes next.
    pub expect_binary: bool,
    /// `history` fetches under way after `gap`s: (next after_seq, last seq wanted).
    pub recovering: Vec<(u64, u64)>,
    pub user_id: Option<String>,
    pub reading: bool,
    /// The socket itself (a duplicate descriptor), when the group shrank its
    /// receive buffer: reading again gives it a normal one back.
    pub socket: Option<std::os::fd::OwnedFd>,
    /// Per-sender sequence tracking of files (numbered apart: a file is
    /// announced when its upload ends, after messages sent meanwhile).
    pub file_tracker: SeqTracker,
    /// Who asked for each `history` request in flight, oldest first.
    pub history_for: std::collections::VecDeque<HistoryFor>,
}

/// Why a `history` request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HistoryFor {
    /// Fetching what a `gap` announced.
    Recovery,
    /// A script's `history` step.
    Script,
}

impl Conn {
    /// Sequence holes never filled, messages and files.
    fn missing(&self) -> u64 {
        self.tracker.missing() + self.file_tracker.missing()
    }

    /// Read again (`resume_reading_after`).
    fn resume_reading(&mut self) {
        self.reading = true;
        // A receive window smaller than loopback's 64 KiB segments makes
        // TCP crawl: the backlog is read at full speed with a normal buffer.
        if let Some(socket) = &self.socket {
            let _ = socket2::SockRef::from(socket).set_recv_buffer_size(RESUMED_RECV_BUFFER);
        }
    }
}

/// Where a connection's counts stood when it entered its room (for the tail estimate).
#[derive(Default)]
pub(super) struct Opened {
    room_top: u64,
    own: u64,
    gap_messages: u64,
    received: u64,
}

/// How a connection ended.
#[derive(PartialEq, Eq)]
pub(super) enum Outcome {
    /// The run is over.
    Finished,
    /// Churn: reconnect after the downtime.
    Churn,
    /// The server closed or the network failed.
    Dropped,
    /// The script said `leave`.
    Left,
}

/// What a message carries, beyond its stamp.
pub(super) enum Content {
    /// A text: this one, or filler of the group's `text_size`.
    Text(Option<String>),
    /// A binary payload of this size.
    Binary(usize),
    /// A rename: to this name, or a generated one.
    Rename(Option<String>),
}

pub(super) struct Bot {
    pub plan: BotPlan,
    pub ctx: Arc<RunContext>,
    pub metrics: BotMetrics,
    pub live: LiveWindow,
    schedule: std::iter::Peekable<SendSchedule>,
    /// Closed model: when the next message goes.
    closed_next: Option<Instant>,
    pub rng: StdRng,
    /// Messages sent so far (the stamp's seq).
    seq: u64,
    renames: u64,
    pub pending: Pending,
    pub stopping: bool,
    pub end: Instant,
    /// The room the client is in (its planned room, until a script joins another).
    pub room: String,
    /// Where the counts stood when the client entered `room`.
    pub entered: Opened,
    /// The script being followed, if the group has one.
    pub script: Option<super::scripted::ScriptState>,
    /// Files offered so far (the stamps' seq for files).
    pub file_seq: u64,
    pub uploads: super::upload::Uploads,
}

/// Run one bot to the end of the run; its measurements come back.
pub async fn run(plan: BotPlan, ctx: Arc<RunContext>, ticks: mpsc::Sender<Tick>) -> BotMetrics {
    let group = &ctx.scenario.groups[plan.group];
    let schedule = SendSchedule::new(&ctx.timeline, group.rate, group.arrival, plan.seed).peekable();
    let closed_next =
        (group.arrival == Arrival::Closed && group.rate > 0.0).then(|| ctx.at(ctx.timeline.steady_start()));
    let end = ctx.at(ctx.timeline.end());
    let mut bot = Bot {
        rng: StdRng::seed_from_u64(plan.seed ^ 0x5eed_c0de),
        plan,
        ctx,
        metrics: BotMetrics::default(),
        live: LiveWindow::new(ticks),
        schedule,
        closed_next,
        seq: 0,
        renames: 0,
        pending: Pending::default(),
        stopping: false,
        end,
        room: String::new(),
        entered: Opened::default(),
        script: None,
        file_seq: 0,
        uploads: super::upload::Uploads::default(),
    };
    bot.room = bot.plan.room.clone();
    bot.script = super::scripted::ScriptState::for_group(bot.group());
    bot.lifetime().await;
    bot.live.flush();
    bot.metrics
}

impl Bot {
    pub(super) fn group(&self) -> &Group {
        &self.ctx.scenario.groups[self.plan.group]
    }

    pub(super) fn protocol(&self) -> Protocol {
        self.ctx.scenario.protocol
    }

    async fn lifetime(&mut self) {
        let start = self.ctx.at(self.plan.connect_at);
        if !self.wait_until(start).await {
            return;
        }
        if self.script.as_ref().is_some_and(|s| s.starts_offline()) && !self.offline_steps().await {
            return;
        }
        let mut first = true;
        loop {
            let Some(mut conn) = self.open().await else {
                if first {
                    return;
                }
                self.metrics.counters.dropped += 1;
                return;
            };
            first = false;
            self.ctx.connected.fetch_add(1, Ordering::Relaxed);
            self.entered = self.opened();
            self.resume_script();
            let outcome = self.session(&mut conn).await;
            self.ctx.connected.fetch_sub(1, Ordering::Relaxed);
            self.metrics.counters.tail_estimate += self.tail_since(&self.entered);
            self.metrics.counters.missing += conn.missing();
            let unanswered = self.pending.len() as u64;
            self.metrics.counters.unacked += unanswered;
            if !matches!(outcome, Outcome::Churn | Outcome::Left) {
                // The server ended the connection, or did not answer before the end.
                self.metrics.count_errors("sends never answered", unanswered);
            }
            self.pending.clear();
            // Files due but still waiting their turn were never sent: skipped.
            self.metrics.counters.skipped += self.uploads.clear() as u64;
            self.room = self.plan.room.clone();
            match outcome {
                Outcome::Finished => {
                    self.script_cut_short(false);
                    return;
                }
                Outcome::Dropped => {
                    self.script_cut_short(true);
                    self.metrics.counters.dropped += 1;
                    return;
                }
                Outcome::Churn => {
                    let downtime = self.group().churn.map_or(Duration::ZERO, |c| c.downtime);
                    if !self.wait_until(Instant::now() + downtime).await || Instant::now() >= self.end {
                        return;
                    }
                }
                Outcome::Left => {
                    if !self.offline_steps().await {
                        return;
                    }
                }
            }
            self.skip_missed_sends();
            self.metrics.counters.reconnects += 1;
        }
    }

    pub(super) fn opened(&self) -> Opened {
        let c = &self.metrics.counters;
        Opened {
            room_top: self.ctx.room_top(&self.room),
            own: c.room_messages(),
            gap_messages: c.gap_messages,
            received: c.received(),
        }
    }

    /// Messages of its room the connection opened at `opened` was owed and
    /// never read, by estimate.
    pub(super) fn tail_since(&self, opened: &Opened) -> u64 {
        let c = &self.metrics.counters;
        let traffic = self.ctx.room_top(&self.room).saturating_sub(opened.room_top);
        let own = c.room_messages().saturating_sub(opened.own);
        let accounted = own + (c.gap_messages - opened.gap_messages) + (c.received() - opened.received);
        traffic.saturating_sub(accounted)
    }

    /// Sleep until `at`; false if the run is stopped or over first.
    pub(super) async fn wait_until(&mut self, at: Instant) -> bool {
        tokio::select! {
            () = self.ctx.stop.cancelled() => false,
            () = sleep_until(at.min(self.end)) => at < self.end,
        }
    }

    /// Sends scheduled while disconnected are skipped, not sent late.
    fn skip_missed_sends(&mut self) {
        let now = Instant::now();
        while let Some(offset) = self.schedule.peek() {
            if self.ctx.at(*offset) >= now {
                break;
            }
            self.schedule.next();
            self.metrics.counters.skipped += 1;
        }
        if let Some(next) = self.closed_next
            && next < now
        {
            self.closed_next = Some(now);
        }
    }

    /// Connect, read `welcome`, join the room; `None` (counted) on failure.
    async fn open(&mut self) -> Option<Conn> {
        let started = Instant::now();
        let mut options = self.ctx.connect.clone();
        options.bind = self.plan.bind;
        options.recv_buffer = self.group().recv_buffer;
        // Ask for the room at the handshake (no detour through the lobby);
        // a server that ignores `?room=` gets a `join` after the welcome.
        let target = &self.ctx.targets[self.plan.target];
        let url = match self.protocol() {
            Protocol::Raw => target.clone(),
            _ if self.plan.room == DEFAULT_ROOM => target.clone(),
            _ => with_query(target, "room", &self.plan.room),
        };
        let ws = match connect(&url, &options).await {
            Ok(ws) => ws,
            Err(err) => {
                self.metrics.counters.connects_failed += 1;
                self.metrics.count_error(connect_error_kind(&err));
                self.live.count(self.ctx.second(), Live::Error);
                tracing::debug!(bot = self.plan.id, "connect failed: {err}");
                return None;
            }
        };
        let socket = match ws.get_ref() {
            MaybeTlsStream::Plain(tcp) if options.recv_buffer.is_some() => tcp.as_fd().try_clone_to_owned().ok(),
            _ => None,
        };
        let mut conn = Conn {
            ws,
            tracker: SeqTracker::default(),
            expect_binary: false,
            recovering: Vec::new(),
            user_id: None,
            reading: true,
            socket,
            file_tracker: SeqTracker::default(),
            history_for: std::collections::VecDeque::new(),
        };
        if self.protocol().speaks_chorus() {
            let joined = timeout(self.ctx.connect.timeout, self.enter_room(&mut conn)).await;
            if !matches!(joined, Ok(Ok(()))) {
                let kind = match joined {
                    Err(_) => "connect: no welcome/joined in time".to_string(),
                    Ok(Err(why)) => format!("connect: {why}"),
                    Ok(Ok(())) => unreachable!(),
                };
                self.metrics.counters.connects_failed += 1;
                self.metrics.count_error(&kind);
                return None;
            }
        }
        self.metrics.record(Metric::Connect, started.elapsed().as_micros() as u64);
        self.metrics.counters.connects_ok += 1;
        Some(conn)
    }

    /// Read `welcome`, then join the bot's room and wait for the confirmation.
    async fn enter_room(&mut self, conn: &mut Conn) -> Result<(), String> {
        let (user_id, welcome_room) = loop {
            let text = next_text(conn).await?;
            let header = EventHeader::decode(&text).map_err(|e| format!("bad welcome: {e}"))?;
            if header.kind == "welcome" {
                let user_id = header.user_id.map(|u| u.into_owned()).unwrap_or_default();
                break (user_id, header.room.map(|r| r.into_owned()).unwrap_or_default());
            }
        };
        conn.user_id = Some(user_id.clone());
        let room = self.plan.room.clone();
        if room == welcome_room {
            return Ok(());
        }
        let join = ClientFrame::Join { room: room.as_str().into() }.encode();
        conn.ws.send(Message::Text(join.into())).await.map_err(|e| e.to_string())?;
        loop {
            let text = next_text(conn).await?;
            let Ok(header) = EventHeader::decode(&text) else { continue };
            match header.kind.as_ref() {
                "joined" if header.user_id.as_deref() == Some(user_id.as_str()) => return Ok(()),
                "error" => return Err(format!("join refused: {}", header.code.unwrap_or_default())),
                _ => {}
            }
        }
    }

    /// The next scheduled send, unless stopping or past the sending phases.
    fn next_send(&mut self) -> Option<Instant> {
        if self.stopping || self.script_leaving() {
            return None;
        }
        let send_end = self.ctx.at(self.ctx.timeline.send_end());
        let next = match self.group().arrival {
            Arrival::Closed => self.closed_next?,
            _ => self.ctx.at(*self.schedule.peek()?),
        };
        (next < send_end).then_some(next)
    }

    /// Run one connection until the run ends, churn, or the server drops it.
    async fn session(&mut self, conn: &mut Conn) -> Outcome {
        let churn_at = self.churn_at();
        let (stop_reading_at, resume_reading_at) = self.stall();
        let mut resumed = false;
        let far = self.end + Duration::from_secs(3600);
        // The timers live across iterations and are reset only when their
        // deadline changes: a bot reads up to thousands of frames a second,
        // and creating, registering and dropping five timers per frame was a
        // quarter of the harness's CPU.
        let ctx = Arc::clone(&self.ctx);
        let cancelled = ctx.stop.cancelled();
        let end_timer = sleep_until(self.end);
        let churn_timer = sleep_until(churn_at.unwrap_or(far));
        let reading_timer = sleep_until(far);
        let send_timer = sleep_until(far);
        // Counts of a second go to progress when the second is over, even
        // for a bot that then has nothing more to do.
        let flush_timer = sleep_until(far);
        let script_timer = sleep_until(far);
        tokio::pin!(cancelled, end_timer, churn_timer, reading_timer, send_timer, flush_timer, script_timer);
        let mut script_armed = None;
        let mut send_armed = None;
        let mut reading_armed = None;
        let mut flush_armed = None;
        loop {
            // Wake a timer tick early: tokio's timer has millisecond
            // granularity, and a send that would always be up to 1ms late
            // would add that to every corrected latency.
            let next_send = self.next_send().map(|at| at.checked_sub(TIMER_SLACK).unwrap_or(at));
            let stop_reading = stop_reading_at.filter(|_| conn.reading && !resumed);
            let resume_reading = resume_reading_at.filter(|_| !conn.reading && !resumed);
            let reading_change = stop_reading.or(resume_reading);
            rearm(send_timer.as_mut(), &mut send_armed, next_send, far);
            rearm(reading_timer.as_mut(), &mut reading_armed, reading_change, far);
            let flush_at = self.live.pending_second().map(|s| self.ctx.at(Duration::from_secs(u64::from(s) + 1)));
            rearm(flush_timer.as_mut(), &mut flush_armed, flush_at, far);
            let script_at = self.script_wake().map(|at| at.checked_sub(TIMER_SLACK).unwrap_or(at));
            rearm(script_timer.as_mut(), &mut script_armed, script_at, far);
            tokio::select! {
                biased;
                () = &mut cancelled, if !self.stopping => {
                    self.stopping = true;
                    self.end = self.end.min(Instant::now() + self.ctx.drain_after_stop);
                    end_timer.as_mut().reset(self.end);
                }
                () = &mut end_timer => {
                    self.closing(conn).await;
                    return Outcome::Finished;
                }
                () = &mut churn_timer, if churn_at.is_some() => {
                    self.closing(conn).await;
                    return Outcome::Churn;
                }
                () = &mut reading_timer, if reading_change.is_some() => {
                    reading_armed = None;
                    if stop_reading.is_some() {
                        conn.reading = false;
                    } else {
                        conn.resume_reading();
                        resumed = true;
                    }
                }
                () = &mut flush_timer, if flush_at.is_some() => {
                    flush_armed = None;
                    self.live.flush();
                }
                () = &mut send_timer, if next_send.is_some() => {
                    send_armed = None;
                    if let Err(err) = self.send(conn).await {
                        self.note_failure(&err);
                        return Outcome::Dropped;
                    }
                }
                () = &mut script_timer, if script_at.is_some() => {
                    script_armed = None;
                    if let Err(outcome) = self.script_steps(conn).await {
                        return outcome;
                    }
                }
                frame = conn.ws.next(), if conn.reading => {
                    if let Err(outcome) = self.on_frames(conn, frame).await {
                        return outcome;
                    }
                }
            }
        }
    }

    /// When churn drops this connection, if the group churns: exponentially
    /// distributed around `churn.every`.
    fn churn_at(&mut self) -> Option<Instant> {
        self.group().churn.map(|churn| {
            let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
            Instant::now() + churn.every.mul_f64(-u.ln())
        })
    }

    /// When the group's clients stop reading, and when they read again.
    fn stall(&self) -> (Option<Instant>, Option<Instant>) {
        let steady = self.ctx.timeline.steady_start();
        let stop_reading_at = self.group().stop_reading_after.map(|d| self.ctx.at(steady + d));
        let resume_reading_at = self.group().resume_reading_after.map(|d| self.ctx.at(steady + d));
        (stop_reading_at, resume_reading_at)
    }

    /// The script's steps that are due; `Err` ends the connection.
    async fn script_steps(&mut self, conn: &mut Conn) -> Result<(), Outcome> {
        match self.run_script(conn).await {
            Ok(None) => Ok(()),
            Ok(Some(outcome)) => {
                self.closing(conn).await;
                Err(outcome)
            }
            Err(err) => {
                self.note_failure(&err);
                Err(Outcome::Dropped)
            }
        }
    }

    /// `frame`, then the frames already read behind it; `Err` ends the connection.
    async fn on_frames(&mut self, conn: &mut Conn, frame: Option<Result<Message, WsError>>) -> Result<(), Outcome> {
        self.on_frame(conn, frame).await?;
        // Frames already read from the socket are handled without another
        // turn of every timer (a turn costs as much as handling a frame); a
        // bounded batch, so a scheduled send waits at most that long.
        for _ in 1..READ_BATCH {
            let Some(frame) = conn.ws.next().now_or_never() else { break };
            self.on_frame(conn, frame).await?;
        }
        Ok(())
    }

    /// One frame (or the end of the stream); `Err` ends the connection.
    async fn on_frame(&mut self, conn: &mut Conn, frame: Option<Result<Message, WsError>>) -> Result<(), Outcome> {
        let err = match frame {
            Some(Ok(message)) => match self.read(conn, message).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            },
            Some(Err(err)) => err,
            None => {
                self.metrics.count_error("connection closed without a close frame");
                return Err(Outcome::Dropped);
            }
        };
        self.note_failure(&err);
        Err(Outcome::Dropped)
    }

    /// Count a frame's bytes, then handle it.
    async fn read(&mut self, conn: &mut Conn, message: Message) -> Result<(), WsError> {
        let bytes = message.len() as u64;
        self.metrics.counters.bytes_received += bytes;
        self.live.received_bytes(bytes);
        self.receive(conn, message).await
    }

    /// Close with 1000 and read until the server's answer (at most a
    /// second), handling what arrives meanwhile: deliveries still queued are
    /// counted, and a client that stopped reading only finds out here that
    /// the server had closed it.
    async fn closing(&mut self, conn: &mut Conn) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: Utf8Bytes::from_static("run finished") };
        let _ = conn.ws.send(Message::Close(Some(frame))).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match timeout(deadline.saturating_duration_since(Instant::now()), conn.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    if let Some(frame) = frame.filter(|f| f.code != CloseCode::Normal) {
                        self.metrics.count_close(format!("{} {}", u16::from(frame.code), frame.reason));
                    }
                    return;
                }
                Ok(Some(Ok(message))) => {
                    let _ = self.read(conn, message).await;
                }
                Ok(Some(Err(_)) | None) => {
                    self.metrics.count_close("connection dropped without a close frame".to_string());
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn note_failure(&mut self, err: &WsError) {
        match err {
            WsError::ConnectionClosed | WsError::AlreadyClosed => {}
            other => self.metrics.count_error(&format!("connection: {}", error_kind(other))),
        }
        self.live.count(self.ctx.second(), Live::Error);
    }

    /// Send the next scheduled message.
    async fn send(&mut self, conn: &mut Conn) -> Result<(), WsError> {
        let now = Instant::now();
        let intended = match self.group().arrival {
            Arrival::Closed => {
                self.closed_next = None;
                now
            }
            _ => self.ctx.at(self.schedule.next().unwrap_or_default()),
        };
        let kind = self.pick_kind();
        let group = self.group();
        let content = match kind {
            Kind::Text => Content::Text(None),
            Kind::Binary => Content::Binary(self.rng.random_range(group.binary_size.min..=group.binary_size.max)),
            Kind::Rename => Content::Rename(None),
            Kind::File => {
                let size = self.rng.random_range(group.file_size.min..=group.file_size.max);
                return self.send_file(conn, size, None, intended).await;
            }
        };
        self.send_message(conn, kind, content, intended).await
    }

    /// The lag of a send meant for `intended` (recorded), and the stamp's intended time.
    pub(super) fn lag(&mut self, intended: Instant) -> (Instant, Duration) {
        let now = Instant::now();
        // Sent a little early (see TIMER_SLACK): measure from the actual send.
        let intended = intended.min(now);
        let lag = now.saturating_duration_since(intended);
        self.metrics.record(Metric::Lag, lag.as_micros() as u64);
        (intended, lag)
    }

    /// Send one message meant for `intended`: stamped, remembered until its answer, counted.
    pub(super) async fn send_message(
        &mut self,
        conn: &mut Conn,
        kind: Kind,
        content: Content,
        intended: Instant,
    ) -> Result<(), WsError> {
        let (intended, lag) = self.lag(intended);
        let (message, pending) = self.build(content, intended, lag);
        if self.protocol().speaks_chorus() {
            match kind {
                Kind::Text if pending.client_id.is_some() => self.pending.text.push_back(pending),
                Kind::Text | Kind::Binary | Kind::File => self.pending.unlabeled.push_back((kind, pending)),
                Kind::Rename => self.pending.rename.push_back(pending),
            }
        }
        let bytes = message.len() as u64;
        conn.ws.send(message).await?;
        let counters = &mut self.metrics.counters;
        counters.bytes_sent += bytes;
        match kind {
            Kind::Text => counters.sent_text += 1,
            Kind::Binary => counters.sent_binary += 1,
            Kind::Rename => counters.sent_rename += 1,
            Kind::File => counters.sent_file += 1,
        }
        if self.protocol() == Protocol::Raw {
            // A raw relay sends to everyone else connected; nothing acks.
            let others = self.ctx.connected.load(Ordering::Relaxed).saturating_sub(1);
            self.metrics.counters.expected += others as u64;
            if let Some(top) = self.ctx.rooms.get(&self.room) {
                top.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.live.count(self.ctx.second(), Live::Sent(bytes));
        Ok(())
    }

    fn pick_kind(&mut self) -> Kind {
        let mix = self.group().mix;
        let roll = self.rng.random_range(0..mix.total().max(1));
        if roll < mix.text {
            Kind::Text
        } else if roll < mix.text + mix.binary {
            Kind::Binary
        } else if roll < mix.text + mix.binary + mix.rename {
            Kind::Rename
        } else {
            Kind::File
        }
    }

    /// The next stamp of this client.
    pub(super) fn stamp(&mut self, intended_us: i64, lag_us: u32) -> Stamp {
        self.seq += 1;
        Stamp { tag: self.ctx.tag, bot: self.plan.id, seq: self.seq, intended_us, lag_us }
    }

    /// The frame for one message, and what to remember until its ack.
    fn build(&mut self, content: Content, intended: Instant, lag: Duration) -> (Message, PendingSend) {
        let intended_us = self.ctx.wall_us(intended);
        let lag_us = lag.as_micros().min(u128::from(u32::MAX)) as u32;
        let pending = |client_id| PendingSend { client_id, intended_us, sent_us: intended_us + i64::from(lag_us) };
        let text = match content {
            Content::Rename(name) => {
                self.renames += 1;
                let name = name.unwrap_or_else(|| format!("{}-{}-{}", self.group().name, self.plan.id, self.renames));
                return (Message::Text(ClientFrame::Username { name: name.into() }.encode().into()), pending(None));
            }
            Content::Binary(size) => {
                let stamp = self.stamp(intended_us, lag_us);
                let mut data = Vec::with_capacity(size);
                stamp.write_binary(&mut data);
                data.resize(size, b'.');
                return (Message::Binary(data.into()), pending(None));
            }
            Content::Text(text) => text,
        };
        let size = match &text {
            None => self.rng.random_range(self.group().text_size.min..=self.group().text_size.max),
            Some(_) => 0,
        };
        let stamp = self.stamp(intended_us, lag_us);
        let ctx = Arc::clone(&self.ctx);
        let filler = &ctx.filler;
        match self.protocol() {
            Protocol::Raw | Protocol::ChorusPlain => {
                let message = match text {
                    None => stamp.raw_text(size, filler),
                    Some(text) => format!("{} {text}", stamp.to_text()),
                };
                (Message::Text(message.into()), pending(None))
            }
            Protocol::Chorus => {
                let client_id = stamp.to_text();
                let text = text.as_deref().unwrap_or(&filler[..size.min(filler.len())]);
                let frame =
                    ClientFrame::Chat { text: text.into(), room: None, client_id: Some(client_id.as_str().into()) };
                (Message::Text(frame.encode().into()), pending(Some(client_id)))
            }
        }
    }

    /// Closed model: the answer to our last message came; think, then send again.
    pub(super) fn answered(&mut self) {
        self.script_answered();
        if self.group().arrival == Arrival::Closed {
            let think = self.group().think_time;
            let pause = if think.max > think.min { self.rng.random_range(think.min..=think.max) } else { think.min };
            self.closed_next = Some(Instant::now() + pause);
        }
    }
}

/// Reset `timer` to `at` (none: `far`) if it is armed for another deadline.
fn rearm(timer: Pin<&mut Sleep>, armed: &mut Option<Instant>, at: Option<Instant>, far: Instant) {
    if at != *armed {
        timer.reset(at.unwrap_or(far));
        *armed = at;
    }
}

/// `url` with `name=value` added to its query, the value percent-encoded.
fn with_query(url: &str, name: &str, value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{name}={encoded}")
}

/// The next text frame (pings answered by tungstenite as we read).
async fn next_text(conn: &mut Conn) -> Result<Utf8Bytes, String> {
    loop {
        match conn.ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {}", frame.map(|f| f.to_string()).unwrap_or_default()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("connection closed".into()),
        }
    }
}

/// A short name for a connect failure, for counting by kind.
fn connect_error_kind(err: &ConnectError) -> &'static str {
    match err {
        ConnectError::BadUrl { .. } => "connect: bad url",
        ConnectError::Tls { .. } => "connect: tls",
        ConnectError::Unreachable { .. } => "connect: unreachable",
        ConnectError::TimedOut { .. } => "connect: timeout",
        ConnectError::Refused { .. } => "connect: handshake refused",
        ConnectError::NotWebSocket { .. } => "connect: not a WebSocket endpoint",
    }
}

/// A short name for a WebSocket error, for counting by kind.
fn error_kind(err: &WsError) -> String {
    match err {
        WsError::Io(io) => format!("io {:?}", io.kind()),
        WsError::Protocol(p) => format!("protocol {p}"),
        WsError::Capacity(_) => "message too big".into(),
        other => other.to_string(),
    }
}
