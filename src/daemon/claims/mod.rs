//! Claims: when several hosts want the same file at the same moment and nobody has it, one of
//! them goes to the mirror and the others follow its growing file.
//!
//! Before its first mirror byte, the agent registers the file as CLAIMING
//! ([`crate::daemon::growing`]) and [`Claims::settle`]s: it multicasts a query with the CLAIM
//! flag and its daemon id (in versions 2 for older daemons, 4 and 5, one nonce), and listens
//! for at most [`WINDOW`] (less once every daemon it knows has answered). It follows a copy that
//! HAVE or GROWING names: of those at least half as far along as the furthest, the one whose
//! daemon sends to the fewest other hosts, so that hosts joining late spread over the copies
//! instead of all reading the first; when even the least busy sends to [`FANOUT`] other hosts
//! and others settle the file at that moment, it waits a moment for their copies
//! ([`Claims::spread`]), so hosts settling together form a tree, not a star. Otherwise it
//! defers to a better claimant (answered CLAIMING,
//! or heard as a CLAIM query by our responder) and waits a bounded time for that daemon to
//! start; otherwise it leads. Who is better: when every claimant speaks version 4, the one of
//! highest [`crate::protocol::claim_rank`] for this file, so the files of an upgrade are led by
//! different hosts, and when every one speaks version 5, a claimant on a link clearly slower
//! than the fastest of theirs ranks below the others ([`choose::defers`]); when any speaks only
//! an older version, the lowest daemon id, as before. The rule is the same on every host, so
//! hosts asking within the window agree on one leader.
//!
//! Before all that, a daemon that leads a download already makes way for another daemon to lead
//! this one when the hosts are upgrading together ([`way`]). Files settled at once on one host
//! (a transaction's first files, before the other hosts of an upgrade have claimed anything)
//! keep their claims open for [`BURST_WINDOW`], so that those hosts' claims are ranked with
//! them instead of the first host to start leading them all. And a follower leaves copies on
//! hosts whose link is clearly slower than another offering host's, or that delivered to it
//! clearly slower than another did ([`choose::least_busy`]), so that a host on a slow link is
//! not taken as a relay. A host on a clearly slower link than another daemon's
//! ([`Claims::outpaced`]) keeps a transaction's first claims open longer, and makes way while
//! leading nothing too ([`way`]): a faster host reaching the file a moment later leads it.
//!
//! A lone host does not pay: unless the responder has heard another host or daemon lately
//! ([`Claims::heard_other`]), settling returns at once without sending anything.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::allow::Allowlist;
use crate::daemon::link::Link;
use crate::protocol::asker::Asker;
use crate::protocol::{self, netif};

mod ask;
mod choose;
mod memory;
mod way;

pub use ask::is_local;
use ask::{Here, Versions};
use choose::Copy;
pub use way::Turn;

/// The longest a claim waits for the LAN's answers.
pub const WINDOW: Duration = Duration::from_millis(30);
/// ... unless hardly any daemon has answered: then up to this long for half of those known, or
/// the first (see [`Claims::ask`]).
pub const LATE_WINDOW: Duration = Duration::from_millis(400);
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
/// An offer counts as an upload about to begin for this long: a follower connects within
/// milliseconds of its answer.
const OFFER_FRESH: Duration = Duration::from_secs(1);
const MAX_OFFERS: usize = 256;
/// How long the claims of files settled at once on one host stay open ([`Claims::settle`]).
pub const BURST_WINDOW: Duration = Duration::from_millis(100);
/// A file settled after this long without settling any is a transaction's first, as are files
/// settled at once.
const QUIET_SPELL: Duration = Duration::from_secs(10);
/// A followed copy smaller than this says little about the source's link.
const RATE_MIN_BYTES: u64 = 1 << 20;
/// How often a deferring daemon asks whether the better claimant has started.
const DEFER_POLL: Duration = Duration::from_millis(25);
/// A copy whose daemon sends to this many other hosts already is left to them while another
/// copy is about to start: an upload link shared by everyone makes a star (on a 50 Mbit/s
/// Wi-Fi link, eight hosts reading one laptop took four times as long as one host alone).
const FANOUT: u16 = 2;
/// How long a follower waits for such a copy: hosts settling in the same instant start theirs
/// within a few polls of each other.
const FANOUT_WAIT: Duration = Duration::from_millis(200);

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
    /// This host's link speed, told in version 5 claims and answers.
    pub link: Link,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// CLAIM queries of other daemons: file name → (claimant, newest version heard, when).
    heard: HashMap<String, Vec<Heard1>>,
    last_other: Option<Instant>,
    /// Daemons that answered the last claim: once all have answered again, stop waiting.
    known: HashSet<[u8; 8]>,
    /// Sources whose copy failed us: avoided for every file for a while (consecutive failures
    /// and until when), and never again for the file they failed.
    failed_sources: HashMap<IpAddr, (u32, Instant)>,
    failed_files: HashMap<String, (Vec<IpAddr>, Instant)>,
    /// The newest protocol version each daemon was heard speaking (claims or answers), and
    /// when: one datagram lost or rate-limited must not make a version 4 daemon look older,
    /// which would make hosts settle a file by different rules.
    versions: HashMap<[u8; 8], (u8, Instant)>,
    /// The link speed each version 5 daemon said it has, and when ([`Claims::outpaced`]).
    links: HashMap<[u8; 8], Told>,
    /// Claimants deferred to that never started: consecutive times and until when they are
    /// not deferred to (a host that claims every file and fetches none would otherwise cost
    /// every other host [`DEFER_LIMIT`] per file).
    /// Kept by source address, not id: a host can answer under a new id for every file.
    no_shows: HashMap<IpAddr, (u32, Instant)>,
    /// The fastest each source delivered a followed copy lately (bytes per second), and when:
    /// a host on a slow link is not taken as a relay while a faster one offers the file.
    rates: HashMap<IpAddr, (u64, Instant)>,
    /// When this daemon last offered a copy (HAVE or GROWING) to a version 3+ query, the
    /// query's nonce and the asker: it is probably about to read the copy, before it shows
    /// among the uploads ([`Claims::promised`]).
    offers: std::collections::VecDeque<(Instant, [u8; 8], IpAddr)>,
    /// Files this daemon settled lately, and when: another daemon claiming one of them means
    /// the hosts are fetching the same files ([`State::together`]).
    settled: HashMap<String, Instant>,
    /// When another daemon last fetched a file this one fetched, at about the same time (a
    /// claim for the same file heard, or answered): the hosts are upgrading together.
    together: Option<Instant>,
    /// Settles under way on this daemon ([`Turn`]).
    settling: usize,
    /// When this daemon last settled a file.
    last_settle: Option<Instant>,
    /// Waits to make way in a row in which nobody claimed the file, and when the last ended
    /// ([`way`]).
    fruitless: (u32, Option<Instant>),
}

