//! The daemon's counters, shared by the responder and the HTTP server and shown on the status
//! page. Plain atomics: a query must never wait for a lock to be counted. The page is public to
//! the LAN, so it shows counts, not the file system layout ([`Peers`] says how peers are shown).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::daemon::peers::Peers;

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub queries: AtomicU64,
    pub answered_have: AtomicU64,
    pub answered_miss: AtomicU64,
    pub dropped: AtomicU64,
    pub other_versions: AtomicU64,
    /// Copies of a query already handled (same nonce and source, no newer version), dropped.
    pub repeated: AtomicU64,
    /// QUIET queries for files that are not here: not answered.
    pub quiet_unanswered: AtomicU64,
    pub files_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub not_found: AtomicU64,
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
    /// HTTP connections closed because the client read nothing for the send timeout.
    pub stalled_clients: AtomicU64,
    /// HTTP connections closed on arrival: no slot for their source.
    pub no_slot: AtomicU64,
    /// HTTP connections closed to give their slot to a source holding fewer.
    pub evicted: AtomicU64,
    /// Files being sent right now (a gauge).
    pub uploading: AtomicU64,
    /// The hosts they go to (v3 answers tell how many, so that clients and followers prefer
    /// a source whose upload link is not shared yet).
    pub receivers: Receivers,
    /// Of the files served, those sent while they were still arriving here.
    pub served_growing: AtomicU64,
    /// Peers reading a file that is still arriving here, right now (a gauge).
    pub followers: AtomicU64,
    /// Agent jobs: mirror downloads made for local pacserve-fetch runs, and their body bytes.
    pub agent_fetches: AtomicU64,
    pub agent_mirror_bytes: AtomicU64,
    /// Agent jobs refused (malformed, or not for this caller).
    pub agent_refused: AtomicU64,
    /// Prefetched files handed to pacserve-fetch, and their bytes.
    pub prefetch_hits: AtomicU64,
    pub prefetch_bytes: AtomicU64,
    /// Transaction plans accepted, and the files they named.
    pub plans: AtomicU64,
    pub planned_files: AtomicU64,
    /// Claims settled for a download: this daemon fetched from the mirror, or followed another.
    pub claims_led: AtomicU64,
    pub claims_followed: AtomicU64,
    /// Claims where this daemon deferred to a better claimant (then followed it, or led after
    /// it failed to start).
    pub claims_deferred: AtomicU64,
    /// Files for which this daemon waited for another daemon to lead them (making way).
    pub claims_made_way: AtomicU64,
    /// Followed downloads that went back to the mirror (the peer failed, stalled or lied).
    pub follow_failures: AtomicU64,
    /// Package bytes this machine's downloads got from LAN peers: what pacman's pacserve-fetch
    /// runs report, what the agent followed, what `/cache/` served (see `daemon::ledger`).
    pub received_bytes: AtomicU64,
    /// Package bytes pacman's pacserve-fetch runs report fetching from mirrors without the agent.
    pub client_mirror_bytes: AtomicU64,
    /// Files from a peer that failed verification, by peer ([`crate::daemon::peers::shown`]).
    pub verification_failures: Labelled,
    /// `/cache/`: packages pacman got from a verified LAN copy; answers kept alive with the
    /// mirror's first bytes, and those bytes; answers cut because the LAN copy failed after
    /// they began; answers to a Range; requests turned away because every place was taken.
    pub cache_lan: AtomicU64,
    pub cache_kept_alive: AtomicU64,
    pub cache_mirror_bytes: AtomicU64,
    pub cache_cut: AtomicU64,
    pub cache_ranges: AtomicU64,
    pub cache_busy: AtomicU64,
    peers: Peers,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            queries: AtomicU64::new(0),
            answered_have: AtomicU64::new(0),
            answered_miss: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            other_versions: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
            quiet_unanswered: AtomicU64::new(0),
            files_served: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            stalled_clients: AtomicU64::new(0),
            no_slot: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            uploading: AtomicU64::new(0),
            receivers: Receivers::default(),
            served_growing: AtomicU64::new(0),
            followers: AtomicU64::new(0),
            agent_fetches: AtomicU64::new(0),
            agent_mirror_bytes: AtomicU64::new(0),
            agent_refused: AtomicU64::new(0),
            prefetch_hits: AtomicU64::new(0),
            prefetch_bytes: AtomicU64::new(0),
            plans: AtomicU64::new(0),
            planned_files: AtomicU64::new(0),
            claims_led: AtomicU64::new(0),
            claims_followed: AtomicU64::new(0),
            claims_deferred: AtomicU64::new(0),
            claims_made_way: AtomicU64::new(0),
            follow_failures: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            client_mirror_bytes: AtomicU64::new(0),
            verification_failures: Labelled::default(),
            cache_lan: AtomicU64::new(0),
            cache_kept_alive: AtomicU64::new(0),
            cache_mirror_bytes: AtomicU64::new(0),
            cache_cut: AtomicU64::new(0),
            cache_ranges: AtomicU64::new(0),
            cache_busy: AtomicU64::new(0),
            peers: Peers::default(),
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A peer was heard from: an HTTP request, or a query of protocol `version`.
    pub fn heard(&self, peer: IpAddr, version: Option<u8>) {
        self.peers.heard(peer, Instant::now(), version);
    }

    /// The peers heard recently, as the status pages show them.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The status page: counters and the peers heard, for `curl http://host:15678/`.
    pub fn render(&self, id: &str, cache_dirs: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pacserved {} (id {id}), up {} s",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs()
        );
        let _ = writeln!(out, "cache directories: {cache_dirs}");
        for (label, value) in self.counters() {
            let _ = writeln!(out, "{label}: {value}");
        }
        out.push_str(&self.peers.render(Instant::now()));
        out
    }

    /// The status pages' counters, labelled.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let counters = [
            ("queries received", &self.queries),
            ("answered HAVE", &self.answered_have),
            ("answered MISS", &self.answered_miss),
            ("not answered (QUIET, not here)", &self.quiet_unanswered),
            (
                "dropped (copies of a query answered in its newer version)",
                &self.repeated,
            ),
            ("dropped (malformed)", &self.dropped),
            ("dropped (other protocol versions)", &self.other_versions),
            ("files served", &self.files_served),
            ("bytes served", &self.bytes_served),
            ("not found", &self.not_found),
            ("refused (outside the allowlist)", &self.refused),
            ("queries over the rate limit", &self.rate_limited),
            (
                "connections closed (client not reading)",
                &self.stalled_clients,
            ),
            ("connections refused (no free slot)", &self.no_slot),
            (
                "connections closed (slot given to a lighter source)",
                &self.evicted,
            ),
        ];
        counters
            .into_iter()
            .map(|(label, counter)| (label, counter.load(Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_are_hosts_and_leave_with_their_last_file() {
        let receivers = Receivers::default();
        let host: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let first = receivers.start(host);
        let second = receivers.start(mapped);
        assert_eq!(receivers.hosts(), vec![host], "one host, two files");
        drop(first);
        assert_eq!(receivers.hosts(), vec![host]);
        drop(second);
        assert!(receivers.hosts().is_empty());
    }

    #[test]
    fn labels_are_bounded_and_the_rest_count_as_other() {
        let counts = Labelled::default();
        for i in 0..(MAX_LABELS as u64 + 20) {
            counts.add(format!("10.0.0.{i}"), 1);
        }
        counts.add("10.0.0.0".into(), 5);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), MAX_LABELS);
        let get = |label: &str| snapshot.iter().find(|(l, _)| l == label).map(|(_, n)| *n);
        assert_eq!(get("10.0.0.0"), Some(6), "a known label keeps counting");
        assert_eq!(get(OTHER_LABEL), Some(21));
    }
}

