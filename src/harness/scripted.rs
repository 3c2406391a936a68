//! A bot following its group's script (see `script.rs`): one step after
//! another, from the bot's connect time until sending stops (the drain, or
//! a ctrl-c). Steps that wait (think, join, history, wait_for, file) set
//! when the script wakes next; the bot's session loop wakes it then, or
//! sooner when the awaited event arrives. Scripted messages go through the
//! same stamping and accounting as the rate-driven ones: the intended send
//! time of a step is when it became due.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::bot::{Bot, Conn, Content, HistoryFor, Outcome, TIMER_SLACK};
use super::metrics::{Kind, Live, Metric};
use super::scenario::{Group, Protocol, Range};
use super::script::{Action, Op, Part, Pick, Script, Template};
use crate::protocol::ClientFrame;

/// Where a bot is in its script.
#[derive(Debug)]
pub(super) struct ScriptState {
    script: Script,
    /// The next op.
    pc: usize,
    /// Turns left of each loop being run, innermost last.
    turns: Vec<u32>,
    /// When the next step runs (`None` while waiting or done).
    due: Option<Instant>,
    waiting: Option<Waiting>,
    done: bool,
    /// How far the `leave` being run has got (it runs again after each wait).
    leaving: Leaving,
    /// Per data set, how many lines this client has taken (`pick = "order"`).
    cursors: Vec<usize>,
}

/// What a step waits for.
#[derive(Debug)]
enum Waiting {
    /// The server's `joined` for this client.
    Joined { deadline: Instant },
    /// The answer to the script's `history` request.
    History { since: Instant, deadline: Instant },
    /// A chat containing `pattern`: the check `check`.
    Match { pattern: String, check: String, deadline: Instant },
    /// The upload's `ack` or `error` (the server times uploads out itself).
    Upload,
    /// Before `leave`: the answers to what was sent (a client that closes
    /// at once would leave its last messages unacknowledged, their
    /// deliveries missing from the accounting).
    Answers { deadline: Instant },
    /// Before `leave` closes: the `joined` of the room of its own it stepped
    /// into (see `Bot::leave`).
    SteppingOut { deadline: Instant },
}

/// Ask to move `conn` to `room` (a `join` step, or a `leave`'s step out).
async fn send_join(conn: &mut Conn, room: String) -> Result<(), WsError> {
    conn.ws.send(Message::Text(ClientFrame::Join { room: room.into() }.encode().into())).await
}

/// Longest wait for the `joined` of a `leave`'s step out (less when the
/// scenario's `connect_timeout` is shorter).
const STEP_OUT_WAIT: Duration = Duration::from_secs(2);

/// The stages of a `leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    Not,
    /// The answers to what was sent are in (or their time is up).
    Answered,
    /// Out of the room (or it could not step out): close now.
    SteppedOut,
}

impl ScriptState {
    pub(super) fn for_group(group: &Group) -> Option<ScriptState> {
        let script = group.script.clone()?;
        Some(ScriptState {
            script,
            pc: 0,
            turns: Vec::new(),
            due: Some(Instant::now()),
            waiting: None,
            done: false,
            leaving: Leaving::Not,
            cursors: Vec::new(),
        })
    }

    pub(super) fn starts_offline(&self) -> bool {
        self.script.starts_offline
    }

    /// The next op, loops handled; `None` at the end of the script.
    fn next_action(&mut self) -> Option<Action> {
        loop {
            let op = self.script.ops.get(self.pc)?.clone();
            self.pc += 1;
            match op {
                Op::Act(action) => return Some(action),
                Op::Loop { times, .. } => self.turns.push(times),
                Op::EndLoop { start } => match self.turns.last_mut() {
                    Some(left) if *left > 1 => {
                        *left -= 1;
                        self.pc = start + 1;
                    }
                    _ => {
                        self.turns.pop();
                    }
                },
            }
        }
    }
}

impl Bot {
    /// When the script needs the bot next (a step due, or a wait's deadline).
    pub(super) fn script_wake(&self) -> Option<Instant> {
        let script = self.script.as_ref().filter(|s| !s.done)?;
        match &script.waiting {
            None => script.due,
            Some(
                Waiting::Joined { deadline }
                | Waiting::History { deadline, .. }
                | Waiting::Match { deadline, .. }
                | Waiting::Answers { deadline }
                | Waiting::SteppingOut { deadline },
            ) => Some(*deadline),
            Some(Waiting::Upload) => None,
        }
    }

    /// Connected (again): a step that became due while connecting is due now,
    /// not at a time the connect's own delay would be charged to.
    pub(super) fn resume_script(&mut self) {
        let now = Instant::now();
        if let Some(script) = self.script.as_mut().filter(|s| s.waiting.is_none()) {
            script.due = script.due.map(|due| due.max(now));
        }
    }

