//! Which interfaces a query goes out on, and why the others do not.
//!
//! Every query tells the whole link the name of the package being fetched. On a network the user
//! does not trust (café or hotel Wi-Fi) that is a leak, so besides naming interfaces
//! (`--interface`, `interfaces =`) the user can name the networks to ask on (`--network`,
//! `networks =`): a query then goes out only on an interface with an address inside one of them,
//! so a laptop asks at home and stays silent elsewhere, whatever its interfaces are called. Static
//! peers are named one by one and are asked either way. `-v` says why each interface that could
//! have been asked was skipped ([`Chosen::skipped`]).

use ipnet::IpNet;

use crate::protocol::netif::{self, Interface};

/// The interfaces to ask on, and a sentence for each one left out.
#[derive(Debug, Default)]
pub struct Chosen {
    pub interfaces: Vec<Interface>,
    pub skipped: Vec<String>,
}

/// The interfaces this machine has now, chosen by `names` (empty: every up, multicast-capable,
/// non-loopback one) and `networks` (empty: any).
pub fn choose(names: &[String], networks: &[IpNet]) -> Chosen {
    let automatic = netif::discovery_interfaces(&[]);
    let named = match names.is_empty() {
        true => automatic.clone(),
        false => netif::discovery_interfaces(names),
    };
    filter(automatic, named, names, networks)
}

/// [`choose`] over given interfaces: `automatic` those a query would go out on by default,
/// `named` those the names pick.
fn filter(
    automatic: Vec<Interface>,
    named: Vec<Interface>,
    names: &[String],
    networks: &[IpNet],
) -> Chosen {
    let mut skipped: Vec<String> = automatic
        .iter()
        .filter(|i| !names.is_empty() && !names.contains(&i.name))
        .map(|i| {
            format!(
                "not asking on {}: not among the interfaces chosen ({})",
                i.name,
                names.join(", ")
            )
        })
        .collect();
    let (interfaces, outside): (Vec<_>, Vec<_>) = named.into_iter().partition(|i| {
        networks.is_empty()
            || i.addresses()
                .any(|a| networks.iter().any(|n| n.contains(&a)))
    });
    let chosen: Vec<String> = networks.iter().map(IpNet::to_string).collect();
    skipped.extend(outside.iter().map(|i| {
        let addresses: Vec<String> = i.addresses().map(|a| a.to_string()).collect();
        format!(
            "not asking on {} ({}): none of its addresses is in the networks chosen ({}; \
             --network, networks = in the configuration)",
            i.name,
            match addresses.is_empty() {
                true => "no address".to_owned(),
                false => addresses.join(", "),
            },
            chosen.join(", ")
        )
    }));
    Chosen {
        interfaces,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, ipv4: &[&str], ipv6: &[&str]) -> Interface {
        Interface {
            name: name.to_owned(),
            index: 1,
            ipv4: ipv4.iter().map(|a| a.parse().unwrap()).collect(),
            ipv6: ipv6.iter().map(|a| a.parse().unwrap()).collect(),
            has_ipv6: !ipv6.is_empty(),
        }
    }

    #[test]
    fn only_interfaces_on_the_chosen_networks_are_asked_and_the_rest_are_explained() {
        let home = interface("enp3s0", &["192.168.1.20"], &["fe80::1"]);
        let cafe = interface("wlan0", &["10.22.0.5"], &["fe80::2"]);
        let both = vec![home.clone(), cafe.clone()];
        let everything = filter(both.clone(), both.clone(), &[], &[]);
        assert_eq!(everything.interfaces, both);
        assert!(everything.skipped.is_empty());

        let nets = netif::parse_networks(&["192.168.1.0/24".to_owned()]).unwrap();
        let at_home = filter(both.clone(), both.clone(), &[], &nets);
        assert_eq!(at_home.interfaces, std::slice::from_ref(&home));
        assert_eq!(
            at_home.skipped,
            [
                "not asking on wlan0 (10.22.0.5, fe80::2): none of its addresses is in the \
              networks chosen (192.168.1.0/24; --network, networks = in the configuration)"
            ]
        );
        let ula = netif::parse_networks(&["fd00::/8".to_owned()]).unwrap();
        assert!(
            filter(both.clone(), both.clone(), &[], &ula)
                .interfaces
                .is_empty()
        );

        let names = ["enp3s0".to_owned()];
        let named = filter(both, vec![home.clone()], &names, &[]);
        assert_eq!(named.interfaces, [home]);
        assert_eq!(
            named.skipped,
            ["not asking on wlan0: not among the interfaces chosen (enp3s0)"]
        );
    }
}
