//! File uploads over the WebSocket, seen from one connection: the offers in
//! progress, their chunks in order, and their deadlines. Where the bytes go
//! is the file store's business (`FileStore`, implemented by
//! `server::files`); the session announces a finished file to the room.
//!
//! An upload is a `file_offer` (answered `upload_ready` with the chunk size),
//! then `file_chunk` headers each followed by exactly one binary frame with
//! the bytes at that offset, in order (answered `upload_progress`), until the
//! offered size is reached: then the store checks the SHA-256 and keeps the
//! file. Chat and other requests may come between chunks. Any fault ends the
//! upload with an `error` naming it, and nothing is kept: a bad offer, a chunk
//! for no upload or at the wrong offset, a header not followed by its binary
//! frame, a chunk past the size, a hash mismatch, no chunk for the upload
//! timeout, a full store.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::archive::{ArchiveFuture, FileMeta};
use crate::protocol::{ErrorCode, FileOffer, Refusal, check_client_id, check_file_name};

/// Longest `upload_id`, in characters.
pub const MAX_UPLOAD_ID_CHARS: usize = 64;

/// An offer, checked: what the store is asked to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub name: String,
    pub size: u64,
    pub media_type: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
}

/// Where uploaded bytes go. Implemented by `server::files`.
pub trait FileStore: Send + Sync + std::fmt::Debug {
    /// Most bytes per chunk.
    fn chunk_size(&self) -> usize;

    /// Accept `offer` (within the store's limits) and open a place for its bytes.
    fn begin(&self, offer: &Offer) -> Result<Box<dyn Upload>, Refusal>;
}

/// One upload's bytes on their way into the store.
pub trait Upload: Send + std::fmt::Debug {
    /// Keep the next bytes.
    fn write(&mut self, bytes: Bytes) -> ArchiveFuture<'_, Result<(), Refusal>>;

    /// Every byte is in: check size and SHA-256 against the offer and keep
    /// the file. Dropping an upload unfinished discards its bytes.
    fn finish(self: Box<Self>) -> ArchiveFuture<'static, Result<FileMeta, Refusal>>;
}

/// No file store: every offer is refused.
#[derive(Debug, Default)]
pub struct NoFiles;

impl FileStore for NoFiles {
    fn chunk_size(&self) -> usize {
        64 * 1024
    }

    fn begin(&self, _: &Offer) -> Result<Box<dyn Upload>, Refusal> {
        Err(Refusal::new(ErrorCode::Unsupported, "this server does not take files"))
    }
}

/// The limits of one connection's uploads.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Uploads in progress at once.
    pub max_uploads: usize,
    /// An upload with no chunk for this long is dropped.
    pub timeout: Duration,
}

#[derive(Debug)]
struct InProgress {
    upload: Box<dyn Upload>,
    offer: Offer,
    client_id: Option<String>,
    received: u64,
    deadline: Instant,
}

/// What a chunk did.
#[derive(Debug)]
pub enum Chunked {
    /// Stored; this many bytes of the file are in.
    Progress(u64),
    /// The last chunk: the file is kept.
    Complete { file: FileMeta, client_id: Option<String> },
}

/// A failed upload: its id, the `client_id` of its offer, and why.
#[derive(Debug)]
pub struct Failed {
    pub upload_id: String,
    pub client_id: Option<String>,
    pub refusal: Refusal,
}

/// One connection's uploads in progress.
#[derive(Debug)]
pub struct Uploads {
    limits: UploadLimits,
    active: HashMap<String, InProgress>,
    /// A `file_chunk` header was read: the next frame is its bytes.
    expecting: Option<(String, u64)>,
}

fn refusal(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

/// Check an offer's fields; the offer as the store sees it.
pub fn check_offer(offer: &FileOffer<'_>) -> Result<Offer, Refusal> {
    let id_chars = offer.upload_id.chars().count();
    if !(1..=MAX_UPLOAD_ID_CHARS).contains(&id_chars) {
        return Err(refusal(ErrorCode::InvalidFile, format!("upload_id must be 1-{MAX_UPLOAD_ID_CHARS} characters")));
    }
    if let Some(why) = offer.client_id.as_deref().and_then(check_client_id) {
        return Err(refusal(ErrorCode::InvalidClientId, why));
    }
    if let Some(why) = check_file_name(&offer.name) {
        return Err(refusal(ErrorCode::InvalidFile, why));
    }
    let sha256 = offer.sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refusal(ErrorCode::InvalidFile, "sha256 must be the file's SHA-256, 64 hex digits"));
    }
    Ok(Offer { name: offer.name.to_string(), size: offer.size, media_type: media_type(&offer.media_type), sha256 })
}

