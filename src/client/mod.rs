//! The clients: `connection` (connect, typed send and receive), `display`
//! (events as readable lines), `interactive` (`chorus client`) with
//! `conversation` (its state across connections), `recovery` (fetching
//! missed messages, reusable by any client), `reconnect` (backoff), and
//! `simple` (`chorus simple-client`).

pub mod connection;
pub mod conversation;
pub mod display;
pub mod interactive;
pub mod reconnect;
pub mod recovery;
pub mod simple;

pub use connection::{ConnectOptions, Received, connect, split};
