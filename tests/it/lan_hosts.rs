//! pacserve-fetch and pacserved on a LAN of network-namespace hosts joined by a bridge (root).
//! Host 1 is the client, hosts 2 and 3 run daemons (only host 2 holds the packages), host 4 is
//! the mirror. Nothing here uses loopback shortcuts: the client finds peers the way it does on a
//! real LAN, with automatic interface choice and multicast over the bridge.

use std::fs;
use std::process::Command;
use std::time::Instant;

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::netns::{Family, Host, Lan};
use crate::nginx::Nginx;
use crate::util::{fetch_bin, lan_memory_dir, random_bytes, run, stderr, tempdir};

const PKG: &str = "lanpkg-1.0-1-x86_64.pkg.tar.zst";

struct Site {
    lan: Lan,
    holder: Daemon,
    other: Daemon,
    mirror: Nginx,
    holder_cache: tempfile::TempDir,
    mirror_root: tempfile::TempDir,
    _other_cache: tempfile::TempDir,
}

fn site(family: Family) -> Option<Site> {
    let lan = Lan::new(4, family)?;
    let (holder_cache, other_cache, mirror_root) = (tempdir(), tempdir(), tempdir());
    let holder = Daemon::start(lan.host(2), holder_cache.path(), &[]);
    let other = Daemon::start(lan.host(3), other_cache.path(), &[]);
    let mirror = Nginx::mirror_on(lan.host(4), mirror_root.path())?;
    lan.wait_for_daemons(2);
    Some(Site {
        lan,
        holder,
        other,
        mirror,
        holder_cache,
        mirror_root,
        _other_cache: other_cache,
    })
}

impl Site {
    fn mirror_url(&self, path: &str) -> String {
        format!("http://{}:8080/{path}", self.lan.url_host(4))
    }

    /// Puts `bytes` as `name` on the mirror and, if `on_peer`, in host 2's cache.
    fn publish(&self, name: &str, bytes: &[u8], on_peer: bool) {
        fs::write(self.mirror_root.path().join(name), bytes).unwrap();
        if on_peer {
            fs::write(self.holder_cache.path().join(name), bytes).unwrap();
        }
    }
}

fn client(host: &Host) -> Command {
    let mut cmd = host.command(fetch_bin());
    // Each test remembers its own LAN (the LAN memory lives under TMPDIR), not its neighbours'.
    cmd.env("TMPDIR", lan_memory_dir());
    // These files are in no sync database; the pacman tests cover verified peers.
    cmd.args(["--config", "/dev/null", "--unverified-peers"]);
    cmd
}

fn hit_and_miss(family: Family) {
    let Some(s) = site(family) else { return };
    let content = random_bytes(3_000_000, 41);
    s.publish(PKG, &content, true);
    let miss = "nowhere-1-1-any.pkg.tar.zst";
    s.publish(miss, b"from the mirror", false);
    let dir = tempdir();

    let out = dir.path().join(format!("{PKG}.part"));
    let hit = run(client(s.lan.host(1))
        .arg("-v")
        .arg(&out)
        .arg(s.mirror_url(PKG)));
    assert!(hit.status.success());
    assert_eq!(fs::read(&out).unwrap(), content, "byte-identical");
    let served = s.holder.served(PKG);
    assert_eq!(served.len(), 1, "host 2 served it: {:?}", s.holder.log());
    assert!(s.other.served(PKG).is_empty());
    assert!(
        s.mirror.requests_for(PKG).is_empty(),
        "the mirror sent nothing: {:?}",
        s.mirror.log()
    );
    assert!(
        stderr(&hit).contains("2 peers answered, 1 have it"),
        "{}",
        stderr(&hit)
    );

    let out = dir.path().join(format!("{miss}.part"));
    assert!(
        run(client(s.lan.host(1)).arg(&out).arg(s.mirror_url(miss)))
            .status
            .success()
    );
    assert_eq!(fs::read(&out).unwrap(), b"from the mirror");
    assert_eq!(s.mirror.requests_for(miss).len(), 1);
}

