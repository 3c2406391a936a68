//! Frame inspection in front of tungstenite: a byte-stream wrapper that reads
//! WebSocket frame headers as they go by and checks them, in the order RFC
//! 6455 gives, before tungstenite sees them.
//!
//! tungstenite reassembles fragmented messages itself and bounds their total
//! size, but not how many frames they come in (a message of a million
//! zero-length continuation frames never grows and never completes); it
//! checks a text frame's UTF-8 only once the whole frame is in; and it checks
//! a frame's size before some header rules, so a 64-bit length with its top
//! bit set closed with 1009 instead of 1002. This wrapper sits between the
//! socket (or the TLS stream) and tungstenite, parses each frame header (2 to
//! 14 bytes) and checks, in this order:
//!
//! 1. the header itself (RFC 6455 section 5.2, close 1002): no reserved bit
//!    set (no extension is negotiated), the client's mask bit set (section
//!    5.3), no reserved opcode, control frames unfragmented and at most 125
//!    bytes (section 5.5), a 64-bit length with its top bit clear, and
//!    continuation frames only inside a fragmented message (section 5.4);
//! 2. the size (close 1009): the frame, and the message so far, within the
//!    message limit, in at most `max_fragments` frames;
//! 3. the payload of text messages (close 1007), unmasked and checked piece
//!    by piece as it arrives, so invalid UTF-8 is refused at the first bad
//!    byte. Binary payloads are skipped without a look.
//!
//! A violation fails the read with an I/O error carrying a [`Violation`],
//! which the session turns into its close code.

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

/// The limits a stream is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most frames one message may arrive in.
    pub max_fragments: usize,
    /// Largest message (and frame), in bytes.
    pub max_message: u64,
}

/// Follows the frame stream: checks each header, counts the frames and bytes
/// of the message in progress and checks its text.
#[derive(Debug, Clone)]
pub struct FrameInspector {
    state: State,
    current: Current,
    /// Frames of the data message in progress (0: none in progress).
    fragments: usize,
    /// Payload bytes of the data message in progress.
    message_len: u64,
    limits: Limits,
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

/// A frame header, decoded.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    length: u64,
    mask: [u8; 4],
}

impl Header {
    fn parse(bytes: &[u8; 14]) -> Header {
        let extended = match bytes[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let length = match extended {
            2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            8 => u64::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9]]),
            _ => u64::from(bytes[1] & 0x7f),
        };
        let masked = bytes[1] & 0x80 != 0;
        let mut mask = [0; 4];
        if masked {
            mask.copy_from_slice(&bytes[2 + extended..6 + extended]);
        }
        Header { fin: bytes[0] & 0x80 != 0, rsv: bytes[0] & 0x70, opcode: bytes[0] & 0x0f, masked, length, mask }
    }

    /// RFC 6455 section 5.2's rules for a header on its own (close 1002).
    fn check(&self) -> Result<(), Violation> {
        let broken = if self.rsv != 0 {
            "a reserved bit is set, and no extension was negotiated"
        } else if !self.masked {
            "client frames must be masked (RFC 6455 section 5.3)"
        } else if matches!(self.opcode, 0x3..=0x7 | 0xB..=0xF) {
            "reserved opcode"
        } else if self.opcode >= 0x8 && !self.fin {
            "a control frame must not be fragmented"
        } else if self.opcode >= 0x8 && self.length > 125 {
            "a control frame must carry at most 125 bytes"
        } else if self.length >> 63 != 0 {
            "a 64-bit length must have its most significant bit clear"
        } else {
            return Ok(());
        };
        Err(Violation::Protocol(broken))
    }
}

impl FrameInspector {
    pub fn new(limits: Limits) -> Self {
        FrameInspector {
            state: NEW_HEADER,
            current: Current::default(),
            fragments: 0,
            message_len: 0,
            limits: Limits { max_fragments: limits.max_fragments.max(1), ..limits },
            in_text: false,
            utf8: Utf8Stream::default(),
        }
    }

