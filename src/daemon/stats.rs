//! The daemon's counters, shared by the responder and the HTTP server and shown on the status
//! page. Plain atomics: a query must never wait for a lock to be counted.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Bounds the per-peer table so a flood of spoofed sources cannot grow it without limit.
const MAX_PEERS_TRACKED: usize = 1024;

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub queries: AtomicU64,
    pub answered_have: AtomicU64,
    pub answered_miss: AtomicU64,
    pub dropped: AtomicU64,
    pub other_versions: AtomicU64,
    pub files_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub not_found: AtomicU64,
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
    peers: Mutex<HashMap<IpAddr, (u64, Instant)>>,
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
            files_served: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            peers: Mutex::new(HashMap::new()),
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A peer was heard from (a query or an HTTP request). Returns true the first time.
    pub fn heard(&self, peer: IpAddr) -> bool {
        let Ok(mut peers) = self.peers.lock() else {
            return false;
        };
        let now = Instant::now();
        if let Some(entry) = peers.get_mut(&peer) {
            entry.0 += 1;
            entry.1 = now;
            return false;
        }
        if peers.len() >= MAX_PEERS_TRACKED {
            return false;
        }
        peers.insert(peer, (1, now));
        true
    }

    /// The status page: counters and the peers heard, for `curl http://host:15678/`.
    pub fn render(&self, id: &str, cache_dirs: &[std::path::PathBuf]) -> String {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pacserved {} (id {id}), up {} s",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs()
        );
        for dir in cache_dirs {
            let _ = writeln!(out, "cache dir: {}", dir.display());
        }
        let _ = writeln!(out, "queries received: {}", get(&self.queries));
        let _ = writeln!(out, "answered HAVE: {}", get(&self.answered_have));
        let _ = writeln!(out, "answered MISS: {}", get(&self.answered_miss));
        let _ = writeln!(out, "dropped (malformed): {}", get(&self.dropped));
        let _ = writeln!(
            out,
            "dropped (other protocol versions): {}",
            get(&self.other_versions)
        );
        let _ = writeln!(out, "files served: {}", get(&self.files_served));
        let _ = writeln!(out, "bytes served: {}", get(&self.bytes_served));
        let _ = writeln!(out, "not found: {}", get(&self.not_found));
        let _ = writeln!(
            out,
            "refused (outside the allowlist): {}",
            get(&self.refused)
        );
        let _ = writeln!(
            out,
            "queries over the rate limit: {}",
            get(&self.rate_limited)
        );
        if let Ok(peers) = self.peers.lock() {
            let _ = writeln!(out, "peers heard: {}", peers.len());
            let mut list: Vec<_> = peers.iter().collect();
            list.sort_by_key(|(_, (_, last))| std::cmp::Reverse(*last));
            for (ip, (count, last)) in list.into_iter().take(50) {
                let _ = writeln!(
                    out,
                    "  {ip}: {count} requests, last {} s ago",
                    last.elapsed().as_secs()
                );
            }
        }
        out
    }
}
