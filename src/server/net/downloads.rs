//! `GET /files/<file_id>/<name>`: a shared file's bytes, with range requests
//! (RFC 9110 section 14), a strong `ETag` (the SHA-256), and headers that keep
//! a file from ever being rendered as a page of this origin: images (png,
//! jpeg, gif, webp, avif) are served inline with their type, everything else
//! as `application/octet-stream` with `Content-Disposition: attachment`; all
//! with `X-Content-Type-Options: nosniff` and `Content-Security-Policy:
//! sandbox`. With `--auth required` the request needs a token
//! (`Authorization: Bearer` or `?token=`), else 401.

use std::io::SeekFrom;
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use headers::HeaderMapExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::http::{query_pairs, text};
use crate::server::Shared;
use crate::server::auth::{AuthMode, token_from};
use crate::server::files::{StoredBody, StoredFile};

/// Media types a browser may show inline: images that cannot carry script.
const INLINE: [&str; 5] = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"];

/// Characters percent-encoded in a `filename*` (RFC 8187 attr-char kept).
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

pub(super) async fn download(
    State(shared): State<Arc<Shared>>,
    Path((file_id, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&shared, &headers, query.as_deref().unwrap_or("")).await {
        return refused;
    }
    let Some(file) = shared.files.get(&file_id.to_ascii_lowercase()) else {
        return text(StatusCode::NOT_FOUND, format!("no file {file_id} here (never shared, or deleted since)"));
    };
    let etag = format!("\"{}\"", file_id.to_ascii_lowercase());
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&etag)) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let range = match requested_range(&headers, file.size) {
        Ok(range) => range,
        Err(()) => {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "the range is outside the file");
            insert(&mut response, header::CONTENT_RANGE, &format!("bytes */{}", file.size));
            return response;
        }
    };
    let (start, end) = range.unwrap_or((0, file.size));
    let body = match read(&file, start, end).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!("reading file {file_id} failed: {err}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "the file could not be read; the server log says why");
        }
    };
    let mut response = Response::new(body);
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        insert(&mut response, header::CONTENT_RANGE, &format!("bytes {start}-{}/{}", end.saturating_sub(1), file.size));
    }
    describe(&mut response, &file, &name, &etag, end - start);
    response
}

/// With `--auth required`: a valid token, else 401.
async fn authorize(shared: &Shared, headers: &HeaderMap, query: &str) -> Result<(), Response> {
    let Some(auth) = shared.security.auth.as_ref().filter(|a| a.mode == AuthMode::Required) else { return Ok(()) };
    let unauthorized = |why: String| {
        let mut response = text(StatusCode::UNAUTHORIZED, why);
        insert(&mut response, header::WWW_AUTHENTICATE, "Bearer realm=\"chorus\"");
        response
    };
    let query = query_pairs(query).map_err(|err| text(StatusCode::BAD_REQUEST, err.to_string()))?;
    let token = token_from(headers, &query).map_err(|err| unauthorized(err.to_string()))?;
    match auth.check(token.as_deref()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(unauthorized("this server requires a token to download files".into())),
        Err(err) => Err(unauthorized(err.to_string())),
    }
}

/// The one range asked for (`None`: the whole file), as [start, end); an
/// error when it is unsatisfiable. Several ranges get the whole file (RFC
/// 9110 section 14.2 lets a server ignore a Range).
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(range) = headers.typed_get::<headers::Range>() else { return Ok(None) };
    let mut ranges = range.satisfiable_ranges(size);
    let Some((from, to)) = ranges.next() else { return Err(()) };
    if ranges.next().is_some() {
        return Ok(None);
    }
    let start = match from {
        Bound::Included(n) => n,
        Bound::Excluded(n) => n + 1,
        Bound::Unbounded => 0,
    };
    let end = match to {
        Bound::Included(n) => n + 1,
        Bound::Excluded(n) => n,
        Bound::Unbounded => size,
    }
    .min(size);
    if start >= end { Err(()) } else { Ok(Some((start, end))) }
}

/// The bytes [start, end) of `file`, streamed from disk or sliced from memory.
async fn read(file: &StoredFile, start: u64, end: u64) -> std::io::Result<Body> {
    match &file.body {
        StoredBody::Memory(bytes) => Ok(Body::from(bytes.slice(start as usize..end as usize))),
        StoredBody::Disk(path) => {
            let mut handle = tokio::fs::File::open(path).await?;
            handle.seek(SeekFrom::Start(start)).await?;
            Ok(Body::from_stream(tokio_util::io::ReaderStream::new(handle.take(end - start))))
        }
    }
}

/// The headers of a file response.
fn describe(response: &mut Response, file: &StoredFile, name: &str, etag: &str, length: u64) {
    let inline = INLINE.contains(&file.media_type.as_str());
    let kind = if inline { file.media_type.as_str() } else { "application/octet-stream" };
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR);
    let disposition = format!(
        "{}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}",
        if inline { "inline" } else { "attachment" }
    );
    insert(response, header::CONTENT_TYPE, kind);
    insert(response, header::CONTENT_DISPOSITION, &disposition);
    insert(response, header::CONTENT_LENGTH, &length.to_string());
    insert(response, header::ACCEPT_RANGES, "bytes");
    insert(response, header::ETAG, etag);
    insert(response, header::CACHE_CONTROL, "private, max-age=31536000, immutable");
    insert(response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    insert(response, header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'; img-src 'self'");
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &'static str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static(value));
        requested_range(&headers, size)
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some((0, 100))));
        assert_eq!(range("bytes=900-", 1000), Ok(Some((900, 1000))));
        assert_eq!(range("bytes=-100", 1000), Ok(Some((900, 1000))));
        assert_eq!(range("bytes=990-2000", 1000), Ok(Some((990, 1000))), "clipped to the end");
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 1000), Ok(None), "several ranges: the whole file");
        assert_eq!(range("items=0-1", 1000), Ok(None), "not bytes: the whole file");
        assert_eq!(requested_range(&HeaderMap::new(), 10), Ok(None));
    }
}
