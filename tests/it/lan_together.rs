//! Hosts upgrading together (issue 12): a download in progress is shared with the LAN (GROWING),
//! claims send about one host to the mirror per file, a follower survives its leader dying or
//! lying, and protocol versions 1 and 2 coexist. Real pacman 6.0.2 on every host, each with its
//! own pacserved over its own cache, nginx as the mirror behind a slow uplink (tc tbf).

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::{Daemon, KernelLink};
use crate::hostile::Hostile;
use crate::netns::{Family, Lan};
use crate::nginx::Nginx;
use crate::util::{fetch_bin, lan_memory_dir, require_tools, run, stderr, tempdir, wait_for_len};

/// `/metrics` series the tests read (see `pacserved(8)`, METRICS).
const SERVED_GROWING: &str = "pacserved_served_growing_total";
const FOLLOWERS: &str = "pacserved_followers";
const FOLLOW_FAILURES: &str = "pacserved_follow_failures_total";

struct Node {
    daemon: Daemon,
    pacman: Pacman,
}

struct Site {
    lan: Lan,
    repo: Repo,
    mirror: Nginx,
    nodes: Vec<Node>,
    _root: tempfile::TempDir,
}

/// `hosts` pacman hosts with daemons, and the mirror on the next host behind `rate`; the
/// repository holds `packages` of `payload` bytes (`tg0`, `tg1`, …). Every host has synced.
fn site(hosts: usize, packages: usize, payload: usize, rate: &str) -> Option<Site> {
    site_on(Family::Dual, hosts, packages, payload, rate)
}

/// [`site`] on a LAN of `family`.
fn site_on(
    family: Family,
    hosts: usize,
    packages: usize,
    payload: usize,
    rate: &str,
) -> Option<Site> {
    site_linked(family, (hosts, packages, payload, rate), |_| None)
}

/// [`site_on`], host `i`'s kernel showing its link as `kernel(i)` says (else as the veth is).
fn site_linked(
    family: Family,
    (hosts, packages, payload, rate): (usize, usize, usize, &str),
    kernel: impl Fn(usize) -> Option<KernelLink>,
) -> Option<Site> {
    // python3 for raw queries and hostile leaders, curl for the daemons' status pages.
    if !require_pacman_tools() || !require_tools(&["nginx", "tc", "python3", "curl"]) {
        return None;
    }
    let lan = Lan::new(hosts + 1, family)?;
    let root = tempdir();
    let repo = Repo::create(root.path(), "tg");
    for i in 0..packages {
        repo.add_package(&format!("tg{i}"), payload);
    }
    let mirror_host = hosts + 1;
    let mirror = Nginx::mirror_on(lan.host(mirror_host), root.path())?;
    lan.limit_rate(mirror_host, rate);
    let xfer = Pacman::lan_xfer_line(fetch_bin());
    let url = format!("http://{}:8080/tg", lan.url_host(mirror_host));
    let nodes: Vec<Node> = (1..=hosts)
        .map(|i| {
            let pacman = Pacman::new(Some(&xfer), &[("tg", url.clone())]);
            // The host's pacman is this daemon's: its databases vouch for what is shared.
            let db = pacman.base.path().join("db");
            let args = ["--dbpath", db.to_str().unwrap()];
            let daemon = match kernel(i) {
                Some(link) => Daemon::start_on_link(lan.host(i), &pacman.cache(), &args, &[], link),
                None => Daemon::start(lan.host(i), &pacman.cache(), &args),
            };
            Node { daemon, pacman }
        })
        .collect();
    lan.wait_for_daemons(hosts - 1);
    let site = Site {
        lan,
        repo,
        mirror,
        nodes,
        _root: root,
    };
    for i in 1..=hosts {
        assert!(
            site.pacman(i, &["-Sy"])
                .wait_with_output()
                .unwrap()
                .status
                .success()
        );
    }
    Some(site)
}

impl Site {
    /// Series `name` of host `host`'s daemon once it reaches `at_least` (or after 5 s).
    fn metric(&self, host: usize, name: &str, at_least: f64) -> f64 {
        self.nodes[host - 1]
            .daemon
            .metric(self.lan.host(host), name, at_least)
    }

    /// Starts pacman on host `i` (1-based).
    fn pacman(&self, i: usize, args: &[&str]) -> Child {
        let memory = lan_memory_dir();
        let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.as_os_str())];
        self.nodes[i - 1]
            .pacman
            .command_in(self.lan.host(i), &env, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pacman")
    }

    fn assert_installed(&self, host: usize, child: Child, files: &[String]) {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "host {host}: {err}");
        let pacman = &self.nodes[host - 1].pacman;
        for file in files {
            assert_eq!(
                fs::read(pacman.cache().join(file)).ok(),
                fs::read(self.repo.dir.join(file)).ok(),
                "host {host}: {file} is the repository's"
            );
        }
    }

    /// Stops host `i`'s daemon and starts the scripted peer in its place (hostile_peer.py's
    /// `mode` and settings), serving `file` of the repository.
    fn replace_daemon(
        &mut self,
        i: usize,
        mode: &str,
        file: &str,
        env: &[(&str, &str)],
    ) -> Hostile {
        self.nodes[i - 1].daemon.kill();
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let real = self.repo.dir.join(file);
        Hostile::start_with(self.lan.host(i), mode, &real, &self.lan.ipv4(i), &env)
    }

    /// Every host installs every package of the repository at the same moment, and each gets
    /// the repository's files; returns the packages' bytes, the bytes the mirror sent for them,
    /// and the mirror's requests per file.
    fn install_everywhere_at_once(&self) -> (u64, u64, Vec<usize>) {
        let files = files(&self.repo);
        let names: Vec<String> = (0..files.len()).map(|i| format!("tg{i}")).collect();
        let mut args = vec!["-S"];
        args.extend(names.iter().map(String::as_str));
        let children: Vec<Child> = (1..=self.nodes.len())
            .map(|i| self.pacman(i, &args))
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            self.assert_installed(i + 1, child, &files);
        }
        let package_bytes: u64 = (files.iter())
            .map(|f| fs::metadata(self.repo.dir.join(f)).unwrap().len())
            .sum();
        let sent: u64 = files.iter().map(|f| self.mirror.body_bytes(f)).sum();
        let per_file = (files.iter())
            .map(|f| self.mirror.requests_for(f).len())
            .collect();
        (package_bytes, sent, per_file)
    }

    /// The growing file of `name` in host `i`'s daemon.
    fn growing(&self, i: usize, name: &str) -> std::path::PathBuf {
        self.nodes[i - 1]
            .daemon
            .state_dir()
            .join("growing")
            .join(format!("{name}.growing"))
    }
}

