//! Files shared in rooms, content-addressed: a file's id is the SHA-256 of
//! its bytes, so the same file shared twice is kept once. On disk under
//! `<data dir>/files/<first two hex digits>/<sha256>` (with a `.json`
//! sidecar: size, media type, when stored) when history is in SQLite; in
//! memory otherwise. Implements the chat core's `FileStore`.
//!
//! Limits: each file at most `max_file_size`; all files together at most
//! `max_total` (the oldest are deleted to make room) and none older than
//! `max_age` (the history retention age). An upload's bytes go to a
//! temporary file (`files/tmp/`) or buffer, hashed as they come, and become
//! a kept file only when the size and SHA-256 match the offer; anything
//! else, or a dropped upload, leaves nothing behind. Disk work runs on the
//! blocking pool.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::chat::archive::{ArchiveFuture, FileMeta};
use super::chat::uploads::{FileStore, Offer, Upload};
use crate::protocol::{ErrorCode, Refusal};
use crate::sync::lock;

/// Where files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Under this directory (`<data dir>/files`).
    Disk(PathBuf),
    /// In this process's memory; gone at restart.
    Memory,
}

/// The file store's settings.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub place: Place,
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Most bytes kept in all; the oldest files go first.
    pub max_total: u64,
    /// Files older than this are deleted (`None`: kept until room is needed).
    pub max_age: Option<Duration>,
    /// Most bytes per upload chunk.
    pub chunk_size: usize,
}

/// The sidecar of a file on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    media_type: String,
    stored_ms: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    media_type: String,
    stored_ms: i64,
    /// The bytes, for a store in memory.
    data: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
}

#[derive(Debug)]
struct Inner {
    config: FilesConfig,
    /// Every kept file, by id; taken for one map operation at a time, never
    /// across I/O.
    index: Mutex<Index>,
}

/// The file store.
#[derive(Debug, Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

/// A kept file, for a download.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub size: u64,
    pub media_type: String,
    pub body: StoredBody,
}

/// Where a kept file's bytes are.
#[derive(Debug, Clone)]
pub enum StoredBody {
    Disk(PathBuf),
    Memory(Bytes),
}

pub use crate::ids::hex;

fn failed(err: &std::io::Error) -> Refusal {
    if err.kind() == std::io::ErrorKind::StorageFull {
        Refusal::new(ErrorCode::StorageFull, "the server's disk is full; the upload was dropped")
    } else {
        Refusal::new(ErrorCode::StorageFailed, format!("the server could not store the file: {err}"))
    }
}

/// Run disk work on the blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(failed(&err)),
        Err(err) => Err(Refusal::new(ErrorCode::StorageFailed, format!("the file worker failed: {err}"))),
    }
}

impl Files {
    /// Open the store: on disk, create its directories, drop leftovers of
    /// unfinished uploads, and index what is kept. Blocking: call it at start.
    pub fn open(config: FilesConfig) -> std::io::Result<Files> {
        let mut index = Index::default();
        if let Place::Disk(dir) = &config.place {
            let tmp = dir.join("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            index = scan(dir)?;
        }
        let files = Files { inner: Arc::new(Inner { config, index: Mutex::new(index) }) };
        files.make_room(None);
        Ok(files)
    }

    /// A kept file, by id.
    pub fn get(&self, file_id: &str) -> Option<StoredFile> {
        let index = lock(&self.inner.index);
        let entry = index.entries.get(file_id)?;
        let body = match (&entry.data, &self.inner.config.place) {
            (Some(data), _) => StoredBody::Memory(data.clone()),
            (None, Place::Disk(dir)) => StoredBody::Disk(blob_path(dir, file_id)),
            (None, Place::Memory) => return None,
        };
        Some(StoredFile { size: entry.size, media_type: entry.media_type.clone(), body })
    }

    /// Files kept, and their bytes in all.
    pub fn usage(&self) -> (usize, u64) {
        let index = lock(&self.inner.index);
        (index.entries.len(), index.total)
    }

    /// Delete expired files, then the oldest until the total fits (`keep`:
    /// a file just stored, never deleted to make room for itself).
    fn make_room(&self, keep: Option<&str>) {
        let now = crate::ids::now_millis();
        let config = &self.inner.config;
        let cutoff = config.max_age.map(|age| now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let mut doomed = Vec::new();
        {
            let mut index = lock(&self.inner.index);
            let mut by_age: Vec<(i64, String)> =
                index.entries.iter().map(|(id, e)| (e.stored_ms, id.clone())).collect();
            by_age.sort();
            for (stored_ms, id) in by_age {
                let expired = cutoff.is_some_and(|cutoff| stored_ms < cutoff);
                if keep == Some(id.as_str()) || (!expired && index.total <= config.max_total) {
                    continue;
                }
                if let Some(entry) = index.entries.remove(&id) {
                    index.total -= entry.size;
                    doomed.push(id);
                }
            }
        }
        if let (Place::Disk(dir), false) = (&config.place, doomed.is_empty()) {
            let dir = dir.clone();
            let delete = move || {
                for id in doomed {
                    let _ = std::fs::remove_file(blob_path(&dir, &id));
                    let _ = std::fs::remove_file(sidecar_path(&dir, &id));
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(delete)),
                Err(_) => delete(),
            }
        }
    }

    /// Index a file that was just stored.
    fn keep(&self, id: &str, entry: Entry) {
        {
            let mut index = lock(&self.inner.index);
            let size = entry.size;
            if index.entries.insert(id.to_string(), entry).is_none() {
                index.total += size;
            }
        }
        self.make_room(Some(id));
    }
}

fn blob_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id.get(..2).unwrap_or("00")).join(id)
}

