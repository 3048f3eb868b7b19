//! What the LAN looked like on recent runs, so the next file does not wait for nobody.
//!
//! pacman runs us once per file, one after another, so a fixed wait is paid per file. After
//! each query we record which daemons answered; the next run stops waiting as soon as those
//! have answered again (see [`crate::client::peers::discovery::Expectation`]), and when nobody answered
//! recently it waits only [`QUIET_WAIT`] — and only once every [`LISTEN_EVERY`]: in between, on
//! a LAN that has stayed silent, the query still goes out but the run waits just [`SKIM_WAIT`],
//! because an upgrade runs us for every file back to back and a silent LAN's wait is pure loss
//! (40 files × 20 ms is most of a second). A daemon that starts meanwhile is still found: a wired
//! peer answers within the skim, a slower one at the next full listen, and from then on every
//! run waits for it again (it is remembered). A daemon that stays silent through a full wait is
//! forgotten at once, so a machine that was switched off costs one full wait, not one per file.
//! A few ids per source address are remembered ([`MAX_PER_ADDRESS`], [`MAX_REMEMBERED`]), so a
//! host answering under hundreds of ids does not make the memory about its inventions.
//!
//! It also remembers which daemons failed a transfer (refused, reset, stalled, sent a bad file)
//! and keeps them out of the next [`backoff`] seconds, growing with repeated failures, so an
//! upgrade does not pay the same failure for every file. A failure is recorded against the
//! daemon id *and* the address it answered from: another host answering with a real daemon's
//! id (shown on its status page) then gets only itself avoided.
//!
//! The file lives in [`crate::statedir`]. Everything here is best effort: no memory just means
//! the full wait.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::peers::discovery::{Expectation, PeerAnswer};
use crate::protocol::id_hex;
use crate::statedir;

/// How long an answer is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(10 * 60);
/// The wait when nobody answered on a recent run: still several LAN round trips, so a daemon
/// that has just started is found, but a tenth of the full wait.
pub const QUIET_WAIT: Duration = Duration::from_millis(20);
/// On a LAN silent through a [`QUIET_WAIT`] less than [`LISTEN_EVERY`] ago: the wait for
/// answers. A switched LAN's round trip plus a daemon's answer is well under a millisecond.
pub const SKIM_WAIT: Duration = Duration::from_millis(3);
/// How often a silent LAN is listened to for the whole [`QUIET_WAIT`].
pub const LISTEN_EVERY: Duration = Duration::from_secs(2);
/// At most this many daemon ids are remembered per source address (a machine runs one daemon;
/// tests run a few on one address)…
pub const MAX_PER_ADDRESS: usize = 4;
/// …and this many in all, so a host answering under hundreds of ids cannot fill the memory, and
/// with it every later wait, with daemons that do not exist.
pub const MAX_REMEMBERED: usize = 64;
pub use crate::protocol::budget::{BACKOFF_MAX, BACKOFF_STEP, backoff};

/// Who failed: a daemon id as answered from one address.
pub type Blame = ([u8; 8], IpAddr);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// When we last asked, seconds since the epoch; 0 for never.
    pub asked_at: u64,
    /// When a run last waited more than [`SKIM_WAIT`] for answers; 0 for never.
    pub listened_at: u64,
    /// Daemons and when they last answered.
    pub daemons: Vec<([u8; 8], u64)>,
    /// Daemons that failed, by id and address: consecutive failures and until when (epoch
    /// seconds) to avoid them.
    pub failed: Vec<(Blame, u32, u64)>,
}

impl Memory {
    /// What to expect now, given `now` in seconds since the epoch.
    pub fn expectation(&self, now: u64) -> Expectation {
        let fresh = |t: u64| now.saturating_sub(t) <= REMEMBER_FOR.as_secs();
        let daemons: HashSet<[u8; 8]> = self
            .daemons
            .iter()
            .filter(|(_, t)| fresh(*t))
            .map(|(id, _)| *id)
            .collect();
        let quiet = daemons.is_empty() && self.asked_at != 0 && fresh(self.asked_at);
        let listened = now.saturating_sub(self.listened_at) < LISTEN_EVERY.as_secs();
        Expectation {
            daemons,
            wait: quiet.then_some(if listened { SKIM_WAIT } else { QUIET_WAIT }),
            avoided: self
                .failed
                .iter()
                .filter(|(_, _, until)| *until > now)
                .map(|(blame, _, _)| *blame)
                .collect(),
        }
    }

