//! The local download agent: pacserve-fetch hands its mirror download to the pacserved of its
//! own network namespace (abstract socket), which keeps the mirror connection alive across
//! pacman's one-process-per-file calls and prefetches the transaction's next packages. Every
//! test runs in a private `unshare -rn` namespace, so its agent socket is its own.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::netns::Host;
use crate::nginx::{self, Nginx};
use crate::util::{self, fetch_bin, lan_memory_dir, random_bytes, run, stderr, tempdir};

fn client(host: &Host) -> Command {
    let mut cmd = host.command(fetch_bin());
    cmd.env("TMPDIR", lan_memory_dir());
    util::strip_network_env(&mut cmd);
    cmd.args(util::MIRROR_ONLY);
    cmd
}

/// A daemon on `lo` whose pacman.conf names the test mirrors (loopback, ports 8080 and 8443),
/// as a machine's pacman.conf names its mirrors: the agent reaches loopback only then.
fn daemon(host: &Host, extra: &[&str]) -> (Daemon, tempfile::TempDir) {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let servers = [
        "http://127.0.0.1:8080".into(),
        "https://127.0.0.1:8080".into(),
    ];
    let conf = crate::daemon::conf_naming(dir.path(), &servers);
    let mut args = vec!["--http-port", "0", "--interface", "lo", "--pacman-conf"];
    args.push(conf.to_str().unwrap());
    args.extend_from_slice(extra);
    (Daemon::start(host, &cache, &args), dir)
}

#[test]
fn transfers_through_the_agent_are_identical_and_share_one_kept_alive_connection() {
    let Some(host) = Host::loopback() else { return };
    let root = tempdir();
    let names = [
        "a-1-1-any.pkg.tar.zst",
        "b-1-1-any.pkg.tar.zst",
        "c-1-1-any.pkg.tar.zst",
    ];
    let contents: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(700_000 + i * 1000, i as u64))
        .collect();
    for (name, content) in names.iter().zip(&contents) {
        fs::write(root.path().join(name), content).unwrap();
    }
    let Some(mirror) = Nginx::mirror_on(&host, root.path()) else {
        return;
    };
    let (daemon, _cache) = daemon(&host, &["--prefetch", "0"]);
    let out = tempdir();
    for (name, content) in names.iter().zip(&contents) {
        let part = out.path().join(format!("{name}.part"));
        if *name == names[2] {
            fs::write(&part, &content[..100_000]).unwrap();
        }
        let result = run(client(&host).arg(&part).arg(mirror.url(name)));
        assert!(result.status.success(), "{}", stderr(&result));
        assert_eq!(&fs::read(&part).unwrap(), content, "{name} is the mirror's");
        let moved = daemon.metric(&host, JOBS, done(&names, name));
        assert_eq!(moved, done(&names, name), "the daemon moved {name}");
    }
    let log = mirror.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        (log[2].range.as_str(), log[2].status),
        ("bytes=100000-", 206),
        "resumed through the agent"
    );
    assert!(
        log.iter().all(|l| l.connection == log[0].connection),
        "three pacserve-fetch runs, one kept-alive mirror connection: {log:?}"
    );

    // --no-agent: the client goes to the mirror itself, on a connection of its own.
    let part = out.path().join("again.part");
    let result = run(client(&host)
        .arg("--no-agent")
        .arg(&part)
        .arg(mirror.url(names[0])));
    assert!(result.status.success(), "{}", stderr(&result));
    let log = mirror.log();
    assert_ne!(log[3].connection, log[0].connection, "{log:?}");
    assert_eq!(daemon.metric(&host, JOBS, 4.0), 3.0, "--no-agent is no job");
    assert_eq!(
        daemon.metric(&host, "pacserved_agent_mirror_bytes_total", 0.0),
        (contents.iter().map(Vec::len).sum::<usize>() - 100_000) as f64,
        "every body byte but the kept prefix"
    );
}

/// The agent's mirror downloads so far, as `/metrics` counts them.
const JOBS: &str = "pacserved_agent_fetches_total";

/// How many of `names` are done once `name` is: its position, plus one.
fn done(names: &[&str], name: &str) -> f64 {
    (names.iter().position(|n| *n == name).unwrap_or(0) + 1) as f64
}

