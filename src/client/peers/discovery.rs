//! The client side of the peer protocol: ask the LAN who has a file, collect the answers.
//!
//! One query goes out per interface and address family (plus one per static peer); answers are
//! collected until the first of: the wait runs out; a peer said HAVE and the others had a
//! moment (twice the first HAVE's round trip) to offer themselves as fallbacks; or every daemon
//! the caller expects (those that answered last time, see [`crate::client::peers::memory`]) has answered.
//! With no interface and no static peer there is nobody to ask, and nothing is waited for.
//!
//! On a large LAN the caller asks QUIET ([`Expectation::quiet`]): only daemons that have the
//! file (or are fetching it) answer, so nobody can be counted off and, unless a holder answers,
//! the wait ends after the shorter holders' wait the caller gives. Such a query goes without its
//! version 1 copy, and over one address family, when the last loud query showed that every
//! daemon heard the newer version over that family ([`Quiet`]).
//!
//! Waits and round trips count from when the last query went out.
//!
//! Answers are believed only from the link the query went out on or from a static peer (see
//! [`crate::protocol::onlink`]), and kept one per daemon id *and* source address: another host
//! answering first with a real daemon's id must not get the real answer dropped as a duplicate.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::client::peers::networks::{self, Chosen};
use crate::protocol::asker::{Asker, Target};
use crate::protocol::netif;
use crate::protocol::onlink::Links;
use crate::protocol::{self, Answer, Extra, Holding, Query};

/// Where and how long to ask.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// UDP port daemons listen on.
    pub port: u16,
    pub group_v4: Ipv4Addr,
    pub group_v6: Ipv6Addr,
    /// Send multicast queries at all (static peers are asked either way).
    pub multicast: bool,
    /// Interfaces to query on; empty for every up, multicast-capable, non-loopback one.
    pub interfaces: Vec<String>,
    /// Query only on interfaces with an address in one of these; empty: any
    /// ([`crate::client::peers::networks`]).
    pub networks: Vec<IpNet>,
    /// `HOST` or `HOST:PORT` of peers multicast does not reach (VPNs, routed subnets).
    pub static_peers: Vec<String>,
    /// The longest we wait for answers.
    pub wait: Duration,
    /// Accept answers from daemons on this machine (normally skipped: pacman has already looked
    /// in the local cache, so our own daemon cannot have what pacman is asking for).
    pub include_self: bool,
}

impl Default for Discovery {
    /// The wait: round trips across a switched LAN are well under 1 ms and rarely above 50 ms
    /// on busy Wi-Fi, so 100 ms catches slow peers while bounding what a file no peer has can
    /// cost; and the wait ends early once peers have answered (see the module doc).
    fn default() -> Discovery {
        Discovery {
            port: protocol::PORT,
            group_v4: protocol::GROUP_V4,
            group_v6: protocol::GROUP_V6,
            multicast: true,
            interfaces: Vec::new(),
            networks: Vec::new(),
            static_peers: Vec::new(),
            wait: Duration::from_millis(100),
            include_self: false,
        }
    }
}

/// One daemon's answer, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAnswer {
    /// Where the answer came from (link-local IPv6 keeps its scope id).
    pub from: SocketAddr,
    pub daemon_id: [u8; 8],
    pub holding: Holding,
    /// What a version 3 daemon adds (the signature is there too, how busy it is).
    pub extra: Extra,
    /// Time from the last query going out to this answer.
    pub rtt: Duration,
    /// The answer came from one of this machine's own addresses.
    pub is_self: bool,
    /// The newest protocol version the daemon answered in (1 or 2: it cannot hear QUIET).
    pub version: u8,
}

impl PeerAnswer {
    /// The HTTP address serving the file, for a HAVE answer.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let (http_port, _) = self.holding.fetchable()?;
        let mut addr = self.from;
        addr.set_port(http_port);
        Some(addr)
    }
}

