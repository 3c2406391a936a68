//! The clients: `connection` (connect, typed send and receive), `display`
//! (events as readable lines), `interactive` (`chorus client`) and `simple`
//! (`chorus simple-client`); `tls` (for wss: whom to trust, and the
//! plain-or-TLS stream).

pub mod connection;
pub mod display;
pub mod interactive;
pub mod simple;
pub mod tls;

pub use connection::{ConnectOptions, Received, connect, split};
pub use tls::TlsOptions;
