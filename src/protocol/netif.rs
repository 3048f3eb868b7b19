//! Which network interfaces discovery uses, on both sides.
//!
//! By default: every interface that is up, multicast-capable and not loopback — the LAN the
//! machine is on, however many there are (wired plus Wi-Fi, VLANs). Naming interfaces replaces
//! that choice entirely, which is also how loopback is used for tests on one machine.
//! Both the client and the daemon ask again each time (the daemon every few seconds), so a
//! laptop that joins a network later is noticed without a restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// One interface with the addresses discovery cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// True when IPv6 multicast can be sent: the interface has an IPv6 address.
    pub has_ipv6: bool,
}

/// The interfaces to use: `only` when given (by name), else the automatic choice above.
pub fn discovery_interfaces(only: &[String]) -> Vec<Interface> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for ifa in addrs {
        let flags = ifa.flags;
        let wanted = if only.is_empty() {
            flags.contains(InterfaceFlags::IFF_UP)
                && flags.contains(InterfaceFlags::IFF_MULTICAST)
                && !flags.contains(InterfaceFlags::IFF_LOOPBACK)
        } else {
            flags.contains(InterfaceFlags::IFF_UP) && only.contains(&ifa.interface_name)
        };
        if !wanted {
            continue;
        }
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| Interface {
                index: nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0),
                name: ifa.interface_name.clone(),
                ipv4: Vec::new(),
                ipv6: Vec::new(),
                has_ipv6: false,
            });
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            entry.ipv4.push(v4.ip());
        } else if let Some(v6) = address.as_sockaddr_in6() {
            entry.ipv6.push(v6.ip());
            entry.has_ipv6 = true;
        }
    }
    by_name.into_values().filter(|i| i.index != 0).collect()
}

/// Every address of this host, on any interface: answers from these come from our own daemon.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let address = ifa.address?;
            address
                .as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .collect()
}

/// Whether an interface of this name exists (up or not).
pub fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

impl Interface {
    /// Its addresses, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.ipv4.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }
}

/// Networks written as `ADDR/PREFIX`, or a bare address (that one host); the error names the
/// first that is neither.
pub fn parse_networks(texts: &[String]) -> Result<Vec<IpNet>, String> {
    texts
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("not a network or address: {text:?}"))
        })
        .collect()
}
