//! The clients: `connection` (connect, typed send and receive), `display`
//! (events as readable lines), `interactive` (`chorus client`) with
//! `conversation` (its state across connections), `recovery` (fetching
//! missed messages, reusable by any client), `reconnect` (backoff),
//! `simple` (`chorus simple-client`), `files` (`/file` uploads and the
//! downloads of files others share), and `tls` (for wss: whom to trust).

pub mod connection;
pub mod conversation;
pub mod display;
pub mod files;
pub mod interactive;
pub mod reconnect;
pub mod recovery;
pub mod simple;
pub mod tls;

pub use connection::{ConnectOptions, Received, connect, split};
pub use tls::TlsOptions;
