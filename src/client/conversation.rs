//! The terminal client's side of a conversation, across connections: what
//! it shows for each event, what it sends on its own (the lost name and
//! room after a reconnect, requests for missed messages), and which answers
//! it still waits for. No sockets and no terminal here: `interactive` does
//! the I/O and carries out the `Effect`s.

use std::borrow::Cow;
use std::collections::HashMap;

use rand::Rng;

use super::connection::Received;
use super::display::{Display, stored_payload};
use super::recovery::{Fetch, Live, Recovery};
use crate::printable::{printable as p, printable_json};
use crate::protocol::{ClientFrame, DEFAULT_ROOM, ServerEvent};

/// Something for the I/O side to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A line about a server event (stdout).
    Print(String),
    /// A line from the client itself: reconnecting, resumed... (stdout, or
    /// stderr in `--json` mode so stdout stays one JSON event per line).
    Notice(String),
    Send(ClientFrame<'static>),
    SendBinary(Vec<u8>),
    /// The prompt is now this.
    Prompt(String),
}

/// Getting back where we were after a reconnect.
#[derive(Debug)]
struct Restore {
    name: Option<String>,
    room: String,
    /// Was history asked for what was missed?
    fetched: bool,
    /// Missed messages shown so far.
    missed: usize,
    /// Lines sent but not acknowledged before the connection dropped
    /// (client_id, text); those found in the history were delivered.
    unconfirmed: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Conversation {
    display: Display,
    json: bool,
    recovery: Recovery<Received>,
    /// Our name and room, as the server last confirmed them.
    name: Option<String>,
    room: String,
    /// Requests sent whose direct answer (ack, who, error...) has not come.
    pending: usize,
    /// Direct answers owed to our own restore requests (username, join);
    /// they come before the answers to anything typed after them.
    restore_answers: usize,
    /// Chats sent and not acknowledged: (client_id, text), oldest first.
    unacked: Vec<(String, String)>,
    restoring: Option<Restore>,
    /// Gap recoveries under way, per room: (missed, recovered so far).
    gaps: HashMap<String, (u64, u64)>,
    /// Makes our client_ids unique among clients: `c<tag>-<n>`.
    tag: String,
    next_client_id: u64,
    welcomed: bool,
}

/// The answer to a history request: how many of its messages are new.
fn seqs_of(messages: &[ServerEvent<'_>]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| match m {
            ServerEvent::Chat { seq, .. } | ServerEvent::Binary { seq, .. } => *seq,
            _ => 0,
        })
        .collect()
}

impl Conversation {
    pub fn new(display: Display, json: bool) -> Conversation {
        Conversation {
            display,
            json,
            recovery: Recovery::new(),
            name: None,
            room: DEFAULT_ROOM.to_string(),
            pending: 0,
            restore_answers: 0,
            unacked: Vec::new(),
            restoring: None,
            gaps: HashMap::new(),
            tag: format!("{:04x}", rand::rng().random::<u16>()),
            next_client_id: 1,
            welcomed: false,
        }
    }

    /// Requests still waiting for their answer.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Has this connection's `welcome` arrived (so typed lines can go out)?
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// A chat message typed by the user.
    pub fn chat(&mut self, text: &str) -> Effect {
        let client_id = format!("c{}-{}", self.tag, self.next_client_id);
        self.next_client_id += 1;
        self.unacked.push((client_id.clone(), text.to_string()));
        self.pending += 1;
        let frame =
            ClientFrame::Chat { text: Cow::Owned(text.to_string()), room: None, client_id: Some(client_id.into()) };
        Effect::Send(frame)
    }

    /// Any other request typed by the user.
    pub fn request(&mut self, frame: ClientFrame<'static>) -> Effect {
        if matches!(frame, ClientFrame::History { .. }) {
            self.recovery.user_request();
        }
        self.pending += 1;
        Effect::Send(frame)
    }

    /// A binary message typed by the user.
    pub fn binary(&mut self, data: Vec<u8>) -> Effect {
        self.pending += 1;
        Effect::SendBinary(data)
    }

    /// The connection is gone: show what was held back, forget the answers
    /// that will never come.
    pub fn disconnected(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for received in self.recovery.disconnected() {
            self.show(&received, &mut effects);
        }
        self.pending = 0;
        self.restore_answers = 0;
        self.gaps.clear();
        self.welcomed = false;
        effects
    }