/// What the caller knows of the LAN before asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// Daemons that answered recently: once all of them have answered again, stop waiting.
    pub daemons: HashSet<[u8; 8]>,
    /// Shorter wait to use instead of the full one; for a LAN where nobody answered recently.
    pub wait: Option<Duration>,
    /// Daemons being avoided, by id and address: their answers are collected but end no wait,
    /// so an impostor answering first with a real daemon's id cannot cut the real one off.
    pub avoided: HashSet<([u8; 8], IpAddr)>,
    /// Ask QUIET (daemons without the file stay silent); for a LAN of many daemons, whose MISS
    /// answers cost more than they tell.
    pub quiet: Option<Quiet>,
    /// The size the file must have (its sync database's): a holder answering another size is
    /// collected but ends no wait, so a host answering every query at once with a size that
    /// cannot be the file does not cut the real holders off.
    pub size: Option<u64>,
}

/// How a QUIET query is asked, from what the last loud one heard
/// ([`crate::client::peers::memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// Unless a holder answers, stop this long after the query went out.
    pub wait: Duration,
    /// Send the version 1 copy too: a daemon answered lately that speaks nothing newer (and so
    /// cannot hear QUIET, nor this query without it).
    pub v1: bool,
    /// Ask over this address family only: every daemon heard lately answered over it. None:
    /// over both.
    pub only: Option<Family>,
}

/// An address family, for [`Quiet::only`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Asks for `file_name` and returns every answer (HAVE and MISS) in arrival order, one per
/// daemon id and source address (a dual-stack daemon answers twice; see [`per_daemon`]).
/// Own-machine answers are included only with `include_self`, marked either way.
pub fn ask(
    config: &Discovery,
    file_name: &str,
    arch: &str,
    expect: &Expectation,
) -> io::Result<Vec<PeerAnswer>> {
    ask_detailed(config, file_name, arch, expect).map(|asked| asked.answers)
}

/// What [`ask_detailed`] saw, for explaining an empty answer list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    pub answers: Vec<PeerAnswer>,
    /// Queries sent; 0 means nobody could be asked (no usable interface, no static peer).
    pub sent: usize,
    /// Answers from this machine's own daemons that were left out (no `include_self`).
    pub own_skipped: usize,
    /// What ended the wait for answers.
    pub ended: WaitEnded,
    /// The query was QUIET: daemons without the file said nothing.
    pub quiet: bool,
    /// Why interfaces that could have been asked were not, a sentence each.
    pub skipped: Vec<String>,
}

/// Why [`ask_detailed`] stopped listening: shown by `-v`, so a user (and a test) can see that a
/// run did not wait for nobody.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitEnded {
    /// The whole wait passed (nobody known from recent runs, or someone known stayed silent).
    #[default]
    Waited,
    /// A peer has the file; slower ones had as long again to offer themselves.
    FirstHave,
    /// Every daemon that answered recent runs has answered this one.
    AllKnownAnswered,
    /// Asked QUIET, and no holder answered within the holders' wait.
    NoHolder,
}

/// Why a query's wait ended, as `-v` says it: `expect` as the query was asked, `wait` the
/// caller's longest.
pub fn why_ended(ended: WaitEnded, expect: &Expectation, wait: Duration) -> String {
    let longest = expect.wait.unwrap_or(wait).min(wait);
    let Some(quiet) = expect.quiet.map(|q| q.wait.min(longest)) else {
        return match ended {
            WaitEnded::Waited | WaitEnded::NoHolder => {
                format!("waited the whole {} ms", longest.as_millis())
            }
            WaitEnded::FirstHave => format!(
                "stopped early: a peer has it (waiting up to {} ms)",
                longest.as_millis()
            ),
            WaitEnded::AllKnownAnswered => format!(
                "stopped early: every daemon known from recent runs answered (waiting up to {} ms)",
                longest.as_millis()
            ),
        };
    };
    let how = expect.quiet.map_or("", |q| match (q.only, q.v1) {
        (Some(Family::V4), false) => " over IPv4 alone",
        (Some(Family::V6), false) => " over IPv6 alone",
        (None, false) => "",
        (Some(Family::V4), true) => " over IPv4 alone, with a version 1 copy for older daemons",
        (Some(Family::V6), true) => " over IPv6 alone, with a version 1 copy for older daemons",
        (None, true) => " with a version 1 copy for older daemons",
    });
    let asked = format!(
        "asked QUIET{how} ({} daemons known from recent runs: only holders answer)",
        expect.daemons.len()
    );
    let holders = format!(
        "{:.1} ms, twice the 90th percentile of the round trips when all were last asked, or {} ms at least",
        quiet.as_secs_f64() * 1e3,
        crate::client::peers::memory::HOLDER_WAIT_FLOOR.as_millis()
    );
    match ended {
        WaitEnded::FirstHave => {
            format!("{asked}; stopped early: a peer has it (waiting up to {holders})")
        }
        WaitEnded::NoHolder => format!("{asked}; no holder answered within {holders}"),
        WaitEnded::Waited | WaitEnded::AllKnownAnswered => {
            format!("{asked}; waited the whole {} ms", longest.as_millis())
        }
    }
}