    /// Is a `leave` under way? The group's rate-driven sends wait meanwhile:
    /// one sent during it would go to the room of its own, or close unanswered.
    pub(super) fn script_leaving(&self) -> bool {
        self.script.as_ref().is_some_and(|s| s.leaving != Leaving::Not)
    }

    /// Is a `wait_for` listening to chat texts?
    pub(super) fn script_listening(&self) -> bool {
        matches!(self.script.as_ref().and_then(|s| s.waiting.as_ref()), Some(Waiting::Match { .. }))
    }

    /// Run the steps that are due, until one waits; `Some` when the script
    /// ends the connection (`leave`).
    pub(super) async fn run_script(&mut self, conn: &mut Conn) -> Result<Option<Outcome>, WsError> {
        // The timer wakes a tick early (see TIMER_SLACK): what is due by then runs now.
        let now = Instant::now() + TIMER_SLACK;
        self.expire_wait(now);
        loop {
            let send_end = self.ctx.at(self.ctx.timeline.send_end());
            let Some(script) = self.script.as_mut() else { return Ok(None) };
            if script.done || script.waiting.is_some() || script.due.is_none_or(|due| due > now) {
                return Ok(None);
            }
            let intended = script.due.unwrap_or(now);
            if self.stopping || now >= send_end {
                script.done = true;
                return Ok(None);
            }
            let Some(action) = script.next_action() else {
                script.done = true;
                return Ok(None);
            };
            if let Some(outcome) = self.act(conn, action, intended).await? {
                return Ok(Some(outcome));
            }
        }
    }

    /// One step.
    async fn act(&mut self, conn: &mut Conn, action: Action, intended: Instant) -> Result<Option<Outcome>, WsError> {
        let deadline = Instant::now() + self.ctx.connect.timeout;
        match action {
            Action::Think(range) => {
                let pause = self.pick_duration(range);
                self.set_due(Some(intended.max(Instant::now()) + pause));
            }
            Action::Say(text) => {
                let text = self.render(&text);
                self.send_message(conn, Kind::Text, Content::Text(Some(text)), intended).await?;
            }
            Action::Binary(size) => {
                let size = self.rng_size(size);
                self.send_message(conn, Kind::Binary, Content::Binary(size), intended).await?;
            }
            Action::Rename(name) => {
                let name = self.render(&name);
                self.send_message(conn, Kind::Rename, Content::Rename(Some(name)), intended).await?;
            }
            Action::File { size, name } => {
                let (size, name) = (self.rng_size(size), self.render(&name));
                self.wait(Waiting::Upload);
                self.send_file(conn, size, Some(name), intended).await?;
            }
            Action::Join(room) => {
                let room = self.render(&room);
                self.wait(Waiting::Joined { deadline });
                send_join(conn, room).await?;
            }
            Action::History(limit) => {
                let request =
                    ClientFrame::History { room: None, after_seq: None, before_seq: None, limit: Some(limit) };
                conn.history_for.push_back(HistoryFor::Script);
                self.wait(Waiting::History { since: Instant::now(), deadline });
                conn.ws.send(Message::Text(request.encode().into())).await?;
            }
            Action::WaitFor { pattern, timeout, check } => {
                let pattern = self.render(&pattern);
                self.wait(Waiting::Match { pattern, check, deadline: Instant::now() + timeout });
            }
            Action::Leave => return self.leave(conn, deadline).await,
            // Validation puts `connect` only where the client is offline.
            Action::Connect => {}
        }
        Ok(None)
    }

    /// Disconnected after `leave` (or before a first `connect`): run the
    /// thinking up to the next `connect`. False if the run or the script ends first.
    pub(super) async fn offline_steps(&mut self) -> bool {
        loop {
            let send_end = self.ctx.at(self.ctx.timeline.send_end());
            let Some(script) = self.script.as_mut() else { return false };
            let Some(action) = script.next_action() else {
                script.done = true;
                return false;
            };
            match action {
                Action::Connect => {
                    self.set_due(Some(Instant::now()));
                    return !self.stopping && Instant::now() < send_end;
                }
                Action::Think(range) => {
                    let pause = self.pick_duration(range);
                    if !self.wait_until(Instant::now() + pause).await {
                        return false;
                    }
                }
                // Validation allows nothing else offline.
                _ => {}
            }
        }
    }

