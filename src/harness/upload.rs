//! File uploads by a simulated client, as `files-protocol` describes them:
//! `file_offer` (the stamp in its `client_id`), `upload_ready`, then chunks
//! (a `file_chunk` header and one binary frame each) sent a few ahead of
//! the server's `upload_progress`, so they interleave with chat; the `ack`
//! ends it. One upload at a time per client: the next waits its turn, its
//! intended time kept, so its latency includes the wait (as it would for a
//! person). Every recipient's `file` event is a delivery.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::bot::{Bot, Conn};
use super::metrics::{Kind, Live};
use super::tracker::PendingSend;
use crate::protocol::{ClientFrame, FileOffer, ServerEvent};

/// Chunks sent ahead of the server's `upload_progress`.
const WINDOW: usize = 4;

/// The error codes that end an upload.
pub(super) const UPLOAD_ERRORS: &[&str] = &[
    "invalid_file",
    "file_too_large",
    "too_many_uploads",
    "invalid_chunk",
    "hash_mismatch",
    "upload_timeout",
    "storage_full",
    "storage_failed",
];

/// A client's uploads: the one under way and those waiting.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    active: Option<Upload>,
    queue: VecDeque<Queued>,
}

impl Uploads {
    /// Forget everything (the connection ended: its uploads with it); how
    /// many files were waiting their turn, never offered.
    pub(super) fn clear(&mut self) -> usize {
        self.active = None;
        let never_offered = self.queue.len();
        self.queue.clear();
        never_offered
    }

    /// Files waiting their turn behind the upload under way.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[derive(Debug)]
struct Queued {
    size: usize,
    name: Option<String>,
    intended: Instant,
}

#[derive(Debug)]
struct Upload {
    id: String,
    client_id: String,
    data: Bytes,
    offered_at: Instant,
    /// Most bytes per chunk (0 until `upload_ready`).
    chunk_size: usize,
    /// Bytes sent, and bytes the server said it stored.
    sent: usize,
    stored: usize,
}

impl Bot {
    /// Upload a file of `size` bytes meant to start at `intended` (now, or
    /// after the upload under way).
    pub(super) async fn send_file(
        &mut self,
        conn: &mut Conn,
        size: usize,
        name: Option<String>,
        intended: Instant,
    ) -> Result<(), WsError> {
        self.uploads.queue.push_back(Queued { size, name, intended });
        self.next_upload(conn).await
    }

    /// Offer the next waiting file, if none is under way.
    async fn next_upload(&mut self, conn: &mut Conn) -> Result<(), WsError> {
        if self.uploads.active.is_some() {
            return Ok(());
        }
        let Some(file) = self.uploads.queue.pop_front() else { return Ok(()) };
        let (intended, lag) = self.lag(file.intended);
        let intended_us = self.ctx.wall_us(intended);
        let lag_us = lag.as_micros().min(u128::from(u32::MAX)) as u32;
        self.file_seq += 1;
        let stamp =
            super::stamp::Stamp { tag: self.ctx.tag, bot: self.plan.id, seq: self.file_seq, intended_us, lag_us };
        // The stamp first makes every file's bytes (and so its hash) unique:
        // the server stores by content, and equal files would cost it nothing.
        let mut data = Vec::with_capacity(file.size);
        stamp.write_binary(&mut data);
        data.resize(file.size, b'f');
        let sha256: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("u{}", self.file_seq);
        let name = file.name.unwrap_or_else(|| format!("{}-{}-{}.bin", self.group().name, self.plan.id, self.file_seq));
        let client_id = stamp.to_text();
        let offer = ClientFrame::FileOffer(FileOffer {
            upload_id: id.as_str().into(),
            name: name.into(),
            size: file.size as u64,
            media_type: "application/octet-stream".into(),
            sha256: sha256.into(),
            client_id: Some(client_id.as_str().into()),
        })
        .encode();
        let bytes = offer.len() as u64;
        self.pending.file.push_back(PendingSend {
            client_id: Some(client_id.clone()),
            intended_us,
            sent_us: intended_us + i64::from(lag_us),
        });
        self.uploads.active = Some(Upload {
            id,
            client_id,
            data: data.into(),
            offered_at: Instant::now(),
            chunk_size: 0,
            sent: 0,
            stored: 0,
        });
        conn.ws.send(Message::Text(offer.into())).await?;
        self.metrics.counters.sent_file += 1;
        self.metrics.counters.bytes_sent += bytes;
        self.live.count(self.ctx.second(), Live::Sent(bytes));
        Ok(())
    }

    /// `upload_ready` or `upload_progress`: send the chunks the window allows.
    pub(super) async fn upload_event(&mut self, conn: &mut Conn, text: &str) -> Result<(), WsError> {
        let Some(upload) = self.uploads.active.as_mut() else { return Ok(()) };
        match ServerEvent::decode(text) {
            Ok(ServerEvent::UploadReady { upload_id, chunk_size }) if upload_id == upload.id => {
                upload.chunk_size = chunk_size.max(1);
            }
            Ok(ServerEvent::UploadProgress { upload_id, received }) if upload_id == upload.id => {
                upload.stored = received as usize;
            }
            _ => return Ok(()),
        }
        let mut sent_bytes = 0;
        while upload.chunk_size > 0
            && upload.sent < upload.data.len()
            && upload.sent - upload.stored.min(upload.sent) < WINDOW * upload.chunk_size
        {
            let end = (upload.sent + upload.chunk_size).min(upload.data.len());
            let header =
                ClientFrame::FileChunk { upload_id: upload.id.as_str().into(), offset: upload.sent as u64 }.encode();
            sent_bytes += (header.len() + end - upload.sent) as u64;
            conn.ws.feed(Message::Text(header.into())).await?;
            conn.ws.feed(Message::Binary(upload.data.slice(upload.sent..end))).await?;
            upload.sent = end;
        }
        if sent_bytes > 0 {
            conn.ws.flush().await?;
            self.metrics.counters.bytes_sent += sent_bytes;
            self.live.count(self.ctx.second(), Live::SentBytes(sent_bytes));
        }
        Ok(())
    }

    /// The `ack` of an upload: stored and announced. Measure it, start the next.
    pub(super) async fn file_stored(&mut self, conn: &mut Conn, pending: &PendingSend) -> Result<(), WsError> {
        self.acked(Kind::File, pending);
        if let Some(upload) = self.uploads.active.take_if(|u| pending.client_id.as_deref() == Some(&u.client_id)) {
            let c = &mut self.metrics.counters;
            c.files_acked += 1;
            c.file_bytes += upload.data.len() as u64;
            c.upload_us += upload.offered_at.elapsed().as_micros() as u64;
        }
        self.script_upload_done();
        self.next_upload(conn).await
    }

    /// An `error` that ends an upload (counted by the caller).
    pub(super) async fn upload_refused(&mut self, conn: &mut Conn, text: &str) -> Result<(), WsError> {
        let upload_id = match ServerEvent::decode(text) {
            Ok(ServerEvent::Error { upload_id, .. }) => upload_id.map(|u| u.into_owned()),
            _ => None,
        };
        let ended = self.uploads.active.take_if(|u| upload_id.as_deref().is_none_or(|id| id == u.id));
        if let Some(upload) = ended {
            if let Some(at) = self.pending.file.iter().position(|p| p.client_id.as_deref() == Some(&upload.client_id)) {
                self.pending.file.remove(at);
            }
            self.answered();
            self.script_upload_done();
        }
        self.next_upload(conn).await
    }
}
