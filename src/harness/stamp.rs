//! The stamp each bot puts on each message: (run tag, bot, seq, intended send
//! time, scheduler lag). Text messages carry it in `client_id` (chorus
//! protocol) or at the start of the text (raw protocol); binary messages carry
//! it in their first bytes. Receivers compute delivery latency from it and
//! track per-sender sequence numbers.

use std::fmt::Write as _;

/// Bytes a binary stamp takes at the start of a payload.
pub const BINARY_STAMP_LEN: usize = 30;
/// Longest text stamp, plus the space after it in raw mode.
pub const TEXT_STAMP_MAX_LEN: usize = 64;
const MAGIC: &[u8; 2] = b"CH";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Identifies the run, so traffic from anyone else is ignored.
    pub tag: u32,
    /// The sending bot (global index across shards).
    pub bot: u32,
    /// Per-bot message number, from 1.
    pub seq: u64,
    /// When the message was meant to be sent, microseconds since the Unix epoch.
    pub intended_us: i64,
    /// How late the send actually was, in microseconds.
    pub lag_us: u32,
}

impl Stamp {
    /// The actual send time.
    pub fn sent_us(&self) -> i64 {
        self.intended_us + i64::from(self.lag_us)
    }

    /// As text: `tag.bot.seq.intended.lag` (at most 55 characters).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(56);
        let _ = write!(out, "{:08x}.{}.{}.{}.{}", self.tag, self.bot, self.seq, self.intended_us, self.lag_us);
        out
    }

    pub fn from_text(text: &str) -> Option<Stamp> {
        let mut parts = text.split('.');
        let tag = u32::from_str_radix(parts.next()?, 16).ok()?;
        let stamp = Stamp {
            tag,
            bot: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            intended_us: parts.next()?.parse().ok()?,
            lag_us: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }

    /// The first `BINARY_STAMP_LEN` bytes of a binary payload.
    pub fn write_binary(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.tag.to_be_bytes());
        out.extend_from_slice(&self.bot.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.intended_us.to_be_bytes());
        out.extend_from_slice(&self.lag_us.to_be_bytes());
    }

    pub fn from_binary(data: &[u8]) -> Option<Stamp> {
        if data.len() < BINARY_STAMP_LEN || &data[..2] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| data.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        let u64_at = |i: usize| data.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        Some(Stamp {
            tag: u32_at(2)?,
            bot: u32_at(6)?,
            seq: u64_at(10)?,
            intended_us: u64_at(18)? as i64,
            lag_us: u32_at(26)?,
        })
    }

    /// Raw mode text: the stamp, a space, then filler up to `size` bytes.
    pub fn raw_text(&self, size: usize, filler: &str) -> String {
        let mut text = self.to_text();
        text.push(' ');
        let need = size.saturating_sub(text.len());
        text.push_str(&filler[..need.min(filler.len())]);
        text
    }

    /// The stamp at the start of a raw-mode text.
    pub fn from_raw_text(text: &str) -> Option<Stamp> {
        Stamp::from_text(text.split(' ').next()?)
    }
}

/// A run tag both shards of a run agree on: a hash of the scenario name and seed.
pub fn run_tag(name: &str, seed: u64) -> u32 {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes().chain(seed.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            tag: 0xdead_beef,
            bot: 12_345,
            seq: 9_876_543_210,
            intended_us: 1_764_344_998_123_456,
            lag_us: 4_000_000_000,
        }
    }

    #[test]
    fn text_roundtrip_fits_a_client_id() {
        let text = stamp().to_text();
        assert!(text.len() <= 64, "{text}");
        assert_eq!(Stamp::from_text(&text), Some(stamp()));
        assert_eq!(Stamp::from_text("hello"), None);
        assert_eq!(Stamp::from_text(&format!("{text}.9")), None);
    }

    #[test]
    fn binary_roundtrip() {
        let mut data = Vec::new();
        stamp().write_binary(&mut data);
        assert_eq!(data.len(), BINARY_STAMP_LEN);
        data.extend_from_slice(b"payload");
        assert_eq!(Stamp::from_binary(&data), Some(stamp()));
        assert_eq!(Stamp::from_binary(&data[..10]), None);
        assert_eq!(Stamp::from_binary(b"XX0000000000000000000000000000"), None);
    }

    #[test]
    fn raw_text_is_padded_to_size() {
        let filler = "x".repeat(1000);
        let text = stamp().raw_text(200, &filler);
        assert_eq!(text.len(), 200);
        assert_eq!(Stamp::from_raw_text(&text), Some(stamp()));
    }

    #[test]
    fn run_tags_are_stable() {
        assert_eq!(run_tag("smoke", 1), run_tag("smoke", 1));
        assert_ne!(run_tag("smoke", 1), run_tag("smoke", 2));
    }
}
