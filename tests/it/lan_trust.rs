//! Nothing from the LAN is trusted: hostile peers, an allowlist, killed downloads, and pacman 7's
//! unprivileged download user — all with the real pacman on a namespace LAN (root).
//!
//! Host 1 runs pacman, host 2 an honest pacserved, host 3 a hostile peer (tests/it/hostile_peer.py,
//! which answers every query HAVE), host 4 the mirror.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::hostile::Hostile;
use crate::netns::{Family, Host, Lan};
use crate::nginx::{self, Nginx};
use crate::util::{fetch_bin, run, stderr, tempdir};

fn xfer() -> String {
    Pacman::lan_xfer_line(fetch_bin())
}

#[test]
fn tampering_peers_never_reach_pacman() {
    if !require_pacman_tools() || !crate::util::require_tools(&["python3"]) {
        return;
    }
    let Some(lan) = Lan::new(4, Family::Dual) else {
        return;
    };
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "trust");
    let modes = ["wrongbytes", "wrongsize", "truncated", "html"];
    let files: Vec<String> = modes
        .iter()
        .map(|m| repo.add_package(&format!("victim-{m}"), 300_000))
        .collect();
    let Some(mirror) = Nginx::mirror_on(lan.host(4), mirror_root.path()) else {
        return;
    };
    for (mode, file) in modes.iter().zip(&files) {
        // A fresh LAN memory per mode: the hostile peer keeps one daemon id, and after its first
        // failure pacserve-fetch would (rightly) avoid it for the next rounds.
        let memory = tempdir();
        let env: [(&str, &OsStr); 1] = [("TMPDIR", memory.path().as_os_str())];
        let hostile = Hostile::start(lan.host(3), mode, &repo.dir.join(file), &lan.ipv4(3));
        let pacman = Pacman::new(
            Some(&xfer()),
            &[("trust", format!("http://{}:8080/trust", lan.ipv4(4)))],
        );
        assert!(pacman.run_in(lan.host(1), &env, &["-Sy"]).status.success());
        let pkgname = format!("victim-{mode}");
        let out = pacman.run_in(lan.host(1), &env, &["-S", &pkgname]);

        assert!(out.status.success(), "{mode}: pacman failed");
        assert!(
            pacman.installed_data(&pkgname).is_some(),
            "{mode}: installed"
        );
        assert_eq!(
            fs::read(pacman.cache().join(file)).unwrap(),
            fs::read(repo.dir.join(file)).unwrap(),
            "{mode}"
        );
        let served: u64 = mirror.requests_for(file).iter().map(|l| l.body_bytes).sum();
        assert!(
            served >= 300_000,
            "{mode}: the mirror served the body ({served} bytes)"
        );
        let log = hostile.log();
        assert!(
            log.contains(&format!("QUERY {file}")),
            "{mode}: the hostile peer was asked: {log}"
        );
        assert!(
            !log.contains(".db"),
            "{mode}: databases are never asked of peers: {log}"
        );
        let text = stderr(&out);
        match *mode {
            "wrongsize" => assert!(
                !log.contains("GET"),
                "advertised size refused before any request: {log}"
            ),
            "wrongbytes" => assert!(
                text.contains(&lan.ipv4(3)) && text.contains("sent a bad file"),
                "{text}"
            ),
            "html" => assert!(text.contains("announces"), "{text}"),
            _ => assert!(log.contains("GET"), "{log}"),
        }
        eprintln!(
            "TAMPER {mode}: caught; mirror sent {served} bytes; pacman stderr: {}",
            text.trim()
        );
    }
}

