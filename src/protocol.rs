//! Wire protocol v1: the frames a client sends, the events a server sends, and
//! their encoding. No sockets here; the server, both clients and the load
//! harness all speak through these types.
//!
//! Text frames carry one JSON object tagged by `"type"`; binary frames carry
//! raw bytes. A text frame whose first non-blank character is not `{` is a
//! plain chat line, or a slash command when it starts with `/`, so raw tools
//! (wscat, websocat, a browser console) can chat without knowing JSON.
//!
//! Strings are `Cow<'a, str>` so that the server encodes events from borrowed
//! data without copying, and clients decode events without allocating when a
//! string has no escapes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Default and maximum number of messages in one `history` answer.
pub const HISTORY_DEFAULT_LIMIT: u32 = 100;
pub const HISTORY_MAX_LIMIT: u32 = 500;
/// The room every connection starts in.
pub const DEFAULT_ROOM: &str = "lobby";

/// A request from a client, as carried by a JSON text frame or a slash command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    /// Send a chat message to a room (default: the current room).
    Chat {
        #[serde(borrow)]
        text: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Cow<'a, str>>,
    },
    /// Change this connection's username.
    Username {
        #[serde(borrow)]
        name: Cow<'a, str>,
    },
    /// Move to a room, creating it if needed.
    Join {
        #[serde(borrow)]
        room: Cow<'a, str>,
    },
    /// Who is in my current room?
    Who,
    /// Which rooms exist, and how many members each has?
    Rooms,
    /// Past messages of a room.
    History {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Start uploading a file to the current room (see `FileOffer`).
    FileOffer(#[serde(borrow)] FileOffer<'a>),
    /// The next chunk of an upload: its bytes are the binary frame that
    /// immediately follows.
    FileChunk {
        #[serde(borrow)]
        upload_id: Cow<'a, str>,
        offset: u64,
    },
    /// Abandon an upload.
    FileCancel {
        #[serde(borrow)]
        upload_id: Cow<'a, str>,
    },
}

/// A file a client offers to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer<'a> {
    /// Chosen by the client: 1-64 characters, unique among its uploads in progress.
    #[serde(borrow)]
    pub upload_id: Cow<'a, str>,
    /// The file's name (see `check_file_name`).
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, like `image/png`.
    #[serde(borrow, default = "octet_stream")]
    pub media_type: Cow<'a, str>,
    /// SHA-256 of its bytes, 64 lowercase hex digits.
    #[serde(borrow)]
    pub sha256: Cow<'a, str>,
    /// Echoed in the sender's `ack` and every recipient's `file` event.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Cow<'a, str>>,
}

impl FileOffer<'_> {
    /// The offer, detached from the text it was decoded from.
    pub fn into_owned(self) -> FileOffer<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        FileOffer {
            upload_id: own(self.upload_id),
            name: own(self.name),
            size: self.size,
            media_type: own(self.media_type),
            sha256: own(self.sha256),
            client_id: self.client_id.map(own),
        }
    }
}

fn octet_stream() -> Cow<'static, str> {
    Cow::Borrowed("application/octet-stream")
}

/// One member of a room, as listed by `who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoUser<'a> {
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(borrow)]
    pub username: Cow<'a, str>,
    #[serde(borrow)]
    pub since: Cow<'a, str>,
}

/// One room, as listed by `rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo<'a> {
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    pub members: usize,
}

