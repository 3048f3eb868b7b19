//! file:// URLs, bad arguments, and local trouble: no network, full disk, unwritable or
//! unprivileged directories, signals.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::faultserver::{Behaviour, FaultServer};
use crate::nginx::Nginx;
use crate::util::{
    as_unprivileged, can_unshare, fetch_bin, fetch_cmd, hand_to_unprivileged, random_bytes,
    require, require_tools, run, stderr, tempdir,
};

const PKG: &str = "local-1-1-any.pkg.tar.zst";

#[test]
fn file_urls_download_and_resume() {
    let repo = tempdir();
    let content = random_bytes(300_000, 21);
    let name = "epoch-1:2.0+r3-1-any.pkg.tar.zst"; // ':' and '+' appear unescaped in pacman's URLs
    fs::write(repo.path().join(name), &content).unwrap();
    let dir = tempdir();
    let out = dir.path().join(format!("{name}.part"));
    let url = format!("file://{}/{name}", repo.path().display());

    fs::write(&out, &content[..1234]).unwrap();
    assert!(run(fetch_cmd().arg(&out).arg(&url)).status.success());
    assert_eq!(fs::read(&out).unwrap(), content);

    let missing = run(fetch_cmd()
        .arg(dir.path().join("m.part"))
        .arg(format!("{url}.nope")));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("No such file"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn bad_urls_and_arguments_are_clear_errors() {
    let dir = tempdir();
    let out = dir.path().join("x.part");
    for (url, expect) in [
        ("ftp://mirror/x", "unsupported scheme ftp://"),
        ("mirror/x", "no scheme"),
        ("http://[::1/x", "bad URL"),
        ("http://", "bad URL"),
        ("file://host/x", "local absolute path"),
    ] {
        let result = run(fetch_cmd().arg(&out).arg(url));
        assert_eq!(result.status.code(), Some(2), "{url}: bad arguments");
        assert!(
            stderr(&result).contains(expect),
            "{url}: {}",
            stderr(&result)
        );
    }
    let usage = run(fetch_cmd().arg(&out));
    assert_eq!(usage.status.code(), Some(2), "clap usage error");
    let zero = run(fetch_cmd()
        .args(["--stall-timeout", "0"])
        .arg(&out)
        .arg("http://127.0.0.1:1/x"));
    assert_eq!(zero.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn a_refused_connection_is_named() {
    // Bind, then drop: nothing listens on the port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempdir();
    let result = run(fetch_cmd()
        .arg(dir.path().join("x.part"))
        .arg(format!("http://127.0.0.1:{port}/{PKG}")));
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("connection refused"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn name_resolution_failure_and_connect_timeout_are_named() {
    // Both run in a private network namespace, so no lookup or SYN can leave the machine.
    if !require(can_unshare(), "unshare -rn is not permitted here") || !require_tools(&["ip"]) {
        return;
    }
    let dir = tempdir();
    let out = dir.path().join("x.part");
    let dns = run(Command::new("unshare")
        .args(["-rn", fetch_bin(), "--no-peers"])
        .arg(&out)
        .arg("http://no-such-mirror.invalid/x"));
    assert_eq!(dns.status.code(), Some(1));
    assert!(stderr(&dns).contains("host not found"), "{}", stderr(&dns));

    // A route to an address nobody holds: the SYN is looped back and dropped, never answered.
    let script = r#"ip link set lo up && ip route add 192.0.2.0/24 dev lo && exec "$0" --no-peers --connect-timeout 0.5 "$1" http://192.0.2.2/x"#;
    let timeout = run(Command::new("unshare")
        .args(["-rn", "sh", "-c", script, fetch_bin()])
        .arg(&out));
    assert_eq!(timeout.status.code(), Some(1));
    // Bounded by --connect-timeout, which the message names.
    assert!(
        stderr(&timeout).contains("timed out connecting (0.5 s)"),
        "{}",
        stderr(&timeout)
    );
    assert!(!out.exists());
}

#[test]
fn a_full_disk_is_reported_as_such() {
    if !require(can_unshare(), "unshare -rm is not permitted here") {
        return;
    }
    let root = tempdir();
    fs::write(root.path().join(PKG), random_bytes(1_000_000, 22)).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let mnt = tempdir();
    // A 256 KiB tmpfs in a private mount namespace: the 1 MB package cannot fit.
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$1" && "$0" --no-peers "$1/x.part" "$2"; rc=$?; ls -l "$1" >&2; exit $rc"#;
    let result = run(Command::new("unshare")
        .args(["-rm", "sh", "-c", script, fetch_bin()])
        .arg(mnt.path())
        .arg(mirror.url(PKG)));
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("No space left on device"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn an_unwritable_directory_is_reported() {
    let root = tempdir();
    fs::write(root.path().join(PKG), random_bytes(1000, 23)).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Root ignores permissions, so the attempt runs as the unprivileged user when we are root.
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();

    let result = run(as_unprivileged(fetch_bin())
        .arg(locked.join("x.part"))
        .arg(mirror.url(PKG)));

    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("Permission denied"),
        "{}",
        stderr(&result)
    );
    // %o is opened before the first request (pacman 7's DownloadUser + DisableSandbox trap).
    assert!(mirror.log().is_empty(), "no request: {:?}", mirror.log());
}

#[test]
fn a_missing_directory_is_named_at_once() {
    // Issue 23: this waited the 5 s lock wait, then blamed "another pacserve-fetch".
    let dir = tempdir();
    let missing = dir.path().join("nonexistent/dir");
    let result = run(fetch_cmd()
        .arg(missing.join("a.part"))
        .arg(format!("http://127.0.0.1:9/{PKG}")));
    let said = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "{said}");
    // Named at once, not after the lock's wait: that wait ends blaming another pacserve-fetch.
    assert!(!said.contains("another pacserve-fetch"), "{said}");
    assert!(
        said.contains(&format!("directory {} does not exist", missing.display())),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
}

#[test]
fn an_unprivileged_user_writes_into_its_own_0700_directory() {
    // pacman 7: the download user, no supplementary groups, %o inside a 0700 directory it owns.
    let root = tempdir();
    let content = random_bytes(700_000, 24);
    fs::write(root.path().join(PKG), &content).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let cache = tempdir();
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let sandbox = cache.path().join("download-Zx81Qa");
    fs::create_dir(&sandbox).unwrap();
    hand_to_unprivileged(&sandbox, 0o700);
    let out = sandbox.join(format!("{PKG}.part"));

    let first = run(as_unprivileged(fetch_bin()).arg(&out).arg(mirror.url(PKG)));
    assert!(first.status.success());
    assert_eq!(fs::read(&out).unwrap(), content);

    // And resumes there too: cut the file back (as root if need be) and fetch again.
    fs::File::options()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(100_000)
        .unwrap();
    let second = run(as_unprivileged(fetch_bin()).arg(&out).arg(mirror.url(PKG)));
    assert!(second.status.success());
    assert_eq!(fs::read(&out).unwrap(), content);
    assert_eq!(
        mirror.requests_for(PKG).last().unwrap().range,
        "bytes=100000-"
    );
}

#[test]
fn sigterm_and_sigint_stop_at_once_and_keep_the_partial() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let content = random_bytes(300_000, 25);
        let server = FaultServer::start(content.clone(), Behaviour::StallAfter { after: 100_000 });
        let dir = tempdir();
        let out = dir.path().join(format!("{PKG}.part"));
        let mut child = fetch_cmd()
            .args(["--stall-timeout", "60"])
            .arg(&out)
            .arg(server.url(PKG))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        crate::util::wait_for_len(&out, 100_000, Duration::from_secs(10));
        let sent = Instant::now();
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            // A hang guard, not a timing: the run stops at once or never.
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "did not stop after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(code), "SIG{signal}: {err}");
        assert!(err.contains("kept for resuming"), "{err}");
        assert_eq!(fs::read(&out).unwrap(), &content[..100_000]);
    }
}

#[test]
fn progress_is_drawn_only_on_a_terminal() {
    if !require_tools(&["script"]) {
        return;
    }
    let root = tempdir();
    fs::write(root.path().join(PKG), random_bytes(2_000_000, 26)).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    // script(1) gives the command a pseudo-terminal and copies what it draws to stdout.
    let line = format!(
        "{} --no-peers --config /dev/null {} {}",
        fetch_bin(),
        out.display(),
        mirror.url(PKG)
    );
    // The pseudo-terminal's type must be named: without TERM (makepkg's check() in a clean
    // environment) nothing is drawn, as on a dumb terminal.
    let tty = run(Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .env("TERM", "xterm"));
    let drawn = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success());
    assert!(
        drawn.contains("local-1-1") && drawn.contains("mirror 127.0.0.1"),
        "{drawn}"
    );
    assert!(drawn.contains("100%") && drawn.contains("MiB"), "{drawn}");

    fs::remove_file(&out).unwrap();
    let piped = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty() && piped.stdout.is_empty(),
        "silent without a terminal"
    );
    let quiet = run(Command::new("script")
        .args(["-qfec", &format!("{line} -q"), "/dev/null"])
        .env("TERM", "xterm"));
    assert!(
        !String::from_utf8_lossy(&quiet.stdout).contains("100%"),
        "-q draws nothing"
    );
}

#[test]
fn https_is_spoken_and_an_untrusted_certificate_is_a_clear_error() {
    if !require_tools(&["openssl"]) {
        return;
    }
    // A self-signed certificate on a TLS port: the handshake happens, verification refuses it.
    let dir = tempdir();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(made.status.success());
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", "0", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // s_server prints "ACCEPT" then listens; find its port.
    let port = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            let ss = Command::new("ss").args(["-Hltnp"]).output().ok()?;
            String::from_utf8_lossy(&ss.stdout)
                .lines()
                .find(|l| l.contains(&format!("pid={},", server.id())))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)?
                        .rsplit(':')
                        .next()?
                        .parse::<u16>()
                        .ok()
                })
        })
        .expect("openssl s_server port");
    let result = run(fetch_cmd()
        .arg(dir.path().join("x.part"))
        .arg(format!("https://127.0.0.1:{port}/{PKG}")));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(result.status.code(), Some(1));
    let err = stderr(&result);
    assert!(
        err.contains(&format!("https://127.0.0.1:{port}/"))
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn the_client_links_no_async_runtime() {
    // pacman runs pacserve-fetch once per file: it stays small and synchronous. The daemon, in
    // the same package, does use tokio, which is what makes this check able to fail.
    if !require_tools(&["nm"]) {
        return;
    }
    let count = |bin: &str| {
        let out = run(Command::new("nm").args(["-C", "--defined-only"]).arg(bin));
        String::from_utf8_lossy(&out.stdout)
            .matches("tokio::")
            .count()
    };
    assert_eq!(count(fetch_bin()), 0, "pacserve-fetch contains tokio code");
    assert!(
        count(crate::daemon::daemon_bin()) > 0,
        "the check sees tokio where it is"
    );
}
