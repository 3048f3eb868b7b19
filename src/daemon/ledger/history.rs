//! The last week of this machine's traffic, hour by hour, for the status page's charts: bytes
//! served to LAN peers, and this machine's package bytes from the LAN and from the mirror.
//!
//! A fixed number of hourly buckets ([`HOURS`]): the oldest goes when a new hour begins, so the
//! history never grows. Hours are counted by the wall clock (seconds since the epoch / 3600),
//! so a restart that reads the history back from the state directory continues it.

use std::collections::VecDeque;
use std::time::SystemTime;

/// One week.
pub const HOURS: usize = 24 * 7;

/// What one hour moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hour {
    /// Hours since the epoch.
    pub hour: u64,
    pub served: u64,
    pub lan: u64,
    pub mirror: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    /// Oldest first, at most [`HOURS`], each hour at most once.
    hours: VecDeque<Hour>,
}

/// The hour it is now, in hours since the epoch.
pub fn this_hour() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

impl History {
    /// Adds to the bucket of `hour` (a clock set back adds to the newest bucket instead).
    pub fn add(&mut self, hour: u64, change: impl FnOnce(&mut Hour)) {
        let newest = self.hours.back().map(|h| h.hour);
        if newest.is_none_or(|newest| hour > newest) {
            self.hours.push_back(Hour {
                hour,
                ..Hour::default()
            });
            while self.hours.len() > HOURS {
                self.hours.pop_front();
            }
        }
        if let Some(bucket) = self.hours.back_mut() {
            change(bucket);
        }
    }

    /// The `count` hours up to `now`, oldest first, hours without traffic included as zeros.
    pub fn last(&self, count: usize, now: u64) -> Vec<Hour> {
        let first = now.saturating_sub(count.saturating_sub(1) as u64);
        (first..=now)
            .map(|hour| {
                let found = self.hours.iter().find(|h| h.hour == hour).copied();
                found.unwrap_or(Hour {
                    hour,
                    ..Hour::default()
                })
            })
            .collect()
    }

    /// Every bucket kept, oldest first.
    pub fn buckets(&self) -> impl Iterator<Item = &Hour> {
        self.hours.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_of_hours_is_kept_and_gaps_read_as_zero() {
        let mut history = History::default();
        for hour in 0..(HOURS as u64 + 10) {
            history.add(hour * 2, |h| h.served += 1);
        }
        assert_eq!(history.buckets().count(), HOURS);
        let newest = (HOURS as u64 + 9) * 2;
        history.add(newest, |h| h.lan += 5);
        history.add(3, |h| h.mirror += 7);
        let last = history.last(3, newest);
        assert_eq!(last.len(), 3);
        assert_eq!((last[0].hour, last[0].served), (newest - 2, 1));
        assert_eq!((last[1].hour, last[1].served), (newest - 1, 0), "a gap");
        assert_eq!(
            last[2],
            Hour {
                hour: newest,
                served: 1,
                lan: 5,
                mirror: 7
            },
            "a clock set back adds to the newest hour"
        );
    }
}
