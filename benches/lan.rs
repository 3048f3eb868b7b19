//! The LAN benchmark: every target of the speed issue, measured side by side with its reference
//! in the same run, on a LAN of network namespaces (root; nothing leaves the machine).
//!
//! Run: `sudo cargo bench --bench lan` (needs nginx, curl, iproute2 with tc, and for the last
//! scenario pacman, repo-add and bsdtar). Prints one line per scenario with medians and ratios.
//! Under `cargo test --all-targets` it only says how to run it.

#[path = "../tests/it/archrepo.rs"]
#[allow(dead_code)]
mod archrepo;
#[path = "../tests/it/daemon.rs"]
#[allow(dead_code)]
mod daemon;
#[path = "../tests/it/hostile.rs"]
#[allow(dead_code)]
mod hostile;
#[path = "../tests/it/netns.rs"]
#[allow(dead_code)]
mod netns;
#[path = "../tests/it/nginx.rs"]
#[allow(dead_code)]
mod nginx;
#[path = "../tests/it/pacman7_include.rs"]
#[allow(dead_code, unused_imports)]
mod pacman7_include;
#[path = "../tests/it/pacman7_setup.rs"]
#[allow(dead_code)]
mod pacman7_setup;
#[path = "../tests/it/relay.rs"]
#[allow(dead_code)]
mod relay;
#[path = "../tests/it/signing.rs"]
#[allow(dead_code)]
mod signing;
#[path = "../tests/it/util.rs"]
#[allow(dead_code)]
mod util;

#[path = "lan/include_big.rs"]
mod include_big;
#[path = "lan/mirror_path.rs"]
mod mirror_path;
#[path = "lan/multi_source.rs"]
mod multi_source;
#[path = "lan/scale.rs"]
mod scale;
#[path = "lan/signed.rs"]
mod signed;
#[path = "lan/together.rs"]
mod together;
#[path = "lan/verified_hit.rs"]
mod verified_hit;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use archrepo::{Pacman, Repo};
use daemon::Daemon;
use netns::{Family, Host, Lan};
use nginx::Nginx;
use util::{fetch_bin, random_bytes, tempdir};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "lan benchmark: not run under cargo test; run it with `cargo bench --bench lan` as root"
        );
        return;
    }
    if !util::is_root() {
        eprintln!("lan benchmark: needs root (ip netns, tc)");
        std::process::exit(1);
    }
    if std::env::args().any(|a| a == "--rss-of") {
        return rss_of();
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    // Before any thread exists: see mirror_path::private_mounts.
    let private = wanted("mirror") && mirror_path::private_mounts();
    if wanted("miss") {
        miss_and_no_peers();
    }
    if wanted("hit") {
        hit_throughput();
    }
    if wanted("verified-hit") {
        verified_hit::run();
    }
    if wanted("daemon") {
        daemon_concurrency_and_queries();
    }
    if wanted("multi-source") {
        multi_source::run();
    }
    if wanted("scale") {
        scale::run();
    }
    if wanted("pacman") {
        real_pacman();
    }
    if wanted("mirror") {
        mirror_path::run(private);
    }
    if wanted("together") {
        together::run();
    }
    if wanted("mirror-signed") {
        signed::mirror_signed();
    }
    if wanted("lan-signed") {
        signed::lan_signed();
    }
    if wanted("upload-cap") {
        upload_cap();
    }
    if wanted("include") {
        pacman7_include::include_vs_xfercommand_time_from_a_peer();
    }
    if wanted("include-big") {
        include_big::include_big();
    }
    if wanted("cache-latency") {
        include_big::cache_latency();
    }
}

/// An older `pacserved` binary to measure against in the same run (`daemon`, `verified-hit`).
const BASELINE: &str = "PACSERVE_BENCH_BASELINE";

