//! The network edge: bytes in, sessions out. Accepting connections (per-address
//! caps, TLS), HTTP (the plain routes and the WebSocket handshake), and the
//! frame guard between the upgraded stream and tungstenite. It knows nothing
//! of rooms: a WebSocket that passes the handshake becomes a
//! `chat::session`.

pub mod accept;
mod downloads;
pub mod frames;
pub mod http;
pub mod routes;
pub mod security;
pub mod tls;
pub mod upgrade;
pub mod utf8;
