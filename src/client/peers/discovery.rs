//! The client side of the peer protocol: ask the LAN who has a file, collect the answers.
//!
//! One query goes out per interface and address family (plus one per static peer); answers are
//! collected until the first of: the wait runs out; a peer said HAVE and the others had a
//! moment (twice the first HAVE's round trip) to offer themselves as fallbacks; or every daemon
//! the caller expects (those that answered last time, see [`crate::client::peers::memory`]) has answered.
//! With no interface and no static peer there is nobody to ask, and nothing is waited for.
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
    /// Time from sending the queries to this answer.
    pub rtt: Duration,
    /// The answer came from one of this machine's own addresses.
    pub is_self: bool,
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
        quiet: false,
    };
    // Our version and, for daemons not yet upgraded, version 1 with the same nonce.
    let v1 = Query {
        version: 1,
        ..query.clone()
    };
    let datagrams = [query.encode(), v1.encode()]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{file_name:?} cannot be asked for (a name has at most 255 bytes)"),
            )
        })?;
    let asker = Asker::open()?;
    let started = Instant::now();
    let (sent, links, skipped) = send_queries(config, &asker, &datagrams);
    let mut own_skipped = 0;
    if sent == 0 {
        return Ok(Asked {
            skipped,
            ..Asked::default()
        });
    }
    let locals: HashSet<IpAddr> = netif::local_addresses().into_iter().collect();
    let deadline = started + expect.wait.unwrap_or(config.wait).min(config.wait);
    let mut outstanding = expect.daemons.clone();
    let mut answers: Vec<PeerAnswer> = Vec::new();
    // (daemon id, source) → index in `answers` and the version of the answer kept there.
    let mut seen: HashMap<([u8; 8], IpAddr), (usize, u8)> = HashMap::new();
    let mut stop_at = deadline;
    let mut ended = WaitEnded::Waited;
    while let Some(left) = stop_at
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
                // A newer daemon answers both our queries: its newer answer says more.
                if answer.version > version {
                    answers[at].holding = answer.holding;
                    answers[at].extra = answer.extra;
                    seen.insert((answer.daemon_id, from.ip()), (at, answer.version));
                }
                continue;
            }
            seen.insert(
                (answer.daemon_id, from.ip()),
                (answers.len(), answer.version),
            );
            let is_self = locals.contains(&from.ip());
            if is_self && !config.include_self {
                own_skipped += 1;
                continue;
            }
            let rtt = started.elapsed();
            let counts = !expect.avoided.contains(&(answer.daemon_id, from.ip()));
            if counts
                && answer.holding.fetchable().is_some()
                && !answers.iter().any(|a| {
                    a.http_addr().is_some() && !expect.avoided.contains(&(a.daemon_id, a.from.ip()))
                })
            {
                // First HAVE: give slower peers as long again to offer themselves as fallbacks.
                let at = Instant::now() + rtt + Duration::from_millis(1);
                if at < stop_at {
                    (stop_at, ended) = (at, WaitEnded::FirstHave);
                }
            }
            answers.push(PeerAnswer {
                from,
                daemon_id: answer.daemon_id,
                holding: answer.holding,
                extra: answer.extra,
                rtt,
                is_self,
            });
            if counts && outstanding.remove(&answer.daemon_id) && outstanding.is_empty() {
                // Everyone we know of has spoken; a newcomer as fast as they were has too.
                let at = Instant::now() + Duration::from_millis(1);
                if at < stop_at {
                    (stop_at, ended) = (at, WaitEnded::AllKnownAnswered);
                }
            }
        }
    }
    Ok(Asked {
        answers,
        sent,
        own_skipped,
        ended,
        skipped,
    })
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
) -> (usize, Links, Vec<String>) {
    let Chosen {
        interfaces,
        skipped,
    } = match config.multicast {
        true => networks::choose(&config.interfaces, &config.networks),
        false => Chosen::default(),
    };
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