/// An event from the server. Field names are part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent<'a> {
    /// The first frame after the handshake.
    Welcome {
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        username: Cow<'a, str>,
        #[serde(borrow)]
        room: Cow<'a, str>,
        protocol: u32,
    },
    /// A chat message from someone else.
    Chat {
        #[serde(borrow)]
        room: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        msg_id: Cow<'a, str>,
        #[serde(borrow)]
        from: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        text: Cow<'a, str>,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Cow<'a, str>>,
    },
    /// A binary message from someone else. Live, the binary frame itself follows
    /// immediately; inside `history`, the payload is in `data` (base64).
    Binary {
        #[serde(borrow)]
        room: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        msg_id: Cow<'a, str>,
        #[serde(borrow)]
        from: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        bytes: usize,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        data: Option<Cow<'a, str>>,
    },
    /// A file someone else shared. `url` is where to download it
    /// (`/files/<file_id>/<name>`, relative to the server's http(s) origin).
    File {
        #[serde(borrow)]
        room: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        msg_id: Cow<'a, str>,
        #[serde(borrow)]
        from: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        file_id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        size: u64,
        #[serde(borrow)]
        media_type: Cow<'a, str>,
        #[serde(borrow)]
        sha256: Cow<'a, str>,
        #[serde(borrow)]
        url: Cow<'a, str>,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Cow<'a, str>>,
    },
    /// To the sender, once its message was accepted. For a file, it also
    /// names the upload and where the file is.
    Ack {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        msg_id: Cow<'a, str>,
        seq: u64,
        recipients: usize,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        upload_id: Option<Cow<'a, str>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        file_id: Option<Cow<'a, str>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        url: Option<Cow<'a, str>>,
    },
    /// An upload may start: send chunks of at most `chunk_size` bytes.
    UploadReady {
        #[serde(borrow)]
        upload_id: Cow<'a, str>,
        chunk_size: usize,
    },
    /// The bytes of an upload stored so far.
    UploadProgress {
        #[serde(borrow)]
        upload_id: Cow<'a, str>,
        received: u64,
    },
    Joined {
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        username: Cow<'a, str>,
        #[serde(borrow)]
        ts: Cow<'a, str>,
    },
    Left {
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        username: Cow<'a, str>,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
    Renamed {
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        user_id: Cow<'a, str>,
        #[serde(borrow)]
        old: Cow<'a, str>,
        #[serde(borrow)]
        new: Cow<'a, str>,
        #[serde(borrow)]
        ts: Cow<'a, str>,
    },
    Who {
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        users: Vec<WhoUser<'a>>,
    },
    Rooms {
        #[serde(borrow)]
        rooms: Vec<RoomInfo<'a>>,
    },
    History {
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        messages: Vec<ServerEvent<'a>>,
    },
    /// This connection missed `from_seq..=to_seq` of `room`.
    Gap {
        #[serde(borrow)]
        room: Cow<'a, str>,
        from_seq: u64,
        to_seq: u64,
    },
    /// A refused request; the connection stays open unless a close follows.
    Error {
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(borrow)]
        message: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Cow<'a, str>>,
        /// The upload this error ended, if it is about one.
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        upload_id: Option<Cow<'a, str>>,
    },
}

impl ServerEvent<'_> {
    /// Encode as the JSON text of one frame.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every key is a string and no
        // value is a map with non-string keys.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `type` tag, as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerEvent::Welcome { .. } => "welcome",
            ServerEvent::Chat { .. } => "chat",
            ServerEvent::Binary { .. } => "binary",
            ServerEvent::File { .. } => "file",
            ServerEvent::Ack { .. } => "ack",
            ServerEvent::UploadReady { .. } => "upload_ready",
            ServerEvent::UploadProgress { .. } => "upload_progress",
            ServerEvent::Joined { .. } => "joined",
            ServerEvent::Left { .. } => "left",
            ServerEvent::Renamed { .. } => "renamed",
            ServerEvent::Who { .. } => "who",
            ServerEvent::Rooms { .. } => "rooms",
            ServerEvent::History { .. } => "history",
            ServerEvent::Gap { .. } => "gap",
            ServerEvent::Error { .. } => "error",
        }
    }
}

impl<'a> ServerEvent<'a> {
    /// Decode one text frame sent by a server.
    pub fn decode(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A refused request.
    pub fn error(code: ErrorCode, message: impl Into<Cow<'a, str>>) -> Self {
        ServerEvent::Error {
            code: Cow::Borrowed(code.as_str()),
            message: message.into(),
            client_id: None,
            upload_id: None,
        }
    }

    /// The `error` event for a refusal, echoing the request's `client_id`.
    pub fn refused(refusal: &'a Refusal, client_id: Option<&'a str>) -> Self {
        ServerEvent::Error {
            code: Cow::Borrowed(refusal.code.as_str()),
            message: Cow::Borrowed(&refusal.message),
            client_id: client_id.map(Cow::Borrowed),
            upload_id: None,
        }
    }

    /// The `error` event for a refused or failed upload.
    pub fn upload_failed(refusal: &'a Refusal, upload_id: &'a str, client_id: Option<&'a str>) -> Self {
        ServerEvent::Error {
            code: Cow::Borrowed(refusal.code.as_str()),
            message: Cow::Borrowed(&refusal.message),
            client_id: client_id.map(Cow::Borrowed),
            upload_id: Some(Cow::Borrowed(upload_id)),
        }
    }
}

/// The fields of a server event that hot paths look at, decoded without
/// building the whole event (the load harness reads every delivery).
#[derive(Debug, Clone, Deserialize)]
pub struct EventHeader<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub room: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_id: Option<Cow<'a, str>>,
    /// A chat's text (plain-text senders stamp it there).
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub recipients: Option<u64>,
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default)]
    pub from_seq: Option<u64>,
    #[serde(default)]
    pub to_seq: Option<u64>,
}

