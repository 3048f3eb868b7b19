//! The client side of the peer protocol: ask the LAN who has a file, collect the answers.
//!
//! One query goes out per interface and address family (plus one per static peer); answers are
//! collected until the first of: the wait runs out; a peer said HAVE and the others had a
//! moment (twice the first HAVE's round trip) to offer themselves as fallbacks; or every daemon
//! the caller expects (those that answered last time, see [`crate::client::lanmemory`]) has answered.
//! With no interface and no static peer there is nobody to ask, and nothing is waited for.
//!
//! Answers are believed only from the link the query went out on or from a static peer (see
//! [`crate::client::onlink`]), and kept one per daemon id *and* source address: another host
//! answering first with a real daemon's id must not get the real answer dropped as a duplicate.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::client::onlink::Links;
use crate::protocol::netif;
use crate::protocol::{self, Answer, Holding, Query};

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
}

/// [`ask`], also saying how many queries went out and how many own answers were dropped.
pub fn ask_detailed(
    config: &Discovery,
    file_name: &str,
    arch: &str,
    expect: &Expectation,
) -> io::Result<Asked> {
    let query = Query {
        version: protocol::VERSION,
        nonce: nonce()?,
        file_name: file_name.to_owned(),
        arch: arch.to_owned(),
        claim: None,
    };
    // Our version and, for daemons not yet upgraded, version 1 with the same nonce.
    let datagrams = [
        query.encode(),
        Query {
            version: 1,
            ..query.clone()
        }
        .encode(),
    ];
    let sockets = Sockets::open()?;
    let started = Instant::now();
    let (sent, links) = send_queries(config, &sockets, &datagrams);
    let mut own_skipped = 0;
    if sent == 0 {
        return Ok(Asked::default());
    }
    let locals: HashSet<IpAddr> = netif::local_addresses().into_iter().collect();
    let deadline = started + expect.wait.unwrap_or(config.wait).min(config.wait);
    let mut outstanding = expect.daemons.clone();
    let mut answers: Vec<PeerAnswer> = Vec::new();
    // (daemon id, source) → index in `answers` and the version of the answer kept there.
    let mut seen: HashMap<([u8; 8], IpAddr), (usize, u8)> = HashMap::new();
    let mut stop_at = deadline;
    while let Some(left) = stop_at
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        for (from, datagram) in sockets.receive(left)? {
            let Ok(answer) = Answer::decode(&datagram) else {
                continue;
            };
            if answer.nonce != query.nonce || !links.accepts(from) {
                continue;
            }
            if let Some(&(at, version)) = seen.get(&(answer.daemon_id, from.ip())) {
                // A v2 daemon answers both our queries: its v2 answer says more.
                if answer.version > version {
                    answers[at].holding = answer.holding;
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
                stop_at = stop_at.min(Instant::now() + rtt + Duration::from_millis(1));
            }
            answers.push(PeerAnswer {
                from,
                daemon_id: answer.daemon_id,
                holding: answer.holding,
                rtt,
                is_self,
            });
            if counts && outstanding.remove(&answer.daemon_id) && outstanding.is_empty() {
                // Everyone we know of has spoken; a newcomer as fast as they were has too.
                stop_at = stop_at.min(Instant::now() + Duration::from_millis(1));
            }
        }
    }
    Ok(Asked {
        answers,
        sent,
        own_skipped,
    })
}

fn nonce() -> io::Result<[u8; 8]> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(nonce)
}

/// Sends the query on every chosen interface and to every static peer; returns how many went out
/// and where answers may come from.
fn send_queries(config: &Discovery, sockets: &Sockets, datagrams: &[Vec<u8>]) -> (usize, Links) {
    let mut sent = 0;
    let interfaces = match config.multicast {
        true => netif::discovery_interfaces(&config.interfaces),
        false => Vec::new(),
    };
    let mut peers = Vec::new();
    for iface in &interfaces {
        if let (Some(v4), Some(addr)) = (&sockets.v4, iface.ipv4.first()) {
            let ok = SockRef::from(v4).set_multicast_if_v4(addr).is_ok()
                && datagrams
                    .iter()
                    .all(|d| v4.send_to(d, (config.group_v4, config.port)).is_ok());
            sent += usize::from(ok);
        }
        if let (Some(v6), true) = (&sockets.v6, iface.has_ipv6) {
            let group = SocketAddrV6::new(config.group_v6, config.port, 0, iface.index);
            let ok = SockRef::from(v6).set_multicast_if_v6(iface.index).is_ok()
                && datagrams.iter().all(|d| v6.send_to(d, group).is_ok());
            sent += usize::from(ok);
        }
    }
    for peer in &config.static_peers {
        for addr in resolve_peer(peer, config.port) {
            peers.push(addr);
            let socket = match addr {
                SocketAddr::V4(_) => &sockets.v4,
                SocketAddr::V6(_) => &sockets.v6,
            };
            if let Some(socket) = socket {
                sent += usize::from(datagrams.iter().all(|d| socket.send_to(d, addr).is_ok()));
            }
        }
    }
    (sent, Links::new(&interfaces, config.port, &peers))
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

/// Room for the answers of a large LAN arriving at once: each datagram costs about 1 KiB of
/// kernel buffer, and 200 daemons answer within a millisecond or two.
const ANSWER_BUFFER: usize = 1 << 20;

/// The client's two sockets; either may be missing (no IPv6 on this host, say).
struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    fn open() -> io::Result<Sockets> {
        let v4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.set_multicast_ttl_v4(1)?;
                s.set_multicast_loop_v4(true)?;
                let _ = s.set_recv_buffer_size(ANSWER_BUFFER);
                s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from(s))
            })
            .ok();
        let v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.set_only_v6(true)?;
                s.set_multicast_hops_v6(1)?;
                s.set_multicast_loop_v6(true)?;
                let _ = s.set_recv_buffer_size(ANSWER_BUFFER);
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from(s))
            })
            .ok();
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::other("cannot open a UDP socket for discovery"));
        }
        Ok(Sockets { v4, v6 })
    }

    /// Waits up to `timeout` for datagrams on either socket and returns those that arrived.
    fn receive(&self, timeout: Duration) -> io::Result<Vec<(SocketAddr, Vec<u8>)>> {
        let sockets: Vec<&UdpSocket> = [&self.v4, &self.v6].into_iter().flatten().collect();
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        let millis = timeout.as_millis().clamp(1, u16::MAX as u128) as u16;
        match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for socket in sockets {
            // Non-blocking: drain what is queued, bounded so a flood cannot keep us here.
            for _ in 0..64 {
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) => got.push((from, buf[..len].to_vec())),
                    Err(_) => break,
                }
            }
        }
        Ok(got)
    }
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
        let mut peer = a.from.to_string();
        if a.is_self {
            peer.push_str(" (this host)");
        }
        let _ = writeln!(
            out,
            "{peer:<42} {:>6.2} ms  {answer:<6} {size:>12}  {}",
            a.rtt.as_secs_f64() * 1e3,
            protocol::id_hex(&a.daemon_id)
        );
    }
    let haves = answers.iter().filter(|a| a.http_addr().is_some()).count();
    let daemons = match answers.len() {
        1 => "1 daemon".to_owned(),
        n => format!("{n} daemons"),
    };
    let _ = writeln!(
        out,
        "{daemons} answered within {} ms; {haves} {} {name}",
        waited.as_millis(),
        if haves == 1 { "has" } else { "have" }
    );
    out
}
