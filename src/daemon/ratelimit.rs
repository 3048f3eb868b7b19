//! A budget for discovery queries, so no host can keep the responder busy or use it to
//! bounce traffic at someone else, and no host can silence another.
//!
//! Queries are unauthenticated UDP: a source address can be forged by anyone on the LAN, so the
//! limiter must be built so that forging addresses buys nothing beyond what a plain flood buys.
//!
//! - **Per source, keyed by address and port.** A token bucket per (address, port): a client
//!   asking once per file never notices it, a flood from one socket is cut to a trickle. The
//!   port is part of the key because `pacserve-fetch` asks from a fresh random ephemeral port
//!   every run: a host forging a victim's address (earlier this drained the victim's
//!   per-address bucket and silenced it) now only drains buckets of ports it guessed, while the
//!   victim's next run arrives from another port with a full bucket. Pre-draining every port
//!   would take ~28,000 entries, far past the table's size.
//! - **A bounded table that cannot be captured.** When it is full, the least recently used
//!   quarter is dropped and the newcomer gets a fresh bucket. Earlier a full table refused new
//!   sources, so forged queries from 4096 addresses every few seconds kept every new client
//!   unanswered; now they only evict each other.
//! - **A global budget** over all sources (per address family: each responder thread has its
//!   own). Fresh buckets are what forged sources get, so the total is what bounds a flood of
//!   them: the daemon never answers more than this, whatever the number of addresses and ports,
//!   which bounds both its CPU and the bytes it can be made to send at a forged victim
//!   (answers are never larger than queries). Beyond this rate every source is slowed alike: no
//!   UDP service can tell a forged query from a real one, so a flood above it is a denial of
//!   service that only the network can stop; it shows on the status page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(budget: Budget, now: Instant) -> Bucket {
        Bucket {
            tokens: budget.burst,
            last: now,
        }
    }

    /// Refills for the time since the last use and takes one token if there is one.
    fn take(&mut self, budget: Budget, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * budget.per_second).min(budget.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub struct RateLimit {
    per_source: Budget,
    max_sources: usize,
    buckets: HashMap<SocketAddr, Bucket>,
    global_budget: Budget,
    global: Bucket,
}

impl RateLimit {
    pub fn new(per_source: Budget, max_sources: usize, global: Budget) -> RateLimit {
        RateLimit {
            per_source,
            max_sources: max_sources.max(4),
            buckets: HashMap::new(),
            global_budget: global,
            global: Bucket::full(global, Instant::now()),
        }
    }

    /// Whether `source` may have one more query at `now`.
    pub fn allow(&mut self, source: SocketAddr, now: Instant) -> bool {
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.forget_least_recent();
        }
        let per_source = self.per_source;
        let bucket = self
            .buckets
            .entry(source)
            .or_insert_with(|| Bucket::full(per_source, now));
        // The source's own bucket first: a source over its limit spends nothing global.
        bucket.take(per_source, now) && self.global.take(self.global_budget, now)
    }

    /// Drops the least recently used quarter of the table: linear, once per quarter-table of
    /// new sources.
    fn forget_least_recent(&mut self) {
        let mut lasts: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
        let cut = lasts.len() / 4;
        let (_, threshold, _) = lasts.select_nth_unstable(cut);
        let threshold = *threshold;
        self.buckets.retain(|_, b| b.last > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SOURCE: Budget = Budget {
        per_second: 10.0,
        burst: 5.0,
    };
    const PLENTY: Budget = Budget {
        per_second: 1e6,
        burst: 1e6,
    };

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn bursts_then_refills_per_source() {
        let mut limit = RateLimit::new(SOURCE, 100, PLENTY);
        let t0 = Instant::now();
        let a = at("10.0.0.1", 4000);
        assert_eq!(
            (0..8).filter(|_| limit.allow(a, t0)).count(),
            5,
            "burst of 5"
        );
        assert!(limit.allow(at("10.0.0.2", 4000), t0), "another address");
        assert!(!limit.allow(a, t0 + Duration::from_millis(50)));
        assert!(
            limit.allow(a, t0 + Duration::from_millis(150)),
            "refilled at 10/s"
        );
    }

    #[test]
    fn forging_a_victims_address_does_not_drain_its_next_run() {
        let mut limit = RateLimit::new(SOURCE, 1000, PLENTY);
        let t0 = Instant::now();
        // The forger drains the victim's address on a few hundred guessed ports.
        for port in 30000..30300 {
            for _ in 0..10 {
                limit.allow(at("10.0.0.9", port), t0);
            }
        }
        assert!(
            !limit.allow(at("10.0.0.9", 30001), t0),
            "guessed port drained"
        );
        assert!(
            limit.allow(at("10.0.0.9", 41234), t0),
            "the victim's run from another port is answered"
        );
    }

    #[test]
    fn a_table_full_of_forged_sources_still_takes_a_new_one() {
        let mut limit = RateLimit::new(SOURCE, 64, PLENTY);
        let t0 = Instant::now();
        for round in 0..3u64 {
            let now = t0 + Duration::from_millis(round);
            for i in 0..200u16 {
                limit.allow(at(&format!("10.1.{}.{}", i / 250, i % 250), 5000), now);
            }
        }
        assert!(limit.buckets.len() <= 64, "bounded");
        let now = t0 + Duration::from_millis(3);
        assert!(
            limit.allow(at("10.0.0.1", 5000), now),
            "a newcomer is answered"
        );
        assert!(
            limit.allow(at("10.0.0.1", 5000), now),
            "and keeps its bucket"
        );
    }

    #[test]
    fn the_global_budget_bounds_all_sources_together() {
        let global = Budget {
            per_second: 100.0,
            burst: 10.0,
        };
        let mut limit = RateLimit::new(SOURCE, 1000, global);
        let t0 = Instant::now();
        let answered = (0..50u16)
            .filter(|i| limit.allow(at("10.0.0.1", 1000 + i), t0))
            .count();
        assert_eq!(answered, 10, "fresh buckets everywhere, but 10 in all");
        assert!(limit.allow(at("10.0.0.2", 1), t0 + Duration::from_millis(20)));
    }
}
