//! Who may talk to the daemon at all: an allowlist of networks.
//!
//! By default: addresses that cannot be routed from the internet (loopback, link-local, the
//! private ranges of IPv4 and IPv6, and the shared 100.64.0.0/10 that Tailscale and other
//! carrier-grade NATs use), plus every subnet this host is on (a lab on public addresses, a
//! LAN with global IPv6 only). A LAN sharing service has no business answering anyone else,
//! whatever the firewall says. A configured list (`--allow`, `allow =`) replaces the default
//! entirely. Sources outside it get no UDP answer, and their HTTP connections are closed on
//! arrival, before they are read or hold any of the connection slots the allowed hosts need.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::protocol::{netif, onlink};

/// The default networks, in the order they are shown.
pub const DEFAULT: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];
/// How long the host's own subnets are believed before they are read again (a laptop moves).
const ON_LINK_FRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Allowlist {
    nets: Vec<IpNet>,
    /// The default also allows the subnets this host is on.
    on_link: Option<Arc<OnLink>>,
}

impl Default for Allowlist {
    fn default() -> Allowlist {
        let nets = Allowlist::parse(&DEFAULT.map(str::to_owned)).map_or(Vec::new(), |a| a.nets);
        Allowlist {
            nets,
            on_link: Some(Arc::default()),
        }
    }
}

/// This host's subnets, read again once they are older than [`ON_LINK_FRESH`].
#[derive(Debug, Default)]
struct OnLink(RwLock<Option<(Instant, Vec<IpNet>)>>);

impl OnLink {
    fn contains(&self, ip: &IpAddr) -> bool {
        let fresh = |read: &Option<(Instant, Vec<IpNet>)>| {
            read.as_ref()
                .filter(|(at, _)| at.elapsed() < ON_LINK_FRESH)
                .map(|(_, nets)| nets.iter().any(|n| n.contains(ip)))
        };
        if let Some(found) = self.0.read().ok().and_then(|r| fresh(&r)) {
            return found;
        }
        let nets = onlink::subnets(|_| true);
        let found = nets.iter().any(|n| n.contains(ip));
        if let Ok(mut cached) = self.0.write() {
            *cached = Some((Instant::now(), nets));
        }
        found
    }
}

impl Allowlist {
    /// Networks as `ADDR/PREFIX` or a bare address (a single host).
    pub fn parse(networks: &[String]) -> Result<Allowlist, String> {
        netif::parse_networks(networks).map(|nets| Allowlist {
            nets,
            on_link: None,
        })
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is inside one of the networks.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
            || self.on_link.as_ref().is_some_and(|l| l.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allows_the_lan_and_refuses_the_internet() {
        let allow = Allowlist::default();
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.1",
            "192.168.1.20",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.3.4",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:192.168.1.2",
        ] {
            assert!(allow.permits(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!allow.permits(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn the_default_allows_the_subnets_this_host_is_on() {
        let allow = Allowlist::default();
        for net in onlink::subnets(|_| true) {
            assert!(allow.permits(net.network()), "{net}");
        }
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let allow = Allowlist::parse(&["10.0.0.5".into(), "2001:db8::/32".into()]).unwrap();
        assert!(allow.permits("10.0.0.5".parse().unwrap()));
        assert!(!allow.permits("10.0.0.6".parse().unwrap()));
        assert!(allow.permits("2001:db8::9".parse().unwrap()));
        assert!(
            Allowlist::parse(&["nonsense".into()])
                .unwrap_err()
                .contains("nonsense")
        );
    }
}