/// The package files of the repository, by name.
fn files(repo: &Repo) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(&repo.dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".pkg.tar.zst") || n.ends_with(".pkg.tar.gz"))
        .collect();
    files.sort();
    files
}

#[test]
fn hosts_upgrading_together_fetch_each_file_from_the_mirror_about_once() {
    let Some(s) = site(4, 6, 1_000_000, "40mbit") else {
        return;
    };
    let (package_bytes, sent, per_file) = s.install_everywhere_at_once();
    eprintln!(
        "mirror sent {sent} bytes for {package_bytes} package bytes; requests per file {per_file:?}"
    );
    // Every host on its own would make this 4×.
    assert!(
        sent * 2 <= package_bytes * 3,
        "the mirror sent {sent} bytes for {package_bytes} ({per_file:?})"
    );
    // Served while arriving (the leader's side) or taken from a copy in progress (a follower's).
    let followed: f64 = (1..=s.nodes.len())
        .map(|h| {
            s.metric(h, SERVED_GROWING, 0.0) + s.metric(h, "pacserved_claims_followed_total", 0.0)
        })
        .sum();
    assert!(followed > 0.0, "nobody followed anybody");
}

#[test]
fn the_leader_killed_mid_file_leaves_followers_to_finish_from_the_next_source() {
    leader_fails_mid_file(false);
}

#[test]
fn a_stalled_leader_leaves_followers_to_finish_from_the_next_source() {
    leader_fails_mid_file(true);
}

/// Host 1 leads a slow download, hosts 2 and 3 follow it; then host 1's daemon dies (or, with
/// `stall`, freezes: SIGSTOP, its connections open and silent).
fn leader_fails_mid_file(stall: bool) {
    // 6 MB at 3 Mbit/s: 16 s, so the leader is still downloading when it fails even on a
    // busy machine (checked below).
    let Some(mut s) = site(3, 1, 6_000_000, "3mbit") else {
        return;
    };
    let files = files(&s.repo);
    let file = &files[0];
    let leader = s.pacman(1, &["-S", "tg0"]);
    wait_for_len(&s.growing(1, file), 1_000_000, Duration::from_secs(20));

    // A version 1 client cannot be told "in progress": MISS. A version 2 client is.
    let (v1, v2) = (ask(&s, 3, 1, 1, file), ask(&s, 3, 1, 2, file));
    assert_eq!(
        v1.split_whitespace().take(3).collect::<Vec<_>>(),
        ["41", "1", "0"],
        "{v1}"
    );
    assert_eq!(
        v2.split_whitespace().take(3).collect::<Vec<_>>(),
        ["49", "2", "2"],
        "{v2}"
    );

    let followers: Vec<Child> = (2..=3).map(|i| s.pacman(i, &["-S", "tg0"])).collect();
    // Both followers are reading host 1's copy (a bound on a wait: they start within seconds).
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.metric(1, FOLLOWERS, 2.0) < 2.0 {
        assert!(Instant::now() < deadline, "{:?}", s.nodes[0].daemon.log());
    }
    std::thread::sleep(Duration::from_millis(500));
    let landed = fs::metadata(s.growing(1, file)).map_or(0, |m| m.len());
    let size = fs::metadata(s.repo.dir.join(file)).unwrap().len();
    assert!(landed < size, "the leader finished before it could fail");
    match stall {
        true => {
            let pid = s.nodes[0].daemon.pid().to_string();
            assert!(
                run(Command::new("kill").args(["-STOP", &pid]))
                    .status
                    .success()
            );
        }
        false => s.nodes[0].daemon.kill(),
    }
    for (i, child) in followers.into_iter().enumerate() {
        s.assert_installed(i + 2, child, std::slice::from_ref(file));
    }
    let _ = leader.wait_with_output();
    // The followers resumed from the mirror at their own offsets.
    let resumed = s
        .mirror
        .requests_for(file)
        .into_iter()
        .filter(|l| l.range.starts_with("bytes=") && !l.range.starts_with("bytes=0-"))
        .count();
    assert!(resumed >= 2, "{:?}", s.mirror.requests_for(file));
}

