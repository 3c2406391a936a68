//! File transfer in the terminal client: `/file PATH` uploads (hashed off the
//! async workers, offered, sent in chunks interleaved with chat, a few in
//! flight, with a progress line), and every file someone shares is
//! downloaded into the downloads folder (`--downloads DIR`) under a name that
//! never leaves it, checked for size and SHA-256.
//!
//! The wire protocol is in README (Wire protocol v1, Files). Uploads in
//! progress do not survive a reconnect (the server forgets them): they are
//! reported as interrupted, to send again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::connection::normalize_url;
use super::tls::TlsOptions;
use crate::printable::printable;
use crate::protocol::{ClientFrame, FileOffer};

/// Chunks in flight per upload (sent, not yet confirmed by `upload_progress`).
const WINDOW: u64 = 4;
/// Progress is shown each time another this many percent are through.
const PROGRESS_STEP: u64 = 25;

/// A file ready to offer: read, measured and hashed.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub media_type: String,
    pub sha256: String,
}

/// Read `path` (on the blocking pool: a big file takes a while to hash).
pub async fn prepare(path: &str) -> Result<Prepared, String> {
    let path = PathBuf::from(path.trim());
    let shown = path.display().to_string();
    let reading = path.clone();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&reading)?;
        let mut hasher = Sha256::new();
        let (mut size, mut buffer) = (0u64, vec![0u8; 1 << 16]);
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        Ok((size, crate::ids::hex(&hasher.finalize())))
    })
    .await
    .map_err(|err| format!("reading {shown} failed: {err}"))?;
    let (size, sha256) = hashed.map_err(|err| format!("cannot read {shown}: {err}"))?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{shown} has no usable file name"))?;
    let media_type = mime_guess::from_path(&path).first_or_octet_stream().essence_str().to_string();
    Ok(Prepared { name: name.to_string(), path, size, media_type, sha256 })
}

/// One upload of ours.
#[derive(Debug)]
struct Outgoing {
    file: Prepared,
    chunk_size: Option<u64>,
    reader: Option<tokio::fs::File>,
    sent: u64,
    confirmed: u64,
    shown_pct: u64,
}

/// Our uploads in progress on this connection.
#[derive(Debug, Default)]
pub struct Uploads {
    active: HashMap<String, Outgoing>,
    next_id: u64,
}

/// The next chunk to send: its header frame and bytes.
#[derive(Debug)]
pub struct Chunk {
    pub header: ClientFrame<'static>,
    pub bytes: Vec<u8>,
}