    /// Records a run's answers: answerers are refreshed, expected daemons that stayed silent are
    /// dropped, stale entries expire.
    pub fn update(&mut self, expected: &Expectation, answers: &[PeerAnswer], now: u64) {
        let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
        let answered: HashSet<[u8; 8]> = answers
            .iter()
            .filter(|a| {
                let n = per_address.entry(a.from.ip()).or_default();
                *n += 1;
                *n <= MAX_PER_ADDRESS
            })
            .map(|a| a.daemon_id)
            .take(MAX_REMEMBERED)
            .collect();
        self.daemons.retain(|(id, t)| {
            !answered.contains(id)
                && !expected.daemons.contains(id)
                && now.saturating_sub(*t) <= REMEMBER_FOR.as_secs()
        });
        self.daemons
            .extend(answered.into_iter().map(|id| (id, now)));
        if self.daemons.len() > MAX_REMEMBERED {
            self.daemons.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            self.daemons.truncate(MAX_REMEMBERED);
        }
        self.daemons.sort();
        self.failed
            .retain(|(_, _, until)| *until + BACKOFF_MAX.as_secs() > now);
        self.asked_at = now;
        if expected.wait != Some(SKIM_WAIT) {
            self.listened_at = now;
        }
    }

    /// Whether `id` is being avoided at `now`.
    pub fn avoided(&self, id: &Blame, now: u64) -> bool {
        self.failed
            .iter()
            .any(|(f, _, until)| f == id && *until > now)
    }

    /// `id` failed a transfer at `now`.
    pub fn failed(&mut self, id: Blame, now: u64) {
        let failures = self
            .failed
            .iter()
            .find(|(f, _, _)| *f == id)
            .map_or(0, |(_, n, _)| *n)
            + 1;
        self.failed.retain(|(f, _, _)| *f != id);
        self.failed
            .push((id, failures, now + backoff(failures).as_secs()));
    }

    /// `id` delivered a good file: its failures are forgiven. Returns whether anything changed,
    /// so the common case (a peer with no failures) costs no write.
    pub fn succeeded(&mut self, id: &Blame) -> bool {
        let before = self.failed.len();
        self.failed.retain(|(f, _, _)| f != id);
        self.failed.len() != before
    }

