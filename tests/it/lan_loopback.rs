//! Several pacserved daemons and a client on `lo` inside a private network namespace (no root
//! needed). Daemons share UDP port 15678 and each has its own cache and HTTP port; the client
//! uses `--interface lo --include-self` because on one machine every peer is "this host".

use std::fs;
use std::process::Command;

use crate::daemon::Daemon;
use crate::netns::Host;
use crate::nginx::{self, Nginx};
use crate::util::{fetch_bin, lan_memory_dir, random_bytes, run, stderr, tempdir};

const PKG: &str = "shared-3.1-2-x86_64.pkg.tar.zst";

fn client(host: &Host) -> Command {
    let mut cmd = host.command(fetch_bin());
    // Each test remembers its own LAN (the LAN memory lives under TMPDIR), not its neighbours'.
    cmd.env("TMPDIR", lan_memory_dir());
    // These files are in no sync database; the pacman tests cover verified peers.
    cmd.args([
        "--config",
        "/dev/null",
        "--interface",
        "lo",
        "--include-self",
        "--unverified-peers",
    ]);
    cmd
}

struct Setup {
    host: Host,
    holder: Daemon,
    other: Daemon,
    mirror: Nginx,
    content: Vec<u8>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Daemon `holder` has PKG, daemon `other` has nothing, the mirror has PKG too.
fn setup() -> Option<Setup> {
    let host = Host::loopback()?;
    let content = random_bytes(900_000, 31);
    let (cache_a, cache_b, mirror_root) = (tempdir(), tempdir(), tempdir());
    fs::write(cache_a.path().join(PKG), &content).unwrap();
    fs::write(mirror_root.path().join(PKG), &content).unwrap();
    // The holder is also the namespace's download agent, for the loopback mirror its
    // pacman.conf names; one agent per namespace, so the other daemon runs without.
    let conf = crate::daemon::conf_naming(mirror_root.path(), &[mirror_url("")]);
    let holder = Daemon::start(
        &host,
        cache_a.path(),
        &[
            "--http-port",
            "0",
            "--interface",
            "lo",
            "--pacman-conf",
            conf.to_str().unwrap(),
        ],
    );
    let other = Daemon::start(
        &host,
        cache_b.path(),
        &["--http-port", "0", "--interface", "lo", "--no-agent"],
    );
    let mirror = Nginx::start_in(Some(&host), mirror_root.path(), nginx::Options::default())?;
    Some(Setup {
        host,
        holder,
        other,
        mirror,
        content,
        _dirs: vec![cache_a, cache_b, mirror_root],
    })
}

fn mirror_url(name: &str) -> String {
    format!("http://127.0.0.1:8080/{name}")
}

#[test]
fn a_package_a_peer_holds_comes_from_that_peer() {
    let Some(s) = setup() else { return };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = run(client(&s.host).arg("-v").arg(&out).arg(mirror_url(PKG)));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), s.content);
    assert_eq!(s.holder.served(PKG).len(), 1, "holder served it");
    assert!(s.other.served(PKG).is_empty());
    assert!(
        s.mirror.requests_for(PKG).is_empty(),
        "mirror not asked: {:?}",
        s.mirror.log()
    );
    assert!(
        stderr(&result).contains("2 peers answered, 1 have it"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn a_package_no_peer_holds_comes_from_the_mirror() {
    let Some(s) = setup() else { return };
    let name = "only-on-mirror-1-1-any.pkg.tar.zst";
    let root_file = s.mirror.requests_for(name); // empty: a fresh mirror
    assert!(root_file.is_empty());
    let mirror_root = s._dirs[2].path();
    fs::write(mirror_root.join(name), b"mirror bytes").unwrap();
    let dir = tempdir();
    let out = dir.path().join(format!("{name}.part"));

    let result = run(client(&s.host).arg(&out).arg(mirror_url(name)));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), b"mirror bytes");
    assert_eq!(s.mirror.requests_for(name).len(), 1);

    let listing = run(client(&s.host).args(["--who-has", name]));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(text.matches("MISS").count(), 2, "{text}");
    assert!(text.contains("2 daemons answered"), "{text}");
}