#[test]
fn ipv4_lan_hit_comes_from_the_peer_and_miss_from_the_mirror() {
    hit_and_miss(Family::Dual);
}

#[test]
fn ipv6_only_lan_hit_comes_from_the_peer_and_miss_from_the_mirror() {
    hit_and_miss(Family::Ipv6Only);
}

#[test]
fn a_static_peer_works_where_multicast_is_blocked() {
    let Some(s) = site(Family::Dual) else { return };
    let content = random_bytes(500_000, 42);
    s.publish(PKG, &content, true);
    // Host 1's interface no longer does multicast at all: discovery has no interface to use.
    s.lan.host(1).sh("ip link set eth0 multicast off");
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let without = run(client(s.lan.host(1)).args(["--who-has", PKG]));
    assert!(String::from_utf8_lossy(&without.stdout).contains("0 daemons answered"));

    let config = dir.path().join("pacserve-fetch.conf");
    fs::write(&config, format!("peers = [\"{}\"]\n", s.lan.ipv4(2))).unwrap();
    let result = run(s
        .lan
        .host(1)
        .command(fetch_bin())
        .env("TMPDIR", lan_memory_dir())
        .arg("--unverified-peers")
        .arg("--config")
        .arg(&config)
        .arg(&out)
        .arg(s.mirror_url(PKG)));
    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), content);
    assert_eq!(s.holder.served(PKG).len(), 1);
    assert!(s.mirror.requests_for(PKG).is_empty());
}

#[test]
fn real_pacman_installs_from_the_peer_and_the_mirror_sends_no_package() {
    if !require_pacman_tools() {
        return;
    }
    let Some(s) = site(Family::Dual) else { return };
    let repo = Repo::create(s.mirror_root.path(), "lanrepo");
    let files: Vec<String> = [("one", 300_000), ("two", 1_200_000), ("three", 60_000)]
        .iter()
        .map(|(n, size)| repo.add_package(n, *size))
        .collect();
    for file in &files {
        fs::copy(repo.dir.join(file), s.holder_cache.path().join(file)).unwrap();
    }
    let xfer = Pacman::lan_xfer_line(fetch_bin());
    let memory = lan_memory_dir();
    let pacman = Pacman::new(Some(&xfer), &[("lanrepo", s.mirror_url("lanrepo"))]);
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.as_os_str())];
    let in_host1 = |args: &[&str]| pacman.run_in(s.lan.host(1), &env, args);

    let started = Instant::now();
    assert!(in_host1(&["-Sy"]).status.success());
    assert!(in_host1(&["-S", "one", "two", "three"]).status.success());
    let elapsed = started.elapsed();

    for name in ["one", "two", "three"] {
        assert!(pacman.installed_data(name).is_some(), "{name} installed");
    }
    for file in &files {
        assert_eq!(s.holder.served(file).len(), 1, "host 2 served {file}");
        assert!(s.mirror.requests_for(file).is_empty(), "mirror sent {file}");
    }
    let mirror_bytes: u64 = s.mirror.log().iter().map(|l| l.body_bytes).sum();
    eprintln!(
        "LAN-PACMAN: 3 packages from host 2 in {:.0} ms (incl. -Sy); mirror sent {} requests, {mirror_bytes} bytes (db only)",
        elapsed.as_secs_f64() * 1e3,
        s.mirror.log().len()
    );
}

