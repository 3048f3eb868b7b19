//! What the LAN may cost one download: which answers become candidates, how many are tried, and
//! how long the whole peer phase may take before the mirror takes over.
//!
//! Anyone on the LAN can answer a query, as often and under as many daemon ids as it likes, so
//! every per-peer limit is multiplied by the number of answers unless the answers are bounded
//! too. [`choose`] keeps at most [`MAX_PEERS_PER_FILE`] candidates, one per source address and
//! one per daemon id across address families (a dual-stack daemon answers over both; an
//! impostor with a real daemon's id on the same family does not hide the real one), never one whose
//! HTTP port is below [`MIN_HTTP_PORT`]; [`PeerPhase`] caps the time all of them together may
//! take. The per-connection limits (headers, speed floor) are in
//! [`peer_limits`]; the speed floor itself is enforced by [`crate::client::transfer::body`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::client::peers::discovery::PeerAnswer;
use crate::client::transfer::body::LowSpeed;
use crate::client::transfer::limits::Limits;
use crate::protocol::Holding;

/// At most this many peers are tried for one file: one good peer and two fallbacks cover a LAN
/// where a peer is switched off or busy, and three failures in a row mean the mirror is the
/// better bet.
pub const MAX_PEERS_PER_FILE: usize = 3;

pub use crate::protocol::budget::{
    HEADER_BUDGET, MIN_HTTP_PORT, PHASE_BASE, PHASE_RATE, phase as budget,
};

/// The slowest a peer may send ([`crate::protocol::budget`]'s floor, shared with the daemon).
pub const PEER_LOW_SPEED: LowSpeed = LowSpeed {
    bytes_per_sec: crate::protocol::budget::FLOOR_BYTES_PER_SEC,
    window: crate::protocol::budget::FLOOR_WINDOW,
};

/// The per-connection limits for a peer: `base` (connect and stall, from the options) plus the
/// header budget and the speed floor.
pub fn peer_limits(base: Limits) -> Limits {
    Limits {
        headers: Some(HEADER_BUDGET),
        low_speed: Some(PEER_LOW_SPEED),
        ..base
    }
}

/// The deadline of one file's peer phase.
#[derive(Debug, Clone, Copy)]
pub struct PeerPhase {
    pub deadline: Instant,
}

impl PeerPhase {
    /// Starts the phase for a file of `size` bytes.
    pub fn start(size: u64) -> PeerPhase {
        PeerPhase {
            deadline: Instant::now() + budget(size),
        }
    }

    /// Time left, or `None` once the phase is over.
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// A peer chosen to be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Where its HTTP server is.
    pub http: SocketAddr,
    pub daemon_id: [u8; 8],
    /// The size it announced: the most bytes it may send.
    pub size: u64,
    /// It said the file's signature is there too (protocol version 3).
    pub sig: bool,
    /// It is still receiving the file (GROWING): only its first bytes can be asked for.
    pub growing: bool,
}

impl Candidate {
    /// What a failure is recorded against: the id together with the address it came from, so
    /// another host answering with a real daemon's id gets only itself avoided.
    pub fn blame(&self) -> ([u8; 8], IpAddr) {
        (self.daemon_id, self.http.ip())
    }
}