/// [`ask`], also saying how many queries went out and how many own answers were dropped.
pub fn ask_detailed(
    config: &Discovery,
    file_name: &str,
    arch: &str,
    expect: &Expectation,
) -> io::Result<Asked> {
    let query = Query {
        version: protocol::ASK_VERSION,
        nonce: nonce()?,
        file_name: file_name.to_owned(),
        arch: arch.to_owned(),
        claim: None,
        quiet: expect.quiet.is_some(),
        link: 0,
    };
    // Our version and, for daemons not yet upgraded, version 1 with the same nonce, in that
    // order: a daemon that answered the first drops the copy (a QUIET one stays quiet). A
    // QUIET query leaves the copy out when no such daemon answered lately.
    let v1 = Query {
        version: 1,
        quiet: false,
        ..query.clone()
    };
    let copies = match expect.quiet {
        Some(Quiet { v1: false, .. }) => vec![query.clone()],
        _ => vec![query.clone(), v1],
    };
    let datagrams = (copies.iter().map(Query::encode))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{file_name:?} cannot be asked for (a name has at most 255 bytes)"),
            )
        })?;
    let asker = Asker::open()?;
    let only = expect.quiet.and_then(|q| q.only);
    let (sent, links, skipped) = send_queries(config, &asker, &datagrams, only);
    // Waits and round trips count from here: on a simulated LAN of hundreds of hosts the
    // kernel's copying of a multicast datagram to every one of them can take milliseconds of
    // the sending itself, which no daemon can answer before.
    let started = Instant::now();
    let mut own_skipped = 0;
    if sent == 0 {
        return Ok(Asked {
            skipped,
            ..Asked::default()
        });
    }
    let locals: HashSet<IpAddr> = netif::local_addresses().into_iter().collect();
    let deadline = started + expect.wait.unwrap_or(config.wait).min(config.wait);
    let mut ending = Ending::new(started, deadline, expect);
    let mut answers: Vec<PeerAnswer> = Vec::new();
    // (daemon id, source) → index in `answers` and the version of the answer kept there.
    let mut seen: HashMap<([u8; 8], IpAddr), (usize, u8)> = HashMap::new();
    while let Some(left) = ending
        .stop_at
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        for (from, datagram) in asker.receive(left)? {
            let Ok(answer) = Answer::decode(&datagram) else {
                continue;
            };
            if answer.nonce != query.nonce || !links.accepts(from) {
                continue;
            }
            if let Some(&(at, version)) = seen.get(&(answer.daemon_id, from.ip())) {
                // A daemon older than one answer per query answers both our queries: its newer
                // answer says more.
                if answer.version > version {
                    if let Some(kept) = answers.get_mut(at) {
                        kept.holding = answer.holding;
                        kept.extra = answer.extra;
                        kept.version = answer.version;
                    }
                    seen.insert((answer.daemon_id, from.ip()), (at, answer.version));
                }
                continue;
            }
            let is_self = locals.contains(&from.ip());
            if is_self && !config.include_self {
                // Remembered as seen, at no index: its newer answer must not land on another's.
                seen.insert((answer.daemon_id, from.ip()), (usize::MAX, answer.version));
                own_skipped += 1;
                continue;
            }
            seen.insert(
                (answer.daemon_id, from.ip()),
                (answers.len(), answer.version),
            );
            let rtt = started.elapsed();
            let counts = !expect.avoided.contains(&(answer.daemon_id, from.ip()));
            let fits = |holding: &Holding| {
                holding
                    .fetchable()
                    .is_some_and(|(_, size)| expect.size.is_none_or(|s| s == size))
            };
            if counts
                && fits(&answer.holding)
                && !answers.iter().any(|a| {
                    fits(&a.holding) && !expect.avoided.contains(&(a.daemon_id, a.from.ip()))
                })
            {
                ending.first_have(Instant::now(), rtt);
            }
            answers.push(PeerAnswer {
                from,
                daemon_id: answer.daemon_id,
                holding: answer.holding,
                extra: answer.extra,
                rtt,
                is_self,
                version: answer.version,
            });
            if counts {
                ending.answered(Instant::now(), &answer.daemon_id);
            }
        }
    }
    Ok(Asked {
        answers,
        sent,
        own_skipped,
        ended: ending.ended,
        quiet: expect.quiet.is_some(),
        skipped,
    })
}