impl<'a> EventHeader<'a> {
    pub fn decode(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl ClientFrame<'_> {
    /// Encode as the JSON text of one frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a request was refused: the `code` of an `error` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The frame looked like JSON (starts with `{`) but is not a JSON object.
    InvalidJson,
    /// A JSON object without `type`, or with a `type` this server does not know.
    UnknownType,
    /// A known `type` with missing, extra or ill-typed fields.
    InvalidFrame,
    /// A slash command this server does not know.
    UnknownCommand,
    /// An empty chat message.
    EmptyMessage,
    /// A username that breaks the naming rules.
    InvalidName,
    /// A username someone else already has.
    NameTaken,
    /// A username that belongs to a registered account (sign in to use it).
    NameReserved,
    /// A signed-in user asked to rename: the username is the account name.
    NameLocked,
    /// A room name that breaks the naming rules.
    InvalidRoom,
    /// A message addressed to a room this connection is not in.
    NotInRoom,
    /// The server already holds as many rooms as it may.
    TooManyRooms,
    /// A `client_id` longer than 64 characters.
    InvalidClientId,
    /// A request this server does not serve (for example `history` when history is off).
    Unsupported,
    /// Too many messages too fast.
    RateLimited,
    /// The server could not do what was asked.
    Internal,
    /// The message reached the room but could not be stored (disk full,
    /// read-only, I/O error): no ack, and it is not in the history.
    StorageFailed,
    /// The history writer is too far behind the disk (or the server is
    /// shutting down): the message was not sent; try again.
    StorageBusy,
    /// A `history` request could not be answered because reading failed.
    HistoryFailed,
    /// A file offer with a bad name, size, media type or hash.
    InvalidFile,
    /// A file over the server's size limit (`--max-file-size`).
    FileTooLarge,
    /// More uploads in progress on this connection than the server allows.
    TooManyUploads,
    /// A chunk for no upload in progress, at the wrong offset, too big, or a
    /// `file_chunk` header not followed by its binary frame.
    InvalidChunk,
    /// The uploaded bytes do not have the SHA-256 the offer announced.
    HashMismatch,
    /// No chunk came for too long (`--upload-timeout`): the upload was dropped.
    UploadTimeout,
    /// The server's file storage is full.
    StorageFull,
    /// The servers' shared state (Redis, with several nodes) cannot be
    /// reached: the request was not carried out.
    Unavailable,
}

impl ErrorCode {
    /// The `code` as it goes on the wire (`invalid_json`, `name_taken`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A refused request: a frame that could not be understood, or a request the
/// server will not carry out. Sent back as an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

/// The frame types a client may send, for error messages.
const CLIENT_TYPES: &str = "chat, username, join, who, rooms, history, file_offer, file_chunk, file_cancel";
/// The slash commands the server understands, for error messages.
pub const SLASH_COMMANDS: &str = "/username <name>, /join <room>, /who, /rooms, /history [n]";

/// Understand one text frame from a client: a JSON request, a slash command,
/// or a plain chat line.
pub fn decode_client_text(text: &str) -> Result<ClientFrame<'_>, Refusal> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return decode_client_json(trimmed);
    }
    if let Some(command) = trimmed.strip_prefix('/') {
        if command.starts_with('/') {
            // "//text" sends the literal line "/text".
            return plain_chat(&trimmed[1..]);
        }
        return decode_slash_command(command);
    }
    plain_chat(text)
}

fn plain_chat(text: &str) -> Result<ClientFrame<'_>, Refusal> {
    if text.trim().is_empty() {
        return Err(Refusal::new(ErrorCode::EmptyMessage, "empty message: type some text to send"));
    }
    Ok(ClientFrame::Chat { text: Cow::Borrowed(text), room: None, client_id: None })
}