fn sidecar_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id.get(..2).unwrap_or("00")).join(format!("{id}.json"))
}

/// Index the files kept under `dir` (those with a readable sidecar).
fn scan(dir: &Path) -> std::io::Result<Index> {
    let mut index = Index::default();
    for shard in std::fs::read_dir(dir)? {
        let shard = shard?.path();
        if !shard.is_dir() || shard.file_name().is_some_and(|n| n == "tmp") {
            continue;
        }
        for file in std::fs::read_dir(&shard)? {
            let path = file?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let sidecar = std::fs::read(sidecar_path(dir, &id)).ok();
            let Some(sidecar) = sidecar.and_then(|bytes| serde_json::from_slice::<Sidecar>(&bytes).ok()) else {
                continue;
            };
            index.total += sidecar.size;
            let entry =
                Entry { size: sidecar.size, media_type: sidecar.media_type, stored_ms: sidecar.stored_ms, data: None };
            index.entries.insert(id, entry);
        }
    }
    Ok(index)
}

impl FileStore for Files {
    fn chunk_size(&self) -> usize {
        self.inner.config.chunk_size
    }

    fn begin(&self, offer: &Offer) -> Result<Box<dyn Upload>, Refusal> {
        let config = &self.inner.config;
        let limit = config.max_file_size.min(config.max_total);
        if offer.size > limit {
            return Err(Refusal::new(
                ErrorCode::FileTooLarge,
                format!("the file is {} bytes; this server takes files of at most {limit} bytes", offer.size),
            ));
        }
        let sink = match &config.place {
            Place::Memory => Sink::Memory(Vec::new()),
            Place::Disk(dir) => {
                Sink::Disk { path: dir.join("tmp").join(format!("upload-{:016x}", rand::random::<u64>())), file: None }
            }
        };
        Ok(Box::new(Uploading { files: self.clone(), offer: offer.clone(), sink, hasher: Sha256::new(), received: 0 }))
    }
}

/// Where an upload's bytes go until it is complete.
#[derive(Debug)]
enum Sink {
    Memory(Vec<u8>),
    /// A temporary file, created at the first chunk.
    Disk {
        path: PathBuf,
        file: Option<std::fs::File>,
    },
}

#[derive(Debug)]
struct Uploading {
    files: Files,
    offer: Offer,
    sink: Sink,
    hasher: Sha256,
    received: u64,
}

impl Drop for Uploading {
    /// An upload dropped before it was kept leaves nothing behind.
    fn drop(&mut self) {
        if let Sink::Disk { path, file } = &mut self.sink {
            file.take();
            let path = std::mem::take(path);
            if path.as_os_str().is_empty() {
                return;
            }
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || std::fs::remove_file(path))),
                Err(_) => drop(std::fs::remove_file(path)),
            }
        }
    }
}

impl Upload for Uploading {
    fn write(&mut self, bytes: Bytes) -> ArchiveFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.received += bytes.len() as u64;
            match &mut self.sink {
                Sink::Memory(buffer) => {
                    self.hasher.update(&bytes);
                    buffer.extend_from_slice(&bytes);
                    Ok(())
                }
                Sink::Disk { path, file } => {
                    let (path, open) = (path.clone(), file.take());
                    let mut hasher = std::mem::take(&mut self.hasher);
                    let (open, hasher) = blocking(move || {
                        let mut open = match open {
                            Some(open) => open,
                            None => std::fs::File::create(&path)?,
                        };
                        open.write_all(&bytes)?;
                        hasher.update(&bytes);
                        Ok((open, hasher))
                    })
                    .await?;
                    *file = Some(open);
                    self.hasher = hasher;
                    Ok(())
                }
            }
        })
    }

    fn finish(mut self: Box<Self>) -> ArchiveFuture<'static, Result<FileMeta, Refusal>> {
        Box::pin(async move {
            let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
            if self.received != self.offer.size || sha256 != self.offer.sha256 {
                return Err(Refusal::new(
                    ErrorCode::HashMismatch,
                    format!(
                        "the bytes received ({}, SHA-256 {sha256}) are not the file offered ({}, SHA-256 {}); \
                         nothing was kept",
                        self.received, self.offer.size, self.offer.sha256
                    ),
                ));
            }
            let stored_ms = crate::ids::now_millis();
            let entry =
                Entry { size: self.offer.size, media_type: self.offer.media_type.clone(), stored_ms, data: None };
            let entry = match std::mem::replace(&mut self.sink, Sink::Memory(Vec::new())) {
                Sink::Memory(buffer) => Entry { data: Some(Bytes::from(buffer)), ..entry },
                Sink::Disk { path, file } => {
                    let dir = match &self.files.inner.config.place {
                        Place::Disk(dir) => dir.clone(),
                        Place::Memory => PathBuf::new(),
                    };
                    let sidecar = Sidecar { size: entry.size, media_type: entry.media_type.clone(), stored_ms };
                    let id = sha256.clone();
                    blocking(move || settle(&dir, &id, &path, file, &sidecar)).await?;
                    entry
                }
            };
            self.files.keep(&sha256, entry);
            let offer = &self.offer;
            Ok(FileMeta {
                file_id: sha256.clone(),
                name: offer.name.clone(),
                size: offer.size,
                media_type: offer.media_type.clone(),
                sha256,
            })
        })
    }
}