#[test]
fn databases_never_come_from_peers() {
    let Some(s) = setup() else { return };
    fs::write(s._dirs[0].path().join("core.db"), b"peer db").unwrap();
    fs::write(s._dirs[2].path().join("core.db"), b"mirror db").unwrap();
    let dir = tempdir();
    let out = dir.path().join("core.db.part");

    assert!(
        run(client(&s.host).arg(&out).arg(mirror_url("core.db")))
            .status
            .success()
    );

    assert_eq!(fs::read(&out).unwrap(), b"mirror db");
    // The daemon may have carried the mirror's answer as this host's download agent; what it
    // must never do is serve the database as a peer.
    assert!(
        s.holder.served("core.db").is_empty(),
        "{:?}",
        s.holder.log()
    );
}

#[test]
fn who_has_and_list_peers_show_every_daemon() {
    let Some(s) = setup() else { return };
    let who = run(client(&s.host).args(["--who-has", PKG]));
    let text = String::from_utf8_lossy(&who.stdout);
    assert!(who.status.success());
    assert_eq!(text.matches("HAVE").count(), 1, "{text}");
    assert_eq!(text.matches("MISS").count(), 1, "{text}");
    assert!(
        text.contains(&s.content.len().to_string()),
        "size shown: {text}"
    );
    assert!(text.contains(" ms "), "round trip shown: {text}");

    let list = run(client(&s.host).arg("--list-peers"));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    assert!(text.contains("2 daemons answered"), "{text}");
    // The query behind the listing is internal: neither its file name nor its MISS answers show.
    assert!(!text.contains("probe") && !text.contains("MISS"), "{text}");
}

#[test]
fn a_partial_package_resumes_from_the_peer() {
    let Some(s) = setup() else { return };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &s.content[..300_000]).unwrap();

    assert!(
        run(client(&s.host).arg(&out).arg(mirror_url(PKG)))
            .status
            .success()
    );

    assert_eq!(fs::read(&out).unwrap(), s.content);
    let served = s.holder.served(PKG);
    assert!(
        served[0].contains(": 206 600000 bytes (bytes=300000-)"),
        "{served:?}"
    );
}

#[test]
fn a_static_peer_is_asked_without_multicast() {
    let Some(host) = Host::loopback() else { return };
    let content = random_bytes(50_000, 32);
    let cache = tempdir();
    fs::write(cache.path().join(PKG), &content).unwrap();
    // Its own UDP port, so the unicast query reaches exactly this daemon.
    let daemon = Daemon::start(
        &host,
        cache.path(),
        &[
            "--http-port",
            "0",
            "--udp-port",
            "15999",
            "--interface",
            "lo",
        ],
    );
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = run(client(&host)
        .args(["--no-multicast", "--peer", "127.0.0.1:15999"])
        .arg(&out)
        .arg("http://127.0.0.1:9/unreachable-mirror"));

    assert!(
        result.status.success(),
        "came from the static peer, not the dead mirror"
    );
    assert_eq!(fs::read(&out).unwrap(), content);
    assert_eq!(daemon.served(PKG).len(), 1);
}

