//! A per-source budget for discovery queries, so one host cannot keep the responder busy.
//!
//! A token bucket per source address: a client asking once per file, even at pacman's fastest,
//! never notices it, while a flood from one address (or a spoofed one) is cut to a trickle.
//! The table is bounded: when full, idle entries are dropped, and a still-full table refuses new
//! sources rather than grow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: f64, max_sources: usize) -> RateLimit {
        RateLimit {
            per_second,
            burst,
            max_sources,
            buckets: HashMap::new(),
        }
    }

    /// Whether `source` may have one more query at `now`.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            let idle = Duration::from_secs_f64(self.burst / self.per_second);
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < idle);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(source).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_source() {
        let mut limit = RateLimit::new(10.0, 5.0, 100);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            (0..8).filter(|_| limit.allow(a, t0)).count(),
            5,
            "burst of 5"
        );
        assert!(limit.allow(b, t0), "another source has its own bucket");
        assert!(!limit.allow(a, t0 + Duration::from_millis(50)));
        assert!(
            limit.allow(a, t0 + Duration::from_millis(150)),
            "refilled at 10/s"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut limit = RateLimit::new(10.0, 5.0, 2);
        let t0 = Instant::now();
        assert!(limit.allow("10.0.0.1".parse().unwrap(), t0));
        assert!(limit.allow("10.0.0.2".parse().unwrap(), t0));
        assert!(
            !limit.allow("10.0.0.3".parse().unwrap(), t0),
            "full of active sources"
        );
        assert!(
            limit.allow("10.0.0.3".parse().unwrap(), t0 + Duration::from_secs(1)),
            "idle ones dropped"
        );
    }
}