#[test]
fn a_follower_of_a_follower_gets_the_file_when_the_first_leader_dies() {
    let Some(mut s) = site(3, 1, 6_000_000, "3mbit") else {
        return;
    };
    let files = files(&s.repo);
    let file = &files[0];
    let leader = s.pacman(1, &["-S", "tg0"]);
    wait_for_len(&s.growing(1, file), 500_000, Duration::from_secs(20));
    // Host 2 asks no peer itself: its daemon's claim finds host 1 and follows it, sharing what
    // it receives in turn.
    let out = tempdir();
    let url = format!("http://{}:8080/tg/{file}", s.lan.url_host(4));
    let dbpath = s.nodes[1].pacman.base.path().join("db");
    let mut second = s
        .lan
        .host(2)
        .command(fetch_bin())
        .args(["--config", "/dev/null", "--no-peers", "--dbpath"])
        .arg(&dbpath)
        .arg(out.path().join(format!("{file}.part")))
        .arg(&url)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_len(&s.growing(2, file), 1_000_000, Duration::from_secs(20));
    let answer = ask(&s, 3, 2, 2, file);
    assert_eq!(
        answer.split_whitespace().nth(2),
        Some("2"),
        "host 2 offers it: {answer}"
    );
    // The first leader dies; host 2 carries on from the mirror, host 3 follows host 2.
    s.nodes[0].daemon.kill();
    let third = s.pacman(3, &["-S", "tg0"]);
    s.assert_installed(3, third, std::slice::from_ref(file));
    assert!(second.wait().unwrap().success());
    assert_eq!(
        fs::read(out.path().join(format!("{file}.part"))).ok(),
        fs::read(s.repo.dir.join(file)).ok()
    );
    let served_by_2 = s.metric(2, SERVED_GROWING, 1.0);
    assert!(served_by_2 >= 1.0, "{:?}", s.nodes[1].daemon.log());
    let _ = leader.wait_with_output();
}

/// Asks host `to`'s daemon for `name` from host `from` in protocol `version`, as a script
/// speaking only that version would; returns the answer's length, version, state and landed.
fn ask(s: &Site, from: usize, to: usize, version: u8, name: &str) -> String {
    let to = s.lan.ipv4(to);
    let script = format!(
        r#"
import socket
name = {name:?}.encode()
q = b"PSRV" + bytes([{version}, 1]) + b"12345678" + bytes([len(name)]) + name + b"\x00"
if {version} == 2:
    q += b"\x00" * 9
q = q.ljust(64, b"\x00")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, ({to:?}, 15678))
d, _ = s.recvfrom(512)
print(len(d), d[4], d[14], int.from_bytes(d[41:49], "big") if len(d) == 49 else -1)
"#
    );
    let out = s
        .lan
        .host(from)
        .command("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_leader_sending_wrong_bytes_is_caught_by_the_followers_check() {
    let Some(mut s) = site(2, 1, 1_500_000, "40mbit") else {
        return;
    };
    let files = files(&s.repo);
    // Host 2's daemon makes way for a liar that says "in progress" and sends wrong bytes.
    let liar = s.replace_daemon(2, "wrongbytes", &files[0], &[("HOSTILE_GROWING", "1")]);
    let child = s.pacman(1, &["-S", "tg0"]);
    s.assert_installed(1, child, &files);
    assert!(liar.log().contains("GET /pkg/"), "{}", liar.log());
    assert_eq!(s.mirror.requests_for(&files[0]).len(), 1);
}

#[test]
fn version_1_and_2_daemons_and_clients_share_one_lan() {
    let Some(mut s) = site(3, 2, 500_000, "40mbit") else {
        return;
    };
    let files = files(&s.repo);
    // Host 3 runs a version 1 daemon (the scripted one, honest) holding tg0.
    let v1 = s.replace_daemon(3, "honest", &files[0], &[]);
    // Host 2's new daemon holds tg1.
    fs::copy(
        s.repo.dir.join(&files[1]),
        s.nodes[1].pacman.cache().join(&files[1]),
    )
    .unwrap();
    let child = s.pacman(1, &["-S", "tg0", "tg1"]);
    s.assert_installed(1, child, &files);
    assert!(
        v1.log().contains(&format!("GET /pkg/{}", files[0])),
        "{}",
        v1.log()
    );
    assert!(!s.nodes[1].daemon.served(&files[1]).is_empty());
    for file in &files {
        assert!(
            s.mirror.requests_for(file).is_empty(),
            "{file} came from the LAN"
        );
    }
    // A version 1 client asking the new daemon gets a version 1 answer: HAVE, or MISS.
    let have = ask(&s, 1, 2, 1, &files[1]);
    assert_eq!(
        have.split_whitespace().take(3).collect::<Vec<_>>(),
        ["41", "1", "1"],
        "{have}"
    );
    let miss = ask(&s, 1, 2, 1, "nothing-1-1-any.pkg.tar.zst");
    assert_eq!(
        miss.split_whitespace().take(3).collect::<Vec<_>>(),
        ["41", "1", "0"],
        "{miss}"
    );
}