/// Make an upload's temporary file a kept one: synced, renamed into place
/// (or dropped when the same bytes are kept already), with its sidecar.
fn settle(dir: &Path, id: &str, tmp: &Path, file: Option<std::fs::File>, sidecar: &Sidecar) -> std::io::Result<()> {
    match file {
        Some(file) => file.sync_all()?,
        None => drop(std::fs::File::create(tmp)?),
    }
    let blob = blob_path(dir, id);
    if let Some(shard) = blob.parent() {
        std::fs::create_dir_all(shard)?;
    }
    if blob.exists() {
        std::fs::remove_file(tmp)?;
    } else {
        std::fs::rename(tmp, &blob)?;
    }
    let json = serde_json::to_vec(sidecar).map_err(std::io::Error::other)?;
    std::fs::write(sidecar_path(dir, id), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(place: Place, max_total: u64) -> FilesConfig {
        FilesConfig { place, max_file_size: 1 << 20, max_total, max_age: None, chunk_size: 4 }
    }

    fn offer(content: &[u8]) -> Offer {
        Offer {
            name: "a.txt".into(),
            size: content.len() as u64,
            media_type: "text/plain".into(),
            sha256: hex(&Sha256::digest(content)),
        }
    }

    async fn upload(files: &Files, content: &[u8]) -> Result<FileMeta, Refusal> {
        let mut upload = files.begin(&offer(content))?;
        for chunk in content.chunks(4) {
            upload.write(Bytes::copy_from_slice(chunk)).await?;
        }
        upload.finish().await
    }

    #[tokio::test]
    async fn files_are_kept_by_content_on_disk_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        for place in [Place::Disk(dir.path().join("files")), Place::Memory] {
            let files = Files::open(config(place.clone(), 1 << 20)).unwrap();
            let meta = upload(&files, b"hello, files").await.unwrap();
            assert_eq!(meta.file_id, hex(&Sha256::digest(b"hello, files")));
            assert_eq!(upload(&files, b"hello, files").await.unwrap().file_id, meta.file_id, "kept once");
            assert_eq!(files.usage(), (1, 12));
            let stored = files.get(&meta.file_id).unwrap();
            let bytes = match stored.body {
                StoredBody::Memory(bytes) => bytes.to_vec(),
                StoredBody::Disk(path) => std::fs::read(path).unwrap(),
            };
            assert_eq!(bytes, b"hello, files");
        }
        let reopened = Files::open(config(Place::Disk(dir.path().join("files")), 1 << 20)).unwrap();
        assert_eq!(reopened.usage(), (1, 12), "the disk store survives a restart");
        assert!(std::fs::read_dir(dir.path().join("files/tmp")).unwrap().next().is_none(), "no temporary file left");
    }

    #[tokio::test]
    async fn bad_bytes_and_dropped_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(config(Place::Disk(dir.path().join("files")), 1 << 20)).unwrap();
        let mut lying = files.begin(&offer(b"the truth")).unwrap();
        lying.write(Bytes::from_static(b"the lies!")).await.unwrap();
        assert_eq!(lying.finish().await.unwrap_err().code, ErrorCode::HashMismatch);
        let mut dropped = files.begin(&offer(b"abandoned")).unwrap();
        dropped.write(Bytes::from_static(b"aban")).await.unwrap();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(files.usage(), (0, 0));
        assert!(std::fs::read_dir(dir.path().join("files/tmp")).unwrap().next().is_none());
        let big = files.begin(&Offer { size: 2 << 20, ..offer(b"x") }).unwrap_err();
        assert_eq!(big.code, ErrorCode::FileTooLarge);
    }

    #[tokio::test]
    async fn the_oldest_files_make_room() {
        let files = Files::open(config(Place::Memory, 20)).unwrap();
        let first = upload(&files, b"0123456789").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = upload(&files, b"abcdefghij").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let third = upload(&files, b"ABCDEFGHIJ").await.unwrap();
        assert!(files.get(&first.file_id).is_none(), "the oldest went");
        assert!(files.get(&second.file_id).is_some() && files.get(&third.file_id).is_some());
        assert_eq!(files.usage(), (2, 20));
    }
}
