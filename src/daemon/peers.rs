//! The peers a daemon has heard from recently, for its status page.
//!
//! Bounded and aged: an entry not heard from for [`FORGET_AFTER`] is dropped, and when the
//! table is full the least recently heard entry makes room, so neither a flood of spoofed
//! sources nor months of uptime grow it. The page is readable by every host on the LAN, so it
//! never shows a full IPv6 address: the lower 64 bits of an EUI-64 address (every link-local
//! one, often others) are the host's MAC address. IPv6 peers are shown as their /64 with a
//! count of addresses; IPv4 addresses carry no such secret and are shown as they are.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;

/// Peers are forgotten after this long without a request.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// At most this many peers are remembered.
const MAX_PEERS: usize = 256;
/// At most this many lines are shown.
const MAX_SHOWN: usize = 50;

/// How a peer is shown to the LAN (here, in `/metrics` and in summaries): an IPv4 address as it
/// is, an IPv6 address as its /64.
pub fn shown(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => Ipv6Net::new_assert(v6, 64).trunc().to_string(),
    }
}

#[derive(Debug, Default)]
pub struct Peers(Mutex<HashMap<IpAddr, Heard>>);

#[derive(Debug, Clone, Copy)]
struct Heard {
    requests: u64,
    last: Instant,
    /// Discovery protocol versions its queries spoke, bit `v` for version `v`.
    versions: u8,
}

/// One line of the peers section: a peer as the LAN may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// [`shown`]: an IPv4 address, or an IPv6 /64.
    pub label: String,
    /// Addresses behind the label.
    pub addresses: usize,
    pub requests: u64,
    /// Since the last request.
    pub ago: Duration,
    /// Discovery protocol versions heard from it, lowest first (none: HTTP requests only).
    pub versions: Vec<u8>,
}

impl Peers {
    /// `peer` asked something at `now`, a discovery query of protocol `version` when known.
    pub fn heard(&self, peer: IpAddr, now: Instant, version: Option<u8>) {
        let Ok(mut peers) = self.0.lock() else {
            return;
        };
        let peer = peer.to_canonical();
        let bit = version.filter(|v| *v < 8).map_or(0, |v| 1u8 << v);
        if let Some(entry) = peers.get_mut(&peer) {
            entry.requests += 1;
            entry.last = now;
            entry.versions |= bit;
            return;
        }
        if peers.len() >= MAX_PEERS {
            peers.retain(|_, h| now.saturating_duration_since(h.last) < FORGET_AFTER);
        }
        if peers.len() >= MAX_PEERS
            && let Some(oldest) = peers.iter().min_by_key(|(_, h)| h.last).map(|(ip, _)| *ip)
        {
            peers.remove(&oldest);
        }
        peers.insert(
            peer,
            Heard {
                requests: 1,
                last: now,
                versions: bit,
            },
        );
    }

    /// The peers heard in the last [`FORGET_AFTER`] as of `now`, grouped as they are shown
    /// (IPv6 by /64), most recent first, at most [`MAX_SHOWN`]; and how many addresses in all.
    pub fn seen(&self, now: Instant) -> (Vec<Seen>, usize) {
        let Ok(mut peers) = self.0.lock() else {
            return (Vec::new(), 0);
        };
        peers.retain(|_, h| now.saturating_duration_since(h.last) < FORGET_AFTER);
        let mut groups: BTreeMap<String, Heard> = BTreeMap::new();
        let mut addresses: BTreeMap<String, usize> = BTreeMap::new();
        for (ip, heard) in peers.iter() {
            let label = shown(*ip);
            *addresses.entry(label.clone()).or_default() += 1;
            let group = groups.entry(label).or_insert(Heard {
                requests: 0,
                versions: 0,
                ..*heard
            });
            group.requests += heard.requests;
            group.last = group.last.max(heard.last);
            group.versions |= heard.versions;
        }
        let mut list: Vec<Seen> = groups
            .into_iter()
            .map(|(label, heard)| Seen {
                addresses: addresses.get(&label).copied().unwrap_or(1),
                label,
                requests: heard.requests,
                ago: now.saturating_duration_since(heard.last),
                versions: (1..8).filter(|v| heard.versions & (1 << v) != 0).collect(),
            })
            .collect();
        list.sort_by_key(|seen| seen.ago);
        list.truncate(MAX_SHOWN);
        (list, peers.len())
    }

    /// The status page's peers section, as of `now`.
    pub fn render(&self, now: Instant) -> String {
        let (seen, total) = self.seen(now);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "peers heard in the last {} min: {total}",
            FORGET_AFTER.as_secs() / 60,
        );
        for peer in seen {
            let many = match peer.addresses {
                1 => String::new(),
                n => format!(" ({n} addresses)"),
            };
            let versions = match peer.versions[..] {
                [] => String::new(),
                ref v => format!(", protocol {}", versions(v)),
            };
            let _ = writeln!(
                out,
                "  {}{many}: {} requests{versions}, last {} s ago",
                peer.label,
                peer.requests,
                peer.ago.as_secs()
            );
        }
        out
    }
}

/// Versions as `v1, v3`.
pub fn versions(versions: &[u8]) -> String {
    let words: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
    words.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_are_shown_by_prefix_and_old_ones_are_forgotten() {
        let peers = Peers::default();
        let t0 = Instant::now();
        peers.heard("fe80::211:22ff:fe33:4455".parse().unwrap(), t0, Some(3));
        peers.heard("fe80::266:77ff:fe88:99aa".parse().unwrap(), t0, Some(1));
        peers.heard("::ffff:10.0.0.7".parse().unwrap(), t0, None);
        let page = peers.render(t0);
        assert!(page.contains("peers heard in the last 10 min: 3"), "{page}");
        assert!(
            page.contains("  fe80::/64 (2 addresses): 2 requests, protocol v1, v3, last 0 s ago"),
            "{page}"
        );
        assert!(page.contains("  10.0.0.7: 1 requests"), "{page}");
        assert!(!page.contains("4455") && !page.contains("99aa"), "{page}");
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        peers.heard("10.0.0.8".parse().unwrap(), later, None);
        let page = peers.render(later);
        assert!(page.contains(": 1\n"), "only the recent one: {page}");
        assert!(!page.contains("10.0.0.7"), "{page}");
    }

    #[test]
    fn a_full_table_makes_room_for_new_peers() {
        let peers = Peers::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
            peers.heard(ip, t0 + Duration::from_millis(u64::from(i)), None);
        }
        let len = peers.0.lock().unwrap().len();
        assert_eq!(len, MAX_PEERS);
        let page = peers.render(t0 + Duration::from_secs(1));
        assert!(page.contains(
            &std::net::Ipv4Addr::from(0x0a00_0000u32 + MAX_PEERS as u32 + 9).to_string()
        ));
        assert!(!page.contains("10.0.0.0:"), "the oldest made room: {page}");
    }
}
