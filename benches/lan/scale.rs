//! `scale` (issue 21): the miss cost with 250 daemons answering on one LAN, each pacserved in a
//! namespace of its own, against curl from the mirror in the same run; and the discovery
//! datagrams on the client's link per query, counted by nftables in the client's namespace
//! (queries it sent to UDP 15678, answers it received from there), for the first query of the
//! run (no memory of the LAN: it listens to everyone) and for the runs after it. Then a file one
//! of the daemons holds, fetched a few times: how often the client found that daemon.
//! `PACSERVE_SCALE_DAEMONS` sets another count.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::netns::{Family, Host};
use crate::nginx::Nginx;
use crate::util::{random_bytes, tempdir};
use crate::{curl, fetch, median, timed};

const DEFAULT_DAEMONS: usize = 250;
const ROUNDS: usize = 30;
const HITS: usize = 40;

pub fn run() {
    let n = std::env::var("PACSERVE_SCALE_DAEMONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| (1..=1000).contains(&n))
        .unwrap_or(DEFAULT_DAEMONS);
    // Host 1 the client, 2..=n+1 the daemons, n+2 the mirror.
    let setup = Instant::now();
    let lan = crate::netns::Lan::new(n + 2, Family::Dual).expect("LAN");
    let caches: Vec<_> = (0..n).map(|_| tempdir()).collect();
    let held = "held-1-1-any.pkg.tar.zst";
    let held_content = random_bytes(200_000, 3);
    // The last daemon started holds one file: a query must find it among all the others.
    fs::write(caches[n - 1].path().join(held), &held_content).unwrap();
    let daemons: Vec<Daemon> = caches
        .iter()
        .enumerate()
        .map(|(i, c)| Daemon::start(lan.host(i + 2), c.path(), &[]))
        .collect();
    let (mirror_root, memory, dir) = (tempdir(), tempdir(), tempdir());
    let miss = "miss-1-1-any.pkg.tar.zst";
    fs::write(mirror_root.path().join(miss), random_bytes(200_000, 2)).unwrap();
    fs::write(mirror_root.path().join(held), &held_content).unwrap();
    let mirror = Nginx::mirror_on(lan.host(n + 2), mirror_root.path()).expect("nginx");
    lan.wait_for_daemons(n);
    let (rss_mb, threads) = footprint(&daemons);
    println!(
        "scale, {n} daemons up in {:.0} s: their RSS together {rss_mb:.0} MB, {threads} threads",
        setup.elapsed().as_secs_f64()
    );

    // How the daemons' answers spread out in time: every simulated host shares this machine's
    // cores, so the last answer comes when the last daemon got its turn.
    let listing = (lan.host(1).command(crate::util::fetch_bin()))
        .args(["--config", "/dev/null", "--list-peers"])
        .output()
        .expect("--list-peers");
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    if !rtts.is_empty() {
        let at = |p: usize| rtts[(rtts.len() * p / 100).min(rtts.len() - 1)];
        println!(
            "scale, {n} daemons, round trips of a loud query's answers (--list-peers, {} heard): p10 {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, last {:.1} ms",
            rtts.len(),
            at(10),
            at(50),
            at(90),
            at(100)
        );
    }

    let counter = Counter::install(lan.host(1));
    let cpu = daemons_cpu(&daemons);
    let url = format!("http://{}:8080/{miss}", lan.ipv4(n + 2));
    let out = dir.path().join(format!("{miss}.part"));
    // Each fetch counts from just before it to just before the next fetch, so answers that
    // arrive after the client exited (during curl's turn) are counted against their query.
    let mut before = counter.read();
    let first = timed(&mut fetch(lan.host(1), memory.path(), &out, &url));
    let (mut ours, mut theirs, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let now = counter.read();
        wire.push(now.since(before));
        before = now;
        if round == ROUNDS {
            break;
        }
        ours.push(timed(&mut fetch(lan.host(1), memory.path(), &out, &url)));
        theirs.push(timed(&mut curl(lan.host(1), &out, &url)));
    }
    let cpu = (daemons_cpu(&daemons) - cpu) / (ROUNDS + 1) as f64;
    // What a later run says about its query (`-v`), outside the timed runs.
    let later_said = said(lan.host(1), memory.path(), &out, &url);
    let (o, t) = (median(ours), median(theirs));
    let first_wire = wire[0];
    let heard: Vec<f64> = wire[1..].iter().map(|w| w.heard() as f64).collect();
    let sent: Vec<f64> = wire[1..].iter().map(|w| w.sent as f64).collect();
    println!(
        "scale, {n} daemons, a file none has: pacserve-fetch median {o:.1} ms vs curl {t:.1} ms: {:+.1} ms per file (first: {first:.1} ms) [goal: +5 ms]",
        o - t
    );
    println!(
        "scale, {n} daemons, discovery datagrams on the client's link per query: first query {} sent, {} answers ({} over IPv4, {} over IPv6); the {ROUNDS} after it: median {:.0} sent, {:.0} answers (most {:.0})",
        first_wire.sent,
        first_wire.heard(),
        first_wire.heard_v4,
        first_wire.heard_v6,
        median(sent),
        median(heard.clone()),
        heard.iter().copied().fold(0.0, f64::max)
    );
    println!("scale, {n} daemons, a later run's -v: {later_said}");
    println!(
        "scale, {n} daemons: CPU the daemons spent per query, all together: {:.1} ms",
        cpu * 1e3
    );

    // A file only the last daemon holds: the client must still find it.
    let holder = &daemons[n - 1];
    let out = dir.path().join(format!("{held}.part"));
    let url = format!("http://{}:8080/{held}", lan.ipv4(n + 2));
    let mut times = Vec::new();
    for _ in 0..HITS {
        times.push(timed(&mut fetch(lan.host(1), memory.path(), &out, &url)));
        assert_eq!(fs::read(&out).unwrap(), held_content);
    }
    let said_hit = said(lan.host(1), memory.path(), &out, &url);
    let from_peer = holder.served(held).len();
    println!(
        "scale, {n} daemons, a file one of them holds: from that daemon in {from_peer} of {HITS} runs, from the mirror in {}; median {:.1} ms",
        mirror.requests_for(held).len(),
        median(times)
    );
    println!("scale, {n} daemons, a later run's -v for that file: {said_hit}");
    drop(daemons);
}

/// The line `-v` prints about a run's query: how many answered, and why the wait ended.
fn said(host: &Host, memory: &Path, out: &Path, url: &str) -> String {
    let _ = fs::remove_file(out);
    let o = (host.command(crate::util::fetch_bin()))
        .env("TMPDIR", memory)
        .args(["--config", "/dev/null", "--unverified-peers", "-v"])
        .arg(out)
        .arg(url)
        .output()
        .expect("run pacserve-fetch -v");
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    (text.lines())
        .find(|l| l.contains("peers answered"))
        .unwrap_or(&text)
        .to_owned()
}

/// CPU seconds (user and system) the daemons have spent.
fn daemons_cpu(daemons: &[Daemon]) -> f64 {
    daemons.iter().map(|d| crate::cpu_seconds(d.pid())).sum()
}

/// The daemons' resident memory together (MB) and their threads.
fn footprint(daemons: &[Daemon]) -> (f64, u64) {
    let (mut kb, mut threads) = (0u64, 0u64);
    for d in daemons {
        let status = fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        kb += field("VmRSS:");
        threads += field("Threads:");
    }
    (kb as f64 / 1024.0, threads)
}

/// nftables counters in one host's namespace: discovery queries it sends (to UDP 15678) and
/// answers it receives (from UDP 15678).
struct Counter<'a> {
    host: &'a Host,
}

