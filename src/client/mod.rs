//! The clients: `connection` (connect, typed send and receive), `display`
//! (events as readable lines), `interactive` (`chorus client`) and `simple`
//! (`chorus simple-client`).

pub mod connection;
pub mod display;
pub mod interactive;
pub mod simple;

pub use connection::{ConnectOptions, Received, connect, split};
