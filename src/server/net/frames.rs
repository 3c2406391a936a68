//! Frame inspection in front of tungstenite: a byte-stream wrapper that reads
//! WebSocket frame headers as they go by, enforces the fragment limit, and
//! checks text as it arrives.
//!
//! tungstenite reassembles fragmented messages itself and bounds their total
//! size, but not how many frames they come in: a message of a million
//! zero-length continuation frames never grows and never completes. And it
//! checks a text frame's UTF-8 only once the whole frame is in. This wrapper
//! sits between the socket (or the TLS stream) and tungstenite, parses frame
//! headers (2 to 14 bytes), unmasks and checks the payload of text frames
//! piece by piece (binary payloads are skipped without a look), and turns a
//! violation into an I/O error carrying a [`Violation`]: too many fragments
//! closes with 1009, invalid UTF-8 with 1007, at the first bad byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::utf8::Utf8Stream;
pub use crate::server::chat::Violation;

/// Where the parser is within the frame stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a header: `have` of its bytes are in `buf`.
    Header { buf: [u8; 14], have: usize },
    /// In the payload of the current frame.
    Payload { remaining: u64 },
}

/// What is known about the frame whose payload is going by.
#[derive(Debug, Clone, Copy, Default)]
struct Current {
    fin: bool,
    /// Its payload is text to check.
    text: bool,
    mask: [u8; 4],
    /// Payload bytes seen so far, for the mask's position.
    offset: u64,
}

/// Follows the frame stream: counts the frames of the message in progress
/// and checks its text.
#[derive(Debug, Clone)]
pub struct FrameInspector {
    state: State,
    current: Current,
    /// Frames of the data message in progress (0: none in progress).
    fragments: usize,
    limit: usize,
    /// The data message in progress is text.
    in_text: bool,
    utf8: Utf8Stream,
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

const NEW_HEADER: State = State::Header { buf: [0; 14], have: 0 };

impl FrameInspector {
    pub fn new(limit: usize) -> Self {
        FrameInspector {
            state: NEW_HEADER,
            current: Current::default(),
            fragments: 0,
            limit: limit.max(1),
            in_text: false,
            utf8: Utf8Stream::default(),
        }
    }

