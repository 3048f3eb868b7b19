//! Which answers to a query are believed at all: only those from the link the query went out
//! on, or from a static peer we asked by name, and only from the port we asked.
//!
//! An answer tells the client where to send an HTTP GET. Taken from anywhere, it would let a host
//! off the LAN (or one spoofing a far address) point clients at any host. A multicast query with
//! TTL 1 only reaches the local link, so an honest answer comes from an address on that link: an
//! IPv6 link-local address scoped to an interface we queried on, or an address inside one of that
//! interface's subnets. And a daemon answers from the socket it listens on, so the source port is
//! the port we sent to; an unprivileged process on a peer host cannot bind that port while the
//! daemon runs.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use nix::ifaddrs::getifaddrs;

use crate::protocol::netif::Interface;

/// Where believable answers come from for one query.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Subnets of the interfaces the multicast query went out on.
    nets: Vec<IpNet>,
    /// Their indices, for IPv6 link-local sources.
    scopes: HashSet<u32>,
    /// The UDP port multicast queries went to.
    port: u16,
    /// Static peers, exactly as asked.
    peers: HashSet<SocketAddr>,
}

impl Links {
    /// The links of `interfaces` (those queried by multicast) and the static `peers`.
    pub fn new(interfaces: &[Interface], port: u16, peers: &[SocketAddr]) -> Links {
        let names: HashSet<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        Links {
            nets: subnets(|name| names.contains(name)),
            scopes: interfaces.iter().map(|i| i.index).collect(),
            port,
            peers: peers.iter().copied().collect(),
        }
    }

    /// Whether an answer from `from` is believed.
    pub fn accepts(&self, from: SocketAddr) -> bool {
        if self.peers.contains(&from) {
            return true;
        }
        if from.port() != self.port {
            return false;
        }
        match from {
            SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() => {
                self.scopes.contains(&v6.scope_id())
            }
            _ => self.nets.iter().any(|net| net.contains(&from.ip())),
        }
    }
}

/// The subnets of this host's interfaces whose name `wanted` accepts.
pub fn subnets(wanted: impl Fn(&str) -> bool) -> Vec<IpNet> {
    getifaddrs()
        .map(|addrs| {
            addrs
                .filter(|ifa| wanted(&ifa.interface_name))
                .filter_map(|ifa| subnet(ifa.address?, ifa.netmask?))
                .collect()
        })
        .unwrap_or_default()
}

/// The subnet of one interface address.
fn subnet(
    address: nix::sys::socket::SockaddrStorage,
    netmask: nix::sys::socket::SockaddrStorage,
) -> Option<IpNet> {
    let (ip, mask): (IpAddr, IpAddr) = match (address.as_sockaddr_in(), netmask.as_sockaddr_in()) {
        (Some(a), Some(m)) => (a.ip().into(), m.ip().into()),
        _ => {
            let a = address.as_sockaddr_in6()?;
            let m = netmask.as_sockaddr_in6()?;
            (a.ip().into(), m.ip().into())
        }
    };
    IpNet::with_netmask(ip, mask).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_from_the_link_and_the_port_asked() {
        let links = Links {
            nets: vec!["10.1.0.0/24".parse().unwrap()],
            scopes: HashSet::from([3]),
            port: 15678,
            peers: HashSet::from(["192.0.2.7:4000".parse().unwrap()]),
        };
        assert!(links.accepts("10.1.0.9:15678".parse().unwrap()));
        assert!(
            !links.accepts("10.1.0.9:15680".parse().unwrap()),
            "other port"
        );
        assert!(
            !links.accepts("10.2.0.9:15678".parse().unwrap()),
            "off-link"
        );
        assert!(
            links.accepts("192.0.2.7:4000".parse().unwrap()),
            "static peer"
        );
        assert!(!links.accepts("192.0.2.7:15678".parse().unwrap()));
        assert!(links.accepts("[fe80::1%3]:15678".parse().unwrap()));
        assert!(
            !links.accepts("[fe80::1%4]:15678".parse().unwrap()),
            "other link"
        );
    }
}