impl Uploads {
    /// Start uploading `file`: the offer to send.
    pub fn offer(&mut self, file: Prepared, client_id: String) -> ClientFrame<'static> {
        self.next_id += 1;
        let upload_id = format!("up{}", self.next_id);
        let offer = FileOffer {
            upload_id: upload_id.clone().into(),
            name: file.name.clone().into(),
            size: file.size,
            media_type: file.media_type.clone().into(),
            sha256: file.sha256.clone().into(),
            client_id: Some(client_id.into()),
        };
        let outgoing = Outgoing { file, chunk_size: None, reader: None, sent: 0, confirmed: 0, shown_pct: 0 };
        self.active.insert(upload_id, outgoing);
        ClientFrame::FileOffer(offer)
    }

    /// `upload_ready`: chunks may go.
    pub fn ready(&mut self, upload_id: &str, chunk_size: usize) {
        if let Some(up) = self.active.get_mut(upload_id) {
            up.chunk_size = Some(chunk_size.max(1) as u64);
        }
    }

    /// `upload_progress`: a line to show when another step is through.
    pub fn progress(&mut self, upload_id: &str, received: u64) -> Option<String> {
        let up = self.active.get_mut(upload_id)?;
        up.confirmed = received;
        let pct = (received * 100).checked_div(up.file.size).unwrap_or(100);
        if pct >= up.shown_pct + PROGRESS_STEP && pct < 100 {
            up.shown_pct = pct - pct % PROGRESS_STEP;
            return Some(format!(
                "* uploading {}: {pct}% ({} of {} bytes)",
                printable(&up.file.name),
                received,
                up.file.size
            ));
        }
        None
    }

    /// The upload ended (its ack, or an error naming it): what to say.
    pub fn finished(&mut self, upload_id: &str, failure: Option<&str>) -> Option<String> {
        let up = self.active.remove(upload_id)?;
        let name = printable(&up.file.name);
        Some(match failure {
            None => format!("* sent {name} ({} bytes)", up.file.size),
            Some(why) => format!("! could not send {name}: {}", printable(why)),
        })
    }

    /// The connection dropped: every upload is lost; what to say.
    pub fn interrupted(&mut self) -> Vec<String> {
        let lines = self.active.values().map(|up| {
            format!(
                "! the upload of {} was interrupted; send it again with /file {}",
                printable(&up.file.name),
                up.file.path.display()
            )
        });
        let lines = lines.collect();
        self.active.clear();
        lines
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Is a chunk ready to go (an upload ready, within its window)?
    pub fn can_send(&self) -> bool {
        self.active.values().any(|up| match up.chunk_size {
            Some(chunk) => up.sent < up.file.size && up.sent < up.confirmed + WINDOW * chunk,
            None => false,
        })
    }

    /// Read the next chunk of an upload that may send one.
    pub async fn next_chunk(&mut self) -> Result<Chunk, (String, String)> {
        let Some((id, up)) = self.active.iter_mut().find(|(_, up)| {
            up.chunk_size.is_some_and(|chunk| up.sent < up.file.size && up.sent < up.confirmed + WINDOW * chunk)
        }) else {
            return Err((String::new(), "nothing to send".into()));
        };
        let failed = |err: std::io::Error| (id.clone(), format!("reading {} failed: {err}", up.file.path.display()));
        if up.reader.is_none() {
            up.reader = Some(tokio::fs::File::open(&up.file.path).await.map_err(failed)?);
        }
        let chunk = up.chunk_size.unwrap_or(1).min(up.file.size - up.sent);
        let mut bytes = vec![0; chunk as usize];
        if let Some(reader) = up.reader.as_mut() {
            reader.read_exact(&mut bytes).await.map_err(failed)?;
        }
        let header = ClientFrame::FileChunk { upload_id: id.clone().into(), offset: up.sent };
        up.sent += chunk;
        Ok(Chunk { header, bytes })
    }
}

/// Where downloads go by default: `$XDG_DOWNLOAD_DIR/chorus`, else
/// `~/Downloads/chorus`, else `./chorus-downloads`.
pub fn default_downloads() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("XDG_DOWNLOAD_DIR") {
        return dir.join("chorus");
    }
    match env("HOME") {
        Some(home) => home.join("Downloads").join("chorus"),
        None => PathBuf::from("chorus-downloads"),
    }
}

/// A file name safe to create in a folder: one path component (separators,
/// control, bidi and invisible characters replaced by `_`), no leading dot,
/// at most 200 bytes; never empty.
pub fn safe_name(name: &str) -> String {
    let cleaned: String = printable(name)
        .chars()
        .map(|c| if matches!(c, '/' | '\\' | ':' | '\0') || c.is_control() { '_' } else { c })
        .collect();
    let mut cleaned = cleaned.trim().trim_start_matches('.').to_string();
    while cleaned.len() > 200 {
        cleaned.pop();
    }
    if cleaned.is_empty() { "file".to_string() } else { cleaned }
}

/// A path in `dir` for `name` that does not exist yet: `name`, else
/// `stem (1).ext`, `stem (2).ext`, ...
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    (0..)
        .map(|n| if n == 0 { dir.join(name) } else { dir.join(format!("{stem} ({n}){ext}")) })
        .find(|path| !path.exists())
        .unwrap_or_else(|| dir.join(name))
}

/// What to fetch, and how to check it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub url: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub from: String,
}