#[test]
fn sources_outside_the_allowlist_get_nothing() {
    if !crate::util::require_tools(&["curl"]) {
        return;
    }
    let Some(lan) = Lan::new(3, Family::Dual) else {
        return;
    };
    let cache = tempdir();
    fs::write(cache.path().join("a-1-1-any.pkg.tar.zst"), b"x").unwrap();
    let allowed = format!("{}/32", lan.ipv4(1));
    let daemon = Daemon::start(lan.host(2), cache.path(), &["--allow", &allowed]);
    let who = |host: &Host| host.who_has("a-1-1-any.pkg.tar.zst");
    // Host 1 is allowed (the bridge may need a moment to forward after coming up).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !who(lan.host(1)).contains("1 daemon answered") {
        assert!(Instant::now() < deadline, "host 1 never got an answer");
    }
    assert!(
        who(lan.host(3)).contains("0 daemons answered"),
        "host 3 is ignored"
    );
    let url = format!(
        "http://{}:{}/pkg/a-1-1-any.pkg.tar.zst",
        lan.ipv4(2),
        daemon.http_port
    );
    let code = |host: &Host| {
        let out =
            run(host
                .command("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(lan.host(1)), "200");
    // Closed on arrival, before a byte is read: no HTTP answer at all.
    assert_eq!(code(lan.host(3)), "000");
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains(&format!("ignoring queries from {}", lan.ipv4(3))))
    );
}

#[test]
fn kill_9_mid_download_then_pacman_resumes_and_installs() {
    if !require_pacman_tools() {
        return;
    }
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "killrepo");
    let file = repo.add_package("killme", 1_500_000);
    let size = fs::metadata(repo.dir.join(&file)).unwrap().len();
    let options = nginx::Options {
        throttle_all: true,
        ..Default::default()
    };
    let Some(mirror) = Nginx::start_with(mirror_root.path(), options) else {
        return;
    };
    let pacman = Pacman::new(
        Some(&Pacman::xfer_line(fetch_bin())),
        &[("killrepo", mirror.url("killrepo"))],
    );
    assert!(pacman.run(&["-Sy"]).status.success());
    let part = pacman.cache().join(format!("{file}.part"));

    let mut kept = 0;
    for round in 1..=3 {
        let mut attempt = pacman
            .command(&["-S", "killme"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let target = kept + 150_000;
        crate::util::wait_for_len(&part, target, Duration::from_secs(20));
        let killed = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(part.to_str().unwrap())
            .status()
            .unwrap();
        assert!(killed.success());
        assert!(
            !attempt.wait().unwrap().success(),
            "round {round}: pacman saw the failure"
        );
        let now = fs::metadata(&part).unwrap().len();
        assert!(
            now > kept && now < size,
            "round {round}: partial grew to {now}"
        );
        let expected = fs::read(repo.dir.join(&file)).unwrap();
        assert_eq!(
            fs::read(&part).unwrap(),
            expected[..now as usize],
            "round {round}: partial is a prefix"
        );
        kept = now;
    }
    assert!(pacman.run(&["-S", "killme"]).status.success());
    assert!(pacman.installed_data("killme").is_some());
    let log = mirror.requests_for(&file);
    assert_eq!(
        log.last().unwrap().range,
        format!("bytes={kept}-"),
        "{log:?}"
    );
    eprintln!(
        "KILL9: 3 kills at {kept} bytes of {size}; {} requests, last resumed at {kept}",
        log.len()
    );
}

#[test]
fn pacman_7_download_user_sandbox_is_emulated_and_works() {
    // The real pacman 7.1 is driven in tests/it/pacman7.rs; this emulation keeps the sandbox's
    // essentials covered where only pacman 6.0.2 is installed. This wrapper does what pacman 7
    // does around the XferCommand: a fresh 0700 download-XXXXXX directory owned by the
    // unprivileged user, the leftover .part moved in, the downloader run as that user with no
    // supplementary groups, the result moved back for pacman to rename.
    if !require_pacman_tools() {
        return;
    }
    if !crate::util::require(
        crate::util::is_root(),
        "switching to the download user needs root",
    ) {
        return;
    }
    let Some(lan) = Lan::new(4, Family::Dual) else {
        return;
    };
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "sandbox");
    let file = repo.add_package("sandboxed", 500_000);
    let cache = tempdir();
    fs::copy(repo.dir.join(&file), cache.path().join(&file)).unwrap();
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    let Some(mirror) = Nginx::mirror_on(lan.host(4), mirror_root.path()) else {
        return;
    };
    let wrapper_dir = tempdir();
    let wrapper = wrapper_dir.path().join("as-download-user");
    fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
out="$1"; url="$2"
dir=$(mktemp -d "$(dirname "$out")/download-XXXXXX")
chown {nobody}:{nobody} "$dir"; chmod 0700 "$dir"
part="$dir/$(basename "$out")"
[ -e "$out" ] && mv "$out" "$part" && chown {nobody}:{nobody} "$part"
setpriv --reuid={nobody} --regid={nobody} --clear-groups -- env -u TMPDIR {bin} --dbpath "$PACMAN_DBPATH" "$part" "$url"
rc=$?
[ -e "$part" ] && mv "$part" "$out"
rm -rf "$dir"
exit $rc
"#,
            nobody = crate::util::NOBODY,
            bin = fetch_bin()
        ),
    )
    .unwrap();
    crate::util::hand_to_unprivileged(wrapper_dir.path(), 0o755);
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pacman = Pacman::new(
        Some(&format!("{} '%o' '%u'", wrapper.display())),
        &[("sandbox", format!("http://{}:8080/sandbox", lan.ipv4(4)))],
    );
    // World-readable configuration and databases, as on Arch; the rest stays root's.
    crate::util::hand_to_unprivileged(pacman.base.path(), 0o755);
    let dbpath = pacman.base.path().join("db");
    let env: [(&str, &OsStr); 1] = [("PACMAN_DBPATH", dbpath.as_os_str())];

    assert!(pacman.run_in(lan.host(1), &env, &["-Sy"]).status.success());
    let out = pacman.run_in(lan.host(1), &env, &["-S", "sandboxed"]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pacman.installed_data("sandboxed").is_some());
    assert_eq!(
        daemon.served(&file).len(),
        1,
        "verified and taken from the peer, as the download user"
    );
    assert!(mirror.requests_for(&file).is_empty());
    assert!(
        mirror.requests_for("sandbox.db").len() == 1,
        "the database came from the mirror"
    );
}