fn baseline() -> Option<String> {
    std::env::var(BASELINE).ok().filter(|b| !b.is_empty())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Wall time of a command that must succeed, in ms.
fn timed(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

fn fetch(host: &Host, memory: &Path, out: &Path, url: &str) -> Command {
    let _ = fs::remove_file(out);
    let mut cmd = host.command(fetch_bin());
    cmd.env("TMPDIR", memory)
        .args(["--config", "/dev/null", "--unverified-peers", "-q"])
        .arg(out)
        .arg(url);
    cmd
}

fn curl(host: &Host, out: &Path, url: &str) -> Command {
    let _ = fs::remove_file(out);
    let mut cmd = host.command("curl");
    cmd.args(["-s", "-f", "-o"]).arg(out).arg(url);
    cmd
}

/// Cost per file of a miss (two live peers, then no peers at all) versus curl from the mirror.
fn miss_and_no_peers() {
    for peers in [2usize, 0] {
        let lan = Lan::new(4, Family::Dual).expect("LAN");
        let (mirror_root, c2, c3, memory, dir) =
            (tempdir(), tempdir(), tempdir(), tempdir(), tempdir());
        fs::write(
            mirror_root.path().join("miss-1-1-any.pkg.tar.zst"),
            random_bytes(200_000, 1),
        )
        .unwrap();
        let _daemons: Vec<Daemon> = [(2, &c2), (3, &c3)]
            .iter()
            .take(peers)
            .map(|(i, c)| Daemon::start(lan.host(*i), c.path(), &[]))
            .collect();
        let _mirror = Nginx::mirror_on(lan.host(4), mirror_root.path()).expect("nginx");
        if peers > 0 {
            lan.wait_for_daemons(peers);
        } else {
            // Let the bridge settle with a plain request.
            let url = format!("http://{}:8080/miss-1-1-any.pkg.tar.zst", lan.ipv4(4));
            let deadline = Instant::now() + Duration::from_secs(10);
            while curl(lan.host(1), &dir.path().join("w"), &url)
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
            {
                assert!(Instant::now() < deadline);
            }
        }
        let url = format!("http://{}:8080/miss-1-1-any.pkg.tar.zst", lan.ipv4(4));
        let (first, o, t) = miss_against_curl(lan.host(1), memory.path(), dir.path(), &url, 40);
        println!(
            "miss, {peers} live peers: pacserve-fetch median {o:.1} ms vs curl from the mirror {t:.1} ms: {:+.1} ms per file (first file of the run: {first:.1} ms) [target: +5 ms with 2 peers, +25 ms with none]",
            o - t
        );
    }
}

/// A file no peer has, fetched `rounds` times by pacserve-fetch and by curl, alternating, after
/// one run that lets pacserve-fetch learn the LAN. Returns (that first run, our median, curl's
/// median), in ms.
fn miss_against_curl(
    host: &Host,
    memory: &Path,
    dir: &Path,
    url: &str,
    rounds: usize,
) -> (f64, f64, f64) {
    let out = dir.join("miss-1-1-any.pkg.tar.zst.part");
    let first = timed(&mut fetch(host, memory, &out, url));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(timed(&mut fetch(host, memory, &out, url)));
        theirs.push(timed(&mut curl(host, &out, url)));
    }
    (first, median(ours), median(theirs))
}

/// Peer download throughput versus curl from the same daemon; unlimited, then 1 Gbit/s. The
/// file is in no sync database (`--unverified-peers`); [`verified_hit`] measures the default.
/// The upload cap (`--upload-limit`, issue 21): one and then four clients fetching a 64 MB file
/// from a daemon capped at 8 MiB/s, against the same daemon uncapped, on a 1 Gbit/s link. The
/// clients' rates together are what the host's uplink carried.
fn upload_cap() {
    const SIZE: usize = 64 << 20;
    const CAP: f64 = 8.0;
    let lan = Lan::new(6, Family::Dual).expect("LAN");
    let cache = tempdir();
    let name = "capped-1-1-any.pkg.tar.zst";
    write_random_file(&cache.path().join(name), SIZE);
    lan.limit_link(2, "1gbit");
    let uncapped = Daemon::start(
        lan.host(2),
        cache.path(),
        &["--http-port", "15680", "--no-agent"],
    );
    let capped = Daemon::start(
        lan.host(2),
        cache.path(),
        &[
            "--http-port",
            "15681",
            "--udp-port",
            "15679",
            "--no-agent",
            "--upload-limit",
            "8M",
        ],
    );
    let out = tempdir();
    // MiB/s all `clients` got together from `daemon`.
    let together = |daemon: &Daemon, clients: usize| -> f64 {
        let url = format!("http://{}:{}/pkg/{name}", lan.ipv4(2), daemon.http_port);
        let started = Instant::now();
        let children: Vec<_> = (0..clients)
            .map(|i| {
                let file = out.path().join(format!("{i}"));
                curl(lan.host(3 + i % 4), &file, &url)
                    .spawn()
                    .expect("curl")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("curl ran").success());
        }
        (clients * SIZE) as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64()
    };
    for clients in [1, 4] {
        let free = together(&uncapped, clients);
        let held = together(&capped, clients);
        println!(
            "upload cap {CAP} MiB/s, {clients} client(s) of a 64 MB file on a 1 Gbit/s link: {held:.1} MiB/s together (uncapped: {free:.1} MiB/s) [goal: at most the cap, near it]"
        );
    }
}

fn hit_throughput() {
    let lan = Lan::new(3, Family::Dual).expect("LAN");
    let (cache, memory) = (tempdir(), tempdir());
    // Both clients write into RAM (tmpfs), so the disk's writeback does not decide the race.
    let dir = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .unwrap_or_else(|_| tempdir());
    let name = "big-1-1-any.pkg.tar.zst";
    write_random_file(&cache.path().join(name), 1_000_000_000);
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    lan.wait_for_daemons(1);
    let mirror = "http://127.0.0.1:9/dead-mirror/big-1-1-any.pkg.tar.zst";
    let direct = format!("http://{}:{}/pkg/{name}", lan.ipv4(2), daemon.http_port);
    let out = dir.path().join(format!("{name}.part"));

    // Peak RSS of the client on the 1 GB file, and the daemon's RSS.
    let rss = rss_of_command(lan.host(1), memory.path(), &out, mirror);
    println!(
        "client peak RSS on a 1 GB file: {:.1} MB [target: 15 MB]",
        rss as f64 / 1024.0
    );

    for limit in [None, Some("1gbit")] {
        if let Some(rate) = limit {
            lan.limit_rate(2, rate);
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Alternate who goes first.
        for round in 0..6 {
            for turn in 0..2 {
                let _ = fs::remove_file(&out);
                if (round + turn) % 2 == 0 {
                    ours.push(1e3 / timed(&mut fetch(lan.host(1), memory.path(), &out, mirror)));
                } else {
                    theirs.push(1e3 / timed(&mut curl(lan.host(1), &out, &direct)));
                }
            }
        }
        let (o, t) = (median(ours) * 1e3, median(theirs) * 1e3);
        println!(
            "hit, {} link: pacserve-fetch {o:.0} MB/s vs curl from the same daemon {t:.0} MB/s: ratio {:.2} [target: 0.95]",
            limit.unwrap_or("unlimited veth"),
            o / t
        );
    }
    let _ = fs::remove_file(&out);
}

/// 32 concurrent downloads of one 20 MB file from pacserved versus nginx as production runs it
/// (a worker per core, sendfile) on the same file, alternating, in rounds; the CPU time each
/// server spent per GB sent; query latency with 50,000 files in the cache; the daemon's idle
/// memory. With [`BASELINE`] set, an older pacserved serves the same file from a third host in
/// the same rounds, so a change is measured against what it replaces in one run.
fn daemon_concurrency_and_queries() {
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 32;
    const SIZE: usize = 20_000_000;
    let lan = Lan::new(3, Family::Dual).expect("LAN");
    let (cache, out) = (tempdir(), tempdir());
    let file = "big-1-1-any.pkg.tar.zst";
    write_random_file(&cache.path().join(file), SIZE);
    for i in 0..50_000 {
        fs::write(
            cache.path().join(format!("small{i}-1-1-any.pkg.tar.zst")),
            b"",
        )
        .unwrap();
    }
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    let baseline = baseline().map(|bin| {
        // The same file from host 3, whose link is as fast; no discovery is involved.
        Daemon::start_binary(&bin, lan.host(3), cache.path(), &[], &[])
    });
    let production = nginx::Options {
        production: true,
        ..Default::default()
    };
    let nginx = Nginx::start_in(Some(lan.host(2)), cache.path(), production).expect("nginx");
    lan.wait_for_daemons(1 + usize::from(baseline.is_some()));
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kb(&daemon);

    // MB/s of one burst, and the CPU seconds the server (`pid` and its children) spent on it.
    let burst = |url: &str, pid: u32| -> (f64, f64) {
        let cpu = cpu_seconds(pid);
        let started = Instant::now();
        let children: Vec<_> = (0..CLIENTS)
            .map(|_| {
                lan.host(1)
                    .command("curl")
                    .args(["-s", "-f", "-o", "/dev/null", url])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let mb = (CLIENTS * SIZE) as f64 / 1e6;
        (mb / started.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu)
    };
    // Each server's (URL, pid), ours first, nginx last; per server its MB/s per round and CPU.
    let mut servers = vec![(
        format!("http://{}:{}/pkg/{file}", lan.ipv4(2), daemon.http_port),
        daemon.pid(),
    )];
    if let Some(old) = &baseline {
        servers.push((
            format!("http://{}:{}/pkg/{file}", lan.ipv4(3), old.http_port),
            old.pid(),
        ));
    }
    servers.push((format!("http://{}:8080/{file}", lan.ipv4(2)), nginx.pid()));
    let mut rates = vec![Vec::new(); servers.len()];
    let mut cpu = vec![0.0; servers.len()];
    for round in 0..ROUNDS {
        // Rotate who goes first.
        for turn in 0..servers.len() {
            let i = (round + turn) % servers.len();
            let (rate, seconds) = burst(&servers[i].0, servers[i].1);
            rates[i].push(rate);
            cpu[i] += seconds;
        }
    }
    let gb = (ROUNDS * CLIENTS * SIZE) as f64 / 1e9;
    let nginx_at = servers.len() - 1;
    let ratios = |i: usize| {
        let per_round = (0..ROUNDS)
            .map(|r| format!("{:.2}", rates[i][r] / rates[nginx_at][r]))
            .collect::<Vec<_>>()
            .join(" ");
        (median(rates[i].clone()), per_round)
    };
    let t = median(rates[nginx_at].clone());
    let (o, spread) = ratios(0);
    println!(
        "daemon, {CLIENTS} concurrent downloads of one 20 MB file: pacserved {o:.0} MB/s vs nginx (a worker per core, sendfile) {t:.0} MB/s: ratio {:.2} [target: 0.9]; per round: {spread}",
        o / t
    );
    if baseline.is_some() {
        let (b, spread) = ratios(1);
        println!(
            "daemon, the same from the baseline pacserved ({}): {b:.0} MB/s: ratio {:.2}; per round: {spread}",
            BASELINE,
            b / t
        );
    }
    let per_gb = cpu
        .iter()
        .map(|c| format!("{:.2} s", c / gb))
        .collect::<Vec<_>>()
        .join(" vs ");
    println!(
        "daemon, CPU per GB sent: pacserved{} vs nginx: {per_gb}",
        if baseline.is_some() {
            " vs baseline"
        } else {
            ""
        }
    );
    drop(baseline);
    drop(nginx);

    let mut rtts = Vec::new();
    for i in 0..300 {
        let name = format!("small{}-1-1-any.pkg.tar.zst", i * 163 % 50_000);
        let o = lan
            .host(1)
            .command(fetch_bin())
            .args(["--config", "/dev/null", "--who-has", &name])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if let Some(ms) = text
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
        {
            rtts.push(ms);
        }
    }
    println!(
        "query with 50,000 files in the cache: round trip median {:.3} ms, p99 {:.3} ms over {} queries [target: answered within 1 ms p99]",
        median(rtts.clone()),
        percentile(rtts.clone(), 99),
        rtts.len()
    );
    println!(
        "daemon RSS idle: {:.1} MB [target: 30 MB]; after the load: {:.1} MB",
        idle as f64 / 1024.0,
        rss_kb(&daemon) as f64 / 1024.0
    );
    let _ = out;
}

/// pacman installing 30 packages: pacserve-fetch with one peer holding them, versus curl as
/// XferCommand, with the mirror limited to 10 Mbit/s.
fn real_pacman() {
    if !archrepo::require_pacman_tools() {
        return;
    }
    let lan = Lan::new(4, Family::Dual).expect("LAN");
    let (mirror_root, cache, memory) = (tempdir(), tempdir(), tempdir());
    let repo = Repo::create(mirror_root.path(), "bench");
    let names: Vec<String> = (0..30).map(|i| format!("pkg{i}")).collect();
    for name in &names {
        let file = repo.add_package(name, 250_000);
        fs::copy(repo.dir.join(&file), cache.path().join(&file)).unwrap();
    }
    let _daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    let _mirror = Nginx::mirror_on(lan.host(4), mirror_root.path()).expect("nginx");
    lan.limit_rate(4, "10mbit");
    lan.wait_for_daemons(1);
    let server = format!("http://{}:8080/bench", lan.ipv4(4));
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.path().as_os_str())];
    let args: Vec<&str> = std::iter::once("-S")
        .chain(names.iter().map(String::as_str))
        .collect();
    let mut results = Vec::new();
    for (label, xfer) in [
        ("pacserve-fetch", Pacman::lan_xfer_line(fetch_bin())),
        ("curl", "/usr/bin/curl -s -f -C - -o %o %u".to_owned()),
    ] {
        let pacman = Pacman::new(Some(&xfer), &[("bench", server.clone())]);
        assert!(pacman.run_in(lan.host(1), &env, &["-Sy"]).status.success());
        let started = Instant::now();
        assert!(pacman.run_in(lan.host(1), &env, &args).status.success());
        results.push((label, started.elapsed().as_secs_f64()));
    }
    println!(
        "real pacman, 30 packages (7.5 MB), mirror at 10 Mbit/s, one peer holding them: pacserve-fetch {:.2} s vs curl {:.2} s: {:.1}x faster",
        results[0].1,
        results[1].1,
        results[1].1 / results[0].1
    );
}

fn write_random_file(path: &Path, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let chunk = random_bytes(1 << 20, len as u64);
    let mut left = len;
    let mut salt = 0u8;
    while left > 0 {
        let n = left.min(chunk.len());
        // Vary each MiB a little so no two are identical.
        let mut block = chunk[..n].to_vec();
        block[0] = salt;
        salt = salt.wrapping_add(1);
        f.write_all(&block).unwrap();
        left -= n;
    }
}

/// User plus system CPU seconds of process `pid` and its live children (nginx's workers).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = |pid: &str| fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields = |text: &str| -> Vec<String> {
        text.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let ticks = |f: &[String]| -> u64 {
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name.
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let me = pid.to_string();
    let mut total = ticks(&fields(&stat(&me)));
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.bytes().all(|b| b.is_ascii_digit()) {
            let f = fields(&stat(&name));
            // ppid is field 4, 1 after the name.
            if f.get(1) == Some(&me) {
                total += ticks(&f);
            }
        }
    }
    // USER_HZ is 100 on Linux.
    total as f64 / 100.0
}

fn rss_kb(daemon: &Daemon) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak RSS (KiB) of one pacserve-fetch run: this binary re-runs itself as a wrapper whose only
/// child is the client, so RUSAGE_CHILDREN is exactly the client's peak.
fn rss_of_command(host: &Host, memory: &Path, out: &Path, url: &str) -> u64 {
    let _ = fs::remove_file(out);
    let me = std::env::current_exe().unwrap();
    let mut cmd = host.command(me.to_str().unwrap());
    cmd.args([
        "--bench",
        "--rss-of",
        fetch_bin(),
        "--config",
        "/dev/null",
        "--unverified-peers",
        "-q",
    ])
    .arg(out)
    .arg(url)
    .env("TMPDIR", memory);
    let o = cmd.output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn rss_of() {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--rss-of").unwrap();
    let status = Command::new(&args[at + 1])
        .args(&args[at + 2..])
        .status()
        .unwrap();
    assert!(status.success());
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("{}", usage.max_rss());
}
