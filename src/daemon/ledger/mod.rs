//! What this machine's package downloads got from where: for the line printed after each pacman
//! transaction (the shipped hook's `pacsrv --summary`, or pacsrv itself), for the totals
//! (`pacsrv --totals`), and for the status page's charts ([`history`]).
//!
//! Records arrive three ways:
//! - the agent's own work for a caller: mirror bytes it relayed or handed over prefetched, and
//!   bytes it got by following another daemon's download of the file (LAN bytes);
//! - `REPORT`s of pacman's pacserve-fetch runs: what they kept from LAN peers and from the mirror
//!   directly, which the agent never sees, and peers whose file failed verification;
//! - the `/cache/` endpoint (the Include way): what it served pacman from the LAN, and what it
//!   answered 404, which pacman then fetched from its mirrors itself (counted by the sync
//!   database's size). Only this machine's pacman asks `/cache/`, and pacman holds its database
//!   lock while it downloads, so these belong to the transaction running when they arrive: a
//!   summary takes those that came after its pacman started.
//!
//! Who may write and read is the agent's decision (`agent::policy`): a transaction's tally
//! only from that pacman's own downloaders, taken once, by root or by a hook that pacman runs.
//! Everything is bounded: [`MAX_TRANSACTIONS`] tallies (the least recently written goes),
//! [`MAX_HOSTS`] hosts in a tally and in the totals (the rest count as "other"),
//! [`MAX_CACHE_EVENTS`] `/cache/` events. The totals and the history live in the state
//! directory ([`store`]), saved when a summary is taken and at most once a minute otherwise.

pub mod history;
pub mod store;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::daemon::ledger::history::{Hour, this_hour};
use crate::daemon::ledger::store::Kept;
use crate::daemon::peers::shown;
use crate::daemon::stats::{OTHER_LABEL, Stats};
use crate::pacman::name::{FileKind, is_shareable_name};
use crate::pacman::process::{Transaction, now_ticks};
use crate::pacman::syncdb;
use crate::protocol::report::{Record, Tally, Totals, UNKNOWN_HOST};
use crate::warn;

/// Tallies kept for transactions whose summary was not taken yet.
pub const MAX_TRANSACTIONS: usize = 16;
/// Hosts named in one tally and in the totals.
pub const MAX_HOSTS: usize = 32;
/// `/cache/` answers remembered for the running transaction's summary.
pub const MAX_CACHE_EVENTS: usize = 4096;
/// Daemon ids whose label is remembered.
const MAX_LABELLED: usize = 256;
/// How often the history is brought up to date and the file saved when something changed.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

pub struct Ledger {
    inner: Mutex<Inner>,
    stats: Arc<Stats>,
    /// The DBPath whose sync databases give the size of what `/cache/` answered 404.
    dbpath: PathBuf,
    file: PathBuf,
}

#[derive(Default)]
struct Inner {
    /// Oldest written first.
    txns: VecDeque<(Transaction, Tally)>,
    cache: VecDeque<CacheEvent>,
    kept: Kept,
    /// Daemon ids and the label each is shown by (see [`Ledger::label`]).
    labels: VecDeque<([u8; 8], String)>,
    /// Bytes served in earlier runs (the totals' `served` minus this run's).
    served_before: u64,
    /// This run's bytes served when the history last took them.
    served_seen: u64,
    dirty: bool,
}

/// One `/cache/` answer, stamped with [`now_ticks`] for the transaction it belongs to.
struct CacheEvent {
    at: u64,
    what: Cached,
}

enum Cached {
    /// Bytes served from the LAN.
    Served(u64),
    /// A 404 for this file: pacman fetched it itself. Its size, once looked up.
    Missed { name: String, size: Option<u64> },
}

/// Where bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A LAN peer; None when the host is not recorded.
    Lan(Option<IpAddr>),
    Mirror,
}