#[test]
fn a_tampered_growing_file_never_reaches_pacman() {
    let Some(s) = site(2, 1, 5_000_000, "3mbit") else {
        return;
    };
    let files = files(&s.repo);
    let file = &files[0];
    let leader = s.pacman(1, &["-S", "tg0"]);
    let growing = s.growing(1, file);
    wait_for_len(&growing, 500_000, Duration::from_secs(20));
    // Someone with access to host 1's state directory changes what landed.
    let f = fs::OpenOptions::new().write(true).open(&growing).unwrap();
    f.write_all_at(&[0u8; 65536], 4096).unwrap();
    let follower = s.pacman(2, &["-S", "tg0"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&follower.stderr);
    assert!(follower.status.success(), "{stderr}");
    assert_eq!(
        fs::read(s.nodes[1].pacman.cache().join(file)).ok(),
        fs::read(s.repo.dir.join(file)).ok()
    );
    s.assert_installed(1, leader, std::slice::from_ref(file));
    let followed = s.metric(1, SERVED_GROWING, 1.0);
    assert!(
        followed >= 1.0,
        "host 2 followed host 1: {:?}",
        s.nodes[0].daemon.log()
    );
    // What host 2 followed was refused: by its client's check, or its agent's.
    let refused = s.metric(2, FOLLOW_FAILURES, 1.0) >= 1.0 || stderr.contains("sent a bad file");
    assert!(refused, "{stderr}\n{:?}", s.nodes[1].daemon.log());
}

#[test]
fn hosts_on_an_ipv6_only_lan_share_their_downloads_too() {
    let Some(s) = site_on(Family::Ipv6Only, 3, 4, 1_000_000, "40mbit") else {
        return;
    };
    let files = files(&s.repo);
    let names: Vec<String> = (0..4).map(|i| format!("tg{i}")).collect();
    let mut args = vec!["-S"];
    args.extend(names.iter().map(String::as_str));
    let children: Vec<Child> = (1..=3).map(|i| s.pacman(i, &args)).collect();
    for (i, child) in children.into_iter().enumerate() {
        s.assert_installed(i + 1, child, &files);
    }
    let package_bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(s.repo.dir.join(f)).unwrap().len())
        .sum();
    let sent: u64 = files.iter().map(|f| s.mirror.body_bytes(f)).sum();
    // Claims over IPv4 only (as before) would leave each host to the mirror: 3×.
    assert!(
        sent * 2 <= package_bytes * 3,
        "the mirror sent {sent} bytes for {package_bytes}"
    );
}

/// How a liar that answers claims with GROWING serves its file (hostile_peer.py's modes).
fn a_liar_answering_claims_costs_one_round(mode: &str) {
    a_liar_answering_claims_in_versions_costs_one_round(mode, None)
}

/// [`a_liar_answering_claims_costs_one_round`], the liar also answering version 5 claims and
/// telling `v5_link` as its link speed.
fn a_liar_answering_claims_in_versions_costs_one_round(mode: &str, v5_link: Option<u16>) {
    let Some(mut s) = site(2, 1, 3_000_000, "40mbit") else {
        return;
    };
    let files = files(&s.repo);
    let file = &files[0];
    // Host 2 is a liar that says "in progress" to every claim (and to nothing else, so that
    // host 1's client never tries it: only its daemon does), and keeps asking host 1's daemon
    // things, so that host 1 knows the LAN is shared and claims.
    let poke = s.lan.ipv4(1);
    let link = v5_link.map(|l| l.to_string());
    let mut env = vec![
        ("HOSTILE_GROWING", "1"),
        ("HOSTILE_CLAIMS_ONLY", "1"),
        ("HOSTILE_POKE", poke.as_str()),
    ];
    if let Some(link) = &link {
        env.push(("HOSTILE_V5_LINK", link.as_str()));
    }
    let liar = s.replace_daemon(2, mode, file, &env);
    wait_until_queried(&s, 1);
    let pacman = s.pacman(1, &["-S", "tg0"]);
    // Generous: the slowest liar holds each source for its 12 s budget, twice (the client's
    // peer phase and the daemon's follow); the loop this guards against never ended.
    let out = wait_bounded(pacman, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(s.nodes[0].pacman.cache().join(file)).ok(),
        fs::read(s.repo.dir.join(file)).ok()
    );
    // The daemon itself gave up on the liar (within the liar's budget, not when its client
    // went away): the rest came from the mirror, or the whole failed the check.
    // (The liar is the only host it could have followed: see its one GET below.)
    let dropped = s.metric(1, FOLLOW_FAILURES, 1.0);
    assert!(
        dropped >= 1.0,
        "host 1's daemon followed the liar and dropped it: {:?}",
        s.nodes[0].daemon.log()
    );
    let liar_gets = liar.log().matches("GET /pkg/").count();
    assert_eq!(
        liar_gets,
        1,
        "the daemon follows the liar once: {}",
        liar.log()
    );
    let mirror_gets = s.mirror.requests_for(file).len();
    assert!(
        mirror_gets <= 3,
        "one round, not a loop: {:?}",
        s.mirror.requests_for(file)
    );
}

#[test]
fn a_liar_answering_claims_with_fast_garbage_costs_one_round_not_a_loop() {
    a_liar_answering_claims_costs_one_round("wrongbytes");
}

/// The liar speaks version 5 and tells the fastest link there is, so that its copy is the one a
/// follower takes over any other: its bytes are still checked, and it costs one round.
#[test]
fn a_liar_telling_a_fast_link_and_answering_claims_with_garbage_costs_one_round() {
    a_liar_answering_claims_in_versions_costs_one_round("wrongbytes", Some(u16::MAX));
}

#[test]
fn a_liar_answering_claims_with_1000_bytes_then_a_close_costs_one_round_not_a_loop() {
    a_liar_answering_claims_costs_one_round("short-close");
}

#[test]
fn a_liar_answering_claims_with_slow_garbage_costs_one_round_not_a_loop() {
    a_liar_answering_claims_costs_one_round("slow-garbage");
}

#[test]
fn a_liar_answering_claims_with_a_dripping_head_costs_one_round_not_a_stuck_follow() {
    a_liar_answering_claims_costs_one_round("drip-headers");
}

#[test]
fn a_liar_answering_claims_with_endless_100_continue_costs_one_round_not_a_stuck_follow() {
    a_liar_answering_claims_costs_one_round("continue");
}

