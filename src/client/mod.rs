//! The clients: `connection` (connect, typed send and receive), `display`
//! (events as readable lines), `interactive` (`chorus client`) with
//! `conversation` (its state across connections), `recovery` (fetching
//! missed messages, reusable by any client), `reconnect` (backoff),
//! `simple` (`chorus simple-client`), and `tls` (for wss: whom to trust, and
//! the plain-or-TLS stream).

pub mod connection;
pub mod conversation;
pub mod display;
pub mod interactive;
pub mod reconnect;
pub mod recovery;
pub mod simple;
pub mod tls;

pub use connection::{ConnectOptions, Received, connect, split};
pub use tls::TlsOptions;
