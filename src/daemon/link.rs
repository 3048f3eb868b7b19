//! This host's link speed, which a version 5 daemon tells the others in its claims and
//! answers, so that a host on a clearly slower link (a Wi-Fi laptop beside wired desktops)
//! neither leads the LAN's mirror downloads nor relays them to faster hosts
//! ([`crate::protocol::clearly_slower`], [`crate::daemon::claims`]).
//!
//! Why not measure it: a host learns its link's speed from traffic only when something uses
//! all of it, and a wired desktop that only ever followed Wi-Fi laptops never saw more than
//! Wi-Fi speed (tried: it made the desktops look as slow as the laptops). The kernel knows
//! instead. For each interface the daemon answers on, sysfs tells a wired NIC's negotiated
//! speed (`/sys/class/net/<if>/speed`, where `<if>/device` shows it is hardware) or that it is
//! wireless (`<if>/wireless`, `<if>/phy80211`), which counts as [`WIRELESS_MBIT`]: what a Wi-Fi
//! link carries to a LAN peer is a fraction of its rate on paper, shared with every other host
//! on the channel, and nowhere to be read. The fastest interface of known speed counts (a
//! docked laptop talks over its cable; a desktop's bridge, bond or VLAN runs over a NIC that is
//! up too; `docker0`, `virbr0` or a VPN beside Wi-Fi do not make the laptop's link unknown);
//! an interface without carrier does not count. Where no interface has a known speed (a
//! virtual machine, the test rig's veths) the speed is unknown (0), which makes no host slower
//! than another. The upload limit, when set, lowers what the kernel says. `link-speed` in the
//! daemon's configuration sets it outright, for where the kernel is wrong.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::netif;

/// What a wireless interface counts as, in Mbit/s.
pub const WIRELESS_MBIT: u16 = 100;
/// How long a reading stands: cables are plugged and Wi-Fi laptops docked.
const FRESH: Duration = Duration::from_secs(30);

/// This host's link, read lazily and again every [`FRESH`].
pub struct Link {
    /// `link-speed` from the configuration: the speed, whatever sysfs says.
    setting: Option<u16>,
    /// Bytes per second all peers together may take; 0: no limit.
    upload_limit: u64,
    /// The interfaces the daemon answers on (empty: the automatic choice).
    interfaces: Vec<String>,
    sys: PathBuf,
    read: Mutex<Option<(u16, Instant)>>,
}

impl Link {
    pub fn new(setting: Option<u16>, upload_limit: u64, interfaces: Vec<String>) -> Self {
        Link {
            setting,
            upload_limit,
            interfaces,
            sys: PathBuf::from("/sys/class/net"),
            read: Mutex::new(None),
        }
    }

    /// The speed in Mbit/s, 0 if unknown.
    pub fn mbit(&self) -> u16 {
        if let Some(mbit) = self.setting {
            return mbit;
        }
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mbit, at)) = *read
            && at.elapsed() < FRESH
        {
            return mbit;
        }
        let names: Vec<String> = netif::discovery_interfaces(&self.interfaces)
            .into_iter()
            .map(|i| i.name)
            .collect();
        let mbit = capped(of_interfaces(&self.sys, &names), self.upload_limit);
        *read = Some((mbit, Instant::now()));
        mbit
    }
}

/// The link speed of interfaces `names` as `sys` (a `/sys/class/net`) shows them; see the
/// module doc.
pub fn of_interfaces(sys: &Path, names: &[String]) -> u16 {
    let mut best = 0;
    for name in names {
        if let Speed::Mbit(mbit) = interface(&sys.join(name)) {
            best = best.max(mbit);
        }
    }
    best
}

/// `mbit` lowered to an upload limit of `limit` bytes per second (0: none), never to 0 (which
/// would say "unknown").
pub fn capped(mbit: u16, limit: u64) -> u16 {
    if limit == 0 {
        return mbit;
    }
    let limit = u16::try_from((limit.saturating_mul(8) / 1_000_000).max(1)).unwrap_or(u16::MAX);
    match mbit {
        0 => limit,
        mbit => mbit.min(limit),
    }
}

enum Speed {
    /// No carrier, or no known speed: says nothing.
    Unknown,
    Mbit(u16),
}

fn interface(dir: &Path) -> Speed {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    // No carrier: it carries nothing (an unplugged dock's NIC).
    if read("carrier").is_some_and(|c| c.trim() == "0") {
        return Speed::Unknown;
    }
    if dir.join("wireless").is_dir() || dir.join("phy80211").exists() {
        return Speed::Mbit(WIRELESS_MBIT);
    }
    if !dir.join("device").exists() {
        return Speed::Unknown;
    }
    // -1 (or an error) while the speed is unknown, e.g. a virtual machine's NIC.
    match read("speed").and_then(|s| s.trim().parse::<i64>().ok()) {
        Some(mbit) if mbit > 0 => Speed::Mbit(u16::try_from(mbit).unwrap_or(u16::MAX)),
        _ => Speed::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn nic(sys: &Path, name: &str, files: &[(&str, &str)], dirs: &[&str]) {
        let dir = sys.join(name);
        fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            fs::write(dir.join(file), text).unwrap();
        }
        for d in dirs {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
    }

    #[test]
    fn the_kernels_view_gives_the_speed() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        // Name, speed, carrier, directories.
        let nics: [(&str, &str, &str, &[&str]); 5] = [
            ("enp1s0", "1000", "1", &["device"]),
            ("enp2s0", "-1", "0", &["device"]),
            ("wlan0", "", "1", &["device", "wireless"]),
            ("br0", "10000", "1", &["bridge"]),
            ("vm0", "-1", "1", &["device"]),
        ];
        for (name, speed, carrier, dirs) in nics {
            let mut files = vec![("carrier", carrier)];
            if !speed.is_empty() {
                files.push(("speed", speed));
            }
            nic(sys, name, &files, dirs);
        }
        let of = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            of_interfaces(sys, &names)
        };
        assert_eq!(of(&["enp1s0"]), 1000);
        assert_eq!(of(&["wlan0"]), WIRELESS_MBIT);
        // Docked: the cable counts; unplugged, the Wi-Fi.
        assert_eq!(of(&["enp1s0", "wlan0"]), 1000);
        assert_eq!(of(&["enp2s0", "wlan0"]), WIRELESS_MBIT);
        // A bridge (what it bridges is not known), a NIC of no known speed, or one that is
        // gone tell nothing: the others count, and with none, unknown.
        assert_eq!(of(&["br0", "wlan0"]), WIRELESS_MBIT);
        assert_eq!(of(&["br0", "enp1s0"]), 1000);
        assert_eq!(of(&["br0", "vm0"]), 0);
        assert_eq!(of(&["vm0"]), 0);
        assert_eq!(of(&["gone0"]), 0);
        assert_eq!(of(&[]), 0);
    }

    #[test]
    fn an_upload_limit_lowers_the_speed() {
        assert_eq!(capped(1000, 0), 1000);
        assert_eq!(capped(1000, 1_250_000), 10);
        assert_eq!(capped(5, 1_250_000), 5);
        // Unknown link, known limit: the limit. A tiny limit is still a speed.
        assert_eq!(capped(0, 12_500_000), 100);
        assert_eq!(capped(0, 1), 1);
        assert_eq!(capped(100, u64::MAX / 8), 100);
    }

    #[test]
    fn a_setting_overrides_the_kernel() {
        let link = Link::new(Some(40), 0, vec!["no-such-interface".into()]);
        assert_eq!(link.mbit(), 40);
    }
}
