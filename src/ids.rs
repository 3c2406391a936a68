//! Identifiers and timestamps as they appear on the wire: every id is a
//! string, every timestamp RFC 3339 UTC with milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use rand::Rng;

/// Now, as `2026-11-28T15:29:58.123Z`.
pub fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A time in milliseconds since the epoch, as the wire writes it (`now_ts`'s format).
pub fn format_ts_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse a wire timestamp back into milliseconds since the epoch.
pub fn parse_ts_millis(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis())
}

/// Makes ids unique across this process and, through a random node prefix,
/// across restarts and across the nodes of a cluster: `<kind><node>-<n>`.
#[derive(Debug)]
pub struct IdGen {
    /// Random per-process prefix, so ids never repeat after a restart.
    node: String,
    /// The next number to hand out; atomic so any task can mint ids.
    next: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        let mut rng = rand::rng();
        let node: String =
            (0..6).map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rng.random_range(0..36)])).collect();
        IdGen { node, next: AtomicU64::new(1) }
    }

    /// A fresh id starting with `kind` (for example `u` for users, `m` for messages).
    pub fn mint(&self, kind: char) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{kind}{}-{n:x}", self.node)
    }

    /// This process's random prefix.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

/// `bytes` as lowercase hex (a SHA-256 digest as a file id, say).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_typed() {
        let ids = IdGen::new();
        let a = ids.mint('u');
        let b = ids.mint('u');
        assert_ne!(a, b);
        assert!(a.starts_with('u'));
        assert_ne!(IdGen::new().node(), ids.node(), "two processes get different prefixes");
    }

    #[test]
    fn timestamps_have_milliseconds_and_parse_back() {
        let ts = now_ts();
        assert_eq!(ts.len(), "2026-11-28T15:29:58.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        let millis = parse_ts_millis(&ts).unwrap();
        assert!((now_millis() - millis).abs() < 5_000);
        assert_eq!(format_ts_millis(millis), ts, "formatting a parsed timestamp gives it back");
    }
}
