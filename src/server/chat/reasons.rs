//! Why a session ends (`EndReason`: the `left` event's reason and the close
//! code), and the stream violations a transport reports to the session
//! (`Violation`), so that the chat core knows them without knowing the
//! transport that detects them.

use std::io;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why a session ended: the `reason` of the `left` event others see, and the
/// close frame the server sends, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum EndReason {
    /// The client closed the connection with a close frame.
    Quit,
    /// The TCP connection dropped without a close frame.
    Lost,
    /// No pong (nor any other frame) within the keepalive timeout.
    Timeout,
    /// The client did not read fast enough; its queue overflowed.
    Slow,
    /// The server is shutting down.
    Shutdown,
    /// A frame over the message size limit (close 1009).
    TooBig,
    /// Invalid UTF-8 in a text frame (close 1007).
    #[strum(serialize = "bad_utf8")]
    BadUtf8,
    /// A WebSocket protocol violation (close 1002).
    #[strum(serialize = "protocol_error")]
    Protocol,
    /// The client kept sending faster than the rate limit allows (close 1008).
    RateLimited,
    /// The connection's token expired (close 1008).
    Expired,
    /// A message arrived in more frames than the fragment limit (close 1009).
    #[strum(serialize = "too_fragmented")]
    Fragmented,
}

impl EndReason {
    /// The `reason` field of the `left` event, and the metrics label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The close frame the server sends for this reason (`None`: the peer
    /// already closed, or is gone).
    pub fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            EndReason::Quit | EndReason::Lost => return None,
            EndReason::Timeout => (CloseCode::Away, "keepalive timeout: no pong received"),
            EndReason::Slow => (CloseCode::Policy, "slow consumer: too far behind, messages dropped"),
            EndReason::Shutdown => (CloseCode::Away, "server shutting down"),
            EndReason::TooBig => (CloseCode::Size, "message too big"),
            EndReason::BadUtf8 => (CloseCode::Invalid, "invalid UTF-8 in a text frame"),
            EndReason::Protocol => (CloseCode::Protocol, "WebSocket protocol error"),
            EndReason::RateLimited => (CloseCode::Policy, "rate limit exceeded repeatedly"),
            EndReason::Expired => (CloseCode::Policy, "token expired"),
            EndReason::Fragmented => (CloseCode::Size, "message in too many fragments"),
        };
        Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })
    }
}

/// A rule a transport found broken in the incoming byte stream before
/// tungstenite saw the frame: carried inside the `io::Error` the read fails
/// with, and turned into the session's end reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A message in more frames than the fragment limit (close 1009).
    #[error("a message arrived in more than {limit} frames")]
    TooManyFragments { limit: usize },
    /// Invalid UTF-8 in a text message (close 1007).
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame, or a message so far, over the message size limit (close 1009).
    #[error("a message over the size limit")]
    TooBig,
    /// A frame header breaks RFC 6455 section 5.2 (close 1002): reserved bits
    /// set, no mask, a reserved opcode, a fragmented or oversized control
    /// frame, a 64-bit length with its top bit set.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
}

impl Violation {
    /// The end reason (and so the close code) for this violation.
    pub fn end_reason(self) -> EndReason {
        match self {
            Violation::TooManyFragments { .. } => EndReason::Fragmented,
            Violation::InvalidUtf8 => EndReason::BadUtf8,
            Violation::TooBig => EndReason::TooBig,
            Violation::Protocol(_) => EndReason::Protocol,
        }
    }

    /// This violation as the I/O error a read fails with.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The violation an I/O error carries, if it is one.
    pub fn of(err: &io::Error) -> Option<Violation> {
        err.get_ref().and_then(|inner| inner.downcast_ref::<Violation>()).copied()
    }
}