#[test]
fn pacsrv_runs_pacman_once_through_pacserve_fetch() {
    if !require_pacman_tools() {
        return;
    }
    let Some(s) = site(Family::Dual) else { return };
    let repo = Repo::create(s.mirror_root.path(), "srvrepo");
    let file = repo.add_package("viapacsrv", 400_000);
    fs::copy(repo.dir.join(&file), s.holder_cache.path().join(&file)).unwrap();
    // A pacman.conf with no XferCommand at all: pacman alone would use its own downloader.
    let pacman = Pacman::new(None, &[("srvrepo", s.mirror_url("srvrepo"))]);
    let pacsrv = std::path::Path::new(fetch_bin()).with_file_name("pacsrv");

    let mut cmd = s.lan.host(1).command(pacsrv.to_str().unwrap());
    cmd.env("TMPDIR", lan_memory_dir())
        .arg("--config")
        .arg(&pacman.config)
        .args(["--noconfirm", "-Sy", "viapacsrv"]);
    let out = run(&mut cmd);

    assert!(out.status.success());
    assert!(pacman.installed_data("viapacsrv").is_some());
    assert_eq!(
        s.holder.served(&file).len(),
        1,
        "the package came from host 2's daemon"
    );
    assert!(s.mirror.requests_for(&file).is_empty());
    assert!(
        !fs::read_to_string(&pacman.config)
            .unwrap()
            .contains("XferCommand"),
        "pacman.conf untouched"
    );

    // pacman's exit status is pacsrv's.
    let mut missing = s.lan.host(1).command(pacsrv.to_str().unwrap());
    missing
        .arg("--config")
        .arg(&pacman.config)
        .args(["--noconfirm", "-S", "no-such-package"]);
    assert_eq!(run(&mut missing).status.code(), Some(1));
}