    /// A wait whose deadline passed: a failed check, or an error.
    fn expire_wait(&mut self, now: Instant) {
        let Some(script) = self.script.as_mut() else { return };
        let expired = match &script.waiting {
            Some(
                Waiting::Joined { deadline }
                | Waiting::History { deadline, .. }
                | Waiting::Match { deadline, .. }
                | Waiting::Answers { deadline }
                | Waiting::SteppingOut { deadline },
            ) => *deadline <= now,
            _ => false,
        };
        if !expired {
            return;
        }
        match script.waiting.take() {
            Some(Waiting::Match { check, .. }) => {
                self.metrics.check(&check, false);
                self.live.count(self.ctx.second(), Live::Check(false));
            }
            Some(Waiting::Joined { .. }) => self.metrics.count_error("script: join not confirmed in time"),
            Some(Waiting::History { .. }) => self.metrics.count_error("script: history not answered in time"),
            _ => {}
        }
        self.set_due(Some(now));
    }

    /// The server confirmed a join of this client to `room` (a `join`
    /// step's, or the room of its own a `leave` steps into).
    pub(super) fn script_joined(&mut self, room: &str) {
        if !matches!(
            self.script.as_ref().and_then(|s| s.waiting.as_ref()),
            Some(Waiting::Joined { .. } | Waiting::SteppingOut { .. })
        ) {
            return;
        }
        // What the old room still owed this client, then a fresh start in the new one.
        self.metrics.counters.tail_estimate += self.tail_since(&self.entered);
        self.room = room.to_string();
        self.entered = self.opened();
        self.finish_wait();
    }

    /// A join was refused (the error is counted by the caller).
    pub(super) fn script_join_refused(&mut self) -> bool {
        let joining = matches!(self.script.as_ref().and_then(|s| s.waiting.as_ref()), Some(Waiting::Joined { .. }));
        if joining {
            self.finish_wait();
        }
        joining
    }

    /// An `error` came while a `leave` steps out of the room: the server
    /// refused the `join` (its room limit, its rate limit). Not an error of
    /// the run (the step out is the harness's own frame): the client closes
    /// from where it is, counted in `left_in_room`. True if that was the case.
    pub(super) fn script_step_out_refused(&mut self) -> bool {
        let stepping =
            matches!(self.script.as_ref().and_then(|s| s.waiting.as_ref()), Some(Waiting::SteppingOut { .. }));
        if stepping {
            self.finish_wait();
        }
        stepping
    }

    /// The answer to the script's `history` request: `messages` of them.
    pub(super) fn script_history(&mut self, messages: u64) {
        let Some(Waiting::History { since, .. }) = self.script.as_ref().and_then(|s| s.waiting.as_ref()) else {
            return;
        };
        self.metrics.record(Metric::History, since.elapsed().as_micros() as u64);
        self.metrics.counters.history_reads += 1;
        self.metrics.counters.history_messages += messages;
        self.finish_wait();
    }

    /// The connection ended while a `wait_for` listened. At the run's end
    /// (or a ctrl-c) the check is pending: it had not failed, and is
    /// reported apart, not in `checks.rate`. Dropped by the server (or the
    /// network), the message can no longer come: the check failed.
    pub(super) fn script_cut_short(&mut self, dropped: bool) {
        let Some(script) = self.script.as_mut() else { return };
        let Some(Waiting::Match { check, .. }) = script.waiting.take_if(|w| matches!(w, Waiting::Match { .. })) else {
            return;
        };
        if dropped {
            self.metrics.check(&check, false);
            self.live.count(self.ctx.second(), Live::Check(false));
        } else {
            self.metrics.check_pending(&check);
        }
    }

    /// A chat text arrived while a `wait_for` listens.
    pub(super) fn script_heard(&mut self, text: &str) {
        let Some(Waiting::Match { pattern, check, .. }) = self.script.as_ref().and_then(|s| s.waiting.as_ref()) else {
            return;
        };
        if text.contains(pattern.as_str()) {
            let check = check.clone();
            self.metrics.check(&check, true);
            self.live.count(self.ctx.second(), Live::Check(true));
            self.finish_wait();
        }
    }

    /// Sends not answered yet, files waiting their turn to be offered included.
    fn unanswered(&self) -> bool {
        !self.pending.is_empty() || self.uploads.queued() > 0
    }

    /// An answer came: was it the last one a `leave` waits for?
    pub(super) fn script_answered(&mut self) {
        if !self.unanswered()
            && matches!(self.script.as_ref().and_then(|s| s.waiting.as_ref()), Some(Waiting::Answers { .. }))
        {
            self.finish_wait();
        }
    }

    /// The upload a `file` step started ended (stored or refused).
    pub(super) fn script_upload_done(&mut self) {
        if matches!(self.script.as_ref().and_then(|s| s.waiting.as_ref()), Some(Waiting::Upload)) {
            self.finish_wait();
        }
    }