/// When to stop listening, and why: the end rules of the module doc, kept apart from the
/// sockets so that they can be tested alone.
#[derive(Debug, Clone)]
struct Ending {
    stop_at: Instant,
    /// The caller's longest wait: nothing goes past it.
    deadline: Instant,
    ended: WaitEnded,
    /// Expected daemons not heard yet (none for a QUIET query: the missers stay silent).
    outstanding: HashSet<[u8; 8]>,
}

impl Ending {
    fn new(started: Instant, deadline: Instant, expect: &Expectation) -> Ending {
        match expect.quiet {
            // Asked QUIET: the expected daemons that lack the file will not answer; a holder
            // answers as fast as anyone, so wait the holders' wait.
            Some(quiet) if started + quiet.wait < deadline => Ending {
                stop_at: started + quiet.wait,
                deadline,
                ended: WaitEnded::NoHolder,
                outstanding: HashSet::new(),
            },
            Some(_) => Ending {
                stop_at: deadline,
                deadline,
                ended: WaitEnded::Waited,
                outstanding: HashSet::new(),
            },
            None => Ending {
                stop_at: deadline,
                deadline,
                ended: WaitEnded::Waited,
                outstanding: expect.daemons.clone(),
            },
        }
    }

    /// The first (not avoided) HAVE or GROWING arrived at `now`, `rtt` after the query: give
    /// slower peers as long again to offer themselves as fallbacks. Under QUIET that may be
    /// longer than the holders' wait, which was for the first holder; never past the deadline.
    fn first_have(&mut self, now: Instant, rtt: Duration) {
        let at = (now + rtt + Duration::from_millis(1)).min(self.deadline);
        if at < self.stop_at || self.ended == WaitEnded::NoHolder {
            (self.stop_at, self.ended) = (at, WaitEnded::FirstHave);
        }
    }

    /// A (not avoided) daemon answered at `now`.
    fn answered(&mut self, now: Instant, id: &[u8; 8]) {
        if self.outstanding.remove(id) && self.outstanding.is_empty() {
            // Everyone we know of has spoken; a newcomer as fast as they were has too.
            let at = now + Duration::from_millis(1);
            if at < self.stop_at {
                (self.stop_at, self.ended) = (at, WaitEnded::AllKnownAnswered);
            }
        }
    }
}

fn nonce() -> io::Result<[u8; 8]> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(nonce)
}