impl Ledger {
    /// The ledger of a daemon with this state directory, its totals read back from there.
    pub fn open(state_dir: &Path, dbpath: PathBuf, stats: Arc<Stats>) -> Ledger {
        let file = store::path(state_dir);
        let mut kept = store::load(&file).unwrap_or_default();
        if kept.totals.since == 0 {
            kept.totals.since = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        }
        let inner = Inner {
            served_before: kept.totals.served,
            kept,
            ..Inner::default()
        };
        Ledger {
            inner: Mutex::new(inner),
            stats,
            dbpath,
            file,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves counts, never a broken invariant.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bytes` of a package or signature from `from`, for root's pacman transaction `owner`
    /// when there is one (the agent's caller may be a user by hand: totals only).
    pub fn record(&self, owner: Option<Transaction>, from: From, bytes: u64) {
        let kind = match from {
            From::Lan(host) => Kind::Lan(host.map_or_else(|| UNKNOWN_HOST.to_owned(), shown)),
            From::Mirror => Kind::Mirror,
        };
        self.add(owner, kind, bytes);
    }

    fn add(&self, owner: Option<Transaction>, kind: Kind, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Kind::Lan(_) = kind {
            Stats::add(&self.stats.received_bytes, bytes);
        }
        let mut inner = self.lock();
        if let Some(owner) = owner {
            let at = match inner.txns.iter().position(|(t, _)| *t == owner) {
                Some(at) => at,
                None => {
                    if inner.txns.len() >= MAX_TRANSACTIONS {
                        inner.txns.pop_front();
                    }
                    inner.txns.push_back((owner, Tally::default()));
                    inner.txns.len() - 1
                }
            };
            if let Some(mut entry) = inner.txns.remove(at) {
                add(&mut entry.1, &kind, bytes);
                inner.txns.push_back(entry);
            }
        }
        add(&mut inner.kept.totals.tally, &kind, bytes);
        inner.kept.history.add(this_hour(), |h| match kind {
            Kind::Lan(_) => h.lan = h.lan.saturating_add(bytes),
            Kind::Mirror => h.mirror = h.mirror.saturating_add(bytes),
        });
        inner.dirty = true;
    }

    /// A `REPORT` from a downloader of `owner`'s transaction.
    pub fn report(&self, owner: Transaction, records: &[Record]) {
        for record in records {
            match *record {
                Record::Peer { ip, id, bytes } => {
                    let label = self.label(ip, id);
                    self.add(Some(owner), Kind::Lan(label), bytes);
                }
                Record::Mirror { bytes } => {
                    Stats::add(&self.stats.client_mirror_bytes, bytes);
                    self.record(Some(owner), From::Mirror, bytes);
                }
                Record::Bad { ip } => {
                    // Said by root's pacman's own downloader (the agent checked), so worth a
                    // line: a LAN host sending wrong bytes is something to look into.
                    warn!(
                        "{ip} sent bytes that failed verification in a download on this machine; it is avoided for a while"
                    );
                    self.stats.verification_failures.add(shown(ip), 1);
                }
            }
        }
    }

    /// `/cache/` served `bytes` of `name` to this machine's pacman.
    pub fn cache_served(&self, name: &str, bytes: u64) {
        if FileKind::of(name).shareable() {
            self.record(None, From::Lan(None), bytes);
            self.remember(Cached::Served(bytes));
        }
    }

    /// `/cache/` answered 404 for `name`: pacman fetches it from its mirror itself.
    pub fn cache_missed(&self, name: &str) {
        if is_shareable_name(name) && FileKind::of(name) == FileKind::Package {
            self.remember(Cached::Missed {
                name: name.to_owned(),
                size: None,
            });
        }
    }

    /// How the daemon `id`, now answering from `ip`, is shown: as the address it was first
    /// seen at, so that a dual-stack host reached over IPv4 and IPv6 counts as one.
    fn label(&self, ip: IpAddr, id: [u8; 8]) -> String {
        let mut inner = self.lock();
        if let Some((_, label)) = inner.labels.iter().find(|(known, _)| *known == id) {
            return label.clone();
        }
        if inner.labels.len() >= MAX_LABELLED {
            inner.labels.pop_front();
        }
        inner.labels.push_back((id, shown(ip)));
        shown(ip)
    }

    fn remember(&self, what: Cached) {
        let Some(at) = now_ticks() else { return };
        let mut inner = self.lock();
        if inner.cache.len() >= MAX_CACHE_EVENTS {
            inner.cache.pop_front();
        }
        inner.cache.push_back(CacheEvent { at, what });
    }

    /// Where the package bytes of `txn` came from, taken: a second call finds nothing.
    pub fn take_summary(&self, txn: Transaction) -> Tally {
        self.tick();
        let mut inner = self.lock();
        let mut tally = match inner.txns.iter().position(|(t, _)| *t == txn) {
            Some(at) => inner.txns.remove(at).map(|(_, t)| t).unwrap_or_default(),
            None => Tally::default(),
        };
        let (mine, others) = std::mem::take(&mut inner.cache)
            .into_iter()
            .partition::<VecDeque<_>, _>(|e| e.at >= txn.start);
        inner.cache = others;
        for event in mine {
            match event.what {
                Cached::Served(bytes) => tally.add_lan(UNKNOWN_HOST.to_owned(), bytes),
                Cached::Missed { size, .. } => {
                    tally.pacman = tally.pacman.saturating_add(size.unwrap_or(0));
                }
            }
        }
        drop(inner);
        self.save();
        tally
    }

    /// The totals, up to now.
    pub fn totals(&self) -> Totals {
        self.tick();
        let inner = self.lock();
        let mut totals = inner.kept.totals.clone();
        totals.served = inner.served_before.saturating_add(inner.served_seen);
        totals
    }

    /// The `hours` hours up to now, oldest first, for the status page.
    pub fn last_hours(&self, hours: usize) -> Vec<Hour> {
        self.tick();
        self.lock().kept.history.last(hours, this_hour())
    }

    /// Brings the history up to date with the bytes served, and counts the sizes of packages
    /// `/cache/` answered 404 (looked up in the sync databases, outside the lock).
    pub fn tick(&self) {
        let served = self.stats.bytes_served.load(Relaxed);
        let to_size: Vec<String> = {
            let mut inner = self.lock();
            let new = served.saturating_sub(inner.served_seen);
            if new > 0 {
                inner.served_seen = served;
                inner.kept.history.add(this_hour(), |h| {
                    h.served = h.served.saturating_add(new);
                });
                inner.dirty = true;
            }
            inner
                .cache
                .iter()
                .filter_map(CacheEvent::unsized_name)
                .collect()
        };
        if to_size.is_empty() {
            return;
        }
        let names: Vec<&str> = to_size.iter().map(String::as_str).collect();
        let listed = syncdb::lookup_all(&self.dbpath, &names);
        let mut inner = self.lock();
        let mut sized = 0u64;
        for event in inner.cache.iter_mut() {
            if let Cached::Missed {
                name,
                size: size @ None,
            } = &mut event.what
            {
                let bytes = listed.get(name.as_str()).and_then(|e| e.csize).unwrap_or(0);
                *size = Some(bytes);
                sized = sized.saturating_add(bytes);
            }
        }
        let tally = &mut inner.kept.totals.tally;
        tally.pacman = tally.pacman.saturating_add(sized);
        inner.kept.history.add(this_hour(), |h| {
            h.mirror = h.mirror.saturating_add(sized);
        });
        inner.dirty = true;
    }

    /// Saves the totals and history when they changed since the last save.
    pub fn save(&self) {
        let kept = {
            let mut inner = self.lock();
            if !std::mem::take(&mut inner.dirty) {
                return;
            }
            let mut kept = inner.kept.clone();
            kept.totals.served = inner.served_before.saturating_add(inner.served_seen);
            kept
        };
        store::save(&self.file, &kept);
    }

    /// Keeps the history current and the file saved, every [`SAVE_EVERY`], for the daemon's
    /// life.
    pub fn spawn_saver(self: &Arc<Ledger>) -> std::io::Result<()> {
        let ledger = self.clone();
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SAVE_EVERY);
                    ledger.tick();
                    ledger.save();
                }
            })
            .map(|_| ())
    }
}

impl CacheEvent {
    fn unsized_name(&self) -> Option<String> {
        match &self.what {
            Cached::Missed { name, size: None } => Some(name.clone()),
            _ => None,
        }
    }
}

/// Where bytes came from, as a tally names it.
enum Kind {
    /// A LAN host, by label.
    Lan(String),
    Mirror,
}

/// Adds `bytes` from `kind` to `tally`, naming at most [`MAX_HOSTS`] hosts.
fn add(tally: &mut Tally, kind: &Kind, bytes: u64) {
    match kind {
        Kind::Lan(label) => {
            let known = tally.lan.contains_key(label) || tally.lan.len() < MAX_HOSTS - 1;
            let label = if known {
                label.clone()
            } else {
                OTHER_LABEL.into()
            };
            tally.add_lan(label, bytes);
        }
        Kind::Mirror => tally.mirror = tally.mirror.saturating_add(bytes),
    }
}

#[cfg(test)]
mod tests;
