//! An accepted TCP connection, before HTTP: counted against its address's
//! cap, put through the TLS handshake when the server speaks TLS, then handed
//! to `http::serve`.
//!
//! One deadline (`--handshake-timeout` from accept) covers the TLS handshake
//! and the HTTP request head together, so a client that stalls in either, or
//! trickles bytes through both, is closed on time.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::http;
use crate::server::Shared;
use crate::server::limits::IpAdmission;
use crate::server::metrics::bump;

/// Why a connection is refused as soon as its request head is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyRefusal {
    /// Its address holds too many connections already (429).
    TooManyFromAddress,
    /// Plain HTTP on a TLS port (400).
    PlainOnTlsPort,
}

/// What is known about a connection when HTTP starts.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub peer: SocketAddr,
    /// When the request head must be complete.
    pub deadline: Instant,
    pub refusal: Option<EarlyRefusal>,
}

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serve one accepted connection to its end.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (_slot, mut refusal) = match shared.security.ip.admit(peer.ip()) {
        IpAdmission::Admit(slot) => (slot, None),
        IpAdmission::Refuse(slot) => (slot, Some(EarlyRefusal::TooManyFromAddress)),
        IpAdmission::Drop => {
            bump(&shared.metrics.handshakes_refused);
            tracing::debug!(%peer, "closed at once: far over the per-address connection cap");
            return;
        }
    };
    // Each way on is boxed: a task's future is as big as its biggest
    // state, and a plain connection should not pay for a TLS one's.
    let Some(tls) = shared.security.tls.clone() else {
        return Box::pin(http::serve(tcp, Accepted { peer, deadline, refusal }, shared)).await;
    };
    let mut first = [0u8; 1];
    match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(%peer, "nothing received before the handshake deadline; closing");
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refusal = Some(EarlyRefusal::PlainOnTlsPort);
        return Box::pin(http::serve(tcp, Accepted { peer, deadline, refusal }, shared)).await;
    }
    match timeout_at(deadline, Box::pin(tls.acceptor.accept(tcp))).await {
        Ok(Ok(stream)) => Box::pin(http::serve(stream, Accepted { peer, deadline, refusal }, shared)).await,
        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not finished before the deadline; closing"),
    }
}
