//! Delivery accounting inside one bot: which of its sends still wait for an
//! ack, and, per sender, which sequence numbers it has seen (duplicates,
//! reorders and holes).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::metrics::Kind;

/// A send waiting for its answer.
#[derive(Debug, Clone)]
pub struct PendingSend {
    /// The stamp text (chorus text messages carry it as `client_id`).
    pub client_id: Option<String>,
    pub intended_us: i64,
    pub sent_us: i64,
}

/// Sends awaiting answers. Text acks carry the `client_id`; acks without
/// one (binary, plain-text sends) and rename confirmations arrive in send order.
#[derive(Debug, Default)]
pub struct Pending {
    pub text: VecDeque<PendingSend>,
    /// Sends whose ack has no `client_id`, oldest first, with their kind.
    pub unlabeled: VecDeque<(Kind, PendingSend)>,
    pub rename: VecDeque<PendingSend>,
    /// File offers waiting for their upload's `ack` (it carries the `client_id`).
    pub file: VecDeque<PendingSend>,
}

impl Pending {
    /// Take the text send with this `client_id` (usually the oldest).
    pub fn take_text(&mut self, client_id: &str) -> Option<PendingSend> {
        let index = self.text.iter().position(|p| p.client_id.as_deref() == Some(client_id))?;
        self.text.remove(index)
    }

    /// Take the file offer with this `client_id`.
    pub fn take_file(&mut self, client_id: &str) -> Option<PendingSend> {
        let index = self.file.iter().position(|p| p.client_id.as_deref() == Some(client_id))?;
        self.file.remove(index)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.text.len() + self.unlabeled.len() + self.rename.len() + self.file.len()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.unlabeled.clear();
        self.rename.clear();
        self.file.clear();
    }
}

/// Most holes remembered per sender; beyond, holes are only counted.
const MAX_HOLES: usize = 4096;

/// What one receiver has seen of one sender's sequence numbers.
#[derive(Debug, Clone, Default)]
struct SeqTrack {
    /// Highest seq seen.
    max: u64,
    /// Seqs below `max` not seen yet (ascending).
    holes: Vec<u64>,
    /// Holes beyond `MAX_HOLES`, counted but not remembered.
    overflow: u64,
}

/// How a received message fits its sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one, or a later one (the skipped ones become holes).
    Fresh,
    /// Fills a hole: it came out of order.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// Per-sender sequence tracking for one connection of one receiver.
#[derive(Debug, Default)]
pub struct SeqTracker {
    senders: HashMap<u32, SeqTrack, BuildHasherDefault<BotIdHasher>>,
}

/// Bot ids are small dense integers chosen by the harness, not by anyone
/// who could aim collisions at it: one multiplication hashes them (SipHash,
/// the default, cost as much as the rest of the bookkeeping of a delivery).
#[derive(Debug, Default)]
struct BotIdHasher(u64);

impl Hasher for BotIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u32(u32::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: the high bits, which the table uses first, mix every input bit.
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl SeqTracker {
    /// Note message `seq` from `sender`. The first message seen from a
    /// sender sets the baseline (a receiver that joins late misses nothing).
    pub fn observe(&mut self, sender: u32, seq: u64) -> Arrival {
        let track = self.senders.entry(sender).or_default();
        if track.max == 0 {
            track.max = seq;
            return Arrival::Fresh;
        }
        if seq > track.max {
            let skipped = seq - track.max - 1;
            let room = MAX_HOLES.saturating_sub(track.holes.len()) as u64;
            let remembered = skipped.min(room);
            track.holes.extend(track.max + 1..track.max + 1 + remembered);
            track.overflow += skipped - remembered;
            track.max = seq;
            return Arrival::Fresh;
        }
        match track.holes.binary_search(&seq) {
            Ok(index) => {
                track.holes.remove(index);
                Arrival::Reordered
            }
            Err(_) => Arrival::Duplicate,
        }
    }

    /// Holes never filled, over every sender.
    pub fn missing(&self) -> u64 {
        self.senders.values().map(|t| t.holes.len() as u64 + t.overflow).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_then_holes_then_late_arrivals_and_duplicates() {
        let mut tracker = SeqTracker::default();
        assert_eq!(tracker.observe(1, 5), Arrival::Fresh, "a late joiner starts where it starts");
        assert_eq!(tracker.observe(1, 6), Arrival::Fresh);
        assert_eq!(tracker.observe(1, 9), Arrival::Fresh);
        assert_eq!(tracker.missing(), 2);
        assert_eq!(tracker.observe(1, 7), Arrival::Reordered);
        assert_eq!(tracker.observe(1, 7), Arrival::Duplicate);
        assert_eq!(tracker.observe(1, 9), Arrival::Duplicate);
        assert_eq!(tracker.missing(), 1);
        assert_eq!(tracker.observe(2, 1), Arrival::Fresh, "senders are tracked apart");
    }

    #[test]
    fn huge_jumps_are_counted_without_unbounded_memory() {
        let mut tracker = SeqTracker::default();
        tracker.observe(1, 1);
        tracker.observe(1, 1_000_002);
        assert_eq!(tracker.missing(), 1_000_000);
    }

    #[test]
    fn pending_text_is_matched_by_client_id() {
        let mut pending = Pending::default();
        for id in ["a", "b"] {
            pending.text.push_back(PendingSend { client_id: Some(id.into()), intended_us: 0, sent_us: 0 });
        }
        assert!(pending.take_text("b").is_some());
        assert!(pending.take_text("b").is_none());
        assert_eq!(pending.len(), 1);
    }
}