    /// Feed bytes read from the peer; fails at the first violation.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.feed_until(bytes).map_err(|(violation, _)| violation)
    }

    /// `feed`, and on a violation, how many of `bytes` came before the
    /// offending frame began: those belong to frames that broke no rule, and
    /// the peer's earlier messages are still handled before the close.
    fn feed_until(&mut self, mut bytes: &[u8]) -> Result<(), (Violation, usize)> {
        let total = bytes.len();
        // Where, in this call's bytes, the frame in progress began (0 when it
        // began in an earlier call).
        let mut frame_start = 0;
        while !bytes.is_empty() {
            let at = total - bytes.len();
            match &mut self.state {
                State::Payload { remaining } => {
                    let take = (*remaining).min(bytes.len() as u64) as usize;
                    *remaining -= take as u64;
                    let done = *remaining == 0;
                    self.payload(&bytes[..take]).map_err(|v| (v, frame_start))?;
                    bytes = &bytes[take..];
                    if done {
                        self.end_of_frame().map_err(|v| (v, frame_start))?;
                    }
                }
                State::Header { buf, have } => {
                    if *have == 0 {
                        frame_start = at;
                    }
                    let needed = if *have < 2 { 2 } else { header_len([buf[0], buf[1]]) };
                    let take = (needed - *have).min(bytes.len());
                    buf[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have >= 2 && *have == header_len([buf[0], buf[1]]) {
                        let header = Header::parse(buf);
                        self.on_header(header).map_err(|v| (v, frame_start))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete header: check it, count it, then follow its payload.
    fn on_header(&mut self, header: Header) -> Result<(), Violation> {
        header.check()?;
        match header.opcode {
            // Text or binary: a new message, complete unless FIN is clear.
            0x1 | 0x2 => {
                if self.fragments > 0 {
                    return Err(Violation::Protocol("a new message began before the last one's final frame"));
                }
                self.fragments = if header.fin { 0 } else { 1 };
                self.message_len = 0;
                self.in_text = header.opcode == 0x1;
                self.utf8 = Utf8Stream::default();
            }
            0x0 => {
                if self.fragments == 0 {
                    return Err(Violation::Protocol("a continuation frame outside a fragmented message"));
                }
                self.fragments += 1;
                if self.fragments > self.limits.max_fragments {
                    return Err(Violation::TooManyFragments { limit: self.limits.max_fragments });
                }
                if header.fin {
                    self.fragments = 0;
                }
            }
            // Control frames may come between fragments and do not count.
            _ => {}
        }
        if header.opcode <= 0x2 {
            self.message_len = self.message_len.saturating_add(header.length);
            if header.length > self.limits.max_message || self.message_len > self.limits.max_message {
                return Err(Violation::TooBig);
            }
        }
        let text = self.in_text && header.opcode <= 0x1;
        self.current = Current { fin: header.fin, text, mask: header.mask, offset: 0 };
        if header.length == 0 {
            self.state = NEW_HEADER;
            return self.end_of_frame();
        }
        self.state = State::Payload { remaining: header.length };
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

/// A stream whose incoming bytes go through a [`FrameInspector`].
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    inspector: FrameInspector,
    tripped: Option<Violation>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, limits: Limits) -> Self {
        FrameGuard { inner, inspector: FrameInspector::new(limits), tripped: None }
    }

    /// The wrapped stream, bypassing the inspector (to drain it after a close).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.tripped {
            return Poll::Ready(Err(err.into_io()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let Err((err, valid)) = this.inspector.feed_until(&buf.filled()[before..]) else {
                    return Poll::Ready(Ok(()));
                };
                // Hand over the frames before the offending one (tungstenite
                // handles them first, as RFC 6455 expects), never the
                // offending frame; fail the next read.
                buf.set_filled(before + valid);
                this.tripped = Some(err);
                if valid > 0 { Poll::Ready(Ok(())) } else { Poll::Ready(Err(err.into_io())) }
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

    fn inspector(max_fragments: usize) -> FrameInspector {
        FrameInspector::new(Limits { max_fragments, max_message: 1 << 20 })
    }

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
        assert!(inspector(4).feed(&fragmented(4)).is_ok());
        assert!(inspector(4).feed(&fragmented(5)).is_err());
    }

    #[test]
    fn counting_starts_over_with_each_message_and_ignores_control_frames() {
        let mut counter = inspector(3);
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
        let mut counter = inspector(2);
        let mut bytes = frame(true, 0x2, &vec![1; 70_000]);
        bytes.extend(fragmented(3));
        let result: Result<Vec<()>, _> = bytes.chunks(1).map(|b| counter.feed(b)).collect();
        assert!(result.is_err(), "the 3-frame message after a 64-bit-length frame is caught");
    }

    #[test]
    fn a_long_frame_within_the_limit_is_just_skipped() {
        let mut counter = inspector(2);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 19).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        counter.feed(&header).unwrap();
        counter.feed(&[0; 4096]).unwrap();
        assert!(matches!(counter.state, State::Payload { remaining } if remaining == (1u64 << 19) - 4096));
    }

    /// The violation `bytes` trip first, if any.
    fn first_violation(bytes: &[u8]) -> Option<Violation> {
        inspector(16).feed(bytes).err()
    }

    #[test]
    fn header_rules_come_before_payload_and_size_checks() {
        let protocol = |bytes: &[u8]| matches!(first_violation(bytes), Some(Violation::Protocol(_)));
        // An unmasked text frame carrying invalid UTF-8: 1002, not 1007.
        assert!(protocol(&[0x81, 0x02, 0xff, 0xfe]));
        // Reserved bits, reserved opcodes.
        let mut rsv = frame(true, 0x1, b"ok");
        rsv[0] |= 0x40;
        assert!(protocol(&rsv));
        assert!(protocol(&frame(true, 0x3, b"")));
        assert!(protocol(&frame(true, 0xB, b"")));
        // Control frames: fragmented, or over 125 bytes.
        assert!(protocol(&frame(false, 0x9, b"ping")));
        assert!(protocol(&frame(true, 0x9, &[0; 126])));
        // A 64-bit length with its top bit set: 1002, not 1009.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(protocol(&huge));
        // Continuations outside a message; a new message inside one.
        assert!(protocol(&frame(true, 0x0, b"x")));
        let mut interleaved = frame(false, 0x1, b"a");
        interleaved.extend(frame(true, 0x2, b"b"));
        assert!(protocol(&interleaved));
    }

    #[test]
    fn size_comes_before_the_payload_check() {
        let mut limited = FrameInspector::new(Limits { max_fragments: 16, max_message: 8 });
        let mut bytes = frame(true, 0x1, &[0xff; 9]);
        bytes.truncate(2 + 4 + 2);
        assert_eq!(limited.feed(&bytes), Err(Violation::TooBig), "1009 before the invalid text is looked at");
        let mut limited = FrameInspector::new(Limits { max_fragments: 16, max_message: 8 });
        let mut message = frame(false, 0x2, &[1; 5]);
        message.extend(frame(true, 0x0, &[1; 5]));
        assert_eq!(limited.feed(&message), Err(Violation::TooBig), "the message, not only the frame");
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
            let mut inspector = inspector(16);
            for piece in bytes.chunks(read) {
                inspector.feed(piece).unwrap();
            }
        }
    }

    #[test]
    fn invalid_text_fails_before_its_frame_is_complete() {
        let mut early = inspector(16);
        let mut bytes = masked(true, 0x1, &[b'o', b'k', 0xf4, 0x90, 0x80, 0x80, b'm', b'o', b'r', b'e']);
        bytes.truncate(2 + 4 + 4); // the header and the first four payload bytes only
        assert_eq!(early.feed(&bytes), Err(Violation::InvalidUtf8));
        // A character cut at the end of the message.
        let mut cut = inspector(16);
        let mut bytes = masked(false, 0x1, b"a");
        bytes.extend(masked(true, 0x0, &[0xe2, 0x82]));
        assert_eq!(cut.feed(&bytes), Err(Violation::InvalidUtf8));
    }

    #[tokio::test]
    async fn frames_before_the_offending_one_are_handed_over_first() {
        use tokio::io::AsyncReadExt;
        let limits = Limits { max_fragments: 4, max_message: 1 << 20 };
        let good = frame(true, 0x1, b"first");
        let mut bytes = good.clone();
        let mut bad = frame(true, 0x1, b"second");
        bad[0] |= 0x20; // RSV2
        bytes.extend(&bad);
        let mut guard = FrameGuard::new(&bytes[..], limits);
        let mut buf = vec![0u8; 1024];
        let n = guard.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &good[..], "the valid frame, and nothing of the bad one");
        let err = guard.read(&mut buf).await.unwrap_err();
        assert!(matches!(Violation::of(&err), Some(Violation::Protocol(_))), "{err}");
    }

    #[tokio::test]
    async fn the_guard_fails_the_stream_and_passes_what_is_valid() {
        use tokio::io::AsyncReadExt;
        let limits = Limits { max_fragments: 4, max_message: 1 << 20 };
        let bytes = fragmented(5);
        let mut guard = FrameGuard::new(&bytes[..], limits);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(Violation::of(&err), Some(Violation::TooManyFragments { limit: 4 }), "{err}");
        let good = fragmented(4);
        let mut ok = FrameGuard::new(&good[..], limits);
        let mut all = Vec::new();
        ok.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, good);
    }
}