    /// Feed bytes read from the peer; fails at the first violation.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let take = (*remaining).min(bytes.len() as u64) as usize;
                    *remaining -= take as u64;
                    let done = *remaining == 0;
                    self.payload(&bytes[..take])?;
                    bytes = &bytes[take..];
                    if done {
                        self.end_of_frame()?;
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

    /// A complete header: count it, then follow its payload.
    fn on_header(&mut self, header: &[u8; 14]) -> Result<(), Violation> {
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        let extended = match header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let length = match extended {
            2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            8 => u64::from_be_bytes([
                header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9],
            ]),
            _ => u64::from(header[1] & 0x7f),
        };
        let mut mask = [0; 4];
        if header[1] & 0x80 != 0 {
            mask.copy_from_slice(&header[2 + extended..6 + extended]);
        }
        match opcode {
            // Text or binary: a new message, complete unless FIN is clear.
            0x1 | 0x2 => {
                self.fragments = if fin { 0 } else { 1 };
                self.in_text = opcode == 0x1;
                self.utf8 = Utf8Stream::default();
            }
            // Continuation.
            0x0 => {
                self.fragments += 1;
                if self.fragments > self.limit {
                    return Err(Violation::TooManyFragments { limit: self.limit });
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // Control frames may come between fragments and do not count.
            _ => {}
        }
        let text = self.in_text && opcode <= 0x1;
        self.current = Current { fin, text, mask, offset: 0 };
        if length == 0 {
            self.state = NEW_HEADER;
            return self.end_of_frame();
        }
        self.state = State::Payload { remaining: length };
        Ok(())
    }

    /// Payload bytes of the current frame: text is unmasked and checked.
    fn payload(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let current = &mut self.current;
        if !current.text {
            return Ok(());
        }
        let mut scratch = [0u8; 512];
        for chunk in bytes.chunks(scratch.len()) {
            for (i, byte) in chunk.iter().enumerate() {
                scratch[i] = byte ^ current.mask[((current.offset + i as u64) % 4) as usize];
            }
            current.offset += chunk.len() as u64;
            if !self.utf8.feed(&scratch[..chunk.len()]) {
                return Err(Violation::InvalidUtf8);
            }
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn end_of_frame(&mut self) -> Result<(), Violation> {
        self.state = NEW_HEADER;
        if self.current.text && self.current.fin {
            self.in_text = false;
            if !self.utf8.finish() {
                return Err(Violation::InvalidUtf8);
            }
        }
        Ok(())
    }
}

/// A stream whose incoming bytes go through a [`FrameInspector`]. Bytes read
/// past the HTTP request head (`prefix`) are replayed first, inspected too.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    prefix: Vec<u8>,
    prefix_pos: usize,
    inspector: FrameInspector,
    tripped: Option<Violation>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, prefix: Vec<u8>, max_fragments: usize) -> Self {
        FrameGuard { inner, prefix, prefix_pos: 0, inspector: FrameInspector::new(max_fragments), tripped: None }
    }

    /// The wrapped stream, bypassing the counter (to drain it after a close).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(err) = self.inspector.feed(bytes) {
            self.tripped = Some(err);
            return Err(err.into_io());
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.tripped {
            return Poll::Ready(Err(err.into_io()));
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
                let result = this.inspector.feed(&buf.filled()[before..]);
                if let Err(err) = result {
                    buf.set_filled(before);
                    this.tripped = Some(err);
                    return Poll::Ready(Err(err.into_io()));
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
        assert!(FrameInspector::new(4).feed(&fragmented(4)).is_ok());
        assert!(FrameInspector::new(4).feed(&fragmented(5)).is_err());
    }

    #[test]
    fn counting_starts_over_with_each_message_and_ignores_control_frames() {
        let mut counter = FrameInspector::new(3);
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
        let mut counter = FrameInspector::new(2);
        let mut bytes = frame(true, 0x2, &vec![1; 70_000]);
        bytes.extend(fragmented(3));
        let result: Result<Vec<()>, _> = bytes.chunks(1).map(|b| counter.feed(b)).collect();
        assert!(result.is_err(), "the 3-frame message after a 64-bit-length frame is caught");
    }

    #[test]
    fn a_huge_claimed_length_is_just_skipped() {
        let mut counter = FrameInspector::new(2);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 63).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        counter.feed(&header).unwrap();
        counter.feed(&[0; 4096]).unwrap();
        assert!(matches!(counter.state, State::Payload { remaining } if remaining == (1u64 << 63) - 4096));
    }

    /// A frame masked with a real key, as browsers send them.
    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    #[test]
    fn text_is_checked_as_it_arrives_across_frames_and_reads() {
        let text = "héllo wörld, 中文 𝄞".as_bytes();
        let (a, b) = text.split_at(2); // cuts "é" between two frames
        let mut bytes = masked(false, 0x1, a);
        bytes.extend(masked(true, 0x9, b"ping"));
        bytes.extend(masked(true, 0x0, b));
        bytes.extend(masked(true, 0x2, &[0xff, 0xfe])); // binary is not text
        for read in [1, 3, 7, bytes.len()] {
            let mut inspector = FrameInspector::new(16);
            for piece in bytes.chunks(read) {
                inspector.feed(piece).unwrap();
            }
        }
    }

    #[test]
    fn invalid_text_fails_before_its_frame_is_complete() {
        let mut inspector = FrameInspector::new(16);
        let mut bytes = masked(true, 0x1, &[b'o', b'k', 0xf4, 0x90, 0x80, 0x80, b'm', b'o', b'r', b'e']);
        bytes.truncate(2 + 4 + 4); // the header and the first four payload bytes only
        assert_eq!(inspector.feed(&bytes), Err(Violation::InvalidUtf8));
        // A character cut at the end of the message.
        let mut inspector = FrameInspector::new(16);
        let mut bytes = masked(false, 0x1, b"a");
        bytes.extend(masked(true, 0x0, &[0xe2, 0x82]));
        assert_eq!(inspector.feed(&bytes), Err(Violation::InvalidUtf8));
    }

    #[tokio::test]
    async fn the_guard_fails_the_stream_and_replays_the_prefix() {
        use tokio::io::AsyncReadExt;
        let bytes = fragmented(5);
        let (prefix, rest) = bytes.split_at(3);
        let mut guard = FrameGuard::new(rest, prefix.to_vec(), 4);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(Violation::of(&err), Some(Violation::TooManyFragments { limit: 4 }), "{err}");
        let mut ok = FrameGuard::new(&b""[..], fragmented(4), 4);
        let mut all = Vec::new();
        ok.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, fragmented(4));
    }
}
