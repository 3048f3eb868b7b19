//! pacserved under hostile clients (issue 10, items 8–10): clients that never read, idle
//! connections from outside the allowlist, forged query sources.
//!
//! These need root (a namespace LAN): host 1 is the legitimate client, host 2 runs pacserved,
//! host 3 is the attacker, scripted here in Python with every loop bounded in count and time.
//! The smaller HTTP items (11) are in `daemon_http.rs`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::netns::{Family, Lan};
use crate::util::{proc_kb, random_bytes, run, tempdir};

const BIG: &str = "big-1-1-any.pkg.tar.zst";
/// Source addresses and connections per address of the flood, as in the issue: 1088 in all,
/// more than the daemon's 1024 slots.
const FLOOD_ADDRESSES: usize = 17;
const FLOOD_PER_ADDRESS: usize = 64;
/// What pacserved may resident-hold while the flood of non-reading clients is on. It held
/// 830 MB before the send deadline, 83–91 MB while files went out from user-space chunks, and
/// about 21 MB since the kernel sends them (a client that stops reading pins no buffer of ours).
const RSS_BOUND_KB: u64 = 48 * 1024;

/// Opens `per` connections from each of the given source addresses to the daemon and holds them
/// without reading. `request` sends a GET for the big file first; `idle` sends nothing. Prints
/// `opened N` once all are up, then `open M` a second later (how many the daemon has not
/// closed; only meaningful for `idle`, where nothing is pending to read), then holds them until
/// its stdin closes or 60 s pass.
const FLOOD: &str = r#"
import socket, sys, time
host, port, path, mode, per = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
socks = []
for src in sys.argv[6:]:
    for _ in range(per):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(3)
        try:
            s.bind((src, 0))
            s.connect((host, port))
            if mode == "request":
                s.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            socks.append(s)
        except OSError:
            s.close()
print("opened", len(socks), flush=True)
time.sleep(1)
def is_open(s):
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
print("open", sum(1 for s in socks if is_open(s)), flush=True)
import select
select.select([sys.stdin], [], [], 60)
"#;

struct Flood {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Flood {
    /// Host 3 gets 16 more addresses and opens the flood from all 17 at host 2.
    fn start(lan: &Lan, port: u16, mode: &str) -> Flood {
        let net = lan.ipv4(3);
        let prefix = net.rsplit_once('.').map(|(p, _)| p.to_owned()).unwrap();
        let mut sources = vec![net];
        for i in 0..FLOOD_ADDRESSES - 1 {
            let addr = format!("{prefix}.{}", 100 + i);
            lan.host(3).sh(&format!("ip addr add {addr}/24 dev eth0"));
            sources.push(addr);
        }
        let mut child = lan
            .host(3)
            .command("python3")
            .args(["-c", FLOOD, &lan.ipv4(2), &port.to_string()])
            .arg(format!("/pkg/{BIG}"))
            .arg(mode)
            .arg(FLOOD_PER_ADDRESS.to_string())
            .args(&sources)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the flood");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Flood { child, lines }
    }

