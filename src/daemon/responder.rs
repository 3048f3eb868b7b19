//! The daemon's UDP side: answer "who has this file?" for the local cache.
//!
//! One thread per address family, each owning one socket bound to the discovery port. Every few
//! seconds it joins the group on interfaces that have appeared since (a laptop joining Wi-Fi);
//! the kernel drops memberships of interfaces that vanish. Each query gets at most one answer,
//! HAVE or MISS, sent to the query's source: a copy of a query already handled (same nonce and
//! source, no newer version; see [`Answered`]) is counted and dropped, and a QUIET query for a
//! file that is not here gets none. Anything the protocol module rejects is counted and dropped.
//! A stream of queries of another protocol version is logged once per sender.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::daemon::allow::Allowlist;
use crate::daemon::answered::Answered;
use crate::daemon::cache::Cache;
use crate::daemon::claims::{self, Claims};
use crate::daemon::growing::{Growing, Phase};
use crate::daemon::ratelimit::{Budget, RateLimit};
use crate::daemon::stats::Stats;
use crate::pacman::name::FileKind;
use crate::protocol::netif;
use crate::protocol::{self, Answer, Extra, Holding, Query, Reject};
use crate::{info, warn};

/// How often group memberships are refreshed for new interfaces.
const REJOIN_EVERY: Duration = Duration::from_secs(5);
/// Queries one source (address and port) may send, sustained per second and in a burst: a
/// pacserve-fetch run asks a handful of times from its own port.
const PER_SOURCE: Budget = Budget {
    per_second: 50.0,
    burst: 200.0,
};
const SOURCES_TRACKED: usize = 4096;
/// Queries answered per second by one responder thread, from all sources together: far above
/// what a LAN of pacman runs asks, far below what would load the daemon.
const GLOBAL: Budget = Budget {
    per_second: 5000.0,
    burst: 5000.0,
};

#[derive(Clone)]
pub struct Responder {
    pub port: u16,
    pub group_v4: Ipv4Addr,
    pub group_v6: Ipv6Addr,
    pub interfaces: Vec<String>,
    pub daemon_id: [u8; 8],
    pub http_port: u16,
    pub cache: Arc<Cache>,
    pub stats: Arc<Stats>,
    pub allow: Arc<Allowlist>,
    /// Files being downloaded right now (GROWING, CLAIMING).
    pub growing: Arc<Growing>,
    pub claims: Arc<Claims>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Responder {
    /// Binds both families and starts their threads. Fails only if neither can be bound.
    pub fn spawn(self) -> io::Result<()> {
        let mut started = 0;
        let mut last_error = None;
        for family in [Family::V4, Family::V6] {
            match self.bind(family) {
                Ok(socket) => {
                    let responder = self.clone();
                    std::thread::Builder::new()
                        .name(format!("responder-{family:?}"))
                        .spawn(move || responder.serve(family, socket))?;
                    started += 1;
                }
                Err(e) => {
                    warn!(
                        "no {family:?} discovery: cannot bind UDP port {}: {e}",
                        self.port
                    );
                    last_error = Some(e);
                }
            }
        }
        match (started, last_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn bind(&self, family: Family) -> io::Result<UdpSocket> {
        let (domain, addr) = match family {
            Family::V4 => (
                Domain::IPV4,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port)),
            ),
            Family::V6 => (
                Domain::IPV6,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, self.port)),
            ),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        // Several daemons on one host (tests, or one per cache) all receive the multicast.
        socket.set_reuse_address(true)?;
        match family {
            Family::V4 => socket.set_multicast_all_v4(false)?,
            Family::V6 => {
                socket.set_only_v6(true)?;
                socket.set_multicast_all_v6(false)?;
            }
        }
        socket.bind(&addr.into())?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(socket.into())
    }

    fn serve(&self, family: Family, socket: UdpSocket) {
        let mut joined = HashSet::new();
        let mut next_join = Instant::now();
        let mut warned = Warned::default();
        let mut limit = RateLimit::new(PER_SOURCE, SOURCES_TRACKED, GLOBAL);
        let mut answered = Answered::new();
        let mut buf = [0u8; 2048];
        let mut locals = Vec::new();
        loop {
            if Instant::now() >= next_join {
                self.join_new_interfaces(family, &socket, &mut joined);
                locals = netif::local_addresses();
                next_join = Instant::now() + REJOIN_EVERY;
            }
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    warn!("discovery socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if !self.allow.permits(from.ip()) {
                Stats::add(&self.stats.refused, 1);
                if warned.first_time(from.ip(), Oddity::OutsideAllowlist) {
                    warn!("ignoring queries from {}: outside the allowlist", from.ip());
                }
                continue;
            }
            if !limit.allow(from, Instant::now()) {
                Stats::add(&self.stats.rate_limited, 1);
                continue;
            }
            if !claims::is_local(from.ip(), &locals) {
                self.claims.heard_other();
            }
            self.handle(&socket, &buf[..len], from, &mut warned, &mut answered);
        }
    }