#[test]
fn the_daemon_killed_mid_transfer_leaves_the_client_to_finish_from_its_offset() {
    let Some(host) = Host::loopback() else { return };
    let root = tempdir();
    let name = "big-1-1-any.pkg.tar.zst";
    let content = random_bytes(2_000_000, 7);
    fs::write(root.path().join(name), &content).unwrap();
    let options = nginx::Options {
        throttle_fresh: true,
        ..Default::default()
    };
    let Some(mirror) = Nginx::start_in(Some(&host), root.path(), options) else {
        return;
    };
    let (mut daemon, _cache) = daemon(&host, &["--prefetch", "0"]);
    let out = tempdir();
    let part = out.path().join(format!("{name}.part"));
    let child = client(&host)
        .arg("-v")
        .arg(&part)
        .arg(mirror.url(name))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_for_len(&part, 300_000, Duration::from_secs(20));
    daemon.kill();
    let result = child.wait_with_output().unwrap();
    let err = stderr(&result);
    assert!(result.status.success(), "{err}");
    assert_eq!(fs::read(&part).unwrap(), content);
    assert!(err.contains("continuing without it"), "{err}");
    let log = mirror.requests_for(name);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, "", "first through the agent, from byte 0");
    let offset: u64 = log[1]
        .range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap_or(0);
    assert!(
        offset >= 300_000,
        "resumed at its offset, not from 0: {log:?}"
    );
    assert_eq!(
        (log[1].status, log[1].body_bytes),
        (206, 2_000_000 - offset)
    );
}

/// `-v` labels what the agent answered itself (nothing prefetched: 404; the mirror unreachable:
/// 502) as the agent's, never as if the mirror had said it; the mirror's own words come after.
#[test]
fn the_agents_own_answers_are_labelled_as_the_agents() {
    let Some(host) = Host::loopback() else { return };
    // No mirror listens on 127.0.0.1:8080, though the daemon's pacman.conf names it.
    let (_daemon, _cache) = daemon(&host, &["--prefetch", "0"]);
    let dir = tempdir();
    let name = "listed-1-1-any.pkg.tar.zst";
    crate::archrepo::write_sync_db(&dir.path().join("db"), "core", name, b"content");
    let part = dir.path().join(format!("{name}.part"));
    let url = format!("http://127.0.0.1:8080/core/{name}");
    let result = run(client(&host)
        .arg("-v")
        .arg("--dbpath")
        .arg(dir.path().join("db"))
        .arg(&part)
        .arg(&url));
    let err = stderr(&result);
    assert!(!result.status.success(), "{err}");
    for agents in [
        format!("pacserved's agent (not the mirror) answered 404 Not Found for {url}: not staged"),
        format!("pacserved's agent (not the mirror) answered 502 Bad Gateway for {url}: "),
    ] {
        assert!(err.contains(&agents), "{agents:?} in {err}");
    }
    for as_if_the_mirror in [format!("{url}: 404"), format!("{url}: 502")] {
        assert!(
            !err.contains(&as_if_the_mirror),
            "{as_if_the_mirror:?} in {err}"
        );
    }
    assert!(
        err.contains(&format!("{url}: connection refused")),
        "then the mirror directly, in its own words: {err}"
    );
}

#[test]
fn the_agent_refuses_other_schemes_and_malformed_jobs() {
    if !util::require_tools(&["python3"]) {
        return;
    }
    let Some(host) = Host::loopback() else { return };
    let root = tempdir();
    fs::write(root.path().join("x"), b"hello").unwrap();
    let Some(mirror) = Nginx::mirror_on(&host, root.path()) else {
        return;
    };
    let (_daemon, _cache) = daemon(&host, &[]);
    let get = "GET /x HTTP/1.1\\r\\nHost: h\\r\\n\\r\\n";
    let jobs = [
        format!("PSRV-AGENT 1 FETCH ftp://127.0.0.1:8080 1000 1000\\n{get}"),
        format!("PSRV-AGENT 1 FETCH file://127.0.0.1 1000 1000\\n{get}"),
        "junk\\n".to_owned(),
        "PSRV-AGENT 1 FETCH http://127.0.0.1:8080 1000 1000\\nGET http://127.0.0.1:8080/x HTTP/1.1\\r\\n\\r\\n".to_owned(),
        format!("PSRV-AGENT 1 FETCH http://127.0.0.1:8080 1000 1000\\n{get}"),
    ];
    let script = crate::daemon::AGENT_JOBS;
    let out = run(host.command("python3").arg("-c").arg(script).args(&jobs));
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(answers.len(), 5, "{answers:?} {}", stderr(&out));
    for refused in &answers[..4] {
        assert!(
            refused.starts_with("HTTP/1.1 400") && refused.contains("X-Pacserve-Agent: refused"),
            "{answers:?}"
        );
    }
    assert!(answers[0].contains("ftp"), "{answers:?}");
    assert!(
        answers[4].starts_with("HTTP/1.1 200"),
        "the control job works: {answers:?}"
    );
    assert_eq!(
        mirror.log().len(),
        1,
        "only the control job reached the mirror"
    );
}

