//! Hosts upgrading together (issue 12): N hosts, each with pacserved over its own pacman cache,
//! install the same 15 packages of 2 MB at the same moment through pacserve-fetch (real pacman);
//! the mirror sits behind a shared 80 Mbit/s uplink 10 ms away (tc tbf and the frame relay on
//! the mirror host's link).
//!
//! Figures: bytes the mirror sent ÷ bytes of the packages (8.0 would be every host fetching
//! everything; goal ≤ 1.25), and the slowest host's time ÷ a lone host's time for the same
//! install on the same LAN, measured in the same run (goal ≤ 1.3). Host counts: 8 and 16, or
//! `PACSERVE_TOGETHER_HOSTS` (comma-separated). `PACSERVE_TOGETHER_LINKS` gives every host's
//! link a speed, both ways, as a switch port would (comma-separated `tc` rates, one per host
//! count, e.g. `200mbit,1gbit`; `unlimited` for none): an unlimited veth hides that one host
//! feeding everyone is a bottleneck (issue 21). `slow/fast` (e.g. `50mbit/1gbit`) puts the first
//! half of the hosts on the first rate and the rest on the second, a LAN of Wi-Fi laptops and
//! wired desktops: slowest ÷ lone is then given per half, each against a lone host of its half.
//! There each host's kernel shows its link as a real one would (the veths show none): a
//! wireless interface on the slow half, a 1000 Mbit/s NIC on the fast half
//! ([`KernelLink`]); the daemons read it as they would on real hosts, nothing set. Also
//! printed: the most bytes one host uploaded to peers ÷ the packages' bytes (each daemon's
//! `pacserved_served_bytes_total`; goal ≤ 2.5).

use std::fs;
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo};
use crate::daemon::{Daemon, KernelLink};
use crate::netns::{Family, Lan};
use crate::nginx::Nginx;
use crate::util::{fetch_bin, tempdir};

const PACKAGES: usize = 15;
const PAYLOAD: usize = 2_000_000;
const ONE_WAY: Duration = Duration::from_millis(10);
const RATE: &str = "80mbit";

