//! pacserve-fetch, pacserved and pacsrv used by hand, as a new user follows the README: its
//! debugging commands run as written in a private loopback namespace, every bad value is an
//! error naming it, fatal daemon errors say so, the progress line fits a 40-column terminal.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::archrepo::{Repo, require_pacman_tools};
use crate::daemon::{Daemon, daemon_bin};
use crate::netns::Host;
use crate::nginx::Nginx;
use crate::util::{bare_fetch_cmd, fetch_cmd, lan_memory_dir, require_tools, run, stderr, tempdir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs and asserts exit status 2 with `value` named on stderr.
fn refused(cmd: &mut Command, value: &str) {
    let out = run(cmd);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{value}: {said}");
    assert!(said.contains(value), "{value} not named: {said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

#[test]
fn bad_values_are_errors_that_name_them() {
    let url = "http://127.0.0.1:9/x-1-1-any.pkg.tar.zst";
    for (option, value) in [
        ("--peer", "127.0.0.1:99999"),
        ("--peer", "http://10.0.0.2:15678"),
        ("--peer", "no-such-host.invalid"),
        ("--interface", "nosuch0"),
    ] {
        refused(fetch_cmd().args([option, value, "/tmp/x.part", url]), value);
        refused(fetch_cmd().args([option, value, "--list-peers"]), value);
    }
    let dir = tempdir();
    for (line, value) in [
        (
            "peers = [\"10.0.0.2\", \"http://10.0.0.3\"]",
            "http://10.0.0.3",
        ),
        ("peers = [\"10.0.0.2:0\"]", "10.0.0.2:0"),
        ("interfaces = [\"nosuch0\"]", "nosuch0"),
    ] {
        let conf = dir.path().join("pacserve-fetch.conf");
        fs::write(&conf, format!("{line}\n")).unwrap();
        let mut cmd = bare_fetch_cmd();
        cmd.arg("--no-peers").arg("--config").arg(&conf);
        refused(cmd.args(["/tmp/x.part", url]), value);
    }
    for bad_url in ["mirror/x.pkg.tar.zst", "ftp://m/x.pkg.tar.zst", "http:///x"] {
        refused(fetch_cmd().args(["/tmp/x.part", bad_url]), bad_url);
    }
}

/// pacserved's fatal start-up errors: "error:", the culprit named, a non-zero exit, no daemon.
fn fatal(args: &[&str], says: &str) {
    let state = tempdir();
    let out = run(Command::new(daemon_bin())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--interface", "lo", "--udp-port", "0", "--http-port", "0"])
        .args(args));
    let said = stderr(&out);
    assert!(!out.status.success(), "{args:?} started");
    assert!(said.contains(says), "{args:?}: {said}");
    assert!(!said.contains("warning"), "{said}");
}

#[test]
fn pacserveds_fatal_errors_say_error_and_name_the_culprit() {
    let dir = tempdir();
    let conf = dir.path().join("pacserved.conf");
    fs::write(&conf, "# shared\nhttp-port = 15678\nallow = [10]\n").unwrap();
    let conf = conf.to_str().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let file = file.to_str().unwrap();
    let none = "/dev/null";
    let cases: [(&[&str], &str); 8] = [
        (&["--config", conf], "error: "),
        (&["--config", conf], "pacserved.conf: line 3, column 10: "),
        (
            &["--config", none, "--allow", "10.0.0.0/33"],
            "error: --allow: ",
        ),
        (&["--config", none, "--allow", "10.0.0.0/33"], "10.0.0.0/33"),
        (&["--config", none, "--cache-dir", file], "not a directory"),
        (
            &["--config", none, "--interface", "nosuch0"],
            "error: --interface: nosuch0",
        ),
        (
            &["--config", none, "--group-v4", "10.1.2.3"],
            "10.1.2.3 is not a multicast address",
        ),
        (
            &["--config", none, "--group-v6", "fe80::1"],
            "fe80::1 is not a multicast address",
        ),
    ];
    for (args, says) in cases {
        fatal(args, says);
    }
}

#[test]
fn a_busy_port_is_a_fatal_error() {
    let Some(host) = Host::loopback() else { return };
    let dir = tempdir();
    let first = Daemon::start(
        &host,
        dir.path(),
        &["--http-port", "0", "--interface", "lo"],
    );
    let port = first.http_port.to_string();
    let state = tempdir();
    let out = run(host
        .command(daemon_bin())
        .args([
            "--config",
            "/dev/null",
            "--interface",
            "lo",
            "--udp-port",
            "0",
        ])
        .args(["--http-port", &port, "--cache-dir"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path()));
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains(&format!("error: cannot bind HTTP port {port}")),
        "{said}"
    );
}

#[test]
fn pacsrv_help_is_its_own_then_pacmans() {
    if !require_tools(&["pacman"]) {
        return;
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_pacsrv")).arg("--help"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let own = text.find("--include-conf").expect("pacsrv's own options");
    let pacmans = text.find("usage:  pacman").expect("pacman's help follows");
    assert!(own < pacmans, "{text}");
}

/// The README's "Check that it works" block, each line as written, comments dropped.
fn readme_debug_commands() -> Vec<String> {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let block = readme
        .split("## Check that it works\n\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a \"Check that it works\" code block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_debugging_commands_work_as_written_on_one_machine() {
    if !require_pacman_tools() || !require_tools(&["curl"]) {
        return;
    }
    let Some(host) = Host::loopback() else { return };
    // A repository on the mirror, its database in a sync directory, the package in a peer's cache.
    let (mirror_root, cache, db) = (tempdir(), tempdir(), tempdir());
    let repo = Repo::create(mirror_root.path(), "core");
    let pkg = repo.add_package("foo", 400_000);
    assert_eq!(
        pkg, "foo-1.0-1-any.pkg.tar.zst",
        "the README's example name"
    );
    fs::create_dir(db.path().join("sync")).unwrap();
    fs::copy(
        repo.dir.join("core.db.tar.gz"),
        db.path().join("sync/core.db"),
    )
    .unwrap();
    fs::copy(repo.dir.join(&pkg), cache.path().join(&pkg)).unwrap();
    let peer = Daemon::start(&host, cache.path(), &["--interface", "lo"]);
    let Some(mirror) = Nginx::mirror_on(&host, mirror_root.path()) else {
        return;
    };
    let url = "http://127.0.0.1:8080/core/foo-1.0-1-any.pkg.tar.zst";
    let work = tempdir();
    let part = work.path().join("x.part");

    let mut transcript = String::new();
    for line in readme_debug_commands() {
        let line = line
            .replace(
                "https://mirror/core/os/x86_64/foo-1.0-1-any.pkg.tar.zst",
                url,
            )
            .replace("/tmp/x.part", part.to_str().unwrap())
            .replace("PEER", "127.0.0.1");
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut cmd = match words[0] {
            "pacserve-fetch" => {
                let mut cmd = host.command(crate::util::fetch_bin());
                // The README's one-machine options; the sync databases of this test.
                cmd.args([
                    "--config",
                    "/dev/null",
                    "--interface",
                    "lo",
                    "--include-self",
                ]);
                cmd.arg("--dbpath")
                    .arg(db.path())
                    .env("TMPDIR", lan_memory_dir());
                cmd
            }
            "curl" => host.command("curl"),
            _ => continue, // journalctl: no systemd here
        };
        let out = run(cmd.args(&words[1..]));
        assert!(out.status.success(), "{line}");
        transcript.push_str(&format!(
            "$ {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        ));
    }
    eprintln!("--- README debugging commands ---\n{transcript}");
    assert!(transcript.contains("1 daemon answered"), "{transcript}");
    assert!(transcript.contains(&format!("1 has {pkg}")), "{transcript}");
    assert!(
        transcript.contains("1 peers answered, 1 have it"),
        "{transcript}"
    );
    assert_eq!(
        fs::read(&part).unwrap(),
        fs::read(repo.dir.join(&pkg)).unwrap()
    );
    assert_eq!(peer.served(&pkg).len(), 1, "the peer sent it");
    assert!(mirror.requests_for(&pkg).is_empty(), "{:?}", mirror.log());

    // Without --include-self, -v says why no peer is used; without its database, why none is asked.
    let why = |extra: &[&str], dbpath: &Path| {
        let _ = fs::remove_file(&part);
        let mut cmd = host.command(crate::util::fetch_bin());
        cmd.args(["--config", "/dev/null", "--interface", "lo", "-v"])
            .args(extra);
        let out = run(cmd
            .arg("--dbpath")
            .arg(dbpath)
            .arg(&part)
            .arg(url)
            .env("TMPDIR", lan_memory_dir()));
        assert!(out.status.success());
        stderr(&out)
    };
    assert!(why(&[], db.path()).contains("only this host's own daemon answered"));
    let empty = tempdir();
    assert!(why(&["--include-self"], empty.path()).contains("is not listed in any sync database"));
    let nowhere = run(host
        .command(crate::util::fetch_bin())
        .args(["--config", "/dev/null", "-v", "--dbpath"])
        .arg(db.path())
        .arg(&part)
        .arg(url));
    assert!(nowhere.status.success(), "the mirror still serves it");
    assert!(
        stderr(&nowhere).contains("no usable interface"),
        "{}",
        stderr(&nowhere)
    );
    let listing =
        run(host
            .command(crate::util::fetch_bin())
            .args(["--config", "/dev/null", "--list-peers"]));
    assert!(
        stderr(&listing).contains("no usable interface"),
        "{}",
        stderr(&listing)
    );
}

#[test]
fn list_peers_and_who_has_fail_when_no_daemon_answers() {
    // A static peer on loopback where nothing listens, and no multicast: nothing leaves the
    // machine and nobody answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = silent.local_addr().unwrap().to_string();
    drop(silent);
    let quiet = ["--no-multicast", "--peer", &peer, "--peer-wait", "100"];
    for query in [
        &["--list-peers"][..],
        &["--who-has", "foo-1.0-1-any.pkg.tar.zst"],
    ] {
        let out = run(bare_fetch_cmd()
            .args(["--config", "/dev/null"])
            .args(quiet)
            .args(query));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{query:?}: {text}");
        assert!(text.contains("0 daemons answered"), "{query:?}: {text}");
        assert!(!text.contains("probe"), "{query:?}: {text}");
    }
    // Nobody to ask at all is a failure too, and says why.
    let out =
        run(bare_fetch_cmd().args(["--config", "/dev/null", "--no-multicast", "--list-peers"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nobody to ask"), "{}", stderr(&out));
}

#[test]
fn the_progress_line_fits_40_columns_and_names_the_mirror() {
    if !require_tools(&["tmux"]) {
        return;
    }
    let (root, out_dir) = (tempdir(), tempdir());
    let name = "a-rather-long-package-name-for-a-narrow-terminal-1.0-1-any.pkg.tar.zst";
    fs::write(
        root.path().join(name),
        crate::util::random_bytes(3_000_000, 5),
    )
    .unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let part = out_dir.path().join(format!("{name}.part"));
    let done = out_dir.path().join("done");
    let socket = out_dir.path().join("tmux.sock");
    let script = format!(
        "'{}' --no-peers --config /dev/null '{}' '{}'; echo $? > '{}'; sleep 30",
        crate::util::fetch_bin(),
        part.display(),
        mirror.url(name),
        done.display()
    );
    let tmux = |args: &[&str]| {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&socket).args(args).env_remove("TMUX");
        run(&mut cmd)
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "40",
        "-y",
        "10",
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    eprintln!("--- 40 columns ---\n{screen}");
    tmux(&["kill-server"]);
    assert_eq!(
        fs::read_to_string(&done).unwrap_or_default().trim(),
        "0",
        "{screen}"
    );
    let line = screen
        .lines()
        .find(|l| l.contains("100%"))
        .unwrap_or_else(|| panic!("no finished progress line:\n{screen}"));
    // One row holds it all: the name cut with an ellipsis, the source, the total size.
    assert!(
        line.starts_with("a-rather") && line.contains('…'),
        "{screen}"
    );
    assert!(
        line.contains(" mirror ") && line.contains("of 2.86 MiB"),
        "{screen}"
    );
    assert_eq!(
        screen.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{screen}"
    );
}
