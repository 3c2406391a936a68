//! How the terminal clients show server events: one line each, system
//! notices in colour when the output is a terminal. Everything that came
//! from the network goes through [`printable`], so no one else's text can
//! act on the terminal; the only escape sequences printed are our colours.

use chrono::{DateTime, Local};

use crate::printable::{is_unsafe, printable as p};
use crate::protocol::ServerEvent;

const DIM: &str = "\x1b[2m";
const CYAN: &str = "\x1b[36m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Renders events for one connection; remembers who "you" are.
#[derive(Debug, Clone, Default)]
pub struct Display {
    color: bool,
    /// Our `user_id`, from `welcome`, to say "you" instead of our name.
    me: Option<String>,
    /// Also show acks (the scripted clients do; the interactive one does not).
    pub show_acks: bool,
}

impl Display {
    pub fn new(color: bool) -> Self {
        Display { color, me: None, show_acks: false }
    }

    /// Colour when stdout is a terminal and NO_COLOR is unset.
    pub fn color_for_stdout() -> bool {
        use std::io::IsTerminal;
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    }

    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    fn paint(&self, color: &str, text: String) -> String {
        if self.color { format!("{color}{text}{RESET}") } else { text }
    }

    fn notice(&self, text: String) -> String {
        self.paint(CYAN, format!("* {text}"))
    }

    fn is_me(&self, user_id: &str) -> bool {
        self.me.as_deref() == Some(user_id)
    }

    /// The line for an event, or `None` for events not worth showing.
    pub fn line(&mut self, event: &ServerEvent<'_>, data: Option<&[u8]>) -> Option<String> {
        Some(match event {
            ServerEvent::Welcome { user_id, username, room, protocol } => {
                self.me = Some(user_id.to_string());
                self.notice(format!("you are {} in #{} (protocol {protocol})", p(username), p(room)))
            }
            ServerEvent::Chat { room, from, text, ts, .. } => {
                let name = self.paint(BOLD, format!("<{}>", p(from)));
                format!("{} #{} {name} {}", self.paint(DIM, clock(ts)), p(room), p(text))
            }
            ServerEvent::Binary { room, from, bytes, ts, .. } => {
                let name = self.paint(BOLD, format!("<{}>", p(from)));
                let preview = data.map(preview_bytes).unwrap_or_default();
                format!("{} #{} {name} [binary, {bytes} bytes] {preview}", self.paint(DIM, clock(ts)), p(room))
            }
            ServerEvent::File { room, from, name, size, media_type, ts, .. } => {
                let name_tag = self.paint(BOLD, format!("<{from}>"));
                format!("{} #{room} {name_tag} [file {name}, {size} bytes, {media_type}]", self.paint(DIM, clock(ts)))
            }
            ServerEvent::UploadReady { .. } | ServerEvent::UploadProgress { .. } => return None,
            ServerEvent::Ack { msg_id, seq, recipients, client_id, .. } => {
                if !self.show_acks {
                    return None;
                }
                let client = client_id.as_deref().map(|c| format!(" client_id={}", p(c))).unwrap_or_default();
                self.paint(DIM, format!("  ack: seq={seq} msg_id={} recipients={recipients}{client}", p(msg_id)))
            }
            ServerEvent::Joined { room, user_id, username, .. } => {
                let who = if self.is_me(user_id) { "you".into() } else { p(username) };
                self.notice(format!("{who} joined #{}", p(room)))
            }
            ServerEvent::Left { room, username, reason, .. } => {
                self.notice(format!("{} left #{} ({})", p(username), p(room), p(reason)))
            }
            ServerEvent::Renamed { user_id, old, new, .. } => {
                if self.is_me(user_id) {
                    self.notice(format!("you are now {} (were {})", p(new), p(old)))
                } else {
                    self.notice(format!("{} is now {}", p(old), p(new)))
                }
            }
            ServerEvent::Who { room, users } => {
                let names: Vec<String> = users
                    .iter()
                    .map(|u| {
                        if self.is_me(&u.user_id) { format!("{} (you)", p(&u.username)) } else { p(&u.username).into() }
                    })
                    .collect();
                self.notice(format!("{} in #{}: {}", users.len(), p(room), names.join(", ")))
            }
            ServerEvent::Rooms { rooms } => {
                let list: Vec<String> = rooms.iter().map(|r| format!("#{} ({})", p(&r.room), r.members)).collect();
                self.notice(format!("rooms: {}", list.join(", ")))
            }
            ServerEvent::History { room, messages } => {
                let mut lines = vec![self.notice(format!("history of #{}: {} message(s)", p(room), messages.len()))];
                for message in messages {
                    let payload = stored_payload(message);
                    if let Some(line) = self.line(message, payload.as_deref()) {
                        lines.push(format!("  {line}"));
                    }
                }
                lines.join("\n")
            }
            ServerEvent::Gap { room, from_seq, to_seq } => {
                let count = to_seq.saturating_sub(*from_seq) + 1;
                let room = p(room);
                self.paint(
                    YELLOW,
                    format!("! fell behind: missed {count} message(s) in #{room} (seq {from_seq}..={to_seq})"),
                )
            }
            ServerEvent::Error { code, message, .. } => self.paint(RED, format!("! {}: {}", p(code), p(message))),
        })
    }
}

