//! chorus: a WebSocket chat server, its terminal clients, and a load harness
//! that proves how it behaves.
//!
//! # Layout
//!
//! - [`protocol`]: wire protocol v1, the frames and events every part speaks;
//!   types and codec, no sockets.
//! - [`names`]: the rules for usernames, account names and room names
//!   (NFKC, Unicode TR39 allow-list and confusable skeletons, grapheme lengths).
//! - [`server`]: the chat server, in layers: `server::net` (accept, TLS,
//!   hyper + axum routes and the web client's files, the WebSocket
//!   handshake, the frame guard, file downloads), `server::auth` (accounts,
//!   tokens, the accounts API), `server::history` (writer, requests, SQLite
//!   and memory stores), `server::chat` (hub, sessions, outboxes, uploads;
//!   knows no transport, accounts store or storage: it reaches them through
//!   its `Archive` and `Directory` traits), `server::files` (shared files on
//!   disk), `server::cluster` (several nodes through Redis: the `Archive`
//!   and `Directory` a node uses with `--redis`), with `server::config`
//!   (`ServerSettings`), `server::limits` and `server::metrics` beside them.
//! - [`client`]: `connection` (connect, typed send and receive),
//!   `conversation`, `display`, `interactive` (`chorus client`), `files`
//!   (`/file` and downloads), `reconnect` and `recovery` (resume and gap
//!   recovery), `simple` (`chorus simple-client`), `tls` (wss trust).
//! - [`harness`]: `chorus run` and `chorus report`, the load harness.
//! - [`demo`]: `chorus demo`, an embedded server and scripted bots.
//! - [`ids`], [`units`], [`sync`]: ids and timestamps; durations and sizes as
//!   people write them; the lock helper.
//! - [`printable`]: text from the network made safe to print on a terminal.

pub mod client;
pub mod demo;
pub mod harness;
pub mod ids;
pub mod names;
pub mod printable;
pub mod protocol;
pub mod server;
pub mod sync;
pub mod units;