impl State {
    /// Daemon `id` was heard speaking `version`: the newest version it spoke lately is kept.
    fn speaks(&mut self, id: [u8; 8], version: u8) {
        let fresh = |at: &Instant| at.elapsed() < FILE_MEMORY;
        if self.versions.len() >= MAX_RECORDED {
            self.versions.retain(|_, (_, at)| fresh(at));
        }
        let known = self
            .versions
            .get(&id)
            .filter(|(_, at)| fresh(at))
            .map(|(v, _)| *v);
        if self.versions.len() < MAX_RECORDED || known.is_some() {
            let newest = known.unwrap_or(0).max(version);
            self.versions.insert(id, (newest, Instant::now()));
        }
    }
}

impl Claims {
    pub fn new(
        daemon_id: [u8; 8],
        port: u16,
        (group_v4, group_v6): (Ipv4Addr, Ipv6Addr),
        interfaces: Vec<String>,
        allow: Arc<Allowlist>,
        link: Link,
    ) -> Self {
        Claims {
            daemon_id,
            port,
            group_v4,
            group_v6,
            interfaces,
            allow,
            link,
            state: Mutex::default(),
        }
    }

    /// The responder heard a query from another host.
    pub fn heard_other(&self) {
        self.lock().last_other = Some(Instant::now());
    }

    /// Decides who fetches `name` from the mirror; see the module doc. Also says whether this
    /// daemon deferred to a better claimant on the way (counted on `/metrics`).
    pub fn settle(&self, name: &str) -> (Verdict, bool) {
        let started = Instant::now();
        // Settled beside others on this host, or the first after a quiet spell: the first
        // files of a transaction, which the other hosts of an upgrade reach within moments.
        let (burst, others) = {
            let state = self.lock();
            let others = state
                .last_other
                .is_some_and(|at| at.elapsed() < OTHERS_FRESH);
            let first = state
                .last_settle
                .is_none_or(|at| at.elapsed() > QUIET_SPELL);
            (state.settling > 1 || first, others)
        };
        self.settles(name);
        if !others || self.given_up_on(name) {
            return (Verdict::Lead, false);
        }
        let Ok(socket) = Asker::open() else {
            return (Verdict::Lead, false);
        };
        // Looked up once: the defer loop asks again every few tens of milliseconds.
        let interfaces = netif::discovery_interfaces(&self.interfaces);
        let locals = netif::local_addresses();
        let here = Here {
            interfaces: &interfaces,
            locals: &locals,
        };
        let heard = self.ask(&socket, &here, name, Versions::Every);
        if let Some(copy) = heard.best {
            let http = self.spread(&socket, &here, name, copy);
            return (Verdict::Follow { http }, false);
        }
        let mut claimants = heard.claimants;
        // A transaction's first files are all settled at once, before the other hosts of an
        // upgrade have claimed anything: the host that started first would lead them all, and
        // keep leading (it finishes first). So such a claim stays open for [`BURST_WINDOW`]:
        // claims heard in it are ranked as if they had come together. A host that has just
        // learned (from the answers, MISS included) that another's link is clearly faster
        // keeps it open as long as it would make way ([`way::MAKE_WAY`]): a faster host that
        // claims the file meanwhile leads it.
        if burst {
            let open = match self.outpaced(Among::Heard) {
                true => way::MAKE_WAY,
                false => BURST_WINDOW,
            };
            std::thread::sleep((started + open).saturating_duration_since(Instant::now()));
        }
        // Late to hear, late to be heard: the claimants we heard settled before our claim
        // reached them, so one of them may be fetching already. Ask once more before ranking.
        if (heard.late && !claimants.is_empty()) || burst {
            let again = self.ask(&socket, &here, name, Versions::Every);
            if let Some(copy) = again.best {
                let http = self.spread(&socket, &here, name, copy);
                return (Verdict::Follow { http }, false);
            }
            claimants.extend(again.claimants);
        }
        claimants.extend(self.heard_claims(name));
        if !self.defers(name, &claimants) {
            return (Verdict::Lead, false);
        }
        (self.wait_for(&socket, &here, name, &claimants), true)
    }

