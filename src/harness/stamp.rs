//! The stamp each bot puts on each message: (run tag, bot, seq, intended send
//! time, scheduler lag). Text messages carry it in `client_id` (chorus
//! protocol) or at the start of the text (raw protocol); binary messages carry
//! it in their first bytes. Receivers compute delivery latency from it and
//! track per-sender sequence numbers.

/// Bytes a binary stamp takes at the start of a payload.
pub const BINARY_STAMP_LEN: usize = 30;
/// The smallest text a stamped-text protocol (`raw`, `chorus-plain`) may ask
/// for. A stamp is usually 25 to 30 characters (at most 36); a text shorter
/// than its stamp is the stamp and a space.
pub const TEXT_STAMP_MAX_LEN: usize = 32;
/// Run tags stay below 36^4, so they take at most 4 base-36 digits.
const TAG_MODULUS: u32 = 36 * 36 * 36 * 36;
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

    /// As text: `tag.bot.seq.intended.lag`, each in base 36 (usually 25 to
    /// 30 characters, at most 36).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(36);
        let fields = [
            u64::from(self.tag),
            u64::from(self.bot),
            self.seq,
            self.intended_us.max(0) as u64,
            u64::from(self.lag_us),
        ];
        for (i, value) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            push_base36(&mut out, value);
        }
        out
    }

    pub fn from_text(text: &str) -> Option<Stamp> {
        // One pass over the bytes (every delivery is parsed: splitting and
        // `from_str_radix` cost as much as the rest of the bookkeeping).
        let mut fields = [0u64; 5];
        let mut field = 0;
        let mut digits = 0;
        for &byte in text.as_bytes() {
            if byte == b'.' {
                if digits == 0 || field == 4 {
                    return None;
                }
                field += 1;
                digits = 0;
                continue;
            }
            let digit = char::from(byte).to_digit(36)?;
            fields[field] = fields[field].checked_mul(36)?.checked_add(u64::from(digit))?;
            digits += 1;
        }
        if digits == 0 || field != 4 {
            return None;
        }
        let [tag, bot, seq, intended_us, lag_us] = fields;
        Some(Stamp {
            tag: u32::try_from(tag).ok()?,
            bot: u32::try_from(bot).ok()?,
            seq,
            intended_us: i64::try_from(intended_us).ok()?,
            lag_us: u32::try_from(lag_us).ok()?,
        })
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
    hash % TAG_MODULUS
}

fn push_base36(out: &mut String, mut value: u64) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(value % 36) as usize];
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp { tag: 1_679_615, bot: 999_999, seq: 9_876_543_210, intended_us: 1_764_344_998_123_456, lag_us: u32::MAX }
    }

    #[test]
    fn text_roundtrip_fits_a_client_id() {
        let text = stamp().to_text();
        assert!(text.len() <= 36, "{text}");
        assert_eq!(Stamp::from_text(&text), Some(stamp()));
        let typical = Stamp { tag: 123_456, bot: 250, seq: 1_000, intended_us: 1_764_344_998_123_456, lag_us: 300 };
        assert!(typical.to_text().len() <= 27, "{}", typical.to_text());
        assert_eq!(Stamp::from_text(&typical.to_text()), Some(typical));
        assert_eq!(Stamp::from_text("hello"), None);
        assert_eq!(Stamp::from_text(&format!("{text}.9")), None);
        for bad in
            ["", "1.2.3.4", "1.2.3.4.", ".1.2.3.4", "1..2.3.4", "1.2.3.4.5 ", "1.2.3.4.-5", "zzzzzzzzzzzzzz.1.1.1.1"]
        {
            assert_eq!(Stamp::from_text(bad), None, "{bad:?}");
        }
        assert_eq!(Stamp::from_text("a.b.c.d.e").map(|s| (s.tag, s.lag_us)), Some((10, 14)));
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