fn decode_client_json(text: &str) -> Result<ClientFrame<'_>, Refusal> {
    match serde_json::from_str::<ClientFrame<'_>>(text) {
        Ok(frame) => Ok(frame),
        Err(err) => Err(classify_json_error(text, &err)),
    }
}

/// The typed parse failed; find out why, for a precise error. Only runs on bad input.
fn classify_json_error(text: &str, err: &serde_json::Error) -> Refusal {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => {
            return Refusal::new(
                ErrorCode::InvalidJson,
                format!("invalid JSON ({err}); send one JSON object per frame, or plain text to chat"),
            );
        }
    };
    let Some(object) = value.as_object() else {
        return Refusal::new(ErrorCode::InvalidJson, "expected a JSON object");
    };
    match object.get("type") {
        None => Refusal::new(ErrorCode::UnknownType, format!("missing \"type\"; one of: {CLIENT_TYPES}")),
        Some(serde_json::Value::String(kind)) if !CLIENT_TYPES.split(", ").any(|known| known == kind) => {
            Refusal::new(ErrorCode::UnknownType, format!("unknown type {kind:?}; one of: {CLIENT_TYPES}"))
        }
        Some(serde_json::Value::String(kind)) => {
            Refusal::new(ErrorCode::InvalidFrame, format!("invalid {kind:?} frame: {err}"))
        }
        Some(_) => Refusal::new(ErrorCode::UnknownType, "\"type\" must be a string"),
    }
}

fn decode_slash_command(command: &str) -> Result<ClientFrame<'_>, Refusal> {
    let command = command.trim_end();
    let (name, arg) = match command.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (command, ""),
    };
    let needs = |what: &str| Refusal::new(ErrorCode::InvalidFrame, format!("usage: /{name} <{what}>"));
    match name {
        "username" | "name" | "nick" => {
            if arg.is_empty() {
                return Err(needs("name"));
            }
            Ok(ClientFrame::Username { name: Cow::Borrowed(arg) })
        }
        "join" => {
            if arg.is_empty() {
                return Err(needs("room"));
            }
            Ok(ClientFrame::Join { room: Cow::Borrowed(arg) })
        }
        "who" => Ok(ClientFrame::Who),
        "rooms" => Ok(ClientFrame::Rooms),
        "history" => {
            let limit = if arg.is_empty() {
                None
            } else {
                match arg.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return Err(Refusal::new(
                            ErrorCode::InvalidFrame,
                            format!("usage: /history [n] (n a number up to {HISTORY_MAX_LIMIT}, got {arg:?})"),
                        ));
                    }
                }
            };
            Ok(ClientFrame::History { room: None, after_seq: None, before_seq: None, limit })
        }
        _ => Err(Refusal::new(
            ErrorCode::UnknownCommand,
            format!("unknown command /{name}; commands: {SLASH_COMMANDS} (start a line with // to send a literal /)"),
        )),
    }
}

/// Longest file name accepted, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Why a file name is refused, or `None` when it is valid: 1-255 bytes, no
/// control characters (C0, DEL, C1), no bidi or invisible format characters,
/// no `/` or `\`, not `.` or `..`. Spaces are fine.
pub fn check_file_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Some(format!("a file name must be 1-{MAX_FILE_NAME_BYTES} bytes (got {})", name.len()));
    }
    if name == "." || name == ".." {
        return Some("a file name must not be . or ..".into());
    }
    let bad = name.chars().find(|c| {
        c.is_control()
            || matches!(c, '/' | '\\' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
    });
    bad.map(|c| format!("a file name must not contain U+{:04X}", u32::from(c)))
}

/// Characters left as they are in a file's URL path segment (RFC 3986
/// unreserved); everything else is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where a file is downloaded: `/files/<file_id>/<name, percent-encoded>`.
pub fn file_url(file_id: &str, name: &str) -> String {
    format!("/files/{file_id}/{}", percent_encoding::utf8_percent_encode(name, PATH_SEGMENT))
}