/// Sends the query on every chosen interface and to every static peer; returns how many went out,
/// where answers may come from, and why interfaces were skipped.
fn send_queries(
    config: &Discovery,
    asker: &Asker,
    datagrams: &[Vec<u8>],
    only: Option<Family>,
) -> (usize, Links, Vec<String>) {
    let Chosen {
        mut interfaces,
        skipped,
    } = match config.multicast {
        true => networks::choose(&config.interfaces, &config.networks),
        false => Chosen::default(),
    };
    // One family only (a QUIET query where it reached everyone), if the interface has it.
    for iface in &mut interfaces {
        match only {
            Some(Family::V4) if !iface.ipv4.is_empty() => iface.has_ipv6 = false,
            Some(Family::V6) if iface.has_ipv6 => iface.ipv4.clear(),
            _ => {}
        }
    }
    let peers: Vec<SocketAddr> = (config.static_peers.iter())
        .flat_map(|peer| resolve_peer(peer, config.port))
        .collect();
    let target = Target {
        port: config.port,
        group_v4: config.group_v4,
        group_v6: config.group_v6,
        interfaces: &interfaces,
        peers: &peers,
    };
    let (sent, links) = asker.send(&target, datagrams);
    (sent, links, skipped)
}

/// `HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT` to socket addresses.
pub fn resolve_peer(peer: &str, default_port: u16) -> Vec<SocketAddr> {
    if let Ok(ip) = peer.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, default_port)];
    }
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return vec![addr];
    }
    let with_port = if peer.contains(':') {
        peer.to_owned()
    } else {
        format!("{peer}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// The first answer of each daemon id: what to show and count, one line per daemon.
pub fn per_daemon(answers: &[PeerAnswer]) -> Vec<&PeerAnswer> {
    let mut seen = HashSet::new();
    answers
        .iter()
        .filter(|a| seen.insert(a.daemon_id))
        .collect()
}

/// The listing `pacserve-fetch --who-has` prints: one line per daemon that answered.
pub fn render_answers(answers: &[PeerAnswer], name: &str, waited: Duration) -> String {
    use std::fmt::Write;
    let answers = per_daemon(answers);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<42} {:>9}  {:<6} {:>12}  DAEMON ID",
        "PEER", "RTT", "ANSWER", "SIZE"
    );
    for a in &answers {
        let (answer, size) = match a.holding {
            Holding::Have { size, .. } => ("HAVE", size.to_string()),
            Holding::Growing { size, landed, .. } => ("GROWING", format!("{landed}/{size}")),
            Holding::Claiming => ("CLAIM", "-".to_owned()),
            Holding::Miss => ("MISS", "-".to_owned()),
        };
        let peer = peer_label(a);
        let _ = writeln!(
            out,
            "{peer:<42} {:>6.2} ms  {answer:<6} {size:>12}  {}",
            a.rtt.as_secs_f64() * 1e3,
            protocol::id_hex(&a.daemon_id)
        );
    }
    let haves = answers.iter().filter(|a| a.http_addr().is_some()).count();
    let daemons = daemons(answers.len());
    let _ = writeln!(
        out,
        "{daemons} answered within {} ms; {haves} {} {name}",
        waited.as_millis(),
        if haves == 1 { "has" } else { "have" }
    );
    out
}

/// A peer as the listings show it: its address, and whether it is this host.
fn peer_label(a: &PeerAnswer) -> String {
    match a.is_self {
        true => format!("{} (this host)", a.from),
        false => a.from.to_string(),
    }
}

/// "1 daemon", "3 daemons".
fn daemons(n: usize) -> String {
    match n {
        1 => "1 daemon".to_owned(),
        n => format!("{n} daemons"),
    }
}