#[test]
fn https_mirrors_are_checked_against_the_system_trust_store() {
    let root = tempdir();
    let content = random_bytes(300_000, 9);
    fs::write(root.path().join("t-1-1-any.pkg.tar.zst"), &content).unwrap();
    let options = nginx::Options {
        https: true,
        ..Default::default()
    };
    // Standalone, in our own namespace (mirror only, no agent).
    let Some(mirror) = Nginx::start_with(root.path(), options) else {
        return;
    };
    let url = mirror.url("t-1-1-any.pkg.tar.zst");
    let out = tempdir();
    let part = out.path().join("t.part");
    let standalone = |ca: Option<&Path>| {
        let mut cmd = util::fetch_cmd();
        cmd.arg("--no-agent").arg(&part).arg(&url);
        cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        run(&mut cmd)
    };
    let unknown = standalone(None);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("UnknownIssuer"),
        "{}",
        stderr(&unknown)
    );
    let trusted = standalone(Some(&mirror.ca_file()));
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    assert_eq!(fs::read(&part).unwrap(), content);

    // Through the agent: the daemon's trust store is what counts.
    let Some(host) = Host::loopback() else { return };
    let Some(mirror) = Nginx::start_in(Some(&host), root.path(), options) else {
        return;
    };
    let cache = tempdir();
    let ca = mirror.ca_file();
    let env = [("SSL_CERT_FILE", ca.as_os_str())];
    let conf = crate::daemon::conf_naming(cache.path(), &[mirror.url("")]);
    let args = [
        "--http-port",
        "0",
        "--interface",
        "lo",
        "--prefetch",
        "0",
        "--pacman-conf",
        conf.to_str().unwrap(),
    ];
    let daemon = Daemon::start_with_env(&host, cache.path(), &args, &env);
    let part = out.path().join("t2.part");
    let mut cmd = client(&host);
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    let result = run(cmd.arg(&part).arg(mirror.url("t-1-1-any.pkg.tar.zst")));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(fs::read(&part).unwrap(), content);
    assert_eq!(daemon.metric(&host, JOBS, 1.0), 1.0, "through the agent");
}

/// The process whose command line has an argument equal to `arg`: the test's own pacserve-fetch.
fn pid_with_arg(arg: &Path) -> Option<u32> {
    let arg = arg.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
        cmdline.split(|b| *b == 0).any(|w| w == arg).then_some(pid)
    })
}

struct Transaction {
    host: Host,
    repo: Repo,
    mirror: Nginx,
    daemon: Daemon,
    pacman: Pacman,
    _dirs: Vec<tempfile::TempDir>,
}

/// A repository of `count` packages (`p0`…), a mirror serving it, a daemon prefetching 3 ahead.
fn transaction(count: usize, payload: usize, options: nginx::Options) -> Option<Transaction> {
    transaction_with(count, payload, options, &Pacman::xfer_line(fetch_bin()))
}

/// As [`transaction`], with pacman's XferCommand `xfer`.
fn transaction_with(
    count: usize,
    payload: usize,
    options: nginx::Options,
    xfer: &str,
) -> Option<Transaction> {
    if !require_pacman_tools() {
        return None;
    }
    let host = Host::loopback()?;
    let root = tempdir();
    let repo = Repo::create(root.path(), "pstest");
    for i in 0..count {
        repo.add_package(&format!("p{i}"), payload);
    }
    let mirror = Nginx::start_in(Some(&host), root.path(), options)?;
    let (daemon, cache) = daemon(&host, &["--prefetch", "3"]);
    let pacman = Pacman::new(Some(xfer), &[("pstest", mirror.url("pstest"))]);
    Some(Transaction {
        host,
        repo,
        mirror,
        daemon,
        pacman,
        _dirs: vec![root, cache],
    })
}