/// How to reach the server's HTTP side.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The WebSocket URL the client connected to.
    pub ws_url: String,
    pub token: Option<String>,
    pub tls: TlsOptions,
    pub dir: PathBuf,
}

impl Fetcher {
    /// Download `file` into the downloads folder; the path it was saved to.
    /// Nothing is left behind unless size and SHA-256 match.
    pub async fn fetch(&self, file: &Incoming) -> Result<PathBuf, String> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|err| format!("cannot create {}: {err}", self.dir.display()))?;
        let body = self.get(&file.url).await?;
        let partial = self.dir.join(format!(".{}.part-{:08x}", safe_name(&file.name), rand::random::<u32>()));
        let saved = save(body, &partial, file).await;
        if saved.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        saved?;
        let target = free_path(&self.dir, &safe_name(&file.name));
        tokio::fs::rename(&partial, &target).await.map_err(|err| format!("cannot save {}: {err}", target.display()))?;
        Ok(target)
    }

    /// `GET path` on the server (http or https, as the WebSocket URL says).
    async fn get(&self, path: &str) -> Result<hyper::body::Incoming, String> {
        let url = normalize_url(&self.ws_url);
        let uri: http::Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
        let secure = uri.scheme_str() == Some("wss");
        let host = uri.host().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|err| format!("{url}: {err}"))?;
        let mut request = http::Request::get(path).header(http::header::HOST, format!("{host}:{port}"));
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let request = request.body(http_body_util::Empty::<Bytes>::new()).map_err(|err| err.to_string())?;
        let response = if secure {
            let config = super::tls::client_config(&self.tls)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|err| err.to_string())?;
            let tls =
                tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|err| err.to_string())?;
            send(tls, request).await?
        } else {
            send(tcp, request).await?
        };
        if !response.status().is_success() {
            return Err(format!("the server answered {} for {path}", response.status()));
        }
        Ok(response.into_body())
    }
}

/// One HTTP/1.1 request on `io` (hyper's client).
async fn send<S>(
    io: S,
    request: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|err| err.to_string())
}

/// Write `body` to `path`, hashing it; fails unless it is `file` exactly.
async fn save(mut body: hyper::body::Incoming, path: &Path, file: &Incoming) -> Result<(), String> {
    let mut out =
        tokio::fs::File::create(path).await.map_err(|err| format!("cannot create {}: {err}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| format!("the download broke off: {err}"))?;
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            if size > file.size {
                return Err(format!("the server sent more than the {} bytes announced", file.size));
            }
            hasher.update(&data);
            out.write_all(&data).await.map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        }
    }
    out.flush().await.map_err(|err| err.to_string())?;
    let sha256 = crate::ids::hex(&hasher.finalize());
    if size != file.size || sha256 != file.sha256 {
        return Err(format!("got {size} bytes with SHA-256 {sha256}, not the file announced; not saved"));
    }
    Ok(())
}

/// A line about a transfer, from a task working on one; `done` when the
/// task is over.
#[derive(Debug)]
pub struct Note {
    pub line: String,
    pub done: bool,
}

/// Every transfer of one client: uploads on the current connection, files
/// being read for upload, downloads running in their own tasks.
#[derive(Debug)]
pub struct Transfers {
    pub uploads: Uploads,
    fetcher: Fetcher,
    /// Files read and hashed for `/file`, ready to offer.
    pub prepared: tokio::sync::mpsc::UnboundedReceiver<Result<Prepared, String>>,
    prepared_tx: tokio::sync::mpsc::UnboundedSender<Result<Prepared, String>>,
    /// Lines from the download tasks.
    pub notes: tokio::sync::mpsc::UnboundedReceiver<Note>,
    notes_tx: tokio::sync::mpsc::UnboundedSender<Note>,
    /// `/file` commands being read and hashed.
    preparing: usize,
    /// Downloads running.
    downloading: usize,
}