impl<'a> Counter<'a> {
    fn install(host: &'a Host) -> Counter<'a> {
        host.sh(
            "nft add table inet pscount && \
             nft add chain inet pscount out '{ type filter hook output priority 0; policy accept; }' && \
             nft add chain inet pscount in '{ type filter hook input priority 0; policy accept; }' && \
             nft add rule inet pscount out udp dport 15678 counter && \
             nft add rule inet pscount in meta nfproto ipv4 udp sport 15678 counter && \
             nft add rule inet pscount in meta nfproto ipv6 udp sport 15678 counter",
        );
        Counter { host }
    }

    /// Queries sent and answers received so far, the answers over IPv4 and over IPv6.
    fn read(&self) -> Wire {
        // Let answers still on their way land first.
        std::thread::sleep(Duration::from_millis(20));
        let out = self.host.sh("nft list table inet pscount");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut chain = "";
        let mut wire = Wire::default();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("chain ") {
                chain = if name.starts_with("out") { "out" } else { "in" };
            }
            if let Some(packets) = line
                .split("counter packets ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            {
                match (chain, line.contains("ipv6")) {
                    ("out", _) => wire.sent = packets,
                    (_, false) => wire.heard_v4 = packets,
                    (_, true) => wire.heard_v6 = packets,
                }
            }
        }
        wire
    }
}

/// Discovery datagrams on a host's link.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    sent: u64,
    heard_v4: u64,
    heard_v6: u64,
}

impl Wire {
    fn since(self, before: Wire) -> Wire {
        Wire {
            sent: self.sent - before.sent,
            heard_v4: self.heard_v4 - before.heard_v4,
            heard_v6: self.heard_v6 - before.heard_v6,
        }
    }

    fn heard(self) -> u64 {
        self.heard_v4 + self.heard_v6
    }
}
