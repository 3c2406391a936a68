//! chorus: a WebSocket chat server, its terminal clients, and a load harness
//! that proves how it behaves.
//!
//! # Layout
//!
//! - [`protocol`]: wire protocol v1, the frames and events every part speaks;
//!   types and codec, no sockets.
//! - [`server`]: the chat server. `server::run(listener, config, shutdown)`;
//!   `hub` (rooms, fan-out, presence), `session` (one connection), `outbox`
//!   (per-connection queue), `http` (handshake, health, metrics), `metrics`;
//!   protection: `security` (settings and handshake checks), `accept` (per-IP
//!   cap, TLS handshake), `auth`, `accounts`, `tokens`, `api` (accounts and
//!   tokens), `tls`, `limits` (rate limit, per-IP table), `frames` (fragment limit, early
//!   UTF-8 check), `utf8`.
//! - [`client`]: `connection` (connect, typed send and receive), `display`,
//!   `interactive` (`chorus client`), `simple` (`chorus simple-client`),
//!   `tls` (wss trust).
//! - [`harness`]: `chorus run` and `chorus report`, the load harness.
//! - [`demo`]: `chorus demo`, an embedded server and scripted bots.
//! - [`ids`], [`units`]: ids and timestamps; durations and sizes as people write them.
//! - [`printable`]: text from the network made safe to print on a terminal.

pub mod client;
pub mod demo;
pub mod harness;
pub mod ids;
pub mod printable;
pub mod protocol;
pub mod server;
pub mod units;