/// Why a `client_id` is refused, or `None` when it is valid.
pub fn check_client_id(client_id: &str) -> Option<String> {
    let chars = client_id.chars().count();
    (chars > MAX_CLIENT_ID_CHARS)
        .then(|| format!("client_id must be at most {MAX_CLIENT_ID_CHARS} characters (got {chars})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(event: ServerEvent<'_>) {
        let text = event.encode();
        let back = ServerEvent::decode(&text).unwrap();
        assert_eq!(back, event, "{text}");
    }

    #[test]
    fn server_events_roundtrip() {
        let ts = Cow::Borrowed("2026-11-28T15:29:58.123Z");
        roundtrip(ServerEvent::Welcome {
            user_id: "u1".into(),
            username: "guest-1a2b".into(),
            room: "lobby".into(),
            protocol: PROTOCOL_VERSION,
        });
        roundtrip(ServerEvent::Chat {
            room: "lobby".into(),
            seq: 7,
            msg_id: "m1".into(),
            from: "alice".into(),
            user_id: "u1".into(),
            text: "héllo \"quoted\"\n".into(),
            ts: ts.clone(),
            client_id: Some("c1".into()),
        });
        roundtrip(ServerEvent::Binary {
            room: "r".into(),
            seq: 1,
            msg_id: "m2".into(),
            from: "bob".into(),
            user_id: "u2".into(),
            bytes: 3,
            ts: ts.clone(),
            data: None,
        });
        roundtrip(ServerEvent::Ack {
            client_id: None,
            msg_id: "m2".into(),
            seq: 1,
            recipients: 4,
            ts: ts.clone(),
            upload_id: Some("u1".into()),
            file_id: Some("ab".into()),
            url: Some("/files/ab/x".into()),
        });
    }

    #[test]
    fn file_events_roundtrip() {
        let ts = Cow::Borrowed("2026-11-28T15:29:58.123Z");
        roundtrip(ServerEvent::UploadReady { upload_id: "u1".into(), chunk_size: 65_536 });
        roundtrip(ServerEvent::UploadProgress { upload_id: "u1".into(), received: 3 });
        roundtrip(ServerEvent::File {
            room: "lobby".into(),
            seq: 4,
            msg_id: "m4".into(),
            from: "alice".into(),
            user_id: "u1".into(),
            file_id: "ab".into(),
            name: "cat picture.png".into(),
            size: 3,
            media_type: "image/png".into(),
            sha256: "ab".into(),
            url: file_url("ab", "cat picture.png").into(),
            ts: ts.clone(),
            client_id: None,
        });
    }

    #[test]
    fn presence_and_answers_roundtrip() {
        let ts = Cow::Borrowed("2026-11-28T15:29:58.123Z");
        roundtrip(ServerEvent::Left {
            room: "r".into(),
            user_id: "u2".into(),
            username: "bob".into(),
            ts: ts.clone(),
            reason: "quit".into(),
        });
        roundtrip(ServerEvent::Who {
            room: "r".into(),
            users: vec![WhoUser { user_id: "u2".into(), username: "bob".into(), since: ts.clone() }],
        });
        roundtrip(ServerEvent::Rooms { rooms: vec![RoomInfo { room: "lobby".into(), members: 2 }] });
        roundtrip(ServerEvent::History {
            room: "r".into(),
            messages: vec![ServerEvent::Binary {
                room: "r".into(),
                seq: 2,
                msg_id: "m3".into(),
                from: "bob".into(),
                user_id: "u2".into(),
                bytes: 2,
                ts: ts.clone(),
                data: Some("AAE=".into()),
            }],
        });
        roundtrip(ServerEvent::Gap { room: "r".into(), from_seq: 3, to_seq: 9 });
        roundtrip(ServerEvent::error(ErrorCode::NameTaken, "taken"));
    }

    #[test]
    fn events_use_documented_field_names() {
        let event = ServerEvent::Ack {
            client_id: Some("c9".into()),
            msg_id: "m".into(),
            seq: 3,
            recipients: 2,
            ts: "t".into(),
            upload_id: None,
            file_id: None,
            url: None,
        };
        let value: serde_json::Value = serde_json::from_str(&event.encode()).unwrap();
        assert_eq!(value["type"], "ack");
        assert_eq!(value["client_id"], "c9");
        assert_eq!(value["recipients"], 2);
        let chat = ServerEvent::Chat {
            room: "r".into(),
            seq: 1,
            msg_id: "m".into(),
            from: "a".into(),
            user_id: "u".into(),
            text: "x".into(),
            ts: "t".into(),
            client_id: None,
        };
        assert!(!chat.encode().contains("client_id"), "absent client_id is omitted");
    }

    #[test]
    fn client_frames_roundtrip() {
        let frames = [
            ClientFrame::Chat { text: "hi".into(), room: Some("lobby".into()), client_id: Some("c1".into()) },
            ClientFrame::Username { name: "alice".into() },
            ClientFrame::Join { room: "rust".into() },
            ClientFrame::Who,
            ClientFrame::Rooms,
            ClientFrame::History { room: None, after_seq: Some(0), before_seq: None, limit: Some(10) },
        ];
        for frame in frames {
            let text = frame.encode();
            assert_eq!(decode_client_text(&text).unwrap(), frame, "{text}");
        }
    }

    #[test]
    fn plain_text_is_chat() {
        assert_eq!(
            decode_client_text("hello there").unwrap(),
            ClientFrame::Chat { text: "hello there".into(), room: None, client_id: None }
        );
        assert_eq!(
            decode_client_text("//etc/passwd is a path").unwrap(),
            ClientFrame::Chat { text: "/etc/passwd is a path".into(), room: None, client_id: None }
        );
        assert_eq!(decode_client_text("   ").unwrap_err().code, ErrorCode::EmptyMessage);
    }

    #[test]
    fn slash_commands() {
        assert_eq!(decode_client_text("/username  bob ").unwrap(), ClientFrame::Username { name: "bob".into() });
        assert_eq!(decode_client_text("/nick bob").unwrap(), ClientFrame::Username { name: "bob".into() });
        assert_eq!(decode_client_text("/join rust").unwrap(), ClientFrame::Join { room: "rust".into() });
        assert_eq!(decode_client_text("/who").unwrap(), ClientFrame::Who);
        assert_eq!(decode_client_text("/rooms\n").unwrap(), ClientFrame::Rooms);
        assert_eq!(
            decode_client_text("/history 5").unwrap(),
            ClientFrame::History { room: None, after_seq: None, before_seq: None, limit: Some(5) }
        );
        assert_eq!(decode_client_text("/history x").unwrap_err().code, ErrorCode::InvalidFrame);
        assert_eq!(decode_client_text("/username").unwrap_err().code, ErrorCode::InvalidFrame);
        assert_eq!(decode_client_text("/dance").unwrap_err().code, ErrorCode::UnknownCommand);
    }

    #[test]
    fn json_errors_are_classified() {
        assert_eq!(decode_client_text("{not json").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(decode_client_text(" {\"text\":\"x\"}").unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(decode_client_text("{\"type\":\"dance\"}").unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(decode_client_text("{\"type\":3}").unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(decode_client_text("{\"type\":\"chat\"}").unwrap_err().code, ErrorCode::InvalidFrame);
        assert_eq!(decode_client_text("{\"type\":\"join\",\"room\":5}").unwrap_err().code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn headers_decode_the_fields_hot_paths_need() {
        let chat = ServerEvent::Chat {
            room: "r".into(),
            seq: 9,
            msg_id: "m".into(),
            from: "a".into(),
            user_id: "u".into(),
            text: "with \"escapes\"".into(),
            ts: "t".into(),
            client_id: Some("c1".into()),
        }
        .encode();
        let header = EventHeader::decode(&chat).unwrap();
        assert_eq!((header.kind.as_ref(), header.seq, header.client_id.as_deref()), ("chat", Some(9), Some("c1")));
        let ack = EventHeader::decode(r#"{"type":"ack","msg_id":"m","seq":1,"recipients":3,"ts":"t"}"#).unwrap();
        assert_eq!(ack.recipients, Some(3));
    }

    #[test]
    fn escaped_strings_decode() {
        let frame = decode_client_text(r#"{"type":"chat","text":"a\"b\u00e9"}"#).unwrap();
        assert_eq!(frame, ClientFrame::Chat { text: "a\"bé".into(), room: None, client_id: None });
    }

    #[test]
    fn error_codes_are_snake_case_on_the_wire() {
        use strum::VariantArray as _;
        assert_eq!(ErrorCode::InvalidJson.as_str(), "invalid_json");
        assert_eq!(ErrorCode::InvalidClientId.as_str(), "invalid_client_id");
        assert_eq!(ErrorCode::NotInRoom.as_str(), "not_in_room");
        let codes: std::collections::HashSet<&str> = ErrorCode::VARIANTS.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), ErrorCode::VARIANTS.len(), "no two codes alike");
    }

    #[test]
    fn client_ids() {
        assert!(check_client_id(&"c".repeat(64)).is_none());
        assert!(check_client_id(&"c".repeat(65)).is_some());
    }
}
