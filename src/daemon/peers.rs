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
}

impl Peers {
    /// `peer` asked something at `now`.
    pub fn heard(&self, peer: IpAddr, now: Instant) {
        let Ok(mut peers) = self.0.lock() else {
            return;
        };
        let peer = peer.to_canonical();
        if let Some(entry) = peers.get_mut(&peer) {
            entry.requests += 1;
            entry.last = now;
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
            },
        );
    }

    /// The status page's peers section, as of `now`.
    pub fn render(&self, now: Instant) -> String {
        let Ok(mut peers) = self.0.lock() else {
            return String::new();
        };
        peers.retain(|_, h| now.saturating_duration_since(h.last) < FORGET_AFTER);
        // IPv6 addresses are grouped by /64; the key sorts IPv4 before IPv6.
        let mut groups: BTreeMap<String, (usize, u64, Instant)> = BTreeMap::new();
        for (ip, heard) in peers.iter() {
            let group = groups.entry(shown(*ip)).or_insert((0, 0, heard.last));
            group.0 += 1;
            group.1 += heard.requests;
            group.2 = group.2.max(heard.last);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "peers heard in the last {} min: {}",
            FORGET_AFTER.as_secs() / 60,
            peers.len()
        );
        let mut list: Vec<_> = groups.into_iter().collect();
        list.sort_by_key(|(_, (_, _, last))| std::cmp::Reverse(*last));
        for (shown, (addresses, requests, last)) in list.into_iter().take(MAX_SHOWN) {
            let many = if addresses > 1 {
                format!(" ({addresses} addresses)")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {shown}{many}: {requests} requests, last {} s ago",
                now.saturating_duration_since(last).as_secs()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_are_shown_by_prefix_and_old_ones_are_forgotten() {
        let peers = Peers::default();
        let t0 = Instant::now();
        peers.heard("fe80::211:22ff:fe33:4455".parse().unwrap(), t0);
        peers.heard("fe80::266:77ff:fe88:99aa".parse().unwrap(), t0);
        peers.heard("::ffff:10.0.0.7".parse().unwrap(), t0);
        let page = peers.render(t0);
        assert!(page.contains("peers heard in the last 10 min: 3"), "{page}");
        assert!(
            page.contains("  fe80::/64 (2 addresses): 2 requests"),
            "{page}"
        );
        assert!(page.contains("  10.0.0.7: 1 requests"), "{page}");
        assert!(!page.contains("4455") && !page.contains("99aa"), "{page}");
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        peers.heard("10.0.0.8".parse().unwrap(), later);
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
            peers.heard(ip, t0 + Duration::from_millis(u64::from(i)));
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
