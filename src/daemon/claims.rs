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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::allow::Allowlist;
use crate::protocol::asker::{Asker, Target};
use crate::protocol::budget;
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
/// A source that failed to deliver a file is never followed again for that file within this
/// long; and once [`FILE_FAILURES`] sources failed for one file, nobody is followed for it.
const FILE_MEMORY: Duration = Duration::from_secs(600);
const FILE_FAILURES: usize = 2;

/// What to do about a file after settling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fetch it from the mirror.
    Lead,
    /// Follow this daemon's copy (`http` serves `/pkg/<name>`).
    Follow { http: SocketAddr },
}

/// Where claims are asked, and who may answer them.
pub struct Claims {
    pub daemon_id: [u8; 8],
    pub port: u16,
    pub group_v4: Ipv4Addr,
    pub group_v6: Ipv6Addr,
    pub interfaces: Vec<String>,
    /// Answers from outside it are not believed, as the responder answers nobody outside it.
    pub allow: Arc<Allowlist>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// CLAIM queries of other daemons: file name → (claimant, when).
    heard: HashMap<String, Vec<([u8; 8], Instant)>>,
    last_other: Option<Instant>,
    /// Daemons that answered the last claim: once all have answered again, stop waiting.
    known: HashSet<[u8; 8]>,
    /// Sources whose copy failed us: avoided for every file for a while (consecutive failures
    /// and until when), and never again for the file they failed.
    failed_sources: HashMap<IpAddr, (u32, Instant)>,
    failed_files: HashMap<String, (Vec<IpAddr>, Instant)>,
}

impl Claims {
    pub fn new(
        daemon_id: [u8; 8],
        port: u16,
        (group_v4, group_v6): (Ipv4Addr, Ipv6Addr),
        interfaces: Vec<String>,
        allow: Arc<Allowlist>,
    ) -> Self {
        Claims {
            daemon_id,
            port,
            group_v4,
            group_v6,
            interfaces,
            allow,
            state: Mutex::default(),
        }
    }

    /// The copy of `name` followed from `source` failed (stalled, broke off, too slow, or not
    /// the file): `source` is not followed again for `name`, and for no file for a while.
    pub fn failed(&self, name: &str, source: IpAddr) {
        let mut state = self.lock();
        let now = Instant::now();
        state
            .failed_files
            .retain(|_, (_, at)| at.elapsed() < FILE_MEMORY);
        state.failed_sources.retain(|_, (_, until)| *until > now);
        if state.failed_files.len() < MAX_RECORDED {
            let (sources, _) = state
                .failed_files
                .entry(name.to_owned())
                .or_insert_with(|| (Vec::new(), now));
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        if state.failed_sources.len() < MAX_RECORDED || state.failed_sources.contains_key(&source) {
            let failures = state.failed_sources.get(&source).map_or(0, |(n, _)| *n) + 1;
            let until = now + budget::backoff(failures);
            state.failed_sources.insert(source, (failures, until));
        }
    }

    /// A copy followed from `source` was verified: its failures are forgiven.
    pub fn succeeded(&self, source: IpAddr) {
        self.lock().failed_sources.remove(&source);
    }

    /// Whether an answer from `source` about `name` may be followed.
    fn trusted_for(&self, name: &str, source: IpAddr) -> bool {
        let state = self.lock();
        let backed_off = state
            .failed_sources
            .get(&source)
            .is_some_and(|(_, until)| *until > Instant::now());
        let failed_here = state
            .failed_files
            .get(name)
            .is_some_and(|(sources, at)| at.elapsed() < FILE_MEMORY && sources.contains(&source));
        !backed_off && !failed_here
    }

    /// Whether enough sources failed for `name` that the mirror is the better bet.
    fn given_up_on(&self, name: &str) -> bool {
        self.lock()
            .failed_files
            .get(name)
            .is_some_and(|(sources, at)| {
                at.elapsed() < FILE_MEMORY && sources.len() >= FILE_FAILURES
            })
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
        if !others || self.given_up_on(name) {
            return Verdict::Lead;
        }
        let Ok(socket) = Asker::open() else {
            return Verdict::Lead;
        };
        // Looked up once: the defer loop below asks again every few tens of milliseconds.
        let interfaces = netif::discovery_interfaces(&self.interfaces);
        let locals = netif::local_addresses();
        let here = Here {
            interfaces: &interfaces,
            locals: &locals,
        };
        let heard = self.ask(&socket, &here, name);
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
            if let Some(http) = self.ask(&socket, &here, name).best {
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

    /// One round: send the CLAIM query on `here`'s interfaces, collect answers for up to
    /// [`WINDOW`]. Answers count only from the link asked, from inside the allowlist, from
    /// another host, and from a source that has not failed us for this file.
    fn ask(&self, asker: &Asker, here: &Here, name: &str) -> Heard {
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let query = Query {
            version: 2,
            nonce,
            file_name: name.to_owned(),
            arch: String::new(),
            claim: Some(self.daemon_id),
            quiet: false,
        };
        let Ok(query) = query.encode() else {
            return Heard::default();
        };
        let target = Target {
            port: self.port,
            group_v4: self.group_v4,
            group_v6: self.group_v6,
            interfaces: here.interfaces,
            peers: &[],
        };
        let (_, links) = asker.send(&target, &[query]);
        let outstanding = self.lock().known.clone();
        let mut answered = HashSet::new();
        let mut heard = Heard::default();
        let mut best_landed = None;
        let deadline = Instant::now() + WINDOW;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero()
                || (!outstanding.is_empty() && outstanding.iter().all(|id| answered.contains(id)))
            {
                break;
            }
            let Ok(datagrams) = asker.receive(left.max(Duration::from_millis(1))) else {
                break;
            };
            for (from, datagram) in datagrams {
                let Ok(answer) = Answer::decode(&datagram) else {
                    continue;
                };
                if answer.nonce != nonce
                    || answer.daemon_id == self.daemon_id
                    || !links.accepts(from)
                    || !self.allow.permits(from.ip())
                    || is_local(from.ip(), here.locals)
                {
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
                if http_port >= budget::MIN_HTTP_PORT
                    && self.trusted_for(name, from.ip())
                    && best_landed.is_none_or(|b| rank > b)
                {
                    best_landed = Some(rank);
                    // The source as it answered: an IPv6 link-local one keeps its scope.
                    let mut http = from;
                    http.set_port(http_port);
                    heard.best = Some(http);
                }
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

/// This host as one settle sees it: where to ask, and its own addresses.
struct Here<'a> {
    interfaces: &'a [Interface],
    locals: &'a [IpAddr],
}

/// Whether `ip` is one of this host's addresses (its own queries do not mean a shared LAN).
pub fn is_local(ip: IpAddr, locals: &[IpAddr]) -> bool {
    ip.is_loopback() || locals.contains(&ip.to_canonical())
}