    /// A new connection is up: once welcomed, restore name and room and
    /// fetch what was missed.
    pub fn reconnected(&mut self) {
        let mut unconfirmed = std::mem::take(&mut self.unacked);
        let room = match self.restoring.take() {
            Some(earlier) => {
                unconfirmed.splice(0..0, earlier.unconfirmed);
                earlier.room
            }
            None => self.room.clone(),
        };
        self.restoring = Some(Restore { name: self.name.clone(), room, fetched: false, missed: 0, unconfirmed });
    }

    /// React to one thing received from the server.
    pub fn on_received(&mut self, received: Received) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(event) = received.event() else {
            match &received {
                Received::Binary(data) => {
                    effects.push(Effect::Print(format!("* {} bytes of unannounced binary data", data.len())))
                }
                Received::Event { text, .. } => effects.push(Effect::Print(format!("? {}", p(text.as_str())))),
                Received::Closed(_) => {}
            }
            return effects;
        };
        let me = self.display.me().map(str::to_owned);
        let mine = |user_id: &str| me.as_deref() == Some(user_id);
        match &event {
            ServerEvent::Chat { room, seq, .. }
            | ServerEvent::Binary { room, seq, .. }
            | ServerEvent::File { room, seq, .. } => {
                let (room, seq) = (room.to_string(), *seq);
                if let Live::Show(received) = self.recovery.live(&room, seq, received.clone()) {
                    self.show(&received, &mut effects);
                }
                return effects;
            }
            ServerEvent::Welcome { username, room, .. } => {
                let (username, room) = (username.to_string(), room.to_string());
                self.show(&received, &mut effects);
                self.welcome(username, room, &mut effects);
                return effects;
            }
            ServerEvent::History { room, messages } => {
                let room = room.to_string();
                let seqs = seqs_of(messages);
                drop(event);
                self.history(&room, &seqs, &received, &mut effects);
                return effects;
            }
            ServerEvent::Gap { room, from_seq, to_seq } => {
                self.show(&received, &mut effects);
                if let Some(request) = self.recovery.gap(room, *from_seq, *to_seq) {
                    let entry = self.gaps.entry(room.to_string()).or_default();
                    entry.0 += to_seq.saturating_sub(*from_seq) + 1;
                    effects.push(Effect::Send(request));
                }
                return effects;
            }
            ServerEvent::Ack { client_id, seq, .. } => {
                self.recovery.seen(&self.room.clone(), *seq);
                self.unacked.retain(|(id, _)| Some(id.as_str()) != client_id.as_deref());
                self.pending = self.pending.saturating_sub(1);
            }
            ServerEvent::Error { code, client_id, message, .. } => {
                let error = (code.to_string(), message.to_string(), client_id.as_deref().map(str::to_string));
                drop(event);
                self.on_error(error, &received, &mut effects);
                return effects;
            }
            ServerEvent::Joined { user_id, room, .. } if mine(user_id) => {
                self.room = room.to_string();
                self.answered_me();
                if let Some(baseline) = self.recovery.entered(room) {
                    effects.push(Effect::Send(baseline));
                }
            }
            ServerEvent::Renamed { user_id, new, .. } if mine(user_id) => {
                self.name = Some(new.to_string());
                self.answered_me();
            }
            ServerEvent::Who { .. } | ServerEvent::Rooms { .. } => self.pending = self.pending.saturating_sub(1),
            _ => {}
        }
        drop(event);
        self.show(&received, &mut effects);
        self.prompt(&mut effects);
        effects
    }

    /// An `error` (code, message, client_id): a refused history fetch of
    /// ours, a failed restore, or the answer to something the user sent.
    fn on_error(&mut self, error: (String, String, Option<String>), received: &Received, effects: &mut Vec<Effect>) {
        let (code, message, client_id) = error;
        if client_id.is_none() && ["unsupported", "history_failed"].contains(&code.as_str()) && self.recovery.busy() {
            return self.history_refused(&code, &message, received, effects);
        }
        self.unacked.retain(|(id, _)| Some(id.as_str()) != client_id.as_deref());
        if client_id.is_none() && self.restore_answers > 0 {
            self.restore_answers -= 1;
            let notice = format!("! could not restore your name or room ({}: {})", p(&code), p(&message));
            return effects.push(Effect::Notice(notice));
        }
        self.pending = self.pending.saturating_sub(1);
        self.show(received, effects);
        self.prompt(effects);
    }

    /// A direct answer to a username or join request: ours, or the user's.
    fn answered_me(&mut self) {
        if self.restore_answers > 0 {
            self.restore_answers -= 1;
        } else {
            self.pending = self.pending.saturating_sub(1);
        }
    }

    fn prompt(&self, effects: &mut Vec<Effect>) {
        let name = self.name.as_deref().unwrap_or("");
        effects.push(Effect::Prompt(format!("#{} {}> ", p(&self.room), p(name))));
    }

    /// Print an event the way the user reads it (raw in `--json` mode).
    fn show(&mut self, received: &Received, effects: &mut Vec<Effect>) {
        let Received::Event { text, data } = received else { return };
        if self.json {
            effects.push(Effect::Print(printable_json(text).into_owned()));
            return;
        }
        if let Some(event) = received.event()
            && let Some(line) = self.display.line(&event, data.as_deref())
        {
            effects.push(Effect::Print(line));
        }
    }

    /// `welcome`: the server put us in `room` (the lobby, or `?room=` of the URL).
    fn welcome(&mut self, username: String, room: String, effects: &mut Vec<Effect>) {
        self.welcomed = true;
        self.name = Some(username.clone());
        self.room = room;
        self.prompt(effects);
        let Some(restore) = &self.restoring else {
            effects.extend(self.recovery.entered(&self.room).map(Effect::Send));
            return;
        };
        let (name, room) = (restore.name.clone(), restore.room.clone());
        effects.push(Effect::Notice(format!(
            "* reconnected; restoring {} in #{}",
            p(name.as_deref().unwrap_or("you")),
            p(&room)
        )));
        if let Some(name) = name.filter(|name| *name != username) {
            self.restore_answers += 1;
            effects.push(Effect::Send(ClientFrame::Username { name: name.into() }));
        }
        if room != self.room {
            self.restore_answers += 1;
            effects.push(Effect::Send(ClientFrame::Join { room: room.clone().into() }));
        }
        match self.recovery.resume(&room) {
            Some(request) => {
                if let Some(restore) = &mut self.restoring {
                    restore.fetched = true;
                }
                effects.push(Effect::Send(request));
            }
            None => self.finish_restore(effects),
        }
    }

    /// A `history` answer: the user's, or one of our fetches.
    fn history(&mut self, room: &str, seqs: &[u64], received: &Received, effects: &mut Vec<Effect>) {
        let answer = self.recovery.answer(room, seqs);
        let messages: Vec<ServerEvent<'_>> = match received.event() {
            Some(ServerEvent::History { messages, .. }) => messages,
            _ => Vec::new(),
        };
        if self.json && !matches!(answer.fetch, Some(Fetch::User) | None) {
            self.show(received, effects);
        }
        match &answer.fetch {
            Some(Fetch::User) | None => {
                self.pending = self.pending.saturating_sub(1);
                self.show(received, effects);
            }
            Some(Fetch::Baseline { .. }) => {}
            Some(Fetch::Gap { .. }) => {
                if !answer.fresh.is_empty() {
                    effects.push(Effect::Notice(format!(
                        "* recovered {} missed message(s) in #{}:",
                        answer.fresh.len(),
                        p(room)
                    )));
                }
                self.show_stored(&messages, &answer.fresh, effects);
                let entry = self.gaps.entry(room.to_string()).or_default();
                entry.1 += answer.fresh.len() as u64;
                if answer.next.is_none() {
                    let (missed, recovered) = self.gaps.remove(room).unwrap_or_default();
                    if recovered < missed && !self.recovery.busy() {
                        let lost = missed - recovered;
                        effects.push(Effect::Notice(format!(
                            "! {lost} missed message(s) of #{} are no longer in its history",
                            p(room)
                        )));
                    }
                }
            }
            Some(Fetch::Resume { .. }) => {
                if let Some(restore) = &mut self.restoring {
                    if restore.missed == 0 && !answer.fresh.is_empty() {
                        effects.push(Effect::Notice(format!("* missed while you were away, in #{}:", p(room))));
                    }
                    restore.missed += answer.fresh.len();
                    for &i in &answer.fresh {
                        if let Some(ServerEvent::Chat { client_id: Some(id), .. }) = messages.get(i) {
                            restore.unconfirmed.retain(|(mine, _)| mine != id.as_ref());
                        }
                    }
                }
                self.show_stored(&messages, &answer.fresh, effects);
                if answer.next.is_none() {
                    self.finish_restore(effects);
                }
            }
        }
        effects.extend(answer.next.map(Effect::Send));
        for released in answer.released {
            self.show(&released, effects);
        }
    }

    /// Show the messages at `indices` of a history answer as live lines.
    fn show_stored(&mut self, messages: &[ServerEvent<'_>], indices: &[usize], effects: &mut Vec<Effect>) {
        if self.json {
            return; // the raw answer is printed instead
        }
        for message in indices.iter().filter_map(|&i| messages.get(i)) {
            let payload = stored_payload(message);
            if let Some(line) = self.display.line(message, payload.as_deref()) {
                effects.push(Effect::Print(line));
            }
        }
    }

    fn history_refused(&mut self, code: &str, message: &str, received: &Received, effects: &mut Vec<Effect>) {
        let (fetch, released) = self.recovery.refused(code == "unsupported");
        match fetch {
            Some(Fetch::User) | None => {
                self.pending = self.pending.saturating_sub(1);
                self.show(received, effects);
            }
            Some(Fetch::Baseline { .. }) => {}
            Some(Fetch::Gap { room, .. }) => {
                self.gaps.remove(&room);
                effects.push(Effect::Notice(format!(
                    "! cannot fetch the missed messages of #{}: {}",
                    p(&room),
                    p(message)
                )));
            }
            Some(Fetch::Resume { room }) => {
                effects.push(Effect::Notice(format!(
                    "! cannot fetch what was said in #{} while away: {}",
                    p(&room),
                    p(message)
                )));
                self.finish_restore(effects);
            }
        }
        for released in released {
            self.show(&released, effects);
        }
    }

    /// Mark where the conversation resumed, and report messages of ours
    /// that were neither acknowledged nor found in the history.
    fn finish_restore(&mut self, effects: &mut Vec<Effect>) {
        let Some(restore) = self.restoring.take() else { return };
        let missed = match (self.recovery.enabled(), restore.fetched, restore.missed) {
            (false, ..) => ": this server keeps no history, what was said meanwhile cannot be shown".to_string(),
            (true, false, _) => String::new(),
            (true, true, 0) => ": nothing missed".to_string(),
            (true, true, n) => format!(": {n} missed message(s) above"),
        };
        effects.push(Effect::Notice(format!("* ─── resumed in #{}{missed} ───", p(&restore.room))));
        for (_, text) in restore.unconfirmed {
            effects.push(Effect::Notice(format!(
                "! not confirmed before the connection dropped, and not in the history: \"{}\" (send it again if needed)",
                p(&text)
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Received {
        Received::Event { text: value.to_string().into(), data: None }
    }

    fn chat(seq: u64) -> serde_json::Value {
        json!({"type": "chat", "room": "lobby", "seq": seq, "msg_id": format!("m{seq}"), "from": "alice",
               "user_id": "u2", "text": format!("text {seq}"), "ts": "2026-11-28T15:29:58.123Z"})
    }

    /// The printed lines and the requests, in order.
    fn outcome(effects: Vec<Effect>) -> Vec<String> {
        effects
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Print(line) | Effect::Notice(line) => Some(line),
                Effect::Send(frame) => Some(format!("send {}", frame.encode())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_gap_is_fetched_and_shown_before_the_messages_that_followed_it() {
        let mut conversation = Conversation::new(Display::new(false), false);
        let welcome = json!({"type": "welcome", "user_id": "u1", "username": "me", "room": "lobby", "protocol": 1});
        let effects = outcome(conversation.on_received(event(welcome)));
        assert!(effects.last().unwrap().contains(r#""type":"history","room":"lobby","limit":1"#), "{effects:?}");
        assert!(
            outcome(conversation.on_received(event(json!({"type": "history", "room": "lobby", "messages": []}))))
                .is_empty()
        );
        assert!(outcome(conversation.on_received(event(chat(1))))[0].ends_with("<alice> text 1"));

        let gap = outcome(
            conversation.on_received(event(json!({"type": "gap", "room": "lobby", "from_seq": 2, "to_seq": 3}))),
        );
        assert!(gap[0].contains("missed 2 message(s) in #lobby (seq 2..=3)"), "{gap:?}");
        assert!(gap[1].contains(r#""after_seq":1,"before_seq":4"#), "{gap:?}");
        assert!(conversation.on_received(event(chat(4))).is_empty(), "held until the gap is filled");

        let answer = json!({"type": "history", "room": "lobby", "messages": [chat(2), chat(3)]});
        let shown = outcome(conversation.on_received(event(answer)));
        assert_eq!(shown.len(), 4, "{shown:?}");
        assert!(shown[0].contains("recovered 2 missed message(s) in #lobby"));
        for (line, seq) in shown[1..].iter().zip(2..) {
            assert!(line.ends_with(&format!("<alice> text {seq}")), "in seq order: {shown:?}");
        }
    }

    #[test]
    fn after_a_reconnect_only_lines_lost_with_the_connection_are_reported() {
        let mut conversation = Conversation::new(Display::new(false), false);
        let welcome = json!({"type": "welcome", "user_id": "u1", "username": "me", "room": "lobby", "protocol": 1});
        conversation.on_received(event(welcome.clone()));
        conversation.on_received(event(json!({"type": "history", "room": "lobby", "messages": []})));
        let client_id = |effect: Effect| match effect {
            Effect::Send(ClientFrame::Chat { client_id, .. }) => client_id.unwrap().to_string(),
            other => panic!("not a chat: {other:?}"),
        };
        conversation.chat("lost line");
        let delivered = client_id(conversation.chat("delivered line"));
        conversation.disconnected();
        conversation.reconnected();
        let resumed = outcome(conversation.on_received(event(welcome)));
        assert!(resumed.last().unwrap().contains(r#""after_seq":0"#), "{resumed:?}");
        // Typed while the history is on its way: sent now, acked later.
        conversation.chat("typed after the reconnect");
        let mut stored = chat(1);
        stored["user_id"] = json!("u1");
        stored["client_id"] = json!(delivered);
        let answer = json!({"type": "history", "room": "lobby", "messages": [stored]});
        let mut notices = outcome(conversation.on_received(event(answer)));
        // The next page is empty: the client has caught up.
        notices.extend(outcome(
            conversation.on_received(event(json!({"type": "history", "room": "lobby", "messages": []}))),
        ));
        let notices = notices.join("\n");
        assert!(notices.contains(r#"not in the history: "lost line""#), "{notices}");
        assert!(!notices.contains("delivered line"), "found in the history: {notices}");
        assert!(!notices.contains("typed after the reconnect"), "sent on the new connection: {notices}");
    }

    #[test]
    fn what_the_server_says_is_printed_safely_in_lines_prompts_and_json() {
        let hostile = crate::printable::HOSTILE;
        let safe = |effects: &[Effect]| {
            for effect in effects {
                if let Effect::Print(line) | Effect::Notice(line) | Effect::Prompt(line) = effect {
                    assert!(!line.chars().any(crate::printable::is_unsafe), "{effect:?}");
                }
            }
        };
        for json in [false, true] {
            let mut conversation = Conversation::new(Display::new(false), json);
            let welcome =
                json!({"type": "welcome", "user_id": "u1", "username": hostile, "room": hostile, "protocol": 1});
            let effects = conversation.on_received(event(welcome));
            assert!(effects.iter().any(|e| matches!(e, Effect::Prompt(_))), "{effects:?}");
            safe(&effects);
            safe(&conversation.on_received(event(json!({"type": hostile, "x": hostile}))));
            safe(&conversation.on_received(Received::Event { text: format!("not json {hostile}").into(), data: None }));
            let gap = json!({"type": "gap", "room": hostile, "from_seq": 2, "to_seq": 3});
            safe(&conversation.on_received(event(gap)));
            let refused = json!({"type": "error", "code": "history_failed", "message": hostile});
            safe(&conversation.on_received(event(refused)));
        }
    }

    #[test]
    fn messages_gone_from_history_are_reported_not_silently_skipped() {
        let mut conversation = Conversation::new(Display::new(false), false);
        conversation.recovery.seen("lobby", 1);
        conversation.on_received(event(json!({"type": "gap", "room": "lobby", "from_seq": 2, "to_seq": 4})));
        let answer = json!({"type": "history", "room": "lobby", "messages": [chat(4)]});
        let shown = outcome(conversation.on_received(event(answer)));
        assert!(
            shown.last().unwrap().contains("2 missed message(s) of #lobby are no longer in its history"),
            "{shown:?}"
        );
    }
}