/// The listing `pacserve-fetch --list-peers` prints: one line per daemon that answered, and how
/// many did. The query behind it names a file no daemon holds, so every answer is a MISS: the
/// name and the answer columns would say nothing about the peers and are left out.
pub fn render_peers(answers: &[PeerAnswer], waited: Duration) -> String {
    use std::fmt::Write;
    let answers = per_daemon(answers);
    let mut out = String::new();
    let _ = writeln!(out, "{:<42} {:>9}  DAEMON ID", "PEER", "RTT");
    for a in &answers {
        let peer = peer_label(a);
        let _ = writeln!(
            out,
            "{peer:<42} {:>6.2} ms  {}",
            a.rtt.as_secs_f64() * 1e3,
            protocol::id_hex(&a.daemon_id)
        );
    }
    let daemons = daemons(answers.len());
    let _ = writeln!(out, "{daemons} answered within {} ms", waited.as_millis());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expecting(ids: &[u8], quiet: Option<Duration>) -> Expectation {
        Expectation {
            daemons: ids.iter().map(|&i| [i; 8]).collect(),
            quiet: quiet.map(|wait| Quiet {
                wait,
                v1: false,
                only: None,
            }),
            ..Expectation::default()
        }
    }

    #[test]
    fn a_loud_query_ends_when_every_known_daemon_answered() {
        let t0 = Instant::now();
        let mut e = Ending::new(t0, t0 + ms(100), &expecting(&[1, 2], None));
        assert_eq!((e.stop_at, e.ended), (t0 + ms(100), WaitEnded::Waited));
        e.answered(t0 + ms(1), &[1; 8]);
        e.answered(t0 + ms(1), &[9; 8]);
        assert_eq!(e.ended, WaitEnded::Waited, "a newcomer is no known daemon");
        e.answered(t0 + ms(2), &[2; 8]);
        assert_eq!(
            (e.stop_at, e.ended),
            (t0 + ms(3), WaitEnded::AllKnownAnswered)
        );
    }

    #[test]
    fn a_quiet_query_ends_after_the_holders_wait_unless_a_holder_answers() {
        let t0 = Instant::now();
        let known: Vec<u8> = (1..=40).collect();
        let quiet = expecting(&known, Some(ms(3)));
        // Nobody answers: the holders' wait, not the whole one.
        let e = Ending::new(t0, t0 + ms(100), &quiet);
        assert_eq!((e.stop_at, e.ended), (t0 + ms(3), WaitEnded::NoHolder));
        // Known daemons that do answer (holders, or an old daemon's v1 MISS) end nothing early.
        let mut e = Ending::new(t0, t0 + ms(100), &quiet);
        for id in &known {
            e.answered(t0 + ms(1), &[*id; 8]);
        }
        assert_eq!((e.stop_at, e.ended), (t0 + ms(3), WaitEnded::NoHolder));
        // A holder after 2 ms: the others get as long again, past the holders' wait…
        e.first_have(t0 + ms(2), ms(2));
        assert_eq!((e.stop_at, e.ended), (t0 + ms(5), WaitEnded::FirstHave));
        // …but never past the whole wait.
        let mut e = Ending::new(t0, t0 + ms(4), &quiet);
        e.first_have(t0 + ms(2), ms(2));
        assert_eq!((e.stop_at, e.ended), (t0 + ms(4), WaitEnded::FirstHave));
        // A holders' wait as long as the whole wait is the whole wait.
        let e = Ending::new(t0, t0 + ms(3), &quiet);
        assert_eq!((e.stop_at, e.ended), (t0 + ms(3), WaitEnded::Waited));
    }

    #[test]
    fn verbose_output_says_a_query_was_quiet_and_why_it_ended() {
        let loud = expecting(&[1, 2], None);
        assert_eq!(
            why_ended(WaitEnded::AllKnownAnswered, &loud, ms(100)),
            "stopped early: every daemon known from recent runs answered (waiting up to 100 ms)"
        );
        let quiet = expecting(&(1..=40).collect::<Vec<u8>>(), Some(ms(3)));
        let none = why_ended(WaitEnded::NoHolder, &quiet, ms(100));
        assert_eq!(
            none,
            "asked QUIET (40 daemons known from recent runs: only holders answer); no holder \
             answered within 3.0 ms, twice the 90th percentile of the round trips when all were \
             last asked, or 2 ms at least"
        );
        let mut over_v4 = quiet.clone();
        over_v4.quiet = over_v4.quiet.map(|q| Quiet {
            only: Some(Family::V4),
            ..q
        });
        assert!(
            why_ended(WaitEnded::NoHolder, &over_v4, ms(100))
                .starts_with("asked QUIET over IPv4 alone (40 daemons"),
        );
        let found = why_ended(WaitEnded::FirstHave, &quiet, ms(100));
        assert!(
            found.starts_with("asked QUIET (40 daemons")
                && found.contains("stopped early: a peer has it"),
            "{found}"
        );
    }
}
