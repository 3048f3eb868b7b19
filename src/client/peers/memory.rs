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
//! **A large LAN** (at least [`QUIET_FROM`] daemons remembered) is asked QUIET: daemons that do
//! not have the file stay silent, so a query costs the LAN the answers of those that have it
//! rather than one from every host, and the client does not wait for two hundred MISS answers.
//! Then "everyone known has answered" can no longer end the wait, so a run that hears no holder
//! stops after [`holder_wait`]: twice the 90th percentile of the answers' round trips in the
//! last loud (non-QUIET) query, at least [`HOLDER_WAIT_FLOOR`]. A loud query goes out again
//! once every [`LOUD_EVERY`], so that the count of daemons and their round trips stay known (and
//! a LAN that shrank is found out: its silent daemons are forgotten, and queries are loud again).
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

use crate::client::peers::discovery::{Expectation, Family, PeerAnswer, Quiet, WaitEnded};
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
/// From this many daemons remembered, queries are QUIET. Below it, every daemon's MISS is cheap
/// (a few dozen datagrams) and buys certainty: the wait ends when the last known daemon has
/// spoken, so no holder is ever missed for being slow. Above it the answers grow with the LAN,
/// two per daemon on a dual-stack link, and the slowest of many hosts sets when a miss ends.
/// Half of [`MAX_REMEMBERED`], so a LAN a little over it does not flip back and forth as a few
/// hosts come and go; and above the 8 and 16 hosts of a lab upgrading together (`together` in
/// the LAN benchmark), which keep the exact rule.
pub const QUIET_FROM: usize = 32;
/// How often a large LAN is asked loud (without QUIET) all the same, to count its daemons and
/// time their answers again.
pub const LOUD_EVERY: Duration = Duration::from_secs(30);
/// The shortest wait for a holder to answer a QUIET query: a switched LAN's round trip is well
/// under a millisecond, but a daemon may take a scheduling slice to wake up.
pub const HOLDER_WAIT_FLOOR: Duration = Duration::from_millis(2);
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
    /// What the last loud (not QUIET) query that was answered heard.
    pub loud: Option<Loud>,
}

/// What a loud query heard, for the QUIET ones until the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loud {
    /// When, in seconds since the epoch.
    pub at: u64,
    /// The 90th percentile of its answers' round trips, in microseconds (at least 1).
    pub round_trip_us: u64,
    /// A daemon answered in version 1 or 2 only: it cannot hear a QUIET query, so those keep
    /// their version 1 copy.
    pub old: bool,
    /// Every daemon that answered did over this address family: QUIET queries need no other.
    pub only: Option<Family>,
}

impl Loud {
    /// What `answers` tell, at `now`; None without answers.
    fn heard(answers: &[PeerAnswer], now: u64) -> Option<Loud> {
        let p90 = percentile_90(answers)?;
        let ids = |wanted: fn(&IpAddr) -> bool| -> HashSet<[u8; 8]> {
            (answers.iter())
                .filter(|a| wanted(&a.from.ip()))
                .map(|a| a.daemon_id)
                .collect()
        };
        let all = ids(|_| true);
        let only = match (ids(IpAddr::is_ipv4) == all, ids(IpAddr::is_ipv6) == all) {
            (true, _) => Some(Family::V4),
            (false, true) => Some(Family::V6),
            (false, false) => None,
        };
        Some(Loud {
            at: now,
            round_trip_us: u64::try_from(p90.as_micros()).unwrap_or(u64::MAX).max(1),
            old: answers.iter().any(|a| a.version < 3),
            only,
        })
    }

