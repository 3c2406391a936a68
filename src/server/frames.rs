//! The fragment limit: a byte-stream wrapper that reads WebSocket frame
//! headers as they go by and fails the stream when one message arrives in more
//! than `max_fragments` frames.
//!
//! tungstenite reassembles fragmented messages itself and bounds their total
//! size, but not how many frames they come in: a message of a million
//! zero-length continuation frames never grows and never completes. This
//! wrapper sits between the socket (or the TLS stream) and tungstenite, parses
//! only frame headers (2 to 14 bytes), skips payloads without copying, and
//! turns the violation into an I/O error of kind [`TooManyFragments`], which
//! the session closes with 1009.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a stream fails with when a message has too many fragments.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a message arrived in more than {limit} frames")]
pub struct TooManyFragments {
    pub limit: usize,
}

/// Is this I/O error the fragment limit?
pub fn is_too_many_fragments(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<TooManyFragments>())
}

/// Where the parser is within the frame stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a header: `have` of its bytes are in `buf`.
    Header { buf: [u8; 14], have: usize },
    /// Skipping the payload of the current frame.
    Payload { remaining: u64 },
}

/// Counts the frames of the message in progress.
#[derive(Debug, Clone)]
pub struct FragmentCounter {
    state: State,
    /// Frames of the data message in progress (0: none in progress).
    fragments: usize,
    limit: usize,
}

/// A header's length once its first two bytes are known.
fn header_len(b0_b1: [u8; 2]) -> usize {
    let masked = b0_b1[1] & 0x80 != 0;
    let extended = match b0_b1[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if masked { 4 } else { 0 }
}

impl FragmentCounter {
    pub fn new(limit: usize) -> Self {
        FragmentCounter { state: State::Header { buf: [0; 14], have: 0 }, fragments: 0, limit: limit.max(1) }
    }

    /// Feed bytes read from the peer; fails once a message exceeds the limit.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooManyFragments> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let skip = (*remaining).min(bytes.len() as u64) as usize;
                    *remaining -= skip as u64;
                    bytes = &bytes[skip..];
                    if *remaining == 0 {
                        self.state = State::Header { buf: [0; 14], have: 0 };
                    }
                }
                State::Header { buf, have } => {
                    let needed = if *have < 2 { 2 } else { header_len([buf[0], buf[1]]) };
                    let take = (needed - *have).min(bytes.len());
                    buf[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have >= 2 && *have == header_len([buf[0], buf[1]]) {
                        let header = *buf;
                        self.on_header(&header)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete header: count it, then skip its payload.
    fn on_header(&mut self, header: &[u8; 14]) -> Result<(), TooManyFragments> {
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        let length = match header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            127 => u64::from_be_bytes([
                header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9],
            ]),
            short => u64::from(short),
        };
        match opcode {
            // Text or binary: a new message, complete unless FIN is clear.
            0x1 | 0x2 => self.fragments = if fin { 0 } else { 1 },
            // Continuation.
            0x0 => {
                self.fragments += 1;
                if self.fragments > self.limit {
                    return Err(TooManyFragments { limit: self.limit });
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // Control frames may come between fragments and do not count.
            _ => {}
        }
        self.state =
            if length == 0 { State::Header { buf: [0; 14], have: 0 } } else { State::Payload { remaining: length } };
        Ok(())
    }
}

/// A stream whose incoming bytes go through a [`FragmentCounter`]. Bytes read
/// past the HTTP request head (`prefix`) are replayed first, counted too.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    prefix: Vec<u8>,
    prefix_pos: usize,
    counter: FragmentCounter,
    tripped: Option<TooManyFragments>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, prefix: Vec<u8>, max_fragments: usize) -> Self {
        FrameGuard { inner, prefix, prefix_pos: 0, counter: FragmentCounter::new(max_fragments), tripped: None }
    }

    /// The wrapped stream, bypassing the counter (to drain it after a close).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(err) = self.counter.feed(bytes) {
            self.tripped = Some(err);
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.tripped {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
        }
        if this.prefix_pos < this.prefix.len() {
            let n = (this.prefix.len() - this.prefix_pos).min(buf.remaining());
            let start = this.prefix_pos;
            this.prefix_pos += n;
            let chunk = this.prefix[start..start + n].to_vec();
            if this.prefix_pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_pos = 0;
            }
            // Check first: a failed read must not fill the buffer.
            this.check(&chunk)?;
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let result = this.counter.feed(&buf.filled()[before..]);
                if let Err(err) = result {
                    buf.set_filled(before);
                    this.tripped = Some(err);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header (mask key zero) and its payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    fn fragmented(parts: usize) -> Vec<u8> {
        let mut bytes = frame(false, 0x1, b"a");
        for i in 1..parts {
            bytes.extend(frame(i + 1 == parts, 0x0, b"b"));
        }
        bytes
    }

    #[test]
    fn a_message_at_the_limit_passes_one_over_fails() {
        assert!(FragmentCounter::new(4).feed(&fragmented(4)).is_ok());
        assert!(FragmentCounter::new(4).feed(&fragmented(5)).is_err());
    }

    #[test]
    fn counting_starts_over_with_each_message_and_ignores_control_frames() {
        let mut counter = FragmentCounter::new(3);
        for _ in 0..10 {
            counter.feed(&fragmented(3)).unwrap();
            counter.feed(&frame(true, 0x9, b"ping")).unwrap();
            counter.feed(&frame(true, 0x2, &[7; 300])).unwrap();
        }
        let mut bytes = frame(false, 0x1, b"a");
        bytes.extend(frame(true, 0x9, b""));
        bytes.extend(frame(false, 0x0, b"b"));
        bytes.extend(frame(true, 0xA, b""));
        bytes.extend(frame(true, 0x0, b"c"));
        counter.feed(&bytes).unwrap();
    }

    #[test]
    fn byte_at_a_time_and_long_lengths_parse_the_same() {
        let mut counter = FragmentCounter::new(2);
        let mut bytes = frame(true, 0x2, &vec![1; 70_000]);
        bytes.extend(fragmented(3));
        let result: Result<Vec<()>, _> = bytes.chunks(1).map(|b| counter.feed(b)).collect();
        assert!(result.is_err(), "the 3-frame message after a 64-bit-length frame is caught");
    }

    #[test]
    fn a_huge_claimed_length_is_just_skipped() {
        let mut counter = FragmentCounter::new(2);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 63).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        counter.feed(&header).unwrap();
        counter.feed(&[0; 4096]).unwrap();
        assert!(matches!(counter.state, State::Payload { remaining } if remaining == (1u64 << 63) - 4096));
    }

    #[tokio::test]
    async fn the_guard_fails_the_stream_and_replays_the_prefix() {
        use tokio::io::AsyncReadExt;
        let bytes = fragmented(5);
        let (prefix, rest) = bytes.split_at(3);
        let mut guard = FrameGuard::new(rest, prefix.to_vec(), 4);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert!(is_too_many_fragments(&err), "{err}");
        let mut ok = FrameGuard::new(&b""[..], fragmented(4), 4);
        let mut all = Vec::new();
        ok.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, fragmented(4));
    }
}