    /// A better claimant among `claimants` has `name`: gives it a bounded moment to start, then
    /// follows it, else leads. Asked in one version only, the newest every claimant speaks, and
    /// not too often: a poll of every deferring file is a query to every daemon, and their
    /// responders limit each source.
    fn wait_for(&self, socket: &Asker, here: &Here, name: &str, claimants: &[Claimant]) -> Verdict {
        let versions = match claimants.iter().map(|c| c.version).min() {
            Some(v) if v >= protocol::RANKED_CLAIMS => Versions::Newest(v.min(protocol::VERSION)),
            _ => Versions::Older,
        };
        let until = Instant::now() + DEFER_LIMIT;
        while Instant::now() < until {
            std::thread::sleep(DEFER_POLL);
            if let Some(copy) = self.ask(socket, here, name, versions).best {
                self.showed_up(claimants);
                let http = self.spread(socket, here, name, copy);
                return Verdict::Follow { http };
            }
        }
        self.no_show(claimants);
        Verdict::Lead
    }

    /// The copy of `name` to follow, `copy` being the least busy heard: when its daemon sends
    /// to [`FANOUT`] other hosts already and other daemons are settling the file right now
    /// (their copies are about to start), asks again, as a client would, for up to
    /// [`FANOUT_WAIT`] for a copy whose daemon sends to fewer; else takes the least busy. So
    /// hosts that settle together form a tree, each link carrying a copy or two, instead of a
    /// star around the first copy.
    fn spread(&self, socket: &Asker, here: &Here, name: &str, copy: Copy) -> SocketAddr {
        if copy.uploads < FANOUT || self.heard_claims(name).is_empty() {
            return copy.http;
        }
        let mut best = copy;
        let until = Instant::now() + FANOUT_WAIT;
        while Instant::now() < until {
            std::thread::sleep(DEFER_POLL);
            if let Some(copy) = self.ask(socket, here, name, Versions::Plain).best {
                if copy.uploads < FANOUT {
                    return copy.http;
                }
                best = copy;
            }
        }
        best.http
    }

    /// Whether a better claimant among `claimants` should fetch `name` ([`choose::defers`]),
    /// leaving out claimants whose host lately let this daemon wait for nothing.
    fn defers(&self, name: &str, claimants: &[Claimant]) -> bool {
        // One entry per daemon (heard as a query and as an answer, in several copies), with
        // the newest version and the link it told.
        let mut counted: Vec<choose::Rival> = Vec::new();
        for c in self.believed(claimants) {
            match counted.iter_mut().find(|r| r.id == c.id) {
                Some(r) => {
                    r.version = r.version.max(c.version);
                    r.link = r.link.max(c.link);
                }
                None => counted.push(choose::Rival {
                    id: c.id,
                    version: c.version,
                    link: c.link,
                }),
            }
        }
        let me = choose::Rival {
            id: self.daemon_id,
            version: protocol::VERSION,
            link: self.link.mbit(),
        };
        choose::defers(name, me, &counted, !self.version_4_heard())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Another daemon claiming the same file.
#[derive(Debug, Clone, Copy)]
struct Claimant {
    id: [u8; 8],
    /// The newest protocol version it was heard speaking: how it settles claims.
    version: u8,
    /// Version 5: its link speed in Mbit/s (0: unknown).
    link: u16,
    from: IpAddr,
}

/// What a version 5 daemon said of its link.
#[derive(Debug, Clone, Copy)]
struct Told {
    link: u16,
    at: Instant,
    /// When it last claimed a file (its claim heard, or answered CLAIMING).
    claimed: Option<Instant>,
}

/// Whose links [`Claims::outpaced`] compares this host's with.
#[derive(Debug, Clone, Copy)]
enum Among {
    Heard,
    Claiming,
}

/// A CLAIM query the responder heard.
#[derive(Debug, Clone, Copy)]
struct Heard1 {
    id: [u8; 8],
    /// The newest version it was heard in.
    version: u8,
    /// Version 5: the link speed its claim said.
    link: u16,
    from: IpAddr,
    at: Instant,
}

#[cfg(test)]
mod tests;