impl Transfers {
    pub fn new(fetcher: Fetcher) -> Transfers {
        let (prepared_tx, prepared) = tokio::sync::mpsc::unbounded_channel();
        let (notes_tx, notes) = tokio::sync::mpsc::unbounded_channel();
        Transfers {
            uploads: Uploads::default(),
            fetcher,
            prepared,
            prepared_tx,
            notes,
            notes_tx,
            preparing: 0,
            downloading: 0,
        }
    }

    /// `/file PATH`: read and hash it in the background; offered once ready.
    pub fn share(&mut self, path: &str) {
        self.preparing += 1;
        let (path, done) = (path.to_string(), self.prepared_tx.clone());
        tokio::spawn(async move {
            let _ = done.send(prepare(&path).await);
        });
    }

    /// A prepared file came back (offered or not).
    pub fn prepared_one(&mut self) {
        self.preparing = self.preparing.saturating_sub(1);
    }

    /// A note came back from a download task.
    pub fn noted(&mut self, note: &Note) {
        if note.done {
            self.downloading = self.downloading.saturating_sub(1);
        }
    }

    /// Anything still running (a script waits for it before it exits)?
    pub fn busy(&self) -> bool {
        self.preparing > 0 || self.downloading > 0 || !self.uploads.is_empty()
    }

    /// Download a file someone shared, in the background.
    pub fn download(&mut self, file: Incoming) -> String {
        self.downloading += 1;
        let line = format!(
            "* {} shared {} ({} bytes); saving it to {}",
            printable(&file.from),
            printable(&file.name),
            file.size,
            self.fetcher.dir.display()
        );
        let (fetcher, notes) = (self.fetcher.clone(), self.notes_tx.clone());
        tokio::spawn(async move {
            let line = match fetcher.fetch(&file).await {
                Ok(path) => format!(
                    "* saved {} ({} bytes, SHA-256 checked) as {}",
                    printable(&file.name),
                    file.size,
                    path.display()
                ),
                Err(why) => format!("! could not download {}: {}", printable(&file.name), printable(&why)),
            };
            let _ = notes.send(Note { line, done: true });
        });
        line
    }

    /// React to a server event about transfers: lines to show.
    pub fn on_event(&mut self, event: &crate::protocol::ServerEvent<'_>) -> Option<String> {
        use crate::protocol::ServerEvent;
        match event {
            ServerEvent::UploadReady { upload_id, chunk_size } => {
                self.uploads.ready(upload_id, *chunk_size);
                None
            }
            ServerEvent::UploadProgress { upload_id, received } => self.uploads.progress(upload_id, *received),
            ServerEvent::Ack { upload_id: Some(upload_id), .. } => self.uploads.finished(upload_id, None),
            ServerEvent::Error { upload_id: Some(upload_id), message, .. } => {
                self.uploads.finished(upload_id, Some(message))
            }
            ServerEvent::File { url, name, size, sha256, from, .. } => Some(self.download(Incoming {
                url: url.to_string(),
                name: name.to_string(),
                size: *size,
                sha256: sha256.to_string(),
                from: from.to_string(),
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_the_folder() {
        assert_eq!(safe_name("cat.png"), "cat.png");
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "_.._boot.ini");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name("..."), "file");
        assert_eq!(safe_name(""), "file");
        assert!(!safe_name("evil\u{202E}gpj.exe").contains('\u{202E}'));
        assert!(!safe_name("a\u{1b}[2Jb").contains('\u{1b}'));
        assert!(safe_name(&"x".repeat(300)).len() <= 200);
    }

    #[test]
    fn name_clashes_get_a_number() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_path(dir.path(), "a.txt"), dir.path().join("a.txt"));
        std::fs::write(dir.path().join("a.txt"), b"").unwrap();
        assert_eq!(free_path(dir.path(), "a.txt"), dir.path().join("a (1).txt"));
        std::fs::write(dir.path().join("a (1).txt"), b"").unwrap();
        assert_eq!(free_path(dir.path(), "a.txt"), dir.path().join("a (2).txt"));
        assert_eq!(free_path(dir.path(), "README"), dir.path().join("README"));
    }
}
