//! Simulated LANs on one machine, so discovery never runs in the root network namespace.
//!
//! - [`Host::loopback`]: a private network namespace made with `unshare -rn` (no root needed)
//!   where only `lo` exists, with multicast routed to it; several daemons share it.
//! - [`Lan::new`]: as root, `ip netns` hosts joined by veth pairs to a bridge that lives in its
//!   own namespace, so nothing touches the real network (see shared/reference/simulated-lan.md).
//!
//! Every namespace and process made here is removed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::util::{self, require, require_tools};

/// Somewhere to run commands: a loopback-only namespace or a host of a [`Lan`].
pub enum Host {
    Loopback { holder: Child },
    Netns { name: String },
}

impl Host {
    /// A rootless private namespace with `lo` up and multicast (v4 and v6) routed over it.
    pub fn loopback() -> Option<Host> {
        if !require(util::can_unshare(), "unshare -rn is not permitted here")
            || !require_tools(&["ip", "nsenter"])
        {
            return None;
        }
        let script = "ip link set lo up && ip route add 224.0.0.0/4 dev lo && \
                      ip -6 route add local ff00::/8 dev lo table local && echo ready && exec sleep 600";
        let mut holder = Command::new("unshare")
            .args(["-rn", "sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn namespace holder");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("holder stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("namespace ready line");
        assert_eq!(line.trim(), "ready", "namespace setup failed");
        Some(Host::Loopback { holder })
    }

    /// A command that runs `program` inside this host's network namespace.
    pub fn command(&self, program: &str) -> Command {
        match self {
            Host::Loopback { holder } => {
                let mut cmd = Command::new("nsenter");
                cmd.args([
                    "-t",
                    &holder.id().to_string(),
                    "-U",
                    "-n",
                    "--preserve-credentials",
                    "--",
                ]);
                cmd.arg(program);
                cmd
            }
            Host::Netns { name } => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", name, program]);
                cmd
            }
        }
    }

    /// `pacserve-fetch --who-has NAME` run here with a 300 ms peer wait: its listing.
    pub fn who_has(&self, name: &str) -> String {
        let out = util::run(
            self.command(util::fetch_bin())
                .env("TMPDIR", util::lan_memory_dir())
                .args([
                    "--config",
                    "/dev/null",
                    "--peer-wait",
                    "300",
                    "--who-has",
                    name,
                ]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pacserve-fetch` run here for `name` into `out` from LAN peers alone (the mirror URL is
    /// dead), unverified (no sync database lists the file).
    pub fn fetch_from_peers(&self, out: &std::path::Path, name: &str) -> std::process::Output {
        util::run(
            self.command(util::fetch_bin())
                .env("TMPDIR", util::lan_memory_dir())
                .args(["--config", "/dev/null", "--unverified-peers"])
                .arg(out)
                .arg(format!("http://127.0.0.1:9/dead-mirror/{name}")),
        )
    }

    /// Runs a shell snippet in the host and asserts it succeeded.
    pub fn sh(&self, script: &str) -> std::process::Output {
        let out = util::run(self.command("sh").args(["-c", script]));
        assert!(out.status.success(), "in namespace: {script}");
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        match self {
            Host::Loopback { holder } => {
                let _ = holder.kill();
                let _ = holder.wait();
            }
            Host::Netns { name } => {
                let _ = Command::new("ip")
                    .args(["netns", "pids", name])
                    .output()
                    .map(|o| {
                        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                            let _ = Command::new("kill").args(["-9", pid]).status();
                        }
                    });
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

/// Address families a [`Lan`] gives its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Dual,
    Ipv6Only,
}

/// `n` hosts on one bridge. Host `i` (1-based) is `10.77.<net>.i/24` and `fd77:<net>::i/64`.
pub struct Lan {
    pub hosts: Vec<Host>,
    pub family: Family,
    /// Kept for its Drop: the bridge's namespace goes with the LAN.
    _switch: Host,
    net: u16,
}

impl Lan {
    pub fn new(n: usize, family: Family) -> Option<Lan> {
        if !require(
            util::is_root(),
            "multi-host namespace LAN needs root (ip netns)",
        ) || !require_tools(&["ip"])
        {
            return None;
        }
        // A per-process prefix keeps parallel tests and leftovers of killed runs apart.
        let net = (std::process::id() % 200) as u16
            + (NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u16 * 7 % 50);
        let tag = format!("ps{}x{net}", std::process::id());
        let switch_name = format!("{tag}sw");
        let ok = |cmd: &mut Command| assert!(util::run(cmd).status.success(), "{cmd:?}");
        ok(Command::new("ip").args(["netns", "add", &switch_name]));
        let switch = Host::Netns {
            name: switch_name.clone(),
        };
        switch.sh("ip link set lo up && ip link add br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0 && ip link set br0 up");
        let mut hosts = Vec::new();
        for i in 1..=n {
            let name = format!("{tag}h{i}");
            ok(Command::new("ip").args(["netns", "add", &name]));
            let host = Host::Netns { name: name.clone() };
            host.sh(&format!(
                "ip link set lo up && ip link add eth0 type veth peer name p{i} && ip link set p{i} netns {switch_name} && \
                 sysctl -qw net.ipv6.conf.eth0.accept_dad=0 && ip link set eth0 up"
            ));
            switch.sh(&format!(
                "ip link set p{i} master br0 && ip link set p{i} up"
            ));
            let mut setup = format!("ip -6 addr add fd77:{net:x}::{i}/64 dev eth0 nodad");
            if family == Family::Dual {
                setup.push_str(&format!(" && ip addr add 10.77.{net}.{i}/24 dev eth0 && ip route add 224.0.0.0/4 dev eth0"));
            }
            host.sh(&setup);
            hosts.push(host);
        }
        let lan = Lan {
            hosts,
            family,
            _switch: switch,
            net,
        };
        lan.wait_for_link_local();
        Some(lan)
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// The address other hosts use for host `i`, as a URL host.
    pub fn url_host(&self, i: usize) -> String {
        match self.family {
            Family::Dual => format!("10.77.{}.{i}", self.net),
            Family::Ipv6Only => format!("[fd77:{:x}::{i}]", self.net),
        }
    }

    pub fn ipv4(&self, i: usize) -> String {
        format!("10.77.{}.{i}", self.net)
    }

    /// Waits until host 1 hears at least `n` daemons: a fresh bridge forwards nothing for a
    /// moment after its ports come up (≈0.5 s here), and tests should measure discovery, not
    /// link bring-up.
    pub fn wait_for_daemons(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = self
                .host(1)
                .command(util::fetch_bin())
                .args(["--config", "/dev/null", "--list-peers"])
                .output()
                .expect("run pacserve-fetch --list-peers");
            let heard = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .and_then(|l| l.split_whitespace().next()?.parse::<usize>().ok())
                .unwrap_or(0);
            if heard >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "host 1 never heard {n} daemons"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Pulls host `i`'s cable: its switch port goes down.
    pub fn unplug(&self, i: usize) {
        self._switch.sh(&format!("ip link set p{i} down"));
    }

    /// Limits what host `i` sends to `rate` (tc tbf, e.g. "16mbit").
    pub fn limit_rate(&self, i: usize, rate: &str) {
        self.host(i).sh(&format!(
            "tc qdisc add dev eth0 root tbf rate {rate} burst 64kb latency 400ms"
        ));
    }

    /// Limits host `i`'s link to `rate` in both directions, as a switch port of that speed
    /// would: its own egress, and the switch's egress towards it.
    #[allow(dead_code)] // used by benches/lan.rs
    pub fn limit_link(&self, i: usize, rate: &str) {
        self.limit_rate(i, rate);
        self._switch.sh(&format!(
            "tc qdisc add dev p{i} root tbf rate {rate} burst 64kb latency 400ms"
        ));
    }

    /// Puts `delay` of latency in each direction between host `i` and the bridge (a frame relay,
    /// see [`crate::relay`]): every other host then sees host `i` at a round trip of twice
    /// `delay`. Turns offloads off on every link so that frames stay one MTU long, with ethtool:
    /// false (after `util::require`, before anything changed) when ethtool is missing.
    #[must_use]
    pub fn delay_link(&self, i: usize, delay: std::time::Duration) -> bool {
        if !require_tools(&["ethtool"]) {
            return false;
        }
        let Host::Netns { name: switch } = &self._switch else {
            unreachable!("a LAN's switch is a named namespace")
        };
        let offloads_off = "tx off tso off gso off gro off";
        for host in &self.hosts {
            host.sh(&format!("ethtool -K eth0 {offloads_off}"));
        }
        let ports: Vec<String> = (1..=self.hosts.len()).map(|j| format!("p{j}")).collect();
        self._switch.sh(&format!(
            "ip link set p{i} nomaster && ip link add d{i}a type veth peer name d{i}b && \
             ip link set d{i}a master br0 && ip link set d{i}a up && ip link set d{i}b up && \
             ip link set p{i} promisc on && ip link set d{i}b promisc on && \
             for port in {ports} d{i}a d{i}b; do ethtool -K $port {offloads_off}; done",
            ports = ports.join(" ")
        ));
        crate::relay::start(switch, &format!("p{i}"), &format!("d{i}b"), delay);
        true
    }

    /// IPv6 link-local addresses appear a moment after the link comes up.
    fn wait_for_link_local(&self) {
        for host in &self.hosts {
            for _ in 0..100 {
                let out = host
                    .command("ip")
                    .args(["-6", "addr", "show", "dev", "eth0", "scope", "link"])
                    .output();
                if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("fe80::")) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
