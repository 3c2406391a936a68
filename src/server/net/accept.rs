//! An accepted TCP connection, before HTTP: counted against
//! `--max-connections` and its address's cap (from accept, whatever it turns
//! out to be: a WebSocket, a plain request, a half-open handshake), put
//! through the TLS handshake when the server speaks TLS, then served by
//! `http`.
//!
//! A connection over a cap is still answered (429 for its address, 503 for
//! the server) so a person sees why, unless it is far over (`REFUSE_SLACK`
//! connections past the cap): then it is closed at once, so a flood costs
//! the server no more than the file descriptor it already took. The TLS
//! handshake must finish within `--handshake-timeout` from accept; hyper
//! then gives the request head as long again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::http::{self, ConnHold, ConnInfo, Edge, Refusal};
use crate::server::limits::IpAdmission;

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Connections past `--max-connections` that are still answered with 503.
const REFUSE_SLACK: u64 = 64;

/// Serve one accepted connection to its end.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, edge: Edge) {
    let shared = edge.shared.clone();
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (slot, mut refusal) = match shared.admit(REFUSE_SLACK) {
        Some((slot, full)) => (slot, full.then_some(Refusal::Full)),
        None => {
            shared.metrics.handshakes_refused.increment(1);
            tracing::debug!(%peer, "closed at once: far over --max-connections");
            return;
        }
    };
    let ip = match shared.security.ip.admit(peer.ip()) {
        IpAdmission::Admit(ip) => ip,
        IpAdmission::Refuse(ip) => {
            refusal = refusal.or(Some(Refusal::TooManyFromAddress));
            ip
        }
        IpAdmission::Drop => {
            shared.metrics.handshakes_refused.increment(1);
            tracing::debug!(%peer, "closed at once: far over the per-address connection cap");
            return;
        }
    };
    let conn = ConnInfo { peer, hold: Arc::new(ConnHold { _slot: slot, _ip: ip }) };
    // Each way on is boxed: a task's future is as big as its biggest state,
    // and a plain connection should not pay for a TLS one's.
    let Some(tls) = shared.security.tls.clone() else {
        return Box::pin(serve_http(tcp, conn, refusal, edge)).await;
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
        return Box::pin(http::refuse(tcp, peer, Refusal::PlainOnTlsPort, shared)).await;
    }
    match timeout_at(deadline, Box::pin(tls.acceptor.accept(tcp))).await {
        Ok(Ok(stream)) => Box::pin(serve_http(stream, conn, refusal, edge)).await,
        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not finished before the deadline; closing"),
    }
}

/// HTTP on an admitted connection, or one refusal for every request.
async fn serve_http<S>(io: S, conn: ConnInfo, refusal: Option<Refusal>, edge: Edge)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match refusal {
        Some(refusal) => http::refuse(io, conn.peer, refusal, edge.shared.clone()).await,
        None => http::serve(io, conn, edge).await,
    }
}