impl Transaction {
    fn pacman(&self, args: &[&str]) -> std::process::Output {
        let tmp = lan_memory_dir();
        self.pacman
            .run_in(&self.host, &[("TMPDIR", tmp.as_os_str())], args)
    }

    /// Waits (bounded) until the daemon's staging directory is empty.
    fn staging_empties(&self) -> bool {
        let staging = self.daemon.state_dir().join("staging");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
            if left == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn pacman_gets_exactly_its_transaction_and_the_agent_prefetches_the_rest_of_it() {
    let Some(t) = transaction(8, 150_000, nginx::Options::default()) else {
        return;
    };
    let all: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert!(t.pacman(&["-Sy"]).status.success());
    let mut install = vec!["-S"];
    install.extend(&all);
    assert!(t.pacman(&install).status.success());
    let v2: Vec<String> = all
        .iter()
        .map(|name| t.repo.add_version(name, "2.0", 160_000))
        .collect();
    assert!(t.pacman(&["-Sy"]).status.success());

    // One package asked for, seven upgrades pending: exactly that one crosses the wire.
    assert!(t.pacman(&["-S", "p3"]).status.success());
    let fetched: Vec<String> = t
        .mirror
        .log()
        .into_iter()
        .filter(|l| l.path.contains("-2.0-1-"))
        .map(|l| l.path)
        .collect();
    assert_eq!(
        fetched,
        vec![format!("/pstest/{}", v2[3])],
        "nothing beyond pacman's plan"
    );

    // The full upgrade: every remaining package exactly once, several of them prefetched.
    assert!(t.pacman(&["-Su"]).status.success());
    for (name, file) in all.iter().zip(&v2) {
        assert_eq!(t.mirror.requests_for(file).len(), 1, "{file} once");
        assert_eq!(
            fs::read(t.pacman.cache().join(file)).unwrap(),
            fs::read(t.repo.dir.join(file)).unwrap(),
            "{name}"
        );
    }
    let hits = t
        .daemon
        .metric(&t.host, "pacserved_prefetch_hits_total", 1.0);
    assert!(hits >= 1.0, "some were prefetched: {hits}");
    assert!(t.staging_empties(), "handed-over files are deleted");
}

#[test]
fn prefetch_keeps_its_window_running_while_pacman_is_still_on_an_earlier_file() {
    // p0 is slow (the mirror drips fresh requests after 256 KiB), p1…p6 are small. The daemon
    // fetches 3 at a time: when one ends the next starts, so all six are done while pacman is
    // still on p0. (Started only as pacman asked, p4 could not begin before p0 had ended.)
    let options = nginx::Options {
        throttle_fresh: true,
        ..Default::default()
    };
    let Some(t) = transaction(0, 0, options) else {
        return;
    };
    let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    let files: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let payload = if i == 0 { 600_000 } else { 100_000 };
            t.repo.add_package(name, payload)
        })
        .collect();
    assert!(t.pacman(&["-Sy"]).status.success());
    let mut install = vec!["-S"];
    install.extend(names.iter().map(String::as_str));
    let out = t.pacman(&install);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let order: Vec<String> = t.mirror.log().into_iter().map(|l| l.path).collect();
    let ended = |file: &str| {
        order
            .iter()
            .position(|p| p.ends_with(file))
            .unwrap_or_else(|| panic!("{file} never fetched: {order:?}"))
    };
    for file in &files[1..] {
        assert!(
            ended(file) < ended(&files[0]),
            "{file} was not fetched while pacman waited for p0: {order:?}"
        );
        assert_eq!(t.mirror.requests_for(file).len(), 1, "{file} once");
    }
    for (name, file) in names.iter().zip(&files) {
        t.pacman.assert_installed_from(&t.repo, name, file);
    }
    assert!(t.staging_empties(), "handed-over files are deleted");
}