    fn handle(
        &self,
        socket: &UdpSocket,
        datagram: &[u8],
        from: SocketAddr,
        warned: &mut Warned,
        answered: &mut Answered,
    ) {
        let query = match Query::decode(datagram) {
            Ok(query) => query,
            Err(Reject::UnknownVersion(version)) => {
                Stats::add(&self.stats.other_versions, 1);
                if warned.first_time(from.ip(), Oddity::Version(version)) {
                    warn!(
                        "ignoring queries from {} speaking protocol version {version}; this daemon speaks {}",
                        from.ip(),
                        protocol::VERSION
                    );
                }
                return;
            }
            Err(_) => {
                Stats::add(&self.stats.dropped, 1);
                return;
            }
        };
        Stats::add(&self.stats.queries, 1);
        self.stats.heard(from.ip(), Some(query.version));
        // The client's older copy of a query handled already: it would only repeat the answer
        // (or, for a QUIET query, bring back the MISS it asked not to hear).
        if !answered.first(query.nonce, from, query.version) {
            Stats::add(&self.stats.repeated, 1);
            return;
        }
        if let Some(claimant) = query.claim {
            self.claims.heard_claim(
                &query.file_name,
                claimant,
                (query.version, query.link),
                from.ip(),
            );
        }
        let holding = self.holding(&query.file_name);
        if query.quiet && holding == Holding::Miss {
            Stats::add(&self.stats.quiet_unanswered, 1);
            return;
        }
        match holding {
            Holding::Have { .. } => Stats::add(&self.stats.answered_have, 1),
            _ => Stats::add(&self.stats.answered_miss, 1),
        }
        // In the query's version: a v1 answer says MISS for GROWING and CLAIMING, and only a
        // v3 answer carries the extra.
        let mut extra = match query.version {
            3.. if holding != Holding::Miss => self.extra(&query.file_name, from.ip()),
            _ => Extra::default(),
        };
        // Version 5 tells this host's link in every answer: a daemon that settles a file with
        // this one learns it from a MISS as well as from a claim.
        if query.version >= protocol::LINKED {
            extra.link = self.claims.link.mbit();
        }
        if query.version >= 3 && holding.fetchable().is_some() {
            self.claims.offered(query.nonce, from.ip());
        }
        let answer = Answer {
            version: query.version,
            nonce: query.nonce,
            daemon_id: self.daemon_id,
            holding,
            extra,
        };
        let _ = socket.send_to(&answer.encode(), from);
    }

    /// A version 3 answer's extra: whether the package's signature is here too, and how busy
    /// this daemon's upload link is: the other hosts it sends to now or offered a copy a moment
    /// ago (they may be about to read), not counting `asker` (a host is not busy with its own
    /// request, and one asking again must not see its earlier question).
    fn extra(&self, name: &str, asker: IpAddr) -> Extra {
        let sig = FileKind::of(name) == FileKind::Package
            && self.cache.find(&format!("{name}.sig")).is_some();
        let mut hosts: HashSet<IpAddr> = self.stats.receivers.hosts().into_iter().collect();
        hosts.extend(self.claims.promised());
        hosts.remove(&asker.to_canonical());
        Extra {
            sig,
            uploads: u16::try_from(hosts.len()).unwrap_or(u16::MAX),
            link: 0,
        }
    }

    /// The cache's copy, else the one arriving now, else nothing.
    fn holding(&self, name: &str) -> Holding {
        if let Some(found) = self.cache.find(name) {
            return Holding::Have {
                http_port: self.http_port,
                size: found.size,
                mtime: found.mtime,
            };
        }
        match self.growing.find(name) {
            Some(entry) => match entry.landed() {
                l if l.phase == Phase::Claiming => Holding::Claiming,
                l => Holding::Growing {
                    http_port: self.http_port,
                    size: entry.size,
                    landed: l.bytes,
                },
            },
            None => Holding::Miss,
        }
    }

    fn join_new_interfaces(
        &self,
        family: Family,
        socket: &UdpSocket,
        joined: &mut HashSet<(String, u32)>,
    ) {
        let sock = SockRef::from(socket);
        for iface in netif::discovery_interfaces(&self.interfaces) {
            let key = (iface.name.clone(), iface.index);
            if joined.contains(&key) {
                continue;
            }
            let result = match family {
                Family::V4 => match iface.ipv4.first() {
                    Some(addr) => sock.join_multicast_v4(&self.group_v4, addr),
                    None => continue,
                },
                Family::V6 if iface.has_ipv6 => sock.join_multicast_v6(&self.group_v6, iface.index),
                Family::V6 => continue,
            };
            match result {
                Ok(()) => info!("listening for queries on {} ({family:?})", iface.name),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => {
                    warn!("cannot join the {family:?} group on {}: {e}", iface.name);
                    continue;
                }
            }
            joined.insert(key);
        }
    }
}

/// Why a sender is ignored; each is logged once per sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Oddity {
    OutsideAllowlist,
    Version(u8),
}

/// The senders already warned about, so a flood costs one log line per sender and cause. Bounded,
/// so spoofed sources cannot grow it: past the bound nothing more is logged (the counters on the
/// status page still count).
#[derive(Debug, Default)]
struct Warned(HashSet<(IpAddr, Oddity)>);

impl Warned {
    const MAX: usize = 256;

    fn first_time(&mut self, sender: IpAddr, oddity: Oddity) -> bool {
        self.0.len() < Self::MAX && self.0.insert((sender, oddity))
    }
}
