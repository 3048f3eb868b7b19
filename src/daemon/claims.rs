//! Claims: when several hosts want the same file at the same moment and nobody has it, one of
//! them goes to the mirror and the others follow its growing file.
//!
//! Before its first mirror byte, the agent registers the file as CLAIMING
//! ([`crate::daemon::growing`]) and [`Claims::settle`]s: it multicasts a v2 query with the
//! CLAIM flag and its daemon id, and listens for at most [`WINDOW`] (less once every daemon it
//! knows has answered). It follows the best answer that HAVE or GROWING names; it defers to a
//! lower daemon id that is CLAIMING too (answered, or heard as a CLAIM query by our responder)
//! and then waits a bounded time for that daemon to start; otherwise it leads. The rule is the
//! same on every host, so two hosts asking within the window agree on one leader.
//!
//! A lone host does not pay: unless the responder has heard another host or daemon lately
//! ([`Claims::heard_other`]), settling returns at once without sending anything.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::protocol::netif::{self, Interface};
use crate::protocol::{Answer, Holding, Query};

/// The longest a claim waits for the LAN's answers.
pub const WINDOW: Duration = Duration::from_millis(30);
/// How long a deferring daemon waits for the lower claimant to start its download: paid only
/// when that daemon fails to start, and long enough for a busy host (16 hosts upgrading at
/// once on two cores lost claims at 0.6 s).
pub const DEFER_LIMIT: Duration = Duration::from_secs(2);
/// Another host heard within this long means the LAN is shared: claims are worth their wait.
const OTHERS_FRESH: Duration = Duration::from_secs(600);
/// A CLAIM query heard this recently still counts.
const CLAIM_FRESH: Duration = Duration::from_secs(2);
const MAX_RECORDED: usize = 1024;

/// What to do about a file after settling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fetch it from the mirror.
    Lead,
    /// Follow this daemon's copy (`http` serves `/pkg/<name>`).
    Follow { http: SocketAddr },
}

pub struct Claims {
    pub daemon_id: [u8; 8],
    pub port: u16,
    pub group_v4: Ipv4Addr,
    pub interfaces: Vec<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// CLAIM queries of other daemons: file name → (claimant, when).
    heard: HashMap<String, Vec<([u8; 8], Instant)>>,
    last_other: Option<Instant>,
    /// Daemons that answered the last claim: once all have answered again, stop waiting.
    known: HashSet<[u8; 8]>,
}

impl Claims {
    pub fn new(daemon_id: [u8; 8], port: u16, group_v4: Ipv4Addr, interfaces: Vec<String>) -> Self {
        Claims {
            daemon_id,
            port,
            group_v4,
            interfaces,
            state: Mutex::default(),
        }
    }

    /// The responder heard a query from another host.
    pub fn heard_other(&self) {
        self.lock().last_other = Some(Instant::now());
    }

    /// The responder heard another daemon's CLAIM for `name`.
    pub fn heard_claim(&self, name: &str, claimant: [u8; 8]) {
        if claimant == self.daemon_id {
            return;
        }
        let mut state = self.lock();
        state.last_other = Some(Instant::now());
        state
            .heard
            .retain(|_, v| v.iter().any(|(_, at)| at.elapsed() < CLAIM_FRESH));
        if state.heard.len() >= MAX_RECORDED {
            return;
        }
        let claims = state.heard.entry(name.to_owned()).or_default();
        claims.retain(|(_, at)| at.elapsed() < CLAIM_FRESH);
        if claims.len() < 16 {
            claims.push((claimant, Instant::now()));
        }
    }

    /// Decides who fetches `name` from the mirror; see the module doc.
    pub fn settle(&self, name: &str) -> Verdict {
        let others = self
            .lock()
            .last_other
            .is_some_and(|at| at.elapsed() < OTHERS_FRESH);
        if !others {
            return Verdict::Lead;
        }
        let Ok(socket) = open_socket() else {
            return Verdict::Lead;
        };
        // Looked up once: the defer loop below asks again every few tens of milliseconds.
        let interfaces = netif::discovery_interfaces(&self.interfaces);
        let heard = self.ask(&socket, &interfaces, name);
        let lower_claim = heard.lower_claim || self.heard_lower(name);
        if let Some(http) = heard.best {
            return Verdict::Follow { http };
        }
        if !lower_claim {
            return Verdict::Lead;
        }
        // A lower id claims it: give it a bounded moment to start, then follow it.
        let until = Instant::now() + DEFER_LIMIT;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            if let Some(http) = self.ask(&socket, &interfaces, name).best {
                return Verdict::Follow { http };
            }
        }
        Verdict::Lead
    }

    fn heard_lower(&self, name: &str) -> bool {
        self.lock().heard.get(name).is_some_and(|claims| {
            claims
                .iter()
                .any(|(id, at)| *id < self.daemon_id && at.elapsed() < CLAIM_FRESH)
        })
    }

    /// One round: send the CLAIM query on `interfaces`, collect answers for up to [`WINDOW`].
    fn ask(&self, socket: &UdpSocket, interfaces: &[Interface], name: &str) -> Heard {
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let query = Query {
            version: 2,
            nonce,
            file_name: name.to_owned(),
            arch: String::new(),
            claim: Some(self.daemon_id),
        }
        .encode();
        for iface in interfaces {
            if let Some(addr) = iface.ipv4.first()
                && SockRef::from(socket).set_multicast_if_v4(addr).is_ok()
            {
                let _ = socket.send_to(&query, (self.group_v4, self.port));
            }
        }
        let outstanding = self.lock().known.clone();
        let mut answered = HashSet::new();
        let mut heard = Heard::default();
        let mut best_landed = None;
        let deadline = Instant::now() + WINDOW;
        let mut buf = [0u8; 128];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero()
                || (!outstanding.is_empty() && outstanding.iter().all(|id| answered.contains(id)))
            {
                break;
            }
            let _ = socket.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(answer) = Answer::decode(&buf[..len]) else {
                continue;
            };
            if answer.nonce != nonce || answer.daemon_id == self.daemon_id {
                continue;
            }
            answered.insert(answer.daemon_id);
            let (rank, http_port) = match answer.holding {
                Holding::Have { http_port, .. } => (u64::MAX, http_port),
                Holding::Growing {
                    http_port, landed, ..
                } => (landed, http_port),
                Holding::Claiming => {
                    heard.lower_claim |= answer.daemon_id < self.daemon_id;
                    continue;
                }
                Holding::Miss => continue,
            };
            if http_port >= 1024 && best_landed.is_none_or(|b| rank > b) {
                best_landed = Some(rank);
                heard.best = Some(SocketAddr::new(from.ip(), http_port));
            }
        }
        let mut state = self.lock();
        if !answered.is_empty() {
            state.last_other = Some(Instant::now());
            state.known = answered;
        }
        heard
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct Heard {
    best: Option<SocketAddr>,
    lower_claim: bool,
}

fn open_socket() -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_multicast_loop_v4(true)?;
    Ok(socket)
}

/// Whether `ip` is one of this host's addresses (its own queries do not mean a shared LAN).
pub fn is_local(ip: IpAddr, locals: &[IpAddr]) -> bool {
    ip.is_loopback() || locals.contains(&ip.to_canonical())
}
