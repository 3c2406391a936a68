//! How the terminal clients show server events: one line each, system
//! notices in colour when the output is a terminal.

use chrono::{DateTime, Local};

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
                self.notice(format!("you are {username} in #{room} (protocol {protocol})"))
            }
            ServerEvent::Chat { room, from, text, ts, .. } => {
                let name = self.paint(BOLD, format!("<{from}>"));
                format!("{} #{room} {name} {text}", self.paint(DIM, clock(ts)))
            }
            ServerEvent::Binary { room, from, bytes, ts, .. } => {
                let name = self.paint(BOLD, format!("<{from}>"));
                let preview = data.map(preview_bytes).unwrap_or_default();
                format!("{} #{room} {name} [binary, {bytes} bytes] {preview}", self.paint(DIM, clock(ts)))
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
                let client = client_id.as_deref().map(|c| format!(" client_id={c}")).unwrap_or_default();
                self.paint(DIM, format!("  ack: seq={seq} msg_id={msg_id} recipients={recipients}{client}"))
            }
            ServerEvent::Joined { room, user_id, username, .. } => {
                if self.is_me(user_id) {
                    self.notice(format!("you joined #{room}"))
                } else {
                    self.notice(format!("{username} joined #{room}"))
                }
            }
            ServerEvent::Left { room, username, reason, .. } => {
                self.notice(format!("{username} left #{room} ({reason})"))
            }
            ServerEvent::Renamed { user_id, old, new, .. } => {
                if self.is_me(user_id) {
                    self.notice(format!("you are now {new} (were {old})"))
                } else {
                    self.notice(format!("{old} is now {new}"))
                }
            }
            ServerEvent::Who { room, users } => {
                let names: Vec<String> =
                    users
                        .iter()
                        .map(|u| {
                            if self.is_me(&u.user_id) {
                                format!("{} (you)", u.username)
                            } else {
                                u.username.to_string()
                            }
                        })
                        .collect();
                self.notice(format!("{} in #{room}: {}", users.len(), names.join(", ")))
            }
            ServerEvent::Rooms { rooms } => {
                let list: Vec<String> = rooms.iter().map(|r| format!("#{} ({})", r.room, r.members)).collect();
                self.notice(format!("rooms: {}", list.join(", ")))
            }
            ServerEvent::History { room, messages } => {
                let mut lines = vec![self.notice(format!("history of #{room}: {} message(s)", messages.len()))];
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
                self.paint(
                    YELLOW,
                    format!("! fell behind: missed {count} message(s) in #{room} (seq {from_seq}..={to_seq})"),
                )
            }
            ServerEvent::Error { code, message, .. } => self.paint(RED, format!("! {code}: {message}")),
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
        .unwrap_or_else(|_| ts.to_string())
}

/// The first bytes of a payload, as hex and as text when printable.
pub fn preview_bytes(data: &[u8]) -> String {
    const SHOWN: usize = 16;
    let hex: Vec<String> = data.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    let more = if data.len() > SHOWN { " …" } else { "" };
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    if text.chars().all(|c| !c.is_control()) {
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

    #[test]
    fn binary_previews() {
        assert_eq!(preview_bytes(b"hi"), "68 69 \"hi\"");
        assert_eq!(preview_bytes(&[0, 1, 2]), "00 01 02");
    }
}