#[test]
fn the_daemon_serves_http_correctly_and_refuses_paths_outside_the_cache() {
    if !crate::util::require_tools(&["curl"]) {
        return;
    }
    let Some(s) = setup() else { return };
    let cache = s._dirs[0].path();
    fs::write(cache.join("partial-1-1-any.pkg.tar.zst.part"), b"part").unwrap();
    fs::write(cache.join("core.db"), b"db").unwrap();
    let secret = tempdir();
    fs::write(secret.path().join("secret-1-1-any.pkg.tar.zst"), b"secret").unwrap();
    std::os::unix::fs::symlink(
        secret.path().join("secret-1-1-any.pkg.tar.zst"),
        cache.join("secret-1-1-any.pkg.tar.zst"),
    )
    .unwrap();
    fs::create_dir(cache.join("download-AbCdEf")).unwrap();
    fs::write(cache.join("download-AbCdEf/x-1-1-any.pkg.tar.zst"), b"x").unwrap();
    let base = format!("http://127.0.0.1:{}", s.holder.http_port);
    let curl = |args: &[&str]| -> String {
        let out = run(s
            .host
            .command("curl")
            .args([
                "-s",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    assert_eq!(
        curl(&[&format!("{base}/pkg/{PKG}")]),
        format!("200 {}", s.content.len())
    );
    assert_eq!(
        curl(&["-r", "100-199", &format!("{base}/pkg/{PKG}")]),
        "206 100"
    );
    assert_eq!(
        curl(&["-I", &format!("{base}/pkg/{PKG}")])
            .split(' ')
            .next(),
        Some("200")
    );
    let later = "Wed, 01 Jan 2098 00:00:00 GMT";
    assert_eq!(
        curl(&[
            "-H",
            &format!("If-Modified-Since: {later}"),
            &format!("{base}/pkg/{PKG}")
        ]),
        "304 0"
    );
    let long = format!("/pkg/{}.pkg.tar.zst", "a".repeat(5000));
    for path in [
        "/pkg/../pkg/core.db",
        "/pkg/%2e%2e%2fcore.db",
        "/pkg/core.db",
        "/pkg/partial-1-1-any.pkg.tar.zst.part",
        "/pkg/secret-1-1-any.pkg.tar.zst",
        "/pkg/download-AbCdEf%2fx-1-1-any.pkg.tar.zst",
        "/pkg/%2fetc%2fpasswd",
        "//etc/passwd",
        "/pkg//etc/passwd",
        "/pkg/shared-3.1-2-x86_64.pkg.tar.zst%00.txt",
        "/pkg/%00",
        &long,
        "/pkg/",
        "/",
    ] {
        let got = curl(&[&format!("{base}{path}")]);
        if path == "/" {
            assert!(got.starts_with("200"), "status page: {got}");
        } else {
            assert!(got.starts_with("404"), "{path}: {got}");
        }
    }
    let status = run(s.host.command("curl").args(["-s", &format!("{base}/")]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("files served: 2"), "{text}");
}

#[test]
fn malformed_and_foreign_datagrams_are_dropped_and_counted() {
    if !crate::util::require_tools(&["python3", "curl"]) {
        return;
    }
    let Some(s) = setup() else { return };
    // Garbage, a truncated query, and a well-sized query of a future protocol version.
    s.host.sh(r#"python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
for d in [b"garbage", b"PSRV\x01\x01", b"PSRV\x06\x01" + bytes(58)]:
    s.sendto(d, ("239.255.15.78", 15678))  # the group: every daemon gets it
'"#);
    std::thread::sleep(std::time::Duration::from_millis(200));

    // The daemons still answer.
    let who = run(client(&s.host).args(["--who-has", PKG]));
    assert!(String::from_utf8_lossy(&who.stdout).contains("2 daemons answered"));
    let status = run(s
        .host
        .command("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/", s.holder.http_port)]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("dropped (malformed): 2"), "{text}");
    assert!(
        text.contains("dropped (other protocol versions): 1"),
        "{text}"
    );
    assert!(
        s.holder
            .log()
            .iter()
            .any(|l| l.contains("protocol version 6")),
        "mismatch is logged"
    );
}

#[test]
fn once_every_known_daemon_has_answered_the_wait_ends() {
    // A deliberately huge wait: the first run (no memory) listens all of it; the second knows
    // both daemons and stops as soon as they have said MISS. What ended each wait is what `-v`
    // says (the time it saves is the miss row of `cargo bench --bench lan`).
    let Some(s) = setup() else { return };
    let name = "absent-1-1-any.pkg.tar.zst";
    fs::write(s._dirs[2].path().join(name), b"m").unwrap();
    let dir = tempdir();
    let verbose = || {
        let out = dir.path().join(format!("{name}.part"));
        let _ = fs::remove_file(&out);
        let result = run(client(&s.host)
            .args(["-v", "--peer-wait", "3000"])
            .arg(&out)
            .arg(mirror_url(name)));
        assert!(result.status.success());
        stderr(&result)
    };
    let first = verbose();
    let second = verbose();
    assert!(
        first.contains("2 peers answered, 0 have it") && first.contains("waited the whole 3000 ms"),
        "first run listened the whole wait: {first}"
    );
    assert!(
        second.contains("2 peers answered, 0 have it")
            && second.contains("stopped early: every daemon known from recent runs answered"),
        "second run stopped when both daemons had answered: {second}"
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let Some(mut s) = setup() else {
        return;
    };
    let status = s
        .holder
        .terminate()
        .expect("pacserved exited after SIGTERM");
    // Not killed after the grace: a clean exit, saying so.
    assert!(status.success(), "{status}");
    assert!(s.holder.log().iter().any(|l| l.contains("stopping")));
}

#[test]
fn under_systemd_log_lines_carry_syslog_priorities() {
    let Some(host) = Host::loopback() else {
        return;
    };
    let (cache, state) = (tempdir(), tempdir());
    let mut daemon = host
        .command(crate::daemon::daemon_bin())
        .args([
            "--http-port",
            "0",
            "--udp-port",
            "15990",
            "--interface",
            "lo",
            "--cache-dir",
        ])
        .arg(cache.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("JOURNAL_STREAM", "8:12345")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(daemon.stderr.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(first.starts_with("<6>id "), "{first}");
}
