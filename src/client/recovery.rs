//! Getting back what a connection missed, for any client that wants every
//! message of its room once and in order: the terminal client uses it, and
//! the load harness's bots can too. No sockets here: feed it events, send
//! the requests it returns.
//!
//! It tracks the last seq seen per room and the `history` requests in
//! flight (the server answers a connection's requests in order, so answers
//! are matched first in, first out). Three kinds of fetch recover messages:
//!
//! - `gap` from the server: fetch `from_seq..=to_seq`, page by page.
//! - `resume` after a reconnect: fetch everything after the last seq seen,
//!   until an answer comes back empty or reaches what arrives live.
//! - `baseline` on entering a room: ask for its latest message, quietly, so
//!   that a later resume knows where "missed" starts even if nothing was said.
//!
//! While a gap or resume fetch for a room is in flight, live messages of
//! that room are held back, then released after the recovered ones, so the
//! reader sees seq order; anything already seen is dropped, never shown twice.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use crate::protocol::{ClientFrame, HISTORY_MAX_LIMIT};

/// Why a `history` request was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The user asked (`/history`): show the answer as is.
    User,
    /// The latest seq of a room just entered.
    Baseline { room: String },
    /// Messages announced missing by `gap`, up to `to`.
    Gap { room: String, to: u64 },
    /// Messages sent while disconnected.
    Resume { room: String },
}

/// What to do with a live message.
#[derive(Debug, PartialEq, Eq)]
pub enum Live<T> {
    /// Show it now.
    Show(T),
    /// Held until a fetch for its room is done.
    Held,
}

/// What a `history` answer means.
#[derive(Debug)]
pub struct Answer<T> {
    /// The request it answers (`None`: nothing was in flight).
    pub fetch: Option<Fetch>,
    /// Indices of the answer's messages to show (new to this client, for
    /// recovery fetches; all of them for the user's own request).
    pub fresh: Vec<usize>,
    /// The next page to request, if the fetch goes on.
    pub next: Option<ClientFrame<'static>>,
    /// The fetch is over: these held live messages can be shown now.
    pub released: Vec<T>,
}

#[derive(Debug)]
pub struct Recovery<T> {
    last_seq: HashMap<String, u64>,
    in_flight: VecDeque<Fetch>,
    /// Live messages held during a recovery: (room, seq, message).
    held: Vec<(String, u64, T)>,
    /// Off once the server said history is unsupported.
    enabled: bool,
}

impl<T> Default for Recovery<T> {
    fn default() -> Self {
        Recovery { last_seq: HashMap::new(), in_flight: VecDeque::new(), held: Vec::new(), enabled: true }
    }
}

fn request(room: &str, after: Option<u64>, before: Option<u64>, limit: u32) -> ClientFrame<'static> {
    ClientFrame::History {
        room: Some(Cow::Owned(room.to_string())),
        after_seq: after,
        before_seq: before,
        limit: Some(limit),
    }
}

impl<T> Recovery<T> {
    pub fn new() -> Self {
        Recovery::default()
    }

    /// Does the server keep history (as far as we know)?
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The last seq seen in `room`, if known.
    pub fn last_seq(&self, room: &str) -> Option<u64> {
        self.last_seq.get(room).copied()
    }

    /// Seq `seq` of `room` was seen (a message shown, or our own ack).
    pub fn seen(&mut self, room: &str, seq: u64) {
        let last = self.last_seq.entry(room.to_string()).or_default();
        *last = (*last).max(seq);
    }

    fn recovering(&self, room: &str) -> bool {
        self.in_flight.iter().any(|f| matches!(f, Fetch::Gap { room: r, .. } | Fetch::Resume { room: r } if r == room))
    }

    /// A live message arrived.
    pub fn live(&mut self, room: &str, seq: u64, message: T) -> Live<T> {
        if self.recovering(room) {
            self.held.push((room.to_string(), seq, message));
            return Live::Held;
        }
        // Live order is the server's: follow it even if seq went down (a
        // server that lost its history starts again).
        self.last_seq.insert(room.to_string(), seq);
        Live::Show(message)
    }

    /// The user sends `/history`: its answer is theirs.
    pub fn user_request(&mut self) {
        self.in_flight.push_back(Fetch::User);
    }