pub fn run() {
    if !crate::archrepo::require_pacman_tools()
        || !crate::util::require_tools(&["ethtool", "nginx"])
    {
        return;
    }
    let counts: Vec<usize> = std::env::var("PACSERVE_TOGETHER_HOSTS")
        .unwrap_or_else(|_| "8,16".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let links: Vec<Option<String>> = std::env::var("PACSERVE_TOGETHER_LINKS")
        .unwrap_or_default()
        .split(',')
        .map(|l| Some(l.trim().to_owned()).filter(|l| !l.is_empty() && l != "unlimited"))
        .collect();
    for (i, hosts) in counts.into_iter().enumerate() {
        scenario(hosts, links.get(i).cloned().flatten());
    }
}

fn scenario(hosts: usize, link: Option<String>) {
    let lan = Lan::new(hosts + 1, Family::Dual).expect("LAN");
    let mirror_host = hosts + 1;
    // `slow/fast`: the first half of the hosts on the first rate (Wi-Fi, say), the rest on the
    // second.
    let (first_half, second_half) = match link.as_deref().and_then(|l| l.split_once('/')) {
        Some((slow, fast)) => (Some(slow.to_owned()), Some(fast.to_owned())),
        None => (link.clone(), link.clone()),
    };
    let mixed = first_half != second_half;
    let half = hosts.div_ceil(2);
    let rate_of = |i: usize| match i <= half {
        true => first_half.clone(),
        false => second_half.clone(),
    };
    let kernel_link = |i: usize| match (mixed, i <= half) {
        (false, _) => None,
        (true, true) => Some(KernelLink::Wireless),
        (true, false) => Some(KernelLink::Wired(1000)),
    };
    let start_daemon = |i: usize, cache: &std::path::Path| match kernel_link(i) {
        Some(link) => Daemon::start_on_link(lan.host(i), cache, &[], &[], link),
        None => Daemon::start(lan.host(i), cache, &[]),
    };
    for i in 1..=hosts {
        if let Some(rate) = rate_of(i) {
            lan.limit_link(i, &rate);
        }
    }
    let root = tempdir();
    let repo = Repo::create(root.path(), "tb");
    let names: Vec<String> = (0..PACKAGES).map(|i| format!("tb{i}")).collect();
    let files: Vec<String> = names.iter().map(|n| repo.add_package(n, PAYLOAD)).collect();
    let package_bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(repo.dir.join(f)).unwrap().len())
        .sum();
    let mirror = Nginx::mirror_on(lan.host(mirror_host), root.path()).expect("nginx");
    assert!(
        lan.delay_link(mirror_host, ONE_WAY),
        "the long link needs ethtool"
    );
    lan.limit_rate(mirror_host, RATE);
    let url = format!("http://{}:8080/tb", lan.ipv4(mirror_host));
    let xfer = Pacman::lan_xfer_line(fetch_bin());
    let memory = tempdir();
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.path().as_os_str())];
    let mut targets = vec!["-S"];
    targets.extend(names.iter().map(String::as_str));

    // Every host: a fresh pacman (synced) and its daemon over its cache.
    let setup = |count: usize| -> Vec<(Pacman, Daemon)> {
        let nodes: Vec<(Pacman, Daemon)> = (1..=count)
            .map(|i| {
                let pacman = Pacman::new(Some(&xfer), &[("tb", url.clone())]);
                let daemon = start_daemon(i, &pacman.cache());
                (pacman, daemon)
            })
            .collect();
        for (i, (pacman, _)) in nodes.iter().enumerate() {
            let synced = pacman.run_in(lan.host(i + 1), &env, &["-Sy"]);
            assert!(synced.status.success(), "host {}: -Sy", i + 1);
        }
        nodes
    };
    let sent_for_packages = || -> u64 { files.iter().map(|f| mirror.body_bytes(f)).sum() };

    // A lone host, on the same LAN with nobody else running: host `i`, on its own link.
    let lone_on = |i: usize| {
        let pacman = Pacman::new(Some(&xfer), &[("tb", url.clone())]);
        let _daemon = start_daemon(i, &pacman.cache());
        let synced = pacman.run_in(lan.host(i), &env, &["-Sy"]);
        assert!(synced.status.success(), "lone host {i}: -Sy");
        let started = Instant::now();
        let out = pacman.run_in(lan.host(i), &env, &targets);
        assert!(
            out.status.success(),
            "lone host {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed().as_secs_f64()
    };
    let lone = lone_on(1);
    let lone_second_half = mixed.then(|| lone_on(hosts));
    let before = sent_for_packages();

    // Everyone at once.
    let nodes = setup(hosts);
    let busy_before = machine_busy();
    let daemons_cpu = || -> f64 { nodes.iter().map(|(_, d)| super::cpu_seconds(d.pid())).sum() };
    let daemons_before = daemons_cpu();
    let children_before = children_cpu();
    let started = Instant::now();
    let children: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, (pacman, _))| {
            pacman
                .command_in(lan.host(i + 1), &env, &targets)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("pacman")
        })
        .collect();
    let waits: Vec<_> = children
        .into_iter()
        .map(|child| {
            std::thread::spawn(move || {
                let out = child.wait_with_output().expect("pacman ran");
                (out, started.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut times = Vec::new();
    for (i, wait) in waits.into_iter().enumerate() {
        let (out, seconds) = wait.join().expect("waiter");
        assert!(
            out.status.success(),
            "host {}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        for file in &files {
            assert_eq!(
                fs::read(nodes[i].0.cache().join(file)).ok(),
                fs::read(repo.dir.join(file)).ok(),
                "host {}: {file}",
                i + 1
            );
        }
        times.push(seconds);
    }
    let busy = machine_busy().since(&busy_before);
    let uploaded: Vec<f64> = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            d.metrics(lan.host(i + 1))
                .get("pacserved_served_bytes_total")
                .copied()
                .unwrap_or(0.0)
        })
        .collect();
    let most = uploaded.iter().copied().fold(0.0, f64::max);
    // How the downloads were shared: per host, claims led and followed, and follows that went
    // back to the mirror.
    let shared: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            let m = d.metrics(lan.host(i + 1));
            let get = |name: &str| m.get(name).copied().unwrap_or(0.0);
            format!(
                "{}/{}/{}",
                get("pacserved_claims_led_total"),
                get("pacserved_claims_followed_total"),
                get("pacserved_follow_failures_total")
            )
        })
        .collect();
    let daemons_used = daemons_cpu() - daemons_before;
    let children_used = children_cpu() - children_before;
    let sent = sent_for_packages() - before;
    let slowest = times.iter().cloned().fold(0.0, f64::max);
    println!(
        "together: {hosts} hosts on {} links, real pacman -S of {PACKAGES} × 2 MB at once, mirror {} ms away at {RATE} shared:",
        link.as_deref().unwrap_or("unlimited"),
        ONE_WAY.as_millis()
    );
    println!(
        "  mirror sent {:.2}× the packages' bytes (goal ≤ 1.25); slowest host {slowest:.2} s, lone host {lone:.2} s: {:.2}× (goal ≤ 1.3)",
        sent as f64 / package_bytes as f64,
        slowest / lone
    );
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let shown: Vec<String> = sorted.iter().map(|t| format!("{t:.2}")).collect();
    println!("  every host, fastest first (s): {}", shown.join(" "));
    if let Some(lone_fast) = lone_second_half {
        let slowest_of = |range: std::ops::RangeInclusive<usize>| {
            range.map(|i| times[i - 1]).fold(0.0, f64::max)
        };
        let most_of = |range: std::ops::RangeInclusive<usize>| {
            range.map(|i| uploaded[i - 1]).fold(0.0, f64::max) / package_bytes as f64
        };
        println!(
            "  hosts 1-{half} on {}: slowest {:.2} s ÷ lone {lone:.2} s = {:.2}×, most one uploaded {:.1}× the packages; \
             hosts {}-{hosts} on {}: slowest {:.2} s ÷ lone {lone_fast:.2} s = {:.2}×, most one uploaded {:.1}×",
            first_half.as_deref().unwrap_or("unlimited"),
            slowest_of(1..=half),
            slowest_of(1..=half) / lone,
            most_of(1..=half),
            half + 1,
            second_half.as_deref().unwrap_or("unlimited"),
            slowest_of(half + 1..=hosts),
            slowest_of(half + 1..=hosts) / lone_fast,
            most_of(half + 1..=hosts),
        );
    }
    let spread: Vec<String> = uploaded
        .iter()
        .map(|b| format!("{:.1}", b / package_bytes as f64))
        .collect();
    println!(
        "  most one host uploaded: {:.1}× the packages' bytes (goal ≤ 2.5); per host: {}",
        most / package_bytes as f64,
        spread.join(" ")
    );
    println!(
        "  per host, claims led/followed/followed copies left for the mirror: {}",
        shared.join(" ")
    );
    println!(
        "  this machine's {} cores were {:.0}% busy while they ran",
        busy.cores,
        busy.share() * 100.0
    );
    println!("  CPU: daemons {daemons_used:.2} s, pacman and pacserve-fetch {children_used:.2} s");
}

fn children_cpu() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// Jiffies the whole machine spent busy and idle, from /proc/stat: whether a figure measures
/// the design or the simulation's cores, since every host here shares them.
struct Busy {
    busy: u64,
    idle: u64,
    cores: usize,
}

impl Busy {
    fn since(&self, before: &Busy) -> Busy {
        Busy {
            busy: self.busy - before.busy,
            idle: self.idle - before.idle,
            cores: self.cores,
        }
    }

    fn share(&self) -> f64 {
        self.busy as f64 / (self.busy + self.idle).max(1) as f64
    }
}

fn machine_busy() -> Busy {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().take(8).sum();
    Busy {
        busy: total - idle,
        idle,
        cores: stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count(),
    }
}
