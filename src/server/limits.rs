//! Abuse limits: how fast one connection may send (a token bucket per
//! connection), how many connections one address may hold, and how often one
//! address may call the account API.
//!
//! The per-address table counts every open TCP connection, from accept to
//! close: handshakes in progress and plain HTTP requests count as much as
//! chat sessions, so a single host cannot exhaust the server with half-open
//! handshakes either. IPv6 addresses are grouped by /64, the block one host
//! usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// A sustained rate with a burst, as in `--rate-limit 100/s --rate-burst 200`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages that may be sent at once after a quiet period.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { per_second: 100.0, burst: 200 }
    }
}

/// Parse `"100/s"`, `"100"` (per second), `"6000/min"`, `"off"` (`None`).
pub fn parse_rate(text: &str) -> Result<Option<f64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text == "0" {
        return Ok(None);
    }
    let (number, unit) = text.split_once('/').unwrap_or((text, "s"));
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}; write it like \"100/s\" or \"6000/min\"")),
    };
    let count: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate; write it like \"100/s\", \"6000/min\" or \"off\""))?;
    if !count.is_finite() || count <= 0.0 {
        return Err(format!("{text:?}: the rate must be positive, or \"off\""));
    }
    Ok(Some(count / per))
}

/// The classic token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { tokens: burst, last: now, rate, burst }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Is the bucket full again (nothing to remember about its user)?
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// What to do with one message under the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: drop it and say so (`error` `rate_limited`).
    Drop,
    /// Over the limit again and again: close the connection (1008).
    Close,
}

/// How long dropped messages are counted before the count starts over.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// One connection's message rate limit. Past the burst, messages are dropped;
/// a connection that has more than a burst's worth dropped within
/// `ABUSE_WINDOW` is closed.
#[derive(Debug)]
pub struct MessageLimiter {
    bucket: Option<TokenBucket>,
    /// When the current abuse window began (at the first drop in it).
    window_start: Instant,
    dropped: u32,
    max_dropped: u32,
}

impl MessageLimiter {
    /// `None` means unlimited.
    pub fn new(limit: Option<RateLimit>) -> Self {
        let now = Instant::now();
        MessageLimiter {
            bucket: limit.map(|l| TokenBucket::new(l.per_second, l.burst, now)),
            window_start: now,
            dropped: 0,
            max_dropped: limit.map_or(0, |l| l.burst.max(1)),
        }
    }

    /// The limit in force (`None`: unlimited).
    pub fn limit(&self) -> Option<RateLimit> {
        self.bucket.as_ref().map(|b| RateLimit { per_second: b.rate, burst: b.burst as u32 })
    }

    /// Account for one message arriving now.
    pub fn check(&mut self) -> Verdict {
        let Some(bucket) = &mut self.bucket else { return Verdict::Allow };
        let now = Instant::now();
        if bucket.take(now) {
            return Verdict::Allow;
        }
        if now.duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.dropped = 0;
        }
        self.dropped += 1;
        if self.dropped > self.max_dropped { Verdict::Close } else { Verdict::Drop }
    }
}

/// How connections from one address are grouped: IPv4 by address, IPv6 by /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    V6Prefix(u64),
}

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4.into()),
                None => IpKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Connections past the per-address cap that are still answered with an
/// HTTP 429 (so a person sees why); beyond that they are closed at once.
const REFUSE_SLACK: usize = 16;
/// The default budget of account API calls per address: a burst of 10, then
/// one per second.
pub const DEFAULT_API_RATE: RateLimit = RateLimit { per_second: 1.0, burst: 10 };
/// Prune idle entries when the table grows past this.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
struct IpEntry {
    open: usize,
    api: TokenBucket,
}

/// Open connections and API budget per address.
#[derive(Debug)]
pub struct IpLimits {
    /// Most open connections per address (0: no limit).
    max_per_ip: usize,
    /// Account API calls per address (`None`: unlimited).
    api_rate: Option<RateLimit>,
    /// Entries exist while an address has connections open, or API calls
    /// still to pay back; taken briefly at accept, close and API calls.
    table: Arc<Mutex<HashMap<IpKey, IpEntry>>>,
}

/// What to do with a new connection from some address.
#[derive(Debug)]
pub enum IpAdmission {
    /// Serve it.
    Admit(IpSlot),
    /// Over the cap: read its request and answer 429.
    Refuse(IpSlot),
    /// Far over the cap: close it without a word.
    Drop,
}

/// A connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<Mutex<HashMap<IpKey, IpEntry>>>,
    key: IpKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.get_mut(&self.key) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && entry.api.is_full(Instant::now()) {
                table.remove(&self.key);
            }
        }
    }
}