    /// A `leave`: wait for the answers to what was sent, step out of the
    /// room, then close (`Outcome::Left`).
    ///
    /// A client that just closed would lose what the server had already
    /// queued to it: the server counts a message for every member when it
    /// fans it out (the sender's `ack` says so), but once it reads a close
    /// frame it may send no more data (RFC 6455 section 5.5.1), so whatever
    /// was still queued is dropped and the report would count it lost.
    /// Stepping into a room of its own first (a `join`, which the server
    /// confirms after it has taken the client out of its room and queued it
    /// every message that counted it) and reading up to that `joined` leaves
    /// nothing in flight; the others see it leave with reason `moved`. A
    /// connection that drops without this (`churn`) loses what was in flight.
    async fn leave(&mut self, conn: &mut Conn, deadline: Instant) -> Result<Option<Outcome>, WsError> {
        let stage = self.script.as_ref().map_or(Leaving::Not, |s| s.leaving);
        if stage == Leaving::Not && self.unanswered() {
            self.leave_again(Leaving::Answered);
            self.wait(Waiting::Answers { deadline });
            return Ok(None);
        }
        let own_room =
            (self.protocol() != Protocol::Raw).then(|| format!("left-{:08x}-{}", self.ctx.tag, self.plan.id));
        if let Some(room) = own_room.clone().filter(|_| stage != Leaving::SteppedOut) {
            self.leave_again(Leaving::SteppedOut);
            // Not the user's step: a server that does not answer soon gets a
            // close from the room (counted in `left_in_room`), not a stalled script.
            self.wait(Waiting::SteppingOut { deadline: deadline.min(Instant::now() + STEP_OUT_WAIT) });
            send_join(conn, room).await?;
            return Ok(None);
        }
        if own_room.is_some_and(|own| own != self.room) {
            // Refused, or not confirmed in time: what is in flight is lost with it.
            self.metrics.counters.left_in_room += 1;
        }
        if let Some(script) = self.script.as_mut() {
            script.leaving = Leaving::Not;
        }
        Ok(Some(Outcome::Left))
    }

    /// Run this `leave` again, at `stage`, once the wait is over.
    fn leave_again(&mut self, stage: Leaving) {
        if let Some(script) = self.script.as_mut() {
            script.pc -= 1;
            script.leaving = stage;
        }
    }

    fn wait(&mut self, waiting: Waiting) {
        if let Some(script) = self.script.as_mut() {
            script.waiting = Some(waiting);
            script.due = None;
        }
    }

    fn finish_wait(&mut self) {
        if let Some(script) = self.script.as_mut() {
            script.waiting = None;
            script.due = Some(Instant::now());
        }
    }

    fn set_due(&mut self, due: Option<Instant>) {
        if let Some(script) = self.script.as_mut() {
            script.due = due;
        }
    }

    fn pick_duration(&mut self, range: Range<Duration>) -> Duration {
        if range.max > range.min { self.rng.random_range(range.min..=range.max) } else { range.min }
    }

    fn rng_size(&mut self, range: Range<usize>) -> usize {
        self.rng.random_range(range.min..=range.max)
    }

    /// A template's text for this client, now.
    fn render(&mut self, template: &Template) -> String {
        let ctx = Arc::clone(&self.ctx);
        let mut out = String::new();
        for part in &template.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Bot => {
                    let _ = write!(out, "{}", self.plan.id);
                }
                Part::Seq => {
                    let _ = write!(out, "{}", self.metrics.counters.sent() + 1);
                }
                Part::Room => out.push_str(&self.room),
                Part::Group => out.push_str(&ctx.scenario.groups[self.plan.group].name),
                Part::Random(n) => {
                    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                    out.extend((0..*n).map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())])));
                }
                Part::Line(set) => {
                    let Some(data) = ctx.scenario.data.get(*set) else { continue };
                    let index = match data.pick {
                        Pick::Random => self.rng.random_range(0..data.lines.len()),
                        Pick::Order => {
                            let taken = self.take_line(*set);
                            (self.plan.id as usize + taken) % data.lines.len()
                        }
                    };
                    out.push_str(&data.lines[index]);
                }
            }
        }
        out
    }

    /// Lines this client took from data set `set` so far (then one more).
    fn take_line(&mut self, set: usize) -> usize {
        let Some(script) = self.script.as_mut() else { return 0 };
        if script.cursors.len() <= set {
            script.cursors.resize(set + 1, 0);
        }
        script.cursors[set] += 1;
        script.cursors[set] - 1
    }
}