#[test]
fn idle_connections_do_not_stop_a_real_download() {
    if !crate::util::require_tools(&["python3"]) {
        return;
    }
    let Some(lan) = Lan::new(3, Family::Dual) else {
        return;
    };
    let cache = tempdir();
    let name = "big-1-1-any.pkg.tar.zst";
    let content = crate::util::random_bytes(100_000_000, 51);
    fs::write(cache.path().join(name), &content).unwrap();
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    let dir = tempdir();
    let download = || {
        let out = dir.path().join(format!("{name}.part"));
        let _ = fs::remove_file(&out);
        let started = Instant::now();
        let result = lan.host(1).fetch_from_peers(&out, name);
        assert!(result.status.success());
        assert!(fs::read(&out).unwrap() == content, "identical");
        started.elapsed()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.served(name).is_empty() {
        assert!(Instant::now() < deadline, "bridge never came up");
        let _ = download();
    }
    let baseline = download();

    // Host 3 opens 500 connections and sends half a request on each, then goes quiet.
    let script = r#"
import socket, sys, time
target = (sys.argv[1], int(sys.argv[2]))
socks = []
for _ in range(500):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(target)
        s.send(b"GET /pkg/x HTTP/1.1\r\nHost: a\r\n")
        socks.append(s)
    except OSError:
        pass
def alive():
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                n += 1
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n
time.sleep(0.5)
print("opened", len(socks), "held", alive(), flush=True)
time.sleep(12)
print("after-timeout", alive(), flush=True)
"#;
    let mut slowloris = lan
        .host(3)
        .command("python3")
        .args(["-c", script, &lan.ipv4(2), &daemon.http_port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(slowloris.stdout.take().unwrap()).lines();
    let held = lines.next().unwrap().unwrap();
    let under_attack = download();
    let after = lines.next().unwrap().unwrap();
    let _ = slowloris.wait();
    eprintln!(
        "SLOWLORIS: {held}; 100 MB from the peer: {:.0} ms alone, {:.0} ms with the idle connections open; {after}",
        baseline.as_secs_f64() * 1e3,
        under_attack.as_secs_f64() * 1e3
    );
    assert_eq!(
        after, "after-timeout 0",
        "idle connections are closed after the header timeout"
    );
}

#[test]
fn signatures_the_database_carries_come_from_it_and_unlisted_files_from_the_mirror() {
    if !crate::util::require_tools(&["repo-add", "bsdtar", "zstd"]) {
        return;
    }
    let Some(lan) = Lan::new(4, Family::Dual) else {
        return;
    };
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "sigrepo");
    // repo-add records a detached signature lying next to the package as %PGPSIG%.
    let signature = crate::util::random_bytes(310, 71);
    let pkg = {
        let probe = tempdir();
        let name = Repo::create(probe.path(), "probe").add_package("signed", 100_000);
        fs::copy(probe.path().join("probe").join(&name), repo.dir.join(&name)).unwrap();
        fs::write(repo.dir.join(format!("{name}.sig")), &signature).unwrap();
        let added = run(Command::new("repo-add")
            .arg("-q")
            .arg(repo.dir.join("sigrepo.db.tar.gz"))
            .arg(repo.dir.join(&name)));
        assert!(added.status.success());
        name
    };
    let sig = format!("{pkg}.sig");
    let unlisted = "unlisted-1-1-any.pkg.tar.zst";
    fs::write(repo.dir.join(unlisted), b"not in any database").unwrap();
    let dbpath = tempdir();
    fs::create_dir(dbpath.path().join("sync")).unwrap();
    fs::copy(
        repo.dir.join("sigrepo.db.tar.gz"),
        dbpath.path().join("sync/sigrepo.db"),
    )
    .unwrap();
    let cache = tempdir();
    fs::write(cache.path().join(&sig), &signature).unwrap();
    fs::write(cache.path().join(unlisted), b"not in any database").unwrap();
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    let Some(mirror) = Nginx::mirror_on(lan.host(4), mirror_root.path()) else {
        return;
    };
    lan.wait_for_daemons(1);
    let dir = tempdir();
    let fetch = |name: &str, extra: &[&str]| {
        let memory = tempdir();
        let out = dir.path().join(format!("{name}.part"));
        let _ = fs::remove_file(&out);
        let result = run(lan
            .host(1)
            .command(fetch_bin())
            .env("TMPDIR", memory.path())
            .args(["--config", "/dev/null", "--dbpath"])
            .arg(dbpath.path())
            .args(extra)
            .arg(&out)
            .arg(format!("http://{}:8080/sigrepo/{name}", lan.ipv4(4))));
        assert!(result.status.success(), "{}", stderr(&result));
        (fs::read(&out).unwrap(), stderr(&result))
    };

    // The database carries the signature (%PGPSIG%): it comes from there, from no peer (not
    // even one offering a wrong one of the same size) and not from the mirror.
    let mut wrong = signature.clone();
    wrong[100] ^= 0xff;
    fs::write(cache.path().join(&sig), &wrong).unwrap();
    let (got, err) = fetch(&sig, &["-v"]);
    assert_eq!(got, signature);
    assert!(err.contains("%PGPSIG%"), "{err}");
    assert!(daemon.served(&sig).is_empty());
    assert!(mirror.requests_for(&sig).is_empty());

    // A file no database lists: the mirror, although the peer has it — unless opted in.
    assert_eq!(fetch(unlisted, &[]).0, b"not in any database");
    assert!(
        daemon.served(unlisted).is_empty(),
        "not asked without --unverified-peers"
    );
    assert_eq!(mirror.requests_for(unlisted).len(), 1);
    assert_eq!(
        fetch(unlisted, &["--unverified-peers"]).0,
        b"not in any database"
    );
    assert_eq!(daemon.served(unlisted).len(), 1);
}