#[test]
fn mdns_announcement_is_seen_by_python_zeroconf() {
    let browser = "/usr/bin/python3";
    let has_zeroconf = Command::new(browser)
        .args(["-c", "import zeroconf"])
        .status()
        .is_ok_and(|s| s.success());
    if !crate::util::require(
        has_zeroconf,
        "python3-zeroconf is not installed (Debian python3-zeroconf)",
    ) {
        return;
    }
    let Some(lan) = Lan::new(2, Family::Dual) else {
        return;
    };
    let cache = tempdir();
    let _daemon = Daemon::start(lan.host(2), cache.path(), &["--mdns"]);
    let script = r#"
import sys, time
from zeroconf import Zeroconf, ServiceBrowser, ServiceListener
found = {}
class Listener(ServiceListener):
    def add_service(self, zc, type_, name):
        info = zc.get_service_info(type_, name, timeout=3000)
        if info:
            found[name] = info
    def update_service(self, zc, type_, name): pass
    def remove_service(self, zc, type_, name): pass
zc = Zeroconf()
ServiceBrowser(zc, "_pacserve._tcp.local.", Listener())
deadline = time.time() + 10
while not found and time.time() < deadline:
    time.sleep(0.1)
for name, info in found.items():
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    print("service", name, "port", info.port, "id", props.get("id"), "arch", props.get("arch"), "addresses", *info.parsed_addresses())
zc.close()
sys.exit(0 if found else 1)
"#;
    let out = run(lan.host(1).command(browser).args(["-c", script]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "no _pacserve._tcp service seen: {text}"
    );
    let os_id = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("ID=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "linux".into());
    assert!(text.contains("port 15678"), "{text}");
    assert!(text.contains(&format!("id {os_id} ")), "{text}");
    assert!(
        text.contains(&format!("arch {} ", std::env::consts::ARCH)),
        "{text}"
    );
    assert!(text.contains(&lan.ipv4(2)), "announced address: {text}");
}

#[test]
fn own_daemon_is_skipped_proxies_are_bypassed_and_late_interfaces_are_joined() {
    let Some(lan) = Lan::new(3, Family::Dual) else {
        return;
    };
    let content = random_bytes(300_000, 44);
    let (own_cache, peer_cache, late_cache) = (tempdir(), tempdir(), tempdir());
    fs::write(own_cache.path().join(PKG), &content).unwrap();
    fs::write(peer_cache.path().join(PKG), &content).unwrap();
    let own = Daemon::start(lan.host(1), own_cache.path(), &[]);
    let peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    lan.wait_for_daemons(2);

    // Host 1's own daemon is listed (marked) by hand, but never downloaded from; and a proxy in
    // the environment, dead on purpose, is not used for the peer.
    let listing = run(client(lan.host(1)).args(["--who-has", PKG]));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains("(this host)"), "{text}");
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    let fetched = run(client(lan.host(1))
        .env("http_proxy", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .arg(&out)
        .arg("http://127.0.0.1:9/dead-mirror/x.pkg.tar.zst"));
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(fs::read(&out).unwrap(), content);
    assert_eq!(peer.served(PKG).len(), 1);
    assert!(
        own.served(PKG).is_empty(),
        "never from this host's own daemon"
    );

    // A daemon whose network comes up after it started (a laptop joining Wi-Fi).
    lan.host(3).sh("ip link set eth0 down");
    let _late = Daemon::start(lan.host(3), late_cache.path(), &[]);
    lan.host(3).sh(&format!(
        "ip link set eth0 up && ip route replace 224.0.0.0/4 dev eth0 && ip addr replace {}/24 dev eth0",
        lan.ipv4(3)
    ));
    let started = Instant::now();
    lan.wait_for_daemons(3);
    eprintln!(
        "late interface joined after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// On a LAN that stayed silent through a full wait, the next runs only skim for answers, so an
/// upgrade does not pay the wait for nobody on every file; yet a daemon that appears is found:
/// one slower than the skim at the next full listen, and from then on it is waited for.
#[test]
fn a_silent_lan_is_skimmed_yet_a_daemon_that_appears_is_found() {
    let Some(lan) = Lan::new(4, Family::Dual) else {
        return;
    };
    let (peer_cache, mirror_root, dir) = (tempdir(), tempdir(), tempdir());
    // Host 2 answers 6 ms after a query at the earliest: slower than a skim, within a quiet wait.
    if !lan.delay_link(2, std::time::Duration::from_millis(3)) {
        return;
    }
    let mut peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let Some(mirror) = Nginx::mirror_on(lan.host(4), mirror_root.path()) else {
        return;
    };
    lan.wait_for_daemons(1);
    let content = random_bytes(200_000, 43);
    for (name, on_peer) in [(PKG, true), ("silent-1-1-any.pkg.tar.zst", false)] {
        fs::write(mirror_root.path().join(name), &content).unwrap();
        if on_peer {
            fs::write(peer_cache.path().join(name), &content).unwrap();
        }
    }
    let fetch = |step: &str, name: &str| {
        let out = dir.path().join(step).join(format!("{name}.part"));
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let result = run(client(lan.host(1))
            .arg("-v")
            .arg(&out)
            .arg(format!("http://{}:8080/{name}", lan.url_host(4))));
        assert!(result.status.success(), "{step}");
        assert_eq!(fs::read(&out).unwrap(), content, "{step}");
        stderr(&result)
    };
    let pid = peer.pid().to_string();
    let signal = |sig: &str| assert!(run(Command::new("kill").args([sig, &pid])).status.success());

    // The LAN is silent (host 2's daemon is stopped) through a full wait…
    signal("-STOP");
    let first = fetch("a", "silent-1-1-any.pkg.tar.zst");
    signal("-CONT");
    assert!(first.contains("0 peers answered"), "{first}");
    // …so the next run only skims, too briefly for host 2: the mirror sends the file.
    let skimmed = fetch("b", PKG);
    assert!(skimmed.contains("waited the whole 3 ms"), "{skimmed}");
    assert_eq!(mirror.requests_for(PKG).len(), 1, "{skimmed}");
    assert!(peer.served(PKG).is_empty());
    // Once the skims have lasted their while, a run listens the whole quiet wait and finds host 2…
    std::thread::sleep(std::time::Duration::from_secs(3));
    let listened = fetch("c", PKG);
    assert!(listened.contains("up to 20 ms"), "{listened}");
    assert_eq!(peer.served(PKG).len(), 1, "{listened}");
    // …which every later run then waits for.
    let expected = fetch("d", PKG);
    assert!(
        expected.contains("1 peers answered, 1 have it"),
        "{expected}"
    );
    assert_eq!(peer.served(PKG).len(), 2, "{expected}");
    assert_eq!(mirror.requests_for(PKG).len(), 1);
    peer.terminate();
}