/// A media type as offered when it looks like one (`type/subtype`, RFC 6838
/// token characters, parameters dropped), else `application/octet-stream`.
pub fn media_type(offered: &str) -> String {
    let essence = offered.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => essence,
        _ => "application/octet-stream".to_string(),
    }
}

impl Uploads {
    pub fn new(limits: UploadLimits) -> Uploads {
        Uploads { limits, active: HashMap::new(), expecting: None }
    }

    /// Start an upload: checked, then begun in `store`. The upload's id.
    pub fn offer(&mut self, store: &dyn FileStore, offer: &FileOffer<'_>) -> Result<String, Refusal> {
        let checked = check_offer(offer)?;
        if self.active.contains_key(offer.upload_id.as_ref()) {
            return Err(refusal(ErrorCode::InvalidFile, "an upload with this upload_id is in progress"));
        }
        if self.active.len() >= self.limits.max_uploads {
            return Err(refusal(
                ErrorCode::TooManyUploads,
                format!("at most {} uploads at once per connection; wait for one to finish", self.limits.max_uploads),
            ));
        }
        let upload = store.begin(&checked)?;
        let id = offer.upload_id.to_string();
        let deadline = Instant::now() + self.limits.timeout;
        let client_id = offer.client_id.as_deref().map(str::to_string);
        self.active.insert(id.clone(), InProgress { upload, offer: checked, client_id, received: 0, deadline });
        Ok(id)
    }

    /// Is the next frame a chunk's bytes?
    pub fn expecting(&self) -> bool {
        self.expecting.is_some()
    }

    /// The upload whose chunk is expected next.
    pub fn expected(&self) -> Option<&str> {
        self.expecting.as_ref().map(|(id, _)| id.as_str())
    }

    /// A `file_chunk` header: its upload must be in progress and `offset`
    /// the bytes received so far. Its binary frame is expected next.
    pub fn chunk_header(&mut self, upload_id: &str, offset: u64) -> Result<(), Failed> {
        let Some(upload) = self.active.get(upload_id) else {
            let why = format!("no upload {upload_id:?} in progress on this connection");
            return Err(Failed {
                upload_id: upload_id.into(),
                client_id: None,
                refusal: refusal(ErrorCode::InvalidChunk, why),
            });
        };
        if offset != upload.received {
            let why =
                format!("chunk at offset {offset}, but {} bytes were received: send chunks in order", upload.received);
            return Err(self.fail(upload_id, refusal(ErrorCode::InvalidChunk, why)));
        }
        self.expecting = Some((upload_id.to_string(), offset));
        Ok(())
    }

    /// A frame other than the expected chunk came: the upload that expected
    /// it fails.
    pub fn missing_chunk(&mut self) -> Option<Failed> {
        let (id, _) = self.expecting.take()?;
        let why = "a file_chunk header must be followed at once by one binary frame with its bytes";
        Some(self.fail(&id, refusal(ErrorCode::InvalidChunk, why)))
    }

    /// The expected chunk's bytes: stored, and the file kept if that was the last.
    pub async fn chunk(&mut self, bytes: Bytes, max_chunk: usize) -> Result<Chunked, Failed> {
        let Some((id, _)) = self.expecting.take() else {
            let refusal = refusal(ErrorCode::InvalidChunk, "no file_chunk header came before these bytes");
            return Err(Failed { upload_id: String::new(), client_id: None, refusal });
        };
        let Some(upload) = self.active.get_mut(&id) else {
            let refusal = refusal(ErrorCode::InvalidChunk, "the upload is gone");
            return Err(Failed { upload_id: id, client_id: None, refusal });
        };
        let end = upload.received + bytes.len() as u64;
        let fault = if bytes.is_empty() || bytes.len() > max_chunk {
            Some(format!("a chunk must hold 1 to {max_chunk} bytes (got {})", bytes.len()))
        } else if end > upload.offer.size {
            Some(format!("the chunk goes past the offered size of {} bytes", upload.offer.size))
        } else {
            None
        };
        if let Some(why) = fault {
            return Err(self.fail(&id, refusal(ErrorCode::InvalidChunk, why)));
        }
        if let Err(refusal) = upload.upload.write(bytes).await {
            return Err(self.fail(&id, refusal));
        }
        upload.received = end;
        upload.deadline = Instant::now() + self.limits.timeout;
        if end < upload.offer.size {
            return Ok(Chunked::Progress(end));
        }
        self.complete(&id).await
    }

