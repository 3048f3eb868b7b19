//! The upload cap (`--upload-limit`, `upload-limit` in pacserved.conf): at most so many bytes
//! per second to LAN peers, all connections together, for hosts on metered or Wi-Fi links.
//! Unlimited by default, as LAN links usually are; this machine's own pacman (`/cache/`) is
//! never capped.
//!
//! A token bucket: [`UploadCap::grant`] hands out what the rate has earned since the last grant,
//! up to a tenth of a second's worth at once, so a connection that waited gets no burst that
//! would starve the others; a sender that could not send all it was granted gives the rest
//! back ([`UploadCap::unused`]). Peers see a slower source, and since version 3 answers say how
//! many uploads a daemon is sending, clients and followers prefer less busy hosts anyway.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The smallest grant worth a sendfile call, unless the rate itself is smaller per tick.
const MIN_GRANT: u64 = 16 * 1024;

#[derive(Debug)]
pub struct UploadCap {
    /// Bytes per second.
    rate: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    available: u64,
    at: Instant,
}

impl UploadCap {
    /// A cap of `rate` bytes per second; None for 0, which means no cap.
    pub fn new(rate: u64) -> Option<UploadCap> {
        (rate > 0).then(|| UploadCap {
            rate,
            bucket: Mutex::new(Bucket {
                available: 0,
                at: Instant::now(),
            }),
        })
    }

    /// Most bytes one grant may hold: a tenth of a second's worth.
    fn burst(&self) -> u64 {
        (self.rate / 10).max(1)
    }

    /// How many of `want` bytes may be sent now (at least one), or how long to wait first.
    pub fn grant(&self, want: u64) -> Result<u64, Duration> {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.rate as f64;
        // Whole bytes only: the fraction stays earned by leaving `at` where it was.
        let whole = earned as u64;
        if whole > 0 {
            bucket.available = (bucket.available + whole).min(self.burst());
            bucket.at = now;
        }
        let worth = want.min(MIN_GRANT.min(self.burst())).max(1);
        if bucket.available >= worth {
            let granted = want.min(bucket.available);
            bucket.available -= granted;
            return Ok(granted);
        }
        let missing = (worth - bucket.available) as f64;
        Err(Duration::from_secs_f64(missing / self.rate as f64).max(Duration::from_millis(1)))
    }

    /// Gives back `bytes` granted but not sent.
    pub fn unused(&self, bytes: u64) {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket.available = (bucket.available + bytes).min(self.burst());
    }
}

/// Parses a rate as `upload-limit` takes it: bytes per second, with an optional binary suffix
/// `K`, `M` or `G` (as aria2's `--max-overall-upload-limit`); `0` means unlimited.
pub fn parse_rate(value: &str) -> Result<u64, String> {
    let trimmed = value.trim();
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&trimmed[..at], c.to_ascii_uppercase()),
        _ => (trimmed, ' '),
    };
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => {
            return Err(format!(
                "{value:?}: the unit is K, M or G (bytes per second)"
            ));
        }
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{value:?}: not a rate in bytes per second, e.g. 10M"))?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{value:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_arias() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("512"), Ok(512));
        assert_eq!(parse_rate("64K"), Ok(64 << 10));
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate(" 2g "), Ok(2 << 30));
        for bad in [
            "",
            "M",
            "10Mbit",
            "-1",
            "1.5M",
            "10X",
            "99999999999999999999G",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_follow_the_rate_and_never_burst_past_a_tenth_of_a_second() {
        // 1000 bytes a second: a grant's worth is the 100-byte burst, a tenth of a second.
        let cap = UploadCap::new(1000).unwrap();
        let wait = cap.grant(1 << 20).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // A long idle earns the burst, no more.
        cap.bucket.lock().unwrap().at = Instant::now() - Duration::from_secs(60);
        assert_eq!(cap.grant(u64::MAX), Ok(100));
        assert!(cap.grant(100).is_err(), "spent");
        cap.unused(50);
        let granted = cap.grant(50).unwrap();
        assert!((50..60).contains(&granted), "{granted}");
        assert!(UploadCap::new(0).is_none());
    }
}
