//! The chat core's view of history: what a published message is, where the
//! hub hands it to be kept, and how a session asks for a room's past, without
//! knowing how or where history is kept (`server::history` implements
//! [`Archive`]; the hub holds an `Arc<dyn Archive>`).
//!
//! The path of a message: the sender's session first takes a [`Slot`] (room
//! in the archive's queue, waited for when storage is behind), then
//! `Hub::publish` assigns the seq, fans out, and submits the [`Record`] with
//! the sender's [`AckTo`] to the slot, under the room lock so that the archive
//! receives each room's messages in seq order. The archive acks the sender
//! once the message is kept.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::outbox::Outbox;
use crate::protocol::{ErrorCode, Refusal, ServerEvent};
use base64::Engine as _;

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A chat message and the sender's `client_id`, echoed as live.
    Text { text: String, client_id: Option<String> },
    /// A binary message, byte-exact.
    Binary(Bytes),
    /// A shared file: where it is and what it is (the bytes are in the file
    /// store, not in history), and the sender's `client_id`.
    File { file: FileMeta, client_id: Option<String> },
}

/// A stored file, as the `file` event describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// The file's id in the file store (its SHA-256, hex: content-addressed).
    pub file_id: String,
    /// The name it was shared under.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as offered (`application/octet-stream` when unknown).
    pub media_type: String,
    /// SHA-256 of its bytes, 64 lowercase hex digits.
    pub sha256: String,
}

impl FileMeta {
    /// Where it is downloaded (`/files/<file_id>/<name>`).
    pub fn url(&self) -> String {
        crate::protocol::file_url(&self.file_id, &self.name)
    }
}

/// A message's content.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Text {
        text: &'a str,
        client_id: Option<&'a str>,
    },
    Binary(&'a Bytes),
    /// A file, stored already; `upload_id` is named in the sender's ack.
    File {
        file: &'a FileMeta,
        client_id: Option<&'a str>,
        upload_id: &'a str,
    },
}

impl Payload<'_> {
    /// What history keeps of it.
    pub(super) fn body(&self) -> Body {
        let owned = |id: Option<&str>| id.map(str::to_string);
        match *self {
            Payload::Text { text, client_id } => Body::Text { text: text.to_string(), client_id: owned(client_id) },
            Payload::Binary(data) => Body::Binary(data.clone()),
            Payload::File { file, client_id, .. } => Body::File { file: file.clone(), client_id: owned(client_id) },
        }
    }

    /// The `client_id` its sender gave, echoed in the ack.
    pub fn client_id(&self) -> Option<&str> {
        match *self {
            Payload::Text { client_id, .. } | Payload::File { client_id, .. } => client_id,
            Payload::Binary(_) => None,
        }
    }

    pub(super) fn upload_id(&self) -> Option<&str> {
        match *self {
            Payload::File { upload_id, .. } => Some(upload_id),
            _ => None,
        }
    }

    pub(super) fn file(&self) -> Option<&FileMeta> {
        match *self {
            Payload::File { file, .. } => Some(file),
            _ => None,
        }
    }
}

impl Body {
    /// The body as a payload, to build its event again (`history`).
    pub fn payload(&self) -> Payload<'_> {
        match self {
            Body::Text { text, client_id } => Payload::Text { text, client_id: client_id.as_deref() },
            Body::Binary(data) => Payload::Binary(data),
            Body::File { file, client_id } => Payload::File { file, client_id: client_id.as_deref(), upload_id: "" },
        }
    }
}

/// Where a message is and who sent it: what every event about it carries.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub room: &'a str,
    pub seq: u64,
    pub msg_id: &'a str,
    pub from: &'a str,
    pub user_id: &'a str,
    pub ts: Cow<'a, str>,
}

impl<'a> Envelope<'a> {
    /// The event a recipient gets for `payload`: `chat`, `binary` or `file`.
    /// A live `binary` event is followed by its frame; in `history`
    /// (`with_data`) it carries the payload base64 in `data`.
    pub fn event(self, payload: Payload<'a>, with_data: bool) -> ServerEvent<'a> {
        let Envelope { room, seq, msg_id, from, user_id, ts } = self;
        let (room, msg_id, from, user_id) =
            (Cow::Borrowed(room), Cow::Borrowed(msg_id), Cow::Borrowed(from), Cow::Borrowed(user_id));
        match payload {
            Payload::Text { text, client_id } => ServerEvent::Chat {
                room,
                seq,
                msg_id,
                from,
                user_id,
                text: Cow::Borrowed(text),
                ts,
                client_id: client_id.map(Cow::Borrowed),
            },
            Payload::Binary(data) => ServerEvent::Binary {
                room,
                seq,
                msg_id,
                from,
                user_id,
                bytes: data.len(),
                ts,
                data: with_data.then(|| Cow::Owned(base64::engine::general_purpose::STANDARD.encode(data))),
            },
            Payload::File { file, client_id, .. } => ServerEvent::File {
                room,
                seq,
                msg_id,
                from,
                user_id,
                file_id: Cow::Borrowed(&file.file_id),
                name: Cow::Borrowed(&file.name),
                size: file.size,
                media_type: Cow::Borrowed(&file.media_type),
                sha256: Cow::Borrowed(&file.sha256),
                url: Cow::Owned(file.url()),
                ts,
                client_id: client_id.map(Cow::Borrowed),
            },
        }
    }
}

/// One message of a room, as published and as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    pub msg_id: String,
    pub user_id: String,
    /// The sender's name when it sent the message.
    pub username: String,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub body: Body,
}