    /// Entered `room`: the request that learns its latest seq, unless known.
    pub fn entered(&mut self, room: &str) -> Option<ClientFrame<'static>> {
        if !self.enabled || self.last_seq.contains_key(room) {
            return None;
        }
        self.in_flight.push_back(Fetch::Baseline { room: room.to_string() });
        Some(request(room, None, None, 1))
    }

    /// The server announced a gap: the request that fetches it.
    pub fn gap(&mut self, room: &str, from: u64, to: u64) -> Option<ClientFrame<'static>> {
        if !self.enabled || from > to {
            return None;
        }
        self.in_flight.push_back(Fetch::Gap { room: room.to_string(), to });
        Some(request(room, Some(from.saturating_sub(1)), Some(to.saturating_add(1)), HISTORY_MAX_LIMIT))
    }

    /// Back after a reconnect, in `room`: the request that fetches what was
    /// said meanwhile (`None` if nothing was ever seen there).
    pub fn resume(&mut self, room: &str) -> Option<ClientFrame<'static>> {
        let after = self.last_seq(room)?;
        if !self.enabled {
            return None;
        }
        self.in_flight.push_back(Fetch::Resume { room: room.to_string() });
        Some(request(room, Some(after), None, HISTORY_MAX_LIMIT))
    }

    /// The connection is gone: answers in flight will never come. Returns
    /// the held messages, to show now.
    pub fn disconnected(&mut self) -> Vec<T> {
        self.in_flight.clear();
        self.release(None)
    }

    /// Held messages of `room` (or all), in seq order, minus those seen.
    fn release(&mut self, room: Option<&str>) -> Vec<T> {
        let (mut out, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|(r, _, _)| room.is_none_or(|room| r == room));
        self.held = keep;
        out.sort_by_key(|(_, seq, _)| *seq);
        let mut released = Vec::with_capacity(out.len());
        for (room, seq, message) in out {
            if self.last_seq(&room).is_none_or(|last| seq > last) {
                self.seen(&room, seq);
                released.push(message);
            }
        }
        released
    }

    /// A `history` answer for `room` holding messages with these seqs.
    pub fn answer(&mut self, room: &str, seqs: &[u64]) -> Answer<T> {
        let fetch = self.in_flight.pop_front();
        let mut answer = Answer { fetch: fetch.clone(), fresh: Vec::new(), next: None, released: Vec::new() };
        let room_last = self.last_seq(room).unwrap_or(0);
        match fetch {
            None => {}
            Some(Fetch::User) => answer.fresh = (0..seqs.len()).collect(),
            Some(Fetch::Baseline { room }) => self.seen(&room, seqs.iter().copied().max().unwrap_or(0)),
            Some(Fetch::Gap { room, to }) => {
                answer.fresh = self.take_fresh(&room, seqs, room_last);
                let last = self.last_seq(&room).unwrap_or(0);
                if !seqs.is_empty() && last < to {
                    answer.next = self.gap(&room, last + 1, to);
                }
            }
            Some(Fetch::Resume { room }) => {
                answer.fresh = self.take_fresh(&room, seqs, room_last);
                let last = self.last_seq(&room).unwrap_or(0);
                let live_from = self.held.iter().filter(|(r, ..)| *r == room).map(|(_, seq, _)| *seq).min();
                if !seqs.is_empty() && live_from.is_none_or(|live| last + 1 < live) {
                    self.in_flight.push_back(Fetch::Resume { room: room.clone() });
                    answer.next = Some(request(&room, Some(last), None, HISTORY_MAX_LIMIT));
                }
            }
        }
        if answer.next.is_none() && !self.recovering(room) {
            answer.released = self.release(Some(room));
        }
        answer
    }

    /// Indices of `seqs` newer than `last`, marking them seen.
    fn take_fresh(&mut self, room: &str, seqs: &[u64], last: u64) -> Vec<usize> {
        let fresh: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i] > last).collect();
        if let Some(top) = fresh.iter().map(|&i| seqs[i]).max() {
            self.seen(room, top);
        }
        fresh
    }

    /// A `history` request was refused (history off, or unreadable): the
    /// fetch it answered is over. `unsupported` turns recovery off.
    pub fn refused(&mut self, unsupported: bool) -> (Option<Fetch>, Vec<T>) {
        let fetch = self.in_flight.pop_front();
        if unsupported {
            self.enabled = false;
        }
        let released = match &fetch {
            Some(Fetch::Gap { room, .. } | Fetch::Resume { room }) if !self.recovering(room) => {
                self.release(Some(&room.clone()))
            }
            _ => Vec::new(),
        };
        (fetch, released)
    }

    /// Is any `history` request in flight?
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_before(frame: &ClientFrame<'_>) -> (Option<u64>, Option<u64>) {
        match frame {
            ClientFrame::History { after_seq, before_seq, .. } => (*after_seq, *before_seq),
            other => panic!("not a history request: {other:?}"),
        }
    }

    #[test]
    fn a_gap_is_fetched_page_by_page_and_live_messages_wait_behind_it() {
        let mut recovery = Recovery::new();
        assert_eq!(recovery.live("r", 1, "m1"), Live::Show("m1"));
        let request = recovery.gap("r", 2, 9).unwrap();
        assert_eq!(after_before(&request), (Some(1), Some(10)));
        assert_eq!(recovery.live("r", 10, "m10"), Live::Held, "held while the gap is fetched");
        assert_eq!(recovery.live("other", 4, "o4"), Live::Show("o4"), "other rooms flow");
        let page = recovery.answer("r", &[2, 3, 4, 5]);
        assert_eq!(page.fresh, [0, 1, 2, 3]);
        assert_eq!(after_before(page.next.as_ref().unwrap()), (Some(5), Some(10)), "the rest of the gap");
        assert!(page.released.is_empty());
        let last = recovery.answer("r", &[6, 7, 8, 9]);
        assert!(last.next.is_none());
        assert_eq!(last.released, ["m10"], "held messages come after the recovered ones");
        assert_eq!(recovery.last_seq("r"), Some(10));
        assert!(!recovery.busy());
    }

    #[test]
    fn an_empty_answer_ends_a_gap_fetch() {
        let mut recovery: Recovery<&str> = Recovery::new();
        recovery.gap("r", 5, 6).unwrap();
        let answer = recovery.answer("r", &[]);
        assert!(answer.next.is_none(), "the messages are gone (retention): nothing more to fetch");
    }

    #[test]
    fn resume_fetches_after_the_last_seen_until_it_meets_live_messages() {
        let mut recovery = Recovery::new();
        assert_eq!(recovery.entered("r").map(|f| after_before(&f)), Some((None, None)));
        assert!(recovery.answer("r", &[41]).fresh.is_empty(), "a baseline shows nothing");
        assert_eq!(recovery.last_seq("r"), Some(41));
        assert!(recovery.entered("r").is_none(), "known already");
        let request = recovery.resume("r").unwrap();
        assert_eq!(after_before(&request), (Some(41), None));
        assert_eq!(recovery.live("r", 45, "live45"), Live::Held);
        let answer = recovery.answer("r", &[42, 43, 44, 45]);
        assert_eq!(answer.fresh, [0, 1, 2, 3]);
        assert!(answer.next.is_none(), "reached the live messages");
        assert!(answer.released.is_empty(), "45 was in the answer: not shown twice");
        assert_eq!(recovery.live("r", 46, "live46"), Live::Show("live46"));
    }

    #[test]
    fn resume_pages_on_while_answers_are_full() {
        let mut recovery: Recovery<&str> = Recovery::new();
        recovery.seen("r", 10);
        recovery.resume("r").unwrap();
        let answer = recovery.answer("r", &[11, 12]);
        assert_eq!(after_before(answer.next.as_ref().unwrap()), (Some(12), None));
        let answer = recovery.answer("r", &[]);
        assert!(answer.next.is_none() && !recovery.busy());
    }

    #[test]
    fn answers_match_requests_in_order_and_the_users_are_shown_whole() {
        let mut recovery: Recovery<&str> = Recovery::new();
        recovery.seen("r", 9);
        recovery.user_request();
        recovery.gap("r", 10, 10).unwrap();
        let user = recovery.answer("r", &[1, 2, 3]);
        assert_eq!((user.fetch, user.fresh), (Some(Fetch::User), vec![0, 1, 2]));
        assert_eq!(recovery.last_seq("r"), Some(9), "the user's own history does not count as seen");
        assert!(matches!(recovery.answer("r", &[10]).fetch, Some(Fetch::Gap { .. })));
    }

    #[test]
    fn unsupported_history_turns_recovery_off_and_releases_what_was_held() {
        let mut recovery = Recovery::new();
        recovery.gap("r", 1, 3).unwrap();
        assert_eq!(recovery.live("r", 4, "m4"), Live::Held);
        let (fetch, released) = recovery.refused(true);
        assert!(matches!(fetch, Some(Fetch::Gap { .. })));
        assert_eq!(released, ["m4"]);
        assert!(recovery.gap("r", 5, 6).is_none() && recovery.entered("x").is_none());
    }

    #[test]
    fn a_lost_connection_shows_what_was_held() {
        let mut recovery = Recovery::new();
        recovery.gap("r", 1, 3).unwrap();
        assert_eq!(recovery.live("r", 5, "m5"), Live::Held);
        assert_eq!(recovery.live("r", 4, "m4"), Live::Held);
        assert_eq!(recovery.disconnected(), ["m4", "m5"]);
        assert!(!recovery.busy());
        assert_eq!(recovery.last_seq("r"), Some(5));
    }
}
