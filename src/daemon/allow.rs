//! Who may talk to the daemon at all: an allowlist of networks.
//!
//! By default only addresses that cannot be routed from the internet: loopback, link-local and
//! the private ranges of IPv4 and IPv6. A LAN sharing service has no business answering anyone
//! else, whatever the firewall says. A configured list replaces the default entirely. Sources
//! outside it get no UDP answer, and their HTTP connections are closed on arrival, before they
//! are read or hold any of the connection slots the allowed hosts need.

use std::net::IpAddr;

use ipnet::IpNet;

/// The default networks, in the order they are shown.
pub const DEFAULT: [&str; 8] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist(Vec<IpNet>);

impl Default for Allowlist {
    fn default() -> Allowlist {
        Allowlist::parse(&DEFAULT.map(str::to_owned)).unwrap_or(Allowlist(Vec::new()))
    }
}

impl Allowlist {
    /// Networks as `ADDR/PREFIX` or a bare address (a single host).
    pub fn parse(networks: &[String]) -> Result<Allowlist, String> {
        networks
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("not a network or address: {text:?}"))
            })
            .collect::<Result<_, _>>()
            .map(Allowlist)
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is inside one of the networks.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
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
            "100.64.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!allow.permits(no.parse().unwrap()), "{no}");
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