/// A message and its room, as handed to the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub room: Arc<str>,
    pub message: Message,
}

/// Where the archive sends the sender's `ack` (or `error`) once it knows.
#[derive(Debug)]
pub struct AckTo {
    pub outbox: Outbox,
    pub client_id: Option<String>,
    /// Connections the message was fanned out to (the ack's `recipients`).
    pub recipients: usize,
    /// For a file: the upload it ends (the ack names it, and where the file is).
    pub upload_id: Option<String>,
}

impl AckTo {
    /// The `ack` for `record`, as the sender gets it.
    pub fn ack(&self, record: &Record) -> String {
        let message = &record.message;
        let file = match &message.body {
            Body::File { file, .. } => Some(file),
            _ => None,
        };
        let stored = Stored { msg_id: &message.msg_id, seq: message.seq, ts_ms: message.ts_ms, file };
        stored.ack(self.client_id.as_deref(), self.recipients, self.upload_id.as_deref())
    }
}

/// What the `ack` of a published message says about it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub msg_id: &'a str,
    pub seq: u64,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// For a file: which, and so where.
    pub file: Option<&'a FileMeta>,
}

impl Stored<'_> {
    /// The `ack` event: seq and id, the connections it reached, and for a
    /// file the upload it ends and the file's id and URL.
    pub fn ack(&self, client_id: Option<&str>, recipients: usize, upload_id: Option<&str>) -> String {
        ServerEvent::Ack {
            client_id: client_id.map(Cow::Borrowed),
            msg_id: Cow::Borrowed(self.msg_id),
            seq: self.seq,
            recipients,
            ts: Cow::Owned(crate::ids::format_ts_millis(self.ts_ms)),
            upload_id: upload_id.map(Cow::Borrowed),
            file_id: self.file.map(|f| Cow::Borrowed(f.file_id.as_str())),
            url: self.file.map(|f| Cow::Owned(f.url())),
        }
        .encode()
    }
}

/// A future the archive returns, boxed so that `Archive` stays object-safe.
pub type ArchiveFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Room for one message in the archive's queue, taken before its seq is.
pub trait ArchiveSlot: Send {
    /// Queue `record` to be kept; `ack` is answered once it is (or failed).
    fn submit(self: Box<Self>, record: Record, ack: Option<AckTo>);
}

/// A reserved place in the archive's queue.
pub type Slot<'a> = Box<dyn ArchiveSlot + 'a>;

/// A `history` request's parameters, as the client sent them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    pub limit: Option<u32>,
}

/// Where published messages are kept and read back.
pub trait Archive: Send + Sync + std::fmt::Debug {
    /// Is history kept? When it is not, a lagging reader cannot recover with
    /// `history`, so it is closed instead of sent a `gap`.
    fn is_on(&self) -> bool;

    /// The highest seq every room has used, as kept at open (rooms not listed
    /// start at 0). Read once, when the hub is built.
    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>>;

    /// Room for one message; `None` when history is off (the caller acks).
    /// Waits while the queue is full, for a bounded time, then refuses.
    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>>;

    /// The encoded `history` event answering `request` for `room`.
    fn answer<'a>(&'a self, room: &'a str, request: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>>;
}

/// No history: nothing kept, `history` refused.
#[derive(Debug, Default)]
pub struct NoArchive;

impl Archive for NoArchive {
    fn is_on(&self) -> bool {
        false
    }

    fn last_seqs(&self) -> anyhow::Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    fn reserve(&self) -> ArchiveFuture<'_, Result<Option<Slot<'_>>, Refusal>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn answer<'a>(&'a self, _: &'a str, _: HistoryRequest) -> ArchiveFuture<'a, Result<String, Refusal>> {
        Box::pin(std::future::ready(Err(history_off())))
    }
}

/// The refusal of a `history` request on a server without history.
pub fn history_off() -> Refusal {
    Refusal::new(ErrorCode::Unsupported, "history is off on this server (it was started with --history off)")
}