    /// The number after the next line's label.
    fn next(&mut self, label: &str) -> usize {
        let line = self
            .lines
            .next()
            .expect("flood output")
            .expect("flood line");
        eprintln!("FLOOD: {line}");
        line.strip_prefix(label)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected {label}: {line}"))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Host 1 downloads the big file with pacserve-fetch from the peer (the mirror is dead).
fn download(lan: &Lan, dir: &std::path::Path, content: &[u8]) -> bool {
    let out = dir.join(format!("{BIG}.part"));
    let _ = fs::remove_file(&out);
    let result = lan.host(1).fetch_from_peers(&out, BIG);
    result.status.success() && fs::read(&out).is_ok_and(|got| got == content)
}

/// A LAN with pacserved on host 2 sharing a 32 MB file.
fn lan_with_daemon(extra: &[&str]) -> Option<(Lan, Daemon, Vec<u8>, tempfile::TempDir)> {
    // The floods and forged queries are python scripts; curl reads the status page.
    if !crate::util::require_tools(&["python3", "curl"]) {
        return None;
    }
    let lan = Lan::new(3, Family::Dual)?;
    let cache = tempdir();
    let content = random_bytes(32_000_000, 81);
    fs::write(cache.path().join(BIG), &content).unwrap();
    let daemon = Daemon::start(lan.host(2), cache.path(), extra);
    Some((lan, daemon, content, cache))
}

#[test]
fn clients_that_never_read_are_dropped_and_memory_stays_bounded() {
    let Some((lan, daemon, content, _cache)) = lan_with_daemon(&[]) else {
        return;
    };
    let dir = tempdir();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !download(&lan, dir.path(), &content) {
        assert!(Instant::now() < deadline, "the bridge never came up");
    }
    let pid = daemon.pid();
    let (rss_before, fds_before) = (proc_kb(pid, "VmRSS:"), open_fds(pid));

    let mut flood = Flood::start(&lan, daemon.http_port, "request");
    let opened = flood.next("opened");
    std::thread::sleep(Duration::from_secs(1));
    let during = download(&lan, dir.path(), &content);
    let rss_peak = proc_kb(pid, "VmHWM:");
    let fds_during = open_fds(pid);
    // The daemon closes every connection whose client read nothing for its send timeout (10 s).
    let started = Instant::now();
    while open_fds(pid) > fds_before + 8 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let dropped_after = started.elapsed();
    let fds_after = open_fds(pid);
    eprintln!(
        "NON-READING FLOOD: {opened} connections; legitimate download during it: {during}; \
         daemon RSS {rss_before} kB before, peak {rss_peak} kB; open fds {fds_before} before, \
         {fds_during} during, {fds_after} after {:.1} s",
        dropped_after.as_secs_f64()
    );
    assert!(
        opened >= FLOOD_ADDRESSES * FLOOD_PER_ADDRESS * 9 / 10,
        "the flood got its connections"
    );
    assert!(during, "a legitimate client still downloads the right file");
    assert!(
        rss_peak < RSS_BOUND_KB,
        "daemon RSS {rss_peak} kB under the flood, bound {RSS_BOUND_KB} kB"
    );
    assert!(
        fds_after <= fds_before + 8,
        "non-reading clients are dropped within 30 s: {fds_after} fds left"
    );
    assert!(download(&lan, dir.path(), &content), "and after it");
}

/// CPU time (user + system) of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}

/// Out of file descriptors, accept() fails again and again for the connection still waiting:
/// the accept loop must rest between attempts rather than spin a core (issue 18).
#[test]
fn out_of_file_descriptors_the_accept_loop_rests() {
    let Some((lan, daemon, _content, _cache)) = lan_with_daemon(&[]) else {
        return;
    };
    if !crate::util::require_tools(&["prlimit"]) {
        return;
    }
    let pid = daemon.pid();
    let limit = open_fds(pid) + 16;
    assert!(
        run(std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={limit}:{limit}")))
        .status
        .success()
    );
    let mut flood = Flood::start(&lan, daemon.http_port, "idle");
    let opened = flood.next("opened");
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    eprintln!("ACCEPT AT EMFILE: {opened} connections held; daemon CPU {used:.2} s in 3 s");
    assert!(
        open_fds(pid) >= limit - 1,
        "the daemon ran out of descriptors"
    );
    // A spinning loop takes a whole core: 3 s in 3 s.
    assert!(used < 1.0, "{used:.2} s of CPU in 3 s");
}

#[test]
fn idle_connections_from_outside_the_allowlist_take_no_slot() {
    if !crate::util::require_tools(&["python3", "curl"]) {
        return;
    }
    let lan = Lan::new(3, Family::Dual);
    let Some(lan) = lan else { return };
    let cache = tempdir();
    let content = random_bytes(2_000_000, 82);
    fs::write(cache.path().join(BIG), &content).unwrap();
    let allowed = format!("{}/32", lan.ipv4(1));
    let daemon = Daemon::start(lan.host(2), cache.path(), &["--allow", &allowed]);
    let url = format!("http://{}:{}/pkg/{BIG}", lan.ipv4(2), daemon.http_port);
    let dir = tempdir();
    let out = dir.path().join("got");
    let get = || {
        let _ = fs::remove_file(&out);
        let result = run(lan
            .host(1)
            .command("curl")
            .args(["-s", "-m", "10", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}", &url]));
        String::from_utf8_lossy(&result.stdout) == "200"
            && fs::read(&out).is_ok_and(|got| got == content)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get() {
        assert!(Instant::now() < deadline, "the bridge never came up");
    }

    let mut flood = Flood::start(&lan, daemon.http_port, "idle");
    let opened = flood.next("opened");
    // Within the header timeout (10 s) that used to hold them.
    let during = get();
    let still_open = flood.next("open");
    eprintln!(
        "DISALLOWED IDLE FLOOD: {opened} connections opened, {still_open} still open a second later; \
         allowed client's download during it: {during}"
    );
    assert!(opened > 0);
    assert!(during, "the allowed client downloads the right file");
    assert_eq!(
        still_open, 0,
        "connections from outside the allowlist are closed on arrival"
    );
}

/// Sends well-formed queries from thousands of forged source addresses (IPv4 10.78.0.0/16 and
/// IPv6 fd78::/64, routed back to host 3 where the answers die) at host 2, cycling through
/// them every 3 s for `seconds`. Prints `cycled` after two full cycles.
const SPOOF: &str = r#"
import socket, struct, sys, time
v4, v6, port, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
name = b"x-1-1-any.pkg.tar.zst"
query = b"PSRV\x01\x01" + b"\x07" * 8 + bytes([len(name)]) + name + b"\x00"
query += b"\x00" * (64 - len(query))
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.setsockopt(socket.SOL_IP, 19, 1)          # IP_TRANSPARENT: any source address
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(socket.IPPROTO_IPV6, 75, 1)        # IPV6_TRANSPARENT
def src4(i): return socket.inet_pton(socket.AF_INET, "10.78.%d.%d" % (i // 250, i % 250 + 1))
def src6(i): return socket.inet_pton(socket.AF_INET6, "fd78::%x" % (i + 1))
start = time.time()
cycle = 3.0
sent = cycles = 0
while time.time() - start < seconds:
    t0 = time.time()
    for i in range(n):
        s4.sendmsg([query], [(socket.IPPROTO_IP, 8, struct.pack("@i4s4s", 0, src4(i), bytes(4)))], 0, (v4, port))
        s6.sendmsg([query], [(socket.IPPROTO_IPV6, 50, struct.pack("@16si", src6(i), 0))], 0, (v6, port))
        sent += 2
        ahead = t0 + cycle * (i + 1) / n - time.time()
        if ahead > 0:
            time.sleep(ahead)
    cycles += 1
    if cycles == 2:
        print("cycled", sent, flush=True)
print("done", sent, flush=True)
"#;

#[test]
fn forged_query_sources_cannot_stop_a_new_client_being_answered() {
    let Some((lan, daemon, _, _cache)) = lan_with_daemon(&[]) else {
        return;
    };
    lan.wait_for_daemons(1);
    let host3_v6 = lan
        .host(3)
        .sh("ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1");
    let host3_v6 = String::from_utf8_lossy(&host3_v6.stdout).trim().to_owned();
    let host2_v6 = lan
        .host(2)
        .sh("ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1");
    let host2_v6 = String::from_utf8_lossy(&host2_v6.stdout).trim().to_owned();
    // Answers to the forged sources go back to host 3, which drops them.
    lan.host(2).sh(&format!(
        "ip route add 10.78.0.0/16 via {} && ip -6 route add fd78::/64 via {host3_v6}",
        lan.ipv4(3)
    ));
    let mut spoof = lan
        .host(3)
        .command("python3")
        .args(["-c", SPOOF, &lan.ipv4(2), &host2_v6, "15678", "4500", "40"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the forger");
    let mut lines = BufReader::new(spoof.stdout.take().unwrap()).lines();
    let cycled = lines.next().and_then(Result::ok).unwrap_or_default();
    eprintln!("FORGER: {cycled}");
    assert!(cycled.starts_with("cycled"), "the forger ran: {cycled}");

    let who = || lan.host(1).who_has(BIG).contains("1 daemon answered");
    let answered = (0..5).filter(|_| who()).count();
    let status = run(lan.host(1).command("curl").args([
        "-s",
        &format!("http://{}:{}/", lan.ipv4(2), daemon.http_port),
    ]));
    let _ = spoof.kill();
    let _ = spoof.wait();
    let page = String::from_utf8_lossy(&status.stdout);
    let count = |label: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(label)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let (received, limited) = (
        count("queries received:"),
        count("queries over the rate limit:"),
    );
    eprintln!(
        "FORGED SOURCES: a new client answered {answered} of 5 times while 9000 forged sources \
         queried; daemon received {received} queries, {limited} over the rate limit"
    );
    assert!(
        received + limited > 9000,
        "the forged queries reached the daemon: {page}"
    );
    assert!(
        answered >= 4,
        "a new client is answered while forged sources fill the table: {answered} of 5"
    );
}