impl IpLimits {
    pub fn new(max_per_ip: usize, api_rate: Option<RateLimit>) -> Self {
        IpLimits { max_per_ip, api_rate, table: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn new_entry(&self, now: Instant) -> IpEntry {
        let rate = self.api_rate.unwrap_or(DEFAULT_API_RATE);
        IpEntry { open: 0, api: TokenBucket::new(rate.per_second, rate.burst, now) }
    }

    /// Count a new connection from `ip`.
    pub fn admit(&self, ip: IpAddr) -> IpAdmission {
        let key = IpKey::of(ip);
        let now = Instant::now();
        let mut table = lock(&self.table);
        if table.len() >= PRUNE_AT && !table.contains_key(&key) {
            table.retain(|_, e| e.open > 0 || !e.api.is_full(now));
        }
        let entry = table.entry(key).or_insert_with(|| self.new_entry(now));
        let unlimited = self.max_per_ip == 0;
        if !unlimited && entry.open >= self.max_per_ip + REFUSE_SLACK {
            return IpAdmission::Drop;
        }
        entry.open += 1;
        let slot = IpSlot { table: self.table.clone(), key };
        if unlimited || entry.open <= self.max_per_ip { IpAdmission::Admit(slot) } else { IpAdmission::Refuse(slot) }
    }

    /// May `ip` make another account API call now?
    pub fn api_allowed(&self, ip: IpAddr) -> bool {
        if self.api_rate.is_none() {
            return true;
        }
        let now = Instant::now();
        let mut table = lock(&self.table);
        table.entry(IpKey::of(ip)).or_insert_with(|| self.new_entry(now)).api.take(now)
    }

    /// Open connections from `ip` right now.
    pub fn open(&self, ip: IpAddr) -> usize {
        lock(&self.table).get(&IpKey::of(ip)).map_or(0, |e| e.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/s"), Ok(Some(100.0)));
        assert_eq!(parse_rate("100"), Ok(Some(100.0)));
        assert_eq!(parse_rate("6000/min"), Ok(Some(100.0)));
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("-3/s").is_err());
        assert!(parse_rate("10/fortnight").unwrap_err().contains("100/s"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_sustained_rate() {
        let mut limiter = MessageLimiter::new(Some(RateLimit { per_second: 10.0, burst: 20 }));
        assert!((0..20).all(|_| limiter.check() == Verdict::Allow));
        assert_eq!(limiter.check(), Verdict::Drop);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!((0..5).all(|_| limiter.check() == Verdict::Allow), "5 tokens back after half a second");
        assert_eq!(limiter.check(), Verdict::Drop);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_abuse_closes_but_a_pause_forgives() {
        let mut limiter = MessageLimiter::new(Some(RateLimit { per_second: 10.0, burst: 5 }));
        (0..5).for_each(|_| assert_eq!(limiter.check(), Verdict::Allow));
        (0..4).for_each(|_| assert_eq!(limiter.check(), Verdict::Drop));
        tokio::time::advance(ABUSE_WINDOW + Duration::from_secs(1)).await;
        (0..5).for_each(|_| assert_eq!(limiter.check(), Verdict::Allow));
        (0..5).for_each(|_| assert_eq!(limiter.check(), Verdict::Drop));
        assert_eq!(limiter.check(), Verdict::Close, "the sixth drop within the window is one too many");
        let mut unlimited = MessageLimiter::new(None);
        assert!((0..100_000).all(|_| unlimited.check() == Verdict::Allow));
    }

    #[test]
    fn per_ip_cap_refuses_then_drops_and_slots_come_back() {
        let limits = IpLimits::new(2, Some(DEFAULT_API_RATE));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.admit(ip);
        let b = limits.admit(ip);
        assert!(matches!((&a, &b), (IpAdmission::Admit(_), IpAdmission::Admit(_))));
        let refused: Vec<_> = (0..REFUSE_SLACK).map(|_| limits.admit(ip)).collect();
        assert!(refused.iter().all(|r| matches!(r, IpAdmission::Refuse(_))));
        assert!(matches!(limits.admit(ip), IpAdmission::Drop));
        assert!(matches!(limits.admit("10.0.0.2".parse().unwrap()), IpAdmission::Admit(_)), "other addresses");
        drop(refused);
        drop(a);
        assert_eq!(limits.open(ip), 1);
        assert!(matches!(limits.admit(ip), IpAdmission::Admit(_)));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_by_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(a), IpKey::of(b));
        assert_ne!(IpKey::of(a), IpKey::of(c));
        assert_eq!(IpKey::of("::ffff:10.1.2.3".parse().unwrap()), IpKey::of("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn unlimited_means_unlimited() {
        let limits = IpLimits::new(0, None);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| limits.admit(ip)).collect();
        assert!(slots.iter().all(|s| matches!(s, IpAdmission::Admit(_))));
    }
}