#[test]
fn claim_answers_from_off_the_link_are_not_followed() {
    let Some(mut s) = site(2, 1, 1_000_000, "40mbit") else {
        return;
    };
    let files = files(&s.repo);
    // Host 2 answers from an address on no subnet of host 1's link (as a host beyond a router,
    // or one forging its source, would), saying "in progress, 1 byte short".
    s.lan.host(2).sh("ip addr add 10.199.0.2/32 dev eth0");
    // Host 1 can reach that address (a route, not a subnet of its link): believing the answer
    // would make it connect there.
    s.lan.host(1).sh("ip route add 10.199.0.2/32 dev eth0");
    let poke = s.lan.ipv4(1);
    let liar = s.replace_daemon(
        2,
        "honest",
        &files[0],
        &[
            ("HOSTILE_GROWING", "1"),
            ("HOSTILE_POKE", &poke),
            ("HOSTILE_FROM", "10.199.0.2"),
            ("HOSTILE_ONLY_EXTRA", "1"),
        ],
    );
    wait_until_queried(&s, 1);
    let child = s.pacman(1, &["-S", "tg0"]);
    s.assert_installed(1, child, &files);
    assert!(
        liar.log().contains("QUERY tg0"),
        "the liar heard the claim: {}",
        liar.log()
    );
    assert!(
        !liar.log().contains("GET /pkg/"),
        "neither the client nor its daemon believed it: {}",
        liar.log()
    );
    assert_eq!(s.mirror.requests_for(&files[0]).len(), 1);
}

