//! The chat core: rooms, members, fan-out, presence and names (`hub`), one
//! connection's conversation (`session`), its outgoing queue (`outbox`), why
//! sessions end (`reasons`), and the interface to history (`archive`).
//!
//! The chat core knows no transport, no accounts store and no storage: the
//! session runs over any `Sink + Stream` of WebSocket messages, the hub hands
//! messages to an `Arc<dyn Archive>`, and who a connection is arrives as an
//! `Admission` decided at the handshake.

pub mod archive;
pub mod directory;
pub mod hub;
pub mod outbox;
pub mod reasons;
pub mod session;
mod shared;
mod transfer;
pub mod uploads;

pub use archive::{Archive, NoArchive};
pub use hub::Hub;
pub use reasons::{EndReason, Violation};
pub use session::{Account, Admission, SessionConfig};
pub use uploads::{FileStore, NoFiles};
