//! A session's side of file transfer: offers, chunk headers and chunks from
//! the client become `Uploads` calls; the answers (`upload_ready`,
//! `upload_progress`, `error` naming the upload) go back to the uploader; a
//! finished file is published to the room like a message (`file` to the
//! others, `ack` to the sender, kept in history).

use std::borrow::Cow;

use bytes::Bytes;

use super::hub::{Hub, Payload, Presence};
use super::session::send;
use super::uploads::{Chunked, Failed, Uploads};
use crate::protocol::{FileOffer, ServerEvent};

/// Tell the uploader its upload failed (it is gone, nothing was kept).
pub(super) fn report(hub: &Hub, presence: &Presence, failed: &Failed) {
    hub.metrics().errors.increment(1);
    let event = ServerEvent::upload_failed(&failed.refusal, &failed.upload_id, failed.client_id.as_deref());
    let _ = presence.outbox.push_text(event.encode());
}

/// A `file_offer`: `upload_ready`, or an error naming the upload.
pub(super) async fn offer(hub: &Hub, presence: &Presence, uploads: &mut Uploads, offer: &FileOffer<'_>) {
    let upload_id = match uploads.offer(hub.files().as_ref(), offer) {
        Ok(id) => id,
        Err(refusal) => {
            let client_id = offer.client_id.as_deref().map(str::to_string);
            let failed = Failed { upload_id: offer.upload_id.to_string(), client_id, refusal };
            return report(hub, presence, &failed);
        }
    };
    let ready = ServerEvent::UploadReady { upload_id: Cow::Borrowed(&upload_id), chunk_size: hub.files().chunk_size() };
    let _ = presence.outbox.push_text(ready.encode());
    if let Some(done) = uploads.complete_if_empty(&upload_id).await {
        settle(hub, presence, &upload_id, done).await;
    }
}

/// A `file_chunk` header: true when its upload is in progress at that
/// offset (its bytes are expected next); else the error is reported.
pub(super) fn chunk_header(
    hub: &Hub,
    presence: &Presence,
    uploads: &mut Uploads,
    upload_id: &str,
    offset: u64,
) -> bool {
    match uploads.chunk_header(upload_id, offset) {
        Ok(()) => true,
        Err(failed) => {
            report(hub, presence, &failed);
            false
        }
    }
}

/// Something other than the expected chunk came: that upload fails.
pub(super) fn chunk_missing(hub: &Hub, presence: &Presence, uploads: &mut Uploads) {
    if let Some(failed) = uploads.missing_chunk() {
        report(hub, presence, &failed);
    }
}

/// The bytes of the expected chunk.
pub(super) async fn chunk(hub: &Hub, presence: &Presence, uploads: &mut Uploads, data: Bytes) {
    let upload_id = uploads.expected().map(str::to_string).unwrap_or_default();
    let done = uploads.chunk(data, hub.files().chunk_size()).await;
    settle(hub, presence, &upload_id, done).await;
}

/// Answer a chunk: progress, the published file, or the failure.
async fn settle(hub: &Hub, presence: &Presence, upload_id: &str, done: Result<Chunked, Failed>) {
    match done {
        Ok(Chunked::Progress(received)) => {
            let progress = ServerEvent::UploadProgress { upload_id: Cow::Borrowed(upload_id), received };
            let _ = presence.outbox.push_text(progress.encode());
        }
        Ok(Chunked::Complete { file, client_id }) => {
            let progress = ServerEvent::UploadProgress { upload_id: Cow::Borrowed(upload_id), received: file.size };
            let _ = presence.outbox.push_text(progress.encode());
            let payload = Payload::File { file: &file, client_id: client_id.as_deref(), upload_id };
            if let Err(refusal) = send(hub, presence, payload).await {
                let failed = Failed { upload_id: upload_id.to_string(), client_id, refusal };
                report(hub, presence, &failed);
            }
        }
        Err(failed) => report(hub, presence, &failed),
    }
}