#[test]
fn a_prefetched_file_is_taken_from_the_daemon_before_the_lan_is_asked() {
    // Peers on (a host with only loopback, so the LAN query finds nobody): the first package
    // asks the LAN, then goes to the mirror through the agent, which prefetches the others;
    // each of those comes straight from the daemon, without a LAN query or its wait.
    let xfer = format!("{} -v --config /dev/null '%o' '%u'", fetch_bin());
    let Some(t) = transaction_with(4, 100_000, nginx::Options::default(), &xfer) else {
        return;
    };
    assert!(t.pacman(&["-Sy"]).status.success());
    let out = t.pacman(&["-S", "p0", "p1", "p2", "p3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("(prefetched by pacserved)"), 3, "{stderr}");
    assert_eq!(
        lines("peers answered"),
        1,
        "only p0 asked the LAN: {stderr}"
    );
    for i in 0..4 {
        let file = format!("p{i}-1.0-1-any.pkg.tar.zst");
        assert_eq!(t.mirror.requests_for(&file).len(), 1, "{file} once");
        t.pacman
            .assert_installed_from(&t.repo, &format!("p{i}"), &file);
    }
    assert!(t.staging_empties(), "handed-over files are deleted");
}

#[test]
fn ctrl_c_mid_transaction_then_a_rerun_resumes_and_installs() {
    let options = nginx::Options {
        throttle_fresh: true,
        ..Default::default()
    };
    let Some(t) = transaction(3, 500_000, options) else {
        return;
    };
    assert!(t.pacman(&["-Sy"]).status.success());
    let files: Vec<String> = (0..3)
        .map(|i| format!("p{i}-1.0-1-any.pkg.tar.zst"))
        .collect();
    let part = t.pacman.cache().join(format!("{}.part", files[0]));
    let tmp = lan_memory_dir();
    let mut cmd = t.host.command("pacman");
    util::strip_network_env(&mut cmd);
    let mut first = cmd
        .env("TMPDIR", &tmp)
        .arg("--config")
        .arg(&t.pacman.config)
        .args(["--noconfirm", "-S", "p0", "p1", "p2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    util::wait_for_len(&part, 300_000, Duration::from_secs(20));
    let pid = pid_with_arg(&part).expect("the running pacserve-fetch");
    assert!(
        run(Command::new("kill").args(["-INT", &pid.to_string()]))
            .status
            .success()
    );
    assert!(
        !first.wait().unwrap().success(),
        "pacman reports the interruption"
    );
    let kept = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept >= 300_000, "partial kept: {kept}");

    assert!(t.pacman(&["-S", "p0", "p1", "p2"]).status.success());
    for (i, file) in files.iter().enumerate() {
        t.pacman
            .assert_installed_from(&t.repo, &format!("p{i}"), file);
    }
    let p0 = t.mirror.requests_for(&files[0]);
    assert_eq!(
        p0.last().map(|l| l.range.clone()),
        Some(format!("bytes={kept}-")),
        "{p0:?}"
    );
    assert!(
        t.staging_empties(),
        "nothing of the interrupted run stays staged"
    );
}

#[test]
fn pacsrv_takes_the_same_path_through_the_agent() {
    let Some(t) = transaction(4, 120_000, nginx::Options::default()) else {
        return;
    };
    // No XferCommand in pacman.conf: pacsrv supplies pacserve-fetch with its defaults.
    let pacman = Pacman::new(None, &[("pstest", t.mirror.url("pstest"))]);
    let pacsrv = Path::new(fetch_bin()).with_file_name("pacsrv");
    let mut cmd = t.host.command(pacsrv.to_str().unwrap());
    util::strip_network_env(&mut cmd);
    let out = run(cmd
        .env("TMPDIR", lan_memory_dir())
        .arg("--config")
        .arg(&pacman.config)
        .args(["--noconfirm", "-Sy", "p0", "p1", "p2", "p3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 0..4 {
        let file = format!("p{i}-1.0-1-any.pkg.tar.zst");
        assert!(pacman.installed_data(&format!("p{i}")).is_some());
        assert_eq!(t.mirror.requests_for(&file).len(), 1, "{file} once");
    }
    // Every request the mirror saw came through the agent: relayed, or prefetched and handed
    // over (the prefetch's own request is the one the mirror logged).
    let requests = t.mirror.log().len() as f64;
    let through = |m: &std::collections::BTreeMap<String, f64>| {
        m["pacserved_agent_fetches_total"] + m["pacserved_prefetch_hits_total"]
    };
    t.daemon.metric(&t.host, JOBS, 1.0);
    let metrics = t.daemon.metrics(&t.host);
    assert_eq!(through(&metrics), requests, "{metrics:?}");
    assert_eq!(metrics["pacserved_plans_total"], 1.0, "{metrics:?}");
    assert_eq!(metrics["pacserved_planned_files_total"], 4.0, "{metrics:?}");
}