    /// An offer of zero bytes is complete at once.
    pub async fn complete_if_empty(&mut self, upload_id: &str) -> Option<Result<Chunked, Failed>> {
        let empty = self.active.get(upload_id).is_some_and(|u| u.offer.size == 0);
        if empty { Some(self.complete(upload_id).await) } else { None }
    }

    async fn complete(&mut self, id: &str) -> Result<Chunked, Failed> {
        let Some(done) = self.active.remove(id) else {
            let refusal = refusal(ErrorCode::InvalidChunk, "the upload is gone");
            return Err(Failed { upload_id: id.into(), client_id: None, refusal });
        };
        match done.upload.finish().await {
            Ok(file) => Ok(Chunked::Complete { file, client_id: done.client_id }),
            Err(refusal) => Err(Failed { upload_id: id.into(), client_id: done.client_id, refusal }),
        }
    }

    /// Abandon an upload (its bytes are discarded).
    pub fn cancel(&mut self, upload_id: &str) {
        self.active.remove(upload_id);
        if self.expecting.as_ref().is_some_and(|(id, _)| id == upload_id) {
            self.expecting = None;
        }
    }

    /// Drop the upload `id` for `refusal`.
    fn fail(&mut self, id: &str, refusal: Refusal) -> Failed {
        let client_id = self.active.remove(id).and_then(|u| u.client_id);
        Failed { upload_id: id.to_string(), client_id, refusal }
    }

    /// When the next upload times out, if any is in progress.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active.values().map(|u| u.deadline).min()
    }

    /// Drop every upload whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Failed> {
        let expired: Vec<String> =
            self.active.iter().filter(|(_, u)| u.deadline <= now).map(|(id, _)| id.clone()).collect();
        let timeout = self.limits.timeout;
        expired
            .into_iter()
            .map(|id| {
                if self.expecting.as_ref().is_some_and(|(e, _)| *e == id) {
                    self.expecting = None;
                }
                let why = format!("no chunk for {timeout:?}: the upload was dropped; offer it again");
                self.fail(&id, refusal(ErrorCode::UploadTimeout, why))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn offer(id: &str, name: &str, sha: &str) -> FileOffer<'static> {
        FileOffer {
            upload_id: Cow::Owned(id.into()),
            name: Cow::Owned(name.into()),
            size: 3,
            media_type: Cow::Borrowed("text/plain; charset=utf-8"),
            sha256: Cow::Owned(sha.into()),
            client_id: None,
        }
    }

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn offers_are_checked_field_by_field() {
        assert_eq!(check_offer(&offer("u1", "a.txt", SHA)).unwrap().media_type, "text/plain");
        for (id, name, sha) in [
            ("", "a.txt", SHA),
            ("u1", "", SHA),
            ("u1", "../etc/passwd", SHA),
            ("u1", "..", SHA),
            ("u1", "a\u{202E}txt.exe", SHA),
            ("u1", "nul\u{0}", SHA),
            ("u1", "a.txt", "abc"),
            ("u1", "a.txt", &"z".repeat(64)),
        ] {
            assert_eq!(
                check_offer(&offer(id, name, sha)).unwrap_err().code,
                ErrorCode::InvalidFile,
                "{id} {name} {sha}"
            );
        }
        assert_eq!(media_type("IMAGE/PNG"), "image/png");
        assert_eq!(media_type("text/html<script>"), "application/octet-stream");
        assert_eq!(media_type(""), "application/octet-stream");
    }
}