    fn parse(text: &str) -> Memory {
        let mut memory = Memory::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("asked"), Some(t), None) => memory.asked_at = t.parse().unwrap_or(0),
                (Some("listened"), Some(t), None) => memory.listened_at = t.parse().unwrap_or(0),
                (Some("daemon"), Some(id), Some(t)) => {
                    if let (Some(id), Ok(t)) = (crate::protocol::parse_id_hex(id), t.parse()) {
                        memory.daemons.push((id, t));
                    }
                }
                (Some("failed"), Some(id), Some(rest)) => {
                    let until = words.next().and_then(|u| u.parse().ok());
                    let from = words.next().and_then(|a| a.parse().ok());
                    if let (Some(id), Ok(n), Some(until), Some(from)) =
                        (crate::protocol::parse_id_hex(id), rest.parse(), until, from)
                    {
                        memory.failed.push(((id, from), n, until));
                    }
                }
                _ => {}
            }
        }
        memory
    }

    fn render(&self) -> String {
        let mut out = format!("asked {}\nlistened {}\n", self.asked_at, self.listened_at);
        for (id, t) in &self.daemons {
            out.push_str(&format!("daemon {} {t}\n", id_hex(id)));
        }
        for ((id, from), n, until) in &self.failed {
            out.push_str(&format!("failed {} {n} {until} {from}\n", id_hex(id)));
        }
        out
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn load() -> Memory {
    path()
        .and_then(|p| fs::read_to_string(p).ok())
        .map(|t| Memory::parse(&t))
        .unwrap_or_default()
}

pub fn store(memory: &Memory) {
    if let Some(path) = path() {
        statedir::write_atomically(&path, memory.render().as_bytes());
    }
}

fn path() -> Option<PathBuf> {
    statedir::dir().map(|d| d.join("lan"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Holding;
    use std::net::SocketAddr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn answer(id: u8) -> PeerAnswer {
        PeerAnswer {
            from: "10.0.0.1:15678".parse().unwrap(),
            daemon_id: [id; 8],
            holding: Holding::Miss,
            extra: Default::default(),
            rtt: Duration::from_millis(1),
            is_self: false,
        }
    }

    #[test]
    fn remembers_answerers_forgets_the_silent_and_the_stale() {
        let mut m = Memory::default();
        assert_eq!(
            m.expectation(1000),
            Expectation::default(),
            "never asked: full wait"
        );

        m.update(&Expectation::default(), &[answer(1), answer(2)], 1000);
        let e = m.expectation(1001);
        assert_eq!(e.daemons.len(), 2);
        assert_eq!(e.wait, None);

        // Daemon 2 was expected but stayed silent: forgotten immediately.
        m.update(&e, &[answer(1)], 1002);
        assert_eq!(m.expectation(1003).daemons, HashSet::from([[1; 8]]));

        // Nobody answers: the next run waits only QUIET_WAIT, until the memory is stale.
        let e = m.expectation(1004);
        m.update(&e, &[], 1004);
        let later = 1004 + LISTEN_EVERY.as_secs();
        assert_eq!(m.expectation(later).wait, Some(QUIET_WAIT));
        assert_eq!(m.expectation(1004 + 3600).wait, None);

        // Just listened to a silent LAN: skim, and a skim does not count as listening, so the
        // full quiet wait comes back LISTEN_EVERY after the last one.
        let e = m.expectation(1005);
        assert_eq!(e.wait, Some(SKIM_WAIT));
        m.update(&e, &[], 1005);
        assert_eq!(m.expectation(later).wait, Some(QUIET_WAIT));
        // A daemon answering a skim is expected from then on: full waits for it.
        m.update(&e, &[answer(3)], 1006);
        assert_eq!(m.expectation(1006).wait, None);
        assert_eq!(m.expectation(1006).daemons, HashSet::from([[3; 8]]));

        m.failed(([7; 8], ip(7)), 2000);
        let round_trip = Memory::parse(&m.render());
        assert_eq!(round_trip, m);
    }

    #[test]
    fn a_host_answering_under_many_ids_is_remembered_a_few_times() {
        let flood: Vec<PeerAnswer> = (0..=255).map(answer).collect();
        let mut m = Memory::default();
        m.update(&Expectation::default(), &flood, 1000);
        assert_eq!(m.daemons.len(), MAX_PER_ADDRESS);
        let spread: Vec<PeerAnswer> = (0..=255)
            .map(|i| PeerAnswer {
                from: SocketAddr::from(([10, 0, 1, i], 15678)),
                ..answer(i)
            })
            .collect();
        m.update(&Expectation::default(), &spread, 1001);
        assert_eq!(m.daemons.len(), MAX_REMEMBERED);
    }

    #[test]
    fn failed_daemons_are_avoided_for_longer_each_time() {
        let mut m = Memory::default();
        let one = ([1; 8], ip(1));
        m.failed(one, 1000);
        assert!(m.avoided(&one, 1029));
        assert!(!m.avoided(&one, 1030));
        m.failed(one, 1030);
        assert!(m.avoided(&one, 1089), "second failure: 60 s");
        assert!(!m.avoided(&([2; 8], ip(1)), 1030));
        assert!(
            !m.avoided(&([1; 8], ip(2)), 1030),
            "the same id from another address is another daemon"
        );
        assert!(m.succeeded(&one));
        assert!(!m.succeeded(&one), "nothing left to forgive");
        assert!(!m.avoided(&one, 1031));
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