/// The payload of a binary message inside a `history` answer (base64 in `data`).
pub fn stored_payload(event: &ServerEvent<'_>) -> Option<Vec<u8>> {
    use base64::Engine;
    match event {
        ServerEvent::Binary { data: Some(b64), .. } => {
            base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).ok()
        }
        _ => None,
    }
}

/// `HH:MM:SS` in local time, from a wire timestamp.
fn clock(ts: &str) -> String {
    DateTime::parse_from_rfc3339(ts)
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
        .unwrap_or_else(|_| p(ts).into_owned())
}

/// The first bytes of a payload, as hex and as text when printable.
pub fn preview_bytes(data: &[u8]) -> String {
    const SHOWN: usize = 16;
    let hex: Vec<String> = data.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    let more = if data.len() > SHOWN { " …" } else { "" };
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    if !text.chars().any(is_unsafe) {
        format!("{}{more} {text:?}", hex.join(" "))
    } else {
        format!("{}{more}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_people_and_rooms() {
        let mut display = Display::new(false);
        let welcome = ServerEvent::Welcome {
            user_id: "u1".into(),
            username: "guest-1".into(),
            room: "lobby".into(),
            protocol: 1,
        };
        assert!(display.line(&welcome, None).unwrap().contains("you are guest-1 in #lobby"));
        let chat = ServerEvent::Chat {
            room: "lobby".into(),
            seq: 1,
            msg_id: "m".into(),
            from: "alice".into(),
            user_id: "u2".into(),
            text: "hello".into(),
            ts: "2026-11-28T15:29:58.123Z".into(),
            client_id: None,
        };
        assert!(display.line(&chat, None).unwrap().ends_with("#lobby <alice> hello"));
        let renamed = ServerEvent::Renamed {
            room: "lobby".into(),
            user_id: "u1".into(),
            old: "guest-1".into(),
            new: "bob".into(),
            ts: "t".into(),
        };
        assert_eq!(display.line(&renamed, None).unwrap(), "* you are now bob (were guest-1)");
        let ack = ServerEvent::Ack {
            client_id: None,
            msg_id: "m".into(),
            seq: 1,
            recipients: 2,
            ts: "t".into(),
            upload_id: None,
            file_id: None,
            url: None,
        };
        assert!(display.line(&ack, None).is_none(), "acks are quiet unless asked for");
    }

    /// Every event kind, with every string the server sends set to `text`.
    fn events_saying(text: &str) -> Vec<String> {
        let chat = serde_json::json!({"type": "chat", "room": text, "seq": 1, "msg_id": text, "from": text,
            "user_id": "u2", "text": text, "ts": text, "client_id": text});
        let binary = serde_json::json!({"type": "binary", "room": text, "seq": 2, "msg_id": text, "from": text,
            "user_id": "u2", "bytes": 3, "ts": text, "data": "AAEC"});
        let user = serde_json::json!({"user_id": text, "username": text, "since": text});
        [
            serde_json::json!({"type": "welcome", "user_id": "u1", "username": text, "room": text, "protocol": 1}),
            chat.clone(),
            binary.clone(),
            serde_json::json!({"type": "ack", "client_id": text, "msg_id": text, "seq": 1, "recipients": 2, "ts": text}),
            serde_json::json!({"type": "joined", "room": text, "user_id": text, "username": text, "ts": text}),
            serde_json::json!({"type": "left", "room": text, "user_id": text, "username": text, "ts": text, "reason": text}),
            serde_json::json!({"type": "renamed", "room": text, "user_id": text, "old": text, "new": text, "ts": text}),
            serde_json::json!({"type": "renamed", "room": text, "user_id": "u1", "old": text, "new": text, "ts": text}),
            serde_json::json!({"type": "who", "room": text, "users": [user.clone(), user]}),
            serde_json::json!({"type": "rooms", "rooms": [{"room": text, "members": 2}]}),
            serde_json::json!({"type": "history", "room": text, "messages": [chat, binary]}),
            serde_json::json!({"type": "gap", "room": text, "from_seq": 1, "to_seq": 2}),
            serde_json::json!({"type": "error", "code": text, "message": text, "client_id": text}),
        ]
        .iter()
        .map(|event| event.to_string())
        .collect()
    }

    #[test]
    fn nothing_from_the_network_reaches_the_terminal_raw() {
        let mut display = Display::new(false);
        display.show_acks = true;
        for json in events_saying(crate::printable::HOSTILE) {
            let event = ServerEvent::decode(&json).unwrap_or_else(|e| panic!("{json}: {e:?}"));
            let line = display.line(&event, Some(b"\x1b[2J\xe2\x80\xae")).unwrap();
            let raw = line.replace('\n', "");
            assert!(!raw.chars().any(is_unsafe), "{json}\nprinted {line:?}");
            assert!(line.contains("\\u{1b}[2K"), "shown visibly: {line:?}");
        }
    }

    #[test]
    fn binary_previews() {
        assert_eq!(preview_bytes(b"hi"), "68 69 \"hi\"");
        assert_eq!(preview_bytes(&[0, 1, 2]), "00 01 02");
    }
}