    /// This sample, heard by a query a holder cut short (only the fastest answered), with what
    /// `before` knew: it can show the LAN slower or an old daemon, not the opposite; and which
    /// family reaches everyone it cannot tell (a daemon's second answer may simply be late).
    fn cut_short(self, before: Loud) -> Loud {
        Loud {
            round_trip_us: self.round_trip_us.max(before.round_trip_us),
            old: self.old || before.old,
            only: before.only,
            ..self
        }
    }
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
        let silent = daemons.is_empty() && self.asked_at != 0 && fresh(self.asked_at);
        let listened = now.saturating_sub(self.listened_at) < LISTEN_EVERY.as_secs();
        let quiet = (self.loud)
            .filter(|_| daemons.len() >= QUIET_FROM)
            .filter(|l| now.saturating_sub(l.at) < LOUD_EVERY.as_secs())
            .map(|l| Quiet {
                wait: holder_wait(Duration::from_micros(l.round_trip_us)),
                v1: l.old,
                only: l.only,
            });
        Expectation {
            daemons,
            wait: silent.then_some(if listened { SKIM_WAIT } else { QUIET_WAIT }),
            quiet,
            avoided: self
                .failed
                .iter()
                .filter(|(_, _, until)| *until > now)
                .map(|(blame, _, _)| *blame)
                .collect(),
            size: None,
        }
    }

    /// Records a run's answers and what ended its wait: answerers are refreshed, expected
    /// daemons that stayed silent through a whole loud wait are dropped (not those cut short by
    /// a holder, nor those a QUIET query asked to stay silent), stale entries expire. A loud
    /// query's round trips are kept for [`holder_wait`].
    pub fn update(
        &mut self,
        expected: &Expectation,
        answers: &[PeerAnswer],
        ended: WaitEnded,
        now: u64,
    ) {
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
        // Silent through a whole loud wait: gone. (A QUIET query's missers are silent by
        // request, and a wait a holder cut short did not give everyone their turn.)
        let gone = |id: &[u8; 8]| {
            ended == WaitEnded::Waited && expected.quiet.is_none() && expected.daemons.contains(id)
        };
        self.daemons.retain(|(id, t)| {
            !answered.contains(id) && !gone(id) && now.saturating_sub(*t) <= REMEMBER_FOR.as_secs()
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
        if expected.quiet.is_none()
            && let Some(heard) = Loud::heard(answers, now)
        {
            self.loud = Some(match (ended, self.loud) {
                (WaitEnded::FirstHave, Some(before)) => heard.cut_short(before),
                _ => heard,
            });
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
                (Some("loud"), Some(at), Some(us)) => {
                    let (old, only) = (words.next(), words.next());
                    if let (Ok(at), Ok(round_trip_us), Some(old), Some(only)) =
                        (at.parse(), us.parse::<u64>(), old, only)
                    {
                        memory.loud = Some(Loud {
                            at,
                            round_trip_us: round_trip_us.max(1),
                            old: old == "old",
                            only: match only {
                                "ipv4" => Some(Family::V4),
                                "ipv6" => Some(Family::V6),
                                _ => None,
                            },
                        });
                    }
                }
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
        if let Some(l) = &self.loud {
            let old = if l.old { "old" } else { "new" };
            let only = match l.only {
                Some(Family::V4) => "ipv4",
                Some(Family::V6) => "ipv6",
                None => "both",
            };
            out.push_str(&format!("loud {} {} {old} {only}\n", l.at, l.round_trip_us));
        }
        for (id, t) in &self.daemons {
            out.push_str(&format!("daemon {} {t}\n", id_hex(id)));
        }
        for ((id, from), n, until) in &self.failed {
            out.push_str(&format!("failed {} {n} {until} {from}\n", id_hex(id)));
        }
        out
    }
}

/// How long a QUIET query waits for a holder when none has answered: twice the 90th percentile
/// of a loud query's round trips (slower hosts are one in ten, so the chance that the only holder
/// is among them is small, and twice covers most of those too), at least [`HOLDER_WAIT_FLOOR`].
/// The caller's whole wait bounds it.
pub fn holder_wait(round_trip_p90: Duration) -> Duration {
    (round_trip_p90 * 2).max(HOLDER_WAIT_FLOOR)
}

/// The 90th percentile of the answers' round trips; None without answers.
fn percentile_90(answers: &[PeerAnswer]) -> Option<Duration> {
    let mut rtts: Vec<Duration> = answers.iter().map(|a| a.rtt).collect();
    rtts.sort_unstable();
    let at = (rtts.len() * 9 / 10).min(rtts.len().checked_sub(1)?);
    Some(rtts[at])
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
    use WaitEnded::{AllKnownAnswered, FirstHave, Waited};
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
            version: 3,
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

        m.update(
            &Expectation::default(),
            &[answer(1), answer(2)],
            Waited,
            1000,
        );
        let e = m.expectation(1001);
        assert_eq!(e.daemons.len(), 2);
        assert_eq!(e.wait, None);

        // Daemon 2 was expected but stayed silent: forgotten immediately.
        m.update(&e, &[answer(1)], Waited, 1002);
        assert_eq!(m.expectation(1003).daemons, HashSet::from([[1; 8]]));

        // Nobody answers: the next run waits only QUIET_WAIT, until the memory is stale.
        let e = m.expectation(1004);
        m.update(&e, &[], Waited, 1004);
        let later = 1004 + LISTEN_EVERY.as_secs();
        assert_eq!(m.expectation(later).wait, Some(QUIET_WAIT));
        assert_eq!(m.expectation(1004 + 3600).wait, None);

        // Just listened to a silent LAN: skim, and a skim does not count as listening, so the
        // full quiet wait comes back LISTEN_EVERY after the last one.
        let e = m.expectation(1005);
        assert_eq!(e.wait, Some(SKIM_WAIT));
        m.update(&e, &[], Waited, 1005);
        assert_eq!(m.expectation(later).wait, Some(QUIET_WAIT));
        // A daemon answering a skim is expected from then on: full waits for it.
        m.update(&e, &[answer(3)], Waited, 1006);
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
        m.update(&Expectation::default(), &flood, Waited, 1000);
        assert_eq!(m.daemons.len(), MAX_PER_ADDRESS);
        let spread: Vec<PeerAnswer> = (0..=255)
            .map(|i| PeerAnswer {
                from: SocketAddr::from(([10, 0, 1, i], 15678)),
                ..answer(i)
            })
            .collect();
        m.update(&Expectation::default(), &spread, Waited, 1001);
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

    /// `n` daemons, each on its own address, answering after 1, 2, … n ms.
    fn lan(n: u8) -> Vec<PeerAnswer> {
        (1..=n)
            .map(|i| PeerAnswer {
                from: SocketAddr::from(([10, 0, 1, i], 15678)),
                rtt: Duration::from_millis(u64::from(i)),
                ..answer(i)
            })
            .collect()
    }

    fn waits(e: &Expectation) -> Option<Duration> {
        e.quiet.map(|q| q.wait)
    }

    #[test]
    fn a_large_lan_is_asked_quiet_and_loud_again_every_while() {
        let mut m = Memory::default();
        m.update(
            &Expectation::default(),
            &lan(QUIET_FROM as u8 - 1),
            Waited,
            1000,
        );
        assert_eq!(m.expectation(1001).quiet, None, "a small LAN is asked loud");

        let mut m = Memory::default();
        m.update(&Expectation::default(), &lan(40), Waited, 1000);
        // The 90th percentile of 1..=40 ms is 37 ms; twice that. Every daemon answered in
        // version 3 over IPv4: the query goes over IPv4 alone, without its version 1 copy.
        let e = m.expectation(1001);
        let quiet = Quiet {
            wait: Duration::from_millis(74),
            v1: false,
            only: Some(Family::V4),
        };
        assert_eq!(e.quiet, Some(quiet));
        assert_eq!(e.daemons.len(), 40);
        // A quiet query that heard nobody forgets nobody and does not count as loud.
        m.update(&e, &[], Waited, 1002);
        let later = m.expectation(1000 + LOUD_EVERY.as_secs() - 1);
        assert_eq!((later.daemons.len(), later.quiet), (40, Some(quiet)));
        // Once every LOUD_EVERY, a loud query: everyone is counted and timed again.
        let e = m.expectation(1000 + LOUD_EVERY.as_secs());
        assert_eq!(e.quiet, None);
        let fast: Vec<PeerAnswer> = (lan(40).into_iter())
            .map(|a| PeerAnswer {
                rtt: a.rtt / 100,
                ..a
            })
            .collect();
        m.update(&e, &fast, AllKnownAnswered, 1000 + LOUD_EVERY.as_secs());
        let e = m.expectation(1001 + LOUD_EVERY.as_secs());
        assert_eq!(
            waits(&e),
            Some(HOLDER_WAIT_FLOOR),
            "fast answers: the floor"
        );
        let round_trip = Memory::parse(&m.render());
        assert_eq!(round_trip, m);
    }

    #[test]
    fn a_cut_short_wait_forgets_nobody_and_only_raises_the_round_trip() {
        let mut m = Memory::default();
        m.update(&Expectation::default(), &lan(40), Waited, 1000);
        let e = m.expectation(1000 + LOUD_EVERY.as_secs());
        assert_eq!(e.quiet, None);
        // A holder answered first, after 1 ms: the wait ended before the others spoke.
        m.update(&e, &lan(2), FirstHave, 1000 + LOUD_EVERY.as_secs());
        let e = m.expectation(1001 + LOUD_EVERY.as_secs());
        assert_eq!(e.daemons.len(), 40, "nobody forgotten");
        assert_eq!(waits(&e), Some(Duration::from_millis(74)), "37 ms still");
        // A whole loud wait that 30 of the 40 daemons sat through in silence: they are gone,
        // and the LAN, now small, is asked loud.
        let e = m.expectation(1000 + 2 * LOUD_EVERY.as_secs());
        m.update(&e, &lan(10), Waited, 1000 + 2 * LOUD_EVERY.as_secs());
        let e = m.expectation(1001 + 2 * LOUD_EVERY.as_secs());
        assert_eq!((e.daemons.len(), e.quiet), (10, None));
    }

    #[test]
    fn old_daemons_and_single_family_hosts_keep_what_reaches_them() {
        // 40 dual-stack daemons answer over both families.
        let dual: Vec<PeerAnswer> = (lan(40).into_iter())
            .flat_map(|a| {
                let v6 = PeerAnswer {
                    from: SocketAddr::from((
                        [0xfd00, 0, 0, 0, 0, 0, 0, a.daemon_id[0] as u16],
                        15678,
                    )),
                    ..a.clone()
                };
                [a, v6]
            })
            .collect();
        let quiet = |answers: &[PeerAnswer]| {
            let mut m = Memory::default();
            m.update(&Expectation::default(), answers, Waited, 1000);
            m.expectation(1001).quiet.expect("quiet")
        };
        assert_eq!(
            (quiet(&dual).v1, quiet(&dual).only),
            (false, Some(Family::V4))
        );
        // One of them answers over IPv6 only: IPv6 still reaches all.
        let mut v6_one = dual.clone();
        v6_one.remove(0);
        assert_eq!(quiet(&v6_one).only, Some(Family::V6));
        // And another over IPv4 only: both families.
        v6_one.remove(2);
        assert_eq!(quiet(&v6_one).only, None);
        // A daemon that answered in version 1 only: the version 1 copy goes along.
        let mut old = dual.clone();
        old[5].version = 1;
        assert!(quiet(&old).v1);

        // A loud query cut short by a holder, that heard only a few (all over IPv4, all new),
        // does not make the memory think IPv4 alone reaches everyone, nor that the old daemon
        // is gone.
        let mut m = Memory::default();
        old.remove(0);
        m.update(&Expectation::default(), &old, Waited, 1000);
        let e = m.expectation(1000 + LOUD_EVERY.as_secs());
        m.update(&e, &lan(3), FirstHave, 1000 + LOUD_EVERY.as_secs());
        let q = m
            .expectation(1001 + LOUD_EVERY.as_secs())
            .quiet
            .expect("quiet");
        assert_eq!((q.v1, q.only), (true, Some(Family::V6)));
        let round_trip = Memory::parse(&m.render());
        assert_eq!(round_trip, m);
    }
}