/// Counters by label, at most [`MAX_LABELS`] of them: past that, new labels count under
/// [`OTHER_LABEL`], so neither a LAN of spoofed sources nor months of uptime grow the table or a
/// scrape.
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

pub const MAX_LABELS: usize = 64;
pub const OTHER_LABEL: &str = "other";

impl Labelled {
    pub fn add(&self, label: String, n: u64) {
        let Ok(mut counts) = self.0.lock() else {
            return;
        };
        let label = match counts.contains_key(&label) || counts.len() < MAX_LABELS - 1 {
            true => label,
            false => OTHER_LABEL.to_owned(),
        };
        let count = counts.entry(label).or_default();
        *count = count.saturating_add(n);
    }

    /// Every label and its count, in label order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .map(|counts| counts.iter().map(|(l, n)| (l.clone(), *n)).collect())
            .unwrap_or_default()
    }
}

/// The hosts files are being sent to right now, and how many files each.
#[derive(Debug, Default)]
pub struct Receivers(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

impl Receivers {
    /// A file starts going to `host`; it counts until the guard is dropped.
    pub fn start(&self, host: std::net::IpAddr) -> Receiving<'_> {
        let host = host.to_canonical();
        if let Ok(mut hosts) = self.0.lock() {
            *hosts.entry(host).or_default() += 1;
        }
        Receiving(self, host)
    }

    pub fn hosts(&self) -> Vec<std::net::IpAddr> {
        self.0
            .lock()
            .map(|hosts| hosts.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// One file going to one host ([`Receivers::start`]).
pub struct Receiving<'a>(&'a Receivers, std::net::IpAddr);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Ok(mut hosts) = self.0.0.lock()
            && let Some(files) = hosts.get_mut(&self.1)
        {
            *files -= 1;
            if *files == 0 {
                hosts.remove(&self.1);
            }
        }
    }
}

/// One of something in progress (a file being sent, a peer following), counted in a gauge
/// while it lives.
pub struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    pub fn start(gauge: &'a AtomicU64) -> Held<'a> {
        gauge.fetch_add(1, Relaxed);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