/// The answers worth trying, whole files first, the least busy daemons first, then in answer
/// order: HAVE with a size that `fits`, a port of at least
/// [`MIN_HTTP_PORT`], not `avoided`, the first per source address, one family per daemon id,
/// at most `most` ([`MAX_PEERS_PER_FILE`], or more for a file fetched from several at once).
/// `skipped` hears why an answer was left out.
pub fn choose(
    answers: &[PeerAnswer],
    most: usize,
    fits: impl Fn(u64) -> bool,
    avoided: impl Fn(&Candidate) -> bool,
    mut skipped: impl FnMut(&PeerAnswer, &str),
) -> Vec<Candidate> {
    let mut hosts: HashSet<IpAddr> = HashSet::new();
    // The family each daemon id was first chosen over.
    let mut daemons: HashMap<[u8; 8], bool> = HashMap::new();
    let mut chosen = Vec::new();
    // Whole files first, then files still arriving (GROWING); within each, the daemons sending
    // the fewest files first (version 3 answers say; older ones count as idle), so that hosts
    // upgrading together spread over the copies; then in answer order.
    let growing = |a: &&PeerAnswer| matches!(a.holding, Holding::Growing { .. });
    let mut whole: Vec<&PeerAnswer> = answers.iter().filter(|a| !growing(a)).collect();
    let mut arriving: Vec<&PeerAnswer> = answers.iter().filter(growing).collect();
    whole.sort_by_key(|a| a.extra.uploads);
    arriving.sort_by_key(|a| a.extra.uploads);
    let ordered = whole.into_iter().chain(arriving);
    for answer in ordered {
        let (Some((_, size)), Some(http)) = (answer.holding.fetchable(), answer.http_addr()) else {
            continue;
        };
        if !fits(size) {
            continue;
        }
        let candidate = Candidate {
            http,
            daemon_id: answer.daemon_id,
            size,
            sig: answer.extra.sig,
            growing: matches!(answer.holding, Holding::Growing { .. }),
        };
        if http.port() < MIN_HTTP_PORT {
            skipped(answer, "names a system port for HTTP");
        } else if avoided(&candidate) {
            skipped(answer, "failed recently; skipping it for now");
        } else if hosts.contains(&http.ip())
            || daemons
                .get(&answer.daemon_id)
                .is_some_and(|&v4| v4 != http.is_ipv4())
        {
            // One host, one chance: a host answering under many ids would otherwise be tried
            // once per id. And the same id over the other family is the same dual-stack daemon;
            // over the same family from another address it is an impostor or the real one, so
            // both are tried (and blamed apart).
        } else if chosen.len() >= most {
            skipped(answer, "one peer too many for one file");
            break;
        } else {
            hosts.insert(http.ip());
            daemons.entry(answer.daemon_id).or_insert(http.is_ipv4());
            chosen.push(candidate);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(from: &str, id: u8, port: u16) -> PeerAnswer {
        PeerAnswer {
            from: from.parse().unwrap(),
            daemon_id: [id; 8],
            holding: Holding::Have {
                http_port: port,
                size: 100,
                mtime: 0,
            },
            extra: Default::default(),
            rtt: Duration::from_millis(1),
            is_self: false,
            version: 3,
        }
    }

    #[test]
    fn the_least_busy_whole_copies_come_first_then_answer_order() {
        let busy = |from: &str, id: u8, uploads: u16| PeerAnswer {
            extra: crate::protocol::Extra {
                sig: false,
                uploads,
                link: 0,
            },
            ..have(from, id, 15678)
        };
        let answers = [
            busy("10.0.0.1:1", 1, 6),
            busy("10.0.0.2:1", 2, 0),
            busy("10.0.0.3:1", 3, 2),
            busy("10.0.0.4:1", 4, 0),
        ];
        let chosen = choose(&answers, MAX_PEERS_PER_FILE, |_| true, |_| false, |_, _| {});
        let ids: Vec<u8> = chosen.iter().map(|c| c.daemon_id[0]).collect();
        assert_eq!(ids, [2, 4, 3]);
    }

    #[test]
    fn one_candidate_per_host_at_most_three_none_on_system_ports() {
        let mut answers: Vec<PeerAnswer> =
            (0..50).map(|i| have("10.0.0.9:15678", i, 15678)).collect();
        answers.insert(1, have("10.0.0.2:15678", 1, 22));
        answers.extend((3..8).map(|h| have(&format!("10.0.0.{h}:15678"), 99, 15678)));
        let mut why = Vec::new();
        let chosen = choose(
            &answers,
            MAX_PEERS_PER_FILE,
            |s| s == 100,
            |_| false,
            |a, w| why.push(format!("{} {w}", a.from)),
        );
        let hosts: Vec<String> = chosen.iter().map(|c| c.http.ip().to_string()).collect();
        assert_eq!(hosts, ["10.0.0.9", "10.0.0.3", "10.0.0.4"]);
        assert!(
            why.iter()
                .any(|w| w.contains("10.0.0.2") && w.contains("system port"))
        );
        assert!(
            choose(
                &answers,
                MAX_PEERS_PER_FILE,
                |s| s == 7,
                |_| false,
                |_, _| {}
            )
            .is_empty()
        );
        let dual_stack = [
            have("10.0.0.2:15678", 1, 15678),
            have("[fe80::2%2]:15678", 1, 15678),
        ];
        assert_eq!(
            choose(
                &dual_stack,
                MAX_PEERS_PER_FILE,
                |_| true,
                |_| false,
                |_, _| {}
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_same_id_from_two_hosts_is_two_candidates_blamed_apart() {
        let answers = [
            have("10.0.0.66:15678", 5, 15678),
            have("10.0.0.2:15678", 5, 15678),
        ];
        assert_eq!(
            choose(&answers, MAX_PEERS_PER_FILE, |_| true, |_| false, |_, _| {}).len(),
            2
        );
        let spoofer = answers[0].http_addr().unwrap().ip();
        let chosen = choose(
            &answers,
            MAX_PEERS_PER_FILE,
            |_| true,
            |c| c.blame().1 == spoofer,
            |_, _| {},
        );
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].http.ip().to_string(), "10.0.0.2");
    }
}