/// Waits (bounded) until host `i`'s daemon has answered a query from another host.
fn wait_until_queried(s: &Site, i: usize) {
    let url = format!("http://{}:15678/", s.lan.url_host(i));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.lan.host(i).command("curl").args(["-s", &url]).output();
        let status = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let queries = status.ok().and_then(|page| {
            page.lines()
                .find(|l| l.trim_start().starts_with("queries"))
                .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        });
        if queries.is_some_and(|n| n > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "host {i} never heard a query");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` at most `limit`, then kills it and fails: a download that loops must end
/// the test, not hang it.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A scripted claimant for the claim tests below, speaking version 4 (or 5, telling a link): it
/// says hello once (a daemon claims only on a LAN where it has heard others), then answers a
/// CLAIM query of its version for a file
/// with CLAIMING under the id it is given; in mode `starts`, a CLAIM query for the same file
/// 150 ms later or more with HAVE, serving the file from a directory over HTTP (as a rival that
/// won and finished would; one asking again within a transaction's first claim window still
/// hears CLAIMING), in mode `never` with CLAIMING again.
const RIVAL: &str = r#"
import http.server, os, socket, struct, sys, threading, time
fake, ifaddr, seconds, mode, root = bytes.fromhex(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
version, link = int(sys.argv[6]), int(sys.argv[7])
tail = struct.pack(">H", link) if version >= 5 else b""
PORT = 18080
class Files(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        return os.path.join(root, os.path.basename(path))
    def log_message(self, *args):
        pass
http_server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Files)
threading.Thread(target=http_server.serve_forever, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", 15678))
u.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("239.255.15.78") + socket.inet_aton(ifaddr))
u.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
name = b"hello-1-1-any.pkg.tar.zst"
hello = b"PSRV\x03\x01" + b"\x00" * 8 + bytes([len(name)]) + name + b"\x00" + b"\x00" * 9
u.sendto(hello.ljust(64, b"\x00"), ("239.255.15.78", 15678))
print("READY", flush=True)
u.settimeout(0.5)
seen = {}
end = time.time() + seconds
while time.time() < end:
    try:
        d, addr = u.recvfrom(2048)
    except socket.timeout:
        continue
    if len(d) < 64 or d[:4] != b"PSRV" or d[4] != version or d[5] != 1:
        continue
    n = d[14]
    a = d[15 + n]
    if not d[16 + n + a] & 1:
        continue
    file = d[15:15 + n].decode()
    if mode == "starts" and file in seen and time.time() - seen[file] > 0.15:
        size = os.path.getsize(os.path.join(root, file))
        body = struct.pack(">HQQQBH", PORT, size, 1700000000, size, 0, 0)
        answer = b"PSRV" + bytes([version, 2]) + d[6:14] + b"\x01" + fake + body + tail
    else:
        answer = b"PSRV" + bytes([version, 2]) + d[6:14] + b"\x03" + fake + struct.pack(">HQQQBH", 0, 0, 0, 0, 0, 0) + tail
    seen.setdefault(file, time.time())
    u.sendto(answer, addr)
"#;

/// What host 1's daemon did with `FILES` claims against a scripted version 4 rival on host 2
/// (mode `starts` or `never`, see [`RIVAL`]): (files the rival outranks it on, deferred,
/// followed, led), each file fetched once through the daemon's agent by pacserve-fetch.
fn against_a_rival(mode: &str) -> Option<(usize, f64, f64, f64, Site)> {
    against_a_rival_speaking(mode, (4, 0), None)
}

/// [`against_a_rival`], the rival speaking `(version, link)`, host 1's kernel showing its
/// link as `kernel` says.
fn against_a_rival_speaking(
    mode: &str,
    (version, link): (u8, u16),
    kernel: Option<KernelLink>,
) -> Option<(usize, f64, f64, f64, Site)> {
    use pacserve_fetch::protocol::{claim_rank, id_hex, parse_id_hex};
    const FILES: usize = 6;
    let on_host_1 = |i| if i == 1 { kernel } else { None };
    let mut s = site_linked(Family::Dual, (2, FILES, 100_000, "40mbit"), on_host_1)?;
    let files = files(&s.repo);
    let id = s.nodes[0]
        .daemon
        .log()
        .iter()
        .find_map(|l| {
            l.split("id ")
                .nth(1)?
                .split(' ')
                .next()
                .and_then(parse_id_hex)
        })
        .expect("the daemon logs its id");
    // The rival outranks the daemon on the first file and on some, not all, of the others:
    // under the lowest-id rule it would be all files or none.
    let outranks = |rival: &[u8; 8], file: &str| claim_rank(file, rival) > claim_rank(file, &id);
    let rival = (1..=255u8)
        .map(|b| [b; 8])
        .find(|r| {
            let n = files.iter().filter(|f| outranks(r, f)).count();
            *r != id && outranks(r, &files[0]) && (2..FILES - 1).contains(&n)
        })
        .expect("an id that outranks the daemon on some files only");
    let outranked = files.iter().filter(|f| outranks(&rival, f)).count();
    s.nodes[1].daemon.kill();
    let repo = s.repo.dir.to_string_lossy().into_owned();
    let mut script = s
        .lan
        .host(2)
        .command("python3")
        .args([
            "-c",
            RIVAL,
            &id_hex(&rival),
            &s.lan.ipv4(2),
            "120",
            mode,
            &repo,
            &version.to_string(),
            &link.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the rival");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(script.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "READY");
    let mirror = s.lan.url_host(3);
    let out = tempdir();
    let db = s.nodes[0].pacman.base.path().join("db");
    for file in &files {
        let part = out.path().join(format!("{file}.part"));
        let done = run(s
            .lan
            .host(1)
            .command(fetch_bin())
            .env("TMPDIR", lan_memory_dir())
            .args(["--config", "/dev/null", "--dbpath"])
            .arg(&db)
            .arg(&part)
            .arg(format!("http://{mirror}:8080/tg/{file}")));
        assert!(done.status.success(), "{}", stderr(&done));
        assert_eq!(fs::read(&part).ok(), fs::read(s.repo.dir.join(file)).ok());
    }
    let _ = script.kill();
    let _ = script.wait();
    let deferred = s.metric(1, "pacserved_claims_deferred_total", 1.0);
    let followed = s.metric(1, "pacserved_claims_followed_total", 0.0);
    let led = s.metric(1, "pacserved_claims_led_total", 1.0);
    Some((outranked, deferred, followed, led, s))
}

/// Version 4 claims (issue 21): against another version 4 claimant, a daemon leaves each file
/// to whichever of the two ranks higher for that file, so different files go to different
/// hosts; it follows the rival's copy of the files it left, and leads the others.
#[test]
fn a_claim_goes_to_the_claimant_of_highest_rank_for_that_file() {
    let Some((outranked, deferred, followed, led, s)) = against_a_rival("starts") else {
        return;
    };
    let files = files(&s.repo);
    assert_eq!(
        deferred, outranked as f64,
        "deferred on the files the rival outranks"
    );
    assert_eq!(
        followed, outranked as f64,
        "and followed the rival's copy of them"
    );
    assert_eq!(led, (files.len() - outranked) as f64, "led the others");
    let from_mirror: usize = files.iter().map(|f| s.mirror.requests_for(f).len()).sum();
    assert_eq!(
        from_mirror,
        files.len() - outranked,
        "the rival's files never reached the mirror"
    );
}

/// A LAN host that claims every file and fetches none costs a daemon one wait, not one per
/// file: after a claimant it deferred to never started, it is not deferred to for a while.
#[test]
fn a_claimant_that_never_starts_is_waited_for_once() {
    let Some((outranked, deferred, followed, led, s)) = against_a_rival("never") else {
        return;
    };
    let files = files(&s.repo);
    assert!(outranked >= 2);
    assert_eq!(deferred, 1.0, "one wait for the no-show, then none");
    assert_eq!(followed, 0.0);
    assert_eq!(led, files.len() as f64);
    for file in &files {
        assert_eq!(s.mirror.requests_for(file).len(), 1, "{file}");
    }
}

/// A LAN host telling the fastest link there is (version 5), claiming every file and fetching
/// none, costs a gigabit host one wait for its claim and a few waits making way, not one per
/// file: after the no-show its claims are not believed, and after three waits to make way in
/// which nobody claimed, making way pauses. Before the pause, host 1 made way on every file
/// after the first.
#[test]
fn a_lan_host_telling_a_fast_link_and_never_fetching_costs_a_few_waits() {
    let kernel = Some(KernelLink::Wired(1000));
    let Some((_, deferred, followed, led, s)) =
        against_a_rival_speaking("never", (5, u16::MAX), kernel)
    else {
        return;
    };
    let files = files(&s.repo);
    let made_way = s.metric(1, "pacserved_claims_made_way_total", 0.0);
    eprintln!(
        "deferred {deferred}, made way {made_way}, led {led} of {}",
        files.len()
    );
    assert_eq!(deferred, 1.0, "one wait for the no-show, then none");
    assert!((1.0..=3.0).contains(&made_way), "made way {made_way} times");
    assert_eq!(followed, 0.0);
    assert_eq!(led, files.len() as f64);
    for file in &files {
        assert_eq!(s.mirror.requests_for(file).len(), 1, "{file}");
    }
}

/// A host whose link delays datagrams (a busy Wi-Fi link queues them behind bulk data) hears
/// the answers to its claims after the claim window, and is heard late: the LAN still fetches
/// each file from the mirror about once. Host 1's link adds 120 ms each way; the three hosts
/// install the same packages at once. Before the longer claim window for such a host (and its
/// second round when it heard only claims), the mirror sent every file twice here.
#[test]
fn a_host_whose_link_delays_datagrams_still_settles_its_claims() {
    let Some(s) = site(3, 4, 1_000_000, "40mbit") else {
        return;
    };
    if !s.lan.delay_link(1, Duration::from_millis(120)) {
        return;
    }
    let (package_bytes, sent, per_file) = s.install_everywhere_at_once();
    assert!(
        sent * 4 <= package_bytes * 5,
        "the mirror sent {sent} bytes for {package_bytes} ({per_file:?})"
    );
}

impl Site {
    /// Starts pacserve-fetch on host `i` for `file` through the host's pacserved (no client-side
    /// peer query: the daemon's agent fetches it, and settles who goes to the mirror).
    fn fetch_through_agent(&self, i: usize, file: &str, out: &std::path::Path) -> Child {
        let db = self.nodes[i - 1].pacman.base.path().join("db");
        let mirror = self.lan.url_host(self.nodes.len() + 1);
        self.lan
            .host(i)
            .command(fetch_bin())
            .env("TMPDIR", lan_memory_dir())
            .args(["--config", "/dev/null", "--no-peers", "--dbpath"])
            .arg(&db)
            .arg(out.join(format!("{file}.h{i}.part")))
            .arg(format!("http://{mirror}:8080/tg/{file}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pacserve-fetch")
    }

    /// Waits for a fetch of [`Site::fetch_through_agent`] and checks what it wrote.
    fn fetched(&self, i: usize, child: Child, file: &str, out: &std::path::Path) {
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "host {i}: {}", stderr(&done));
        assert_eq!(
            fs::read(out.join(format!("{file}.h{i}.part"))).ok(),
            fs::read(self.repo.dir.join(file)).ok(),
            "host {i}: {file} is the repository's"
        );
    }

    /// Host 1 installs every package of the repository, and the other hosts the same 40 ms
    /// later (hosts starting one upgrade a moment apart); each gets the repository's files.
    /// Returns the claims each host's daemon led.
    fn install_host_1_first(&self) -> Vec<f64> {
        let files = files(&self.repo);
        let names: Vec<String> = (0..files.len()).map(|i| format!("tg{i}")).collect();
        let mut args = vec!["-S"];
        args.extend(names.iter().map(String::as_str));
        let hosts = self.nodes.len();
        let first = self.pacman(1, &args);
        std::thread::sleep(Duration::from_millis(40));
        let rest: Vec<Child> = (2..=hosts).map(|i| self.pacman(i, &args)).collect();
        self.assert_installed(1, first, &files);
        for (i, child) in (2..=hosts).zip(rest) {
            self.assert_installed(i, child, &files);
        }
        (1..=hosts)
            .map(|i| self.metric(i, "pacserved_claims_led_total", 0.0))
            .collect()
    }

    /// The hosts (by address) that followed host `i`'s download of `file`, from its log.
    fn followers_of(&self, i: usize, file: &str) -> std::collections::BTreeSet<String> {
        let needle = format!("GET /pkg/{file} from ");
        self.nodes[i - 1]
            .daemon
            .log()
            .iter()
            .filter(|l| l.contains("following the download in progress"))
            .filter_map(|l| {
                let from = l.split(&needle).nth(1)?;
                from.split(": following").next().map(str::to_owned)
            })
            .collect()
    }
}

/// Five hosts that want a file at the same moment, while one host is fetching it, do not all
/// read that host's copy: a copy whose daemon already sends to two hosts is left to them while
/// the others' copies start, so the five form a tree (on a slow upload link, a star around one
/// copy made eight hosts take four times as long as one). Before, all five read host 1.
#[test]
fn hosts_settling_at_once_spread_over_the_copies_instead_of_reading_one() {
    let Some(s) = site(6, 1, 3_000_000, "6mbit") else {
        return;
    };
    let file = &files(&s.repo)[0];
    let out = tempdir();
    let first = s.fetch_through_agent(1, file, out.path());
    wait_for_len(&s.growing(1, file), 100_000, Duration::from_secs(20));
    let rest: Vec<Child> = (2..=6)
        .map(|i| s.fetch_through_agent(i, file, out.path()))
        .collect();
    s.fetched(1, first, file, out.path());
    for (i, child) in (2..=6).zip(rest) {
        s.fetched(i, child, file, out.path());
    }
    let of_first = s.followers_of(1, file);
    let of_others: usize = (2..=6).map(|i| s.followers_of(i, file).len()).sum();
    eprintln!("host 1 fed {of_first:?}; the other hosts fed {of_others}");
    assert!(
        of_first.len() <= 3,
        "host 1's copy was read by {} hosts: {of_first:?}",
        of_first.len()
    );
    assert!(of_others >= 2, "the followers' copies fed the rest");
    assert_eq!(s.mirror.requests_for(file).len(), 1, "one mirror download");
}

/// Hosts upgrading together: a daemon that is fetching one file from the mirror already lets
/// another daemon lead the next file both want, instead of leading it too because it reached
/// it first (the host that led one file finishes it first, so it used to lead every file).
/// Host 1 leads one file; then it asks for another, and host 2 for the same one a moment
/// later: host 2 leads it and host 1 follows. Before, host 1 led it and host 2 followed. (Up
/// to three times, in case a loaded machine held host 2's claim past host 1's wait.)
#[test]
fn a_daemon_leading_a_download_lets_another_lead_the_next_file() {
    let Some(s) = site(2, 7, 1_500_000, "4mbit") else {
        return;
    };
    let files = files(&s.repo);
    let out = tempdir();
    // Both hosts fetch one file at the same moment: each learns the other fetches its files.
    let warm: Vec<Child> = (1..=2)
        .map(|i| s.fetch_through_agent(i, &files[0], out.path()))
        .collect();
    for (i, child) in (1..=2).zip(warm) {
        s.fetched(i, child, &files[0], out.path());
    }
    let mut made_way = None;
    for pair in files[1..].chunks(2) {
        let (long_file, file) = (&pair[0], &pair[1]);
        let long = s.fetch_through_agent(1, long_file, out.path());
        wait_for_len(&s.growing(1, long_file), 100_000, Duration::from_secs(20));
        let led = |i| s.metric(i, "pacserved_claims_led_total", 0.0);
        let (first_led, second_led) = (led(1), led(2));
        let first = s.fetch_through_agent(1, file, out.path());
        std::thread::sleep(Duration::from_millis(100));
        let second = s.fetch_through_agent(2, file, out.path());
        s.fetched(1, first, file, out.path());
        s.fetched(2, second, file, out.path());
        s.fetched(1, long, long_file, out.path());
        assert_eq!(
            s.mirror.requests_for(file).len(),
            1,
            "{file}: one mirror download"
        );
        if led(2) > second_led && led(1) == first_led {
            made_way = Some(file.clone());
            break;
        }
        eprintln!("{file}: host 1 led it; trying the next file");
    }
    let file = made_way.expect("host 1 never let host 2 lead while it led a download");
    assert!(
        s.followers_of(2, &file).len() == 1,
        "host 1 followed host 2's copy of {file}"
    );
}

/// A transaction's first files are fetched at once, before the other hosts of an upgrade have
/// claimed anything: their claims stay open a moment, so hosts starting the same upgrade a
/// moment later claim them too and the rank spreads them. Before, the host that started first
/// led all of them, finished first, reached the next files first and led those too (on a
/// mixed LAN, a Wi-Fi laptop that started first fed everyone for the whole upgrade). On a LAN
/// that has not shared anything yet, host 1 installs six packages and hosts 2 and 3 the same a
/// moment later: no host leads all six. (Up to three fresh LANs, in case a loaded machine held
/// hosts 2 and 3 back past the window.)
#[test]
fn the_first_files_of_an_upgrade_are_not_all_led_by_the_host_that_started_first() {
    let mut spread = None;
    for attempt in 0..3 {
        let Some(s) = site(3, 6, 500_000, "20mbit") else {
            return;
        };
        let led = s.install_host_1_first();
        eprintln!("attempt {attempt}: claims led per host {led:?}");
        if led.iter().all(|&n| n < 6.0) {
            spread = Some(led);
            break;
        }
    }
    assert!(
        spread.is_some(),
        "one host led every first file of the upgrade, on three LANs"
    );
}

/// A LAN of a Wi-Fi laptop and wired desktops (protocol version 5): the laptop, whose kernel
/// shows a wireless interface, starts an upgrade a moment before two desktops (gigabit NICs)
/// start the same one. The desktops lead every file, and no desktop reads the laptop's copy:
/// each file would otherwise reach the desktops at Wi-Fi speed. Before, the laptop led about a
/// third of the files by rank (and, starting first, all of the first ones), and the desktops
/// followed it: with the link rule off, it led 5 and 4 of the 8. (Up to three fresh LANs, in
/// case a loaded machine held the desktops back past the laptop's wait: in one CI run the
/// laptop led the last file alone.)
#[test]
fn a_wifi_host_leads_nothing_and_feeds_no_wired_host_while_wired_hosts_fetch_too() {
    const FILES: usize = 8;
    let kernel = |i| match i {
        1 => Some(KernelLink::Wireless),
        _ => Some(KernelLink::Wired(1000)),
    };
    let mut kept_out = false;
    for attempt in 0..3 {
        let Some(s) = site_linked(Family::Dual, (3, FILES, 500_000, "20mbit"), kernel) else {
            return;
        };
        let told = |i: usize, needle: &str| {
            (s.nodes[i - 1].daemon.log().iter()).any(|l| l.contains(needle))
        };
        assert!(
            told(1, "link speed 100 Mbit/s"),
            "the laptop reads its Wi-Fi"
        );
        assert!(told(2, "link speed 1000 Mbit/s"), "a desktop reads its NIC");
        let files = files(&s.repo);
        let led = s.install_host_1_first();
        let desktop_ips = [s.lan.ipv4(2), s.lan.ipv4(3)];
        let log = s.nodes[0].daemon.log();
        let fed: Vec<&String> = (log.iter())
            .filter(|l| l.contains("GET /pkg/"))
            .filter(|l| {
                desktop_ips
                    .iter()
                    .any(|ip| l.contains(&format!(" from {ip}")))
            })
            .collect();
        eprintln!("attempt {attempt}: claims led per host {led:?}; the laptop fed {fed:#?}");
        let from_mirror: usize = files.iter().map(|f| s.mirror.requests_for(f).len()).sum();
        assert!(
            from_mirror <= FILES + 1,
            "{from_mirror} mirror downloads of {FILES} files"
        );
        if led[0] == 0.0 && fed.is_empty() {
            kept_out = true;
            break;
        }
    }
    assert!(
        kept_out,
        "the laptop led files or fed a desktop on three LANs in a row"
    );
}
