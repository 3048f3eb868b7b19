//! An unprivileged local user against the download agent (issue 18, findings 2–8): squatting its
//! socket, planning for a pacman that is not root's, claiming shares the sync database does not
//! confirm, reaching what the user's own firewall forbids, and crowding other users out.
//!
//! Root only: a namespace LAN (host 1 runs pacman, pacserved and the attacker; host 2 is the
//! mirror), and real local users made by the test. Every script the attacker runs is bounded in
//! count and time.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::archrepo::{Pacman, Repo, require_pacman_tools, write_sync_db_entries};
use crate::daemon::{Daemon, daemon_bin};
use crate::netns::{Family, Host, Lan};
use crate::nginx::Nginx;
use crate::util::{self, fetch_bin, lan_memory_dir, local_user, proc_kb, require_tools, run};

/// The system's Python, which every user can run (a developer's own may live under /root).
const PYTHON: &str = "/usr/bin/python3";

/// The attacker, and an innocent second user.
const ATTACKER: &str = "pacserve-attacker";
const OTHER: &str = "pacserve-other";

struct Site {
    lan: Lan,
    repo: Repo,
    mirror: Nginx,
    pacman: Pacman,
    /// World-writable scratch space for the users' scripts and logs.
    scratch: tempfile::TempDir,
    _root: tempfile::TempDir,
}

/// Host 1: pacman (synced); host 2: the mirror of `packages` packages of `payload` bytes
/// (`la0`, `la1`, …), behind `rate` when given.
fn site(packages: usize, payload: usize, rate: Option<&str>) -> Option<Site> {
    if !require_pacman_tools()
        || !require_tools(&["nginx", "setpriv"])
        || !util::require(
            Path::new(PYTHON).exists(),
            "/usr/bin/python3 is not installed",
        )
    {
        return None;
    }
    let lan = Lan::new(2, Family::Dual)?;
    let root = util::tempdir();
    let repo = Repo::create(root.path(), "la");
    for i in 0..packages {
        repo.add_package(&format!("la{i}"), payload);
    }
    let mirror = Nginx::mirror_on(lan.host(2), root.path())?;
    if let Some(rate) = rate {
        lan.limit_rate(2, rate);
    }
    let url = format!("http://{}:8080/la", lan.url_host(2));
    let pacman = Pacman::new(Some(&Pacman::lan_xfer_line(fetch_bin())), &[("la", url)]);
    let scratch = util::tempdir();
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let site = Site {
        lan,
        repo,
        mirror,
        pacman,
        scratch,
        _root: root,
    };
    let synced = site.pacman(&["-Sy"]);
    assert!(synced.status.success());
    Some(site)
}

impl Site {
    fn host(&self) -> &Host {
        self.lan.host(1)
    }

    /// pacserved on host 1 whose pacman configuration is the test pacman's, as a machine's
    /// daemon reads /etc/pacman.conf.
    fn daemon(&self, extra: &[&str]) -> Daemon {
        let db = self.pacman.base.path().join("db");
        let mut args = vec![
            "--pacman-conf",
            self.pacman.config.to_str().unwrap(),
            "--dbpath",
            db.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Daemon::start(self.host(), &self.pacman.cache(), &args)
    }

    fn pacman(&self, args: &[&str]) -> Output {
        let tmp = lan_memory_dir();
        self.pacman
            .run_in(self.host(), &[("TMPDIR", tmp.as_os_str())], args)
    }

    /// `program` run on host 1 as local user `name` (no supplementary groups).
    fn as_user(&self, name: &str, program: &str) -> Command {
        let (uid, gid) = local_user(name);
        let mut cmd = self.host().command("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            program,
        ]);
        cmd.env("TMPDIR", self.scratch.path());
        util::strip_network_env(&mut cmd);
        cmd
    }

    /// A file under the scratch directory.
    fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The repository's file of package `i`.
    fn file(&self, i: usize) -> String {
        format!("la{i}-1.0-1-any.pkg.tar.zst")
    }

    fn mirror_url(&self, i: usize) -> String {
        format!("http://{}:8080/la/{}", self.lan.url_host(2), self.file(i))
    }

    /// The fake pacman script, installed in the scratch directory under the name `pacman`.
    fn fake_pacman(&self) -> PathBuf {
        let dir = self.scratch("bin");
        let path = dir.join("pacman");
        if !path.exists() {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, FAKE_PACMAN).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }
}

/// A process named `pacman` that is no pacman: its child asks the agent to plan the parent's
/// "transaction" with the lines of `$FAKE_PLAN` (a file), then optionally FETCHes `$FAKE_FETCH`
/// (`origin path`), and prints what the agent answered; the parent then lives on for
/// `$FAKE_HOLD` seconds (at most 60), so that its plan stays live. Its command line is
/// whatever it was given, as a real pacman's would be read by the daemon.
const FAKE_PACMAN: &str = r#"#!/usr/bin/python3
import os, socket, sys, time

def txn(pid):
    stat = open("/proc/%d/stat" % pid).read()
    return "%d-%s" % (pid, stat[stat.rfind(")") + 2:].split()[19])

def talk(job, body=b""):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect("\0pacserved/agent")
    try:
        s.sendall(job + body)
    except OSError:
        pass
    answer = b""
    try:
        while len(answer) < 4096:
            b = s.recv(4096)
            if not b:
                break
            answer += b
            if job.startswith(b"PSRV-AGENT 1 PLAN") and answer.endswith(b"\n"):
                break
    except OSError:
        pass
    s.close()
    return answer.split(b"\r\n")[0].split(b"\n")[0].decode(errors="replace")

child = os.fork()
if child == 0:
    parent = txn(os.getppid())
    body = open(os.environ["FAKE_PLAN"], "rb").read() if os.environ.get("FAKE_PLAN") else b""
    print("PLAN", talk(b"PSRV-AGENT 1 PLAN %s\n" % parent.encode(), body + b"\n"), flush=True)
    if os.environ.get("FAKE_FETCH"):
        origin, path = os.environ["FAKE_FETCH"].split(" ")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\0pacserved/agent")
        s.sendall(b"PSRV-AGENT 1 FETCH %s 10000 10000\nGET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (origin.encode(), path.encode()))
        s.close()
        print("FETCH sent", flush=True)
    os._exit(0)
os.waitpid(child, 0)
time.sleep(min(float(os.environ.get("FAKE_HOLD", "0")), 60))
"#;

/// A plan file of `lines` lines, each a URL padded to about `line_bytes` bytes.
fn plan_file(path: &Path, lines: usize, line_bytes: usize) {
    let mut plan = String::with_capacity(lines * (line_bytes + 1));
    for i in 0..lines {
        let pad = "x".repeat(line_bytes.saturating_sub(110));
        plan.push_str(&format!(
            "http://10.1.2.3/{pad}/p{i}-1-1-any.pkg.tar.zst 1000 {}\n",
            "ab".repeat(32)
        ));
    }
    fs::write(path, plan).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Runs the fake pacman `times` times at once (as `user`, or root when None) and returns what
/// each printed, once all have printed their answers. The parents are left holding their plans
/// (killed with the returned children).
fn fake_pacmans(
    s: &Site,
    user: Option<&str>,
    times: usize,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Vec<String>, Vec<Child>) {
    let program = s.fake_pacman();
    let program = program.to_str().unwrap();
    let mut children = Vec::new();
    for _ in 0..times {
        let mut cmd = match user {
            Some(user) => s.as_user(user, program),
            None => s.host().command(program),
        };
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake pacman");
        children.push(child);
    }
    let mut said = Vec::new();
    for child in &mut children {
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        said.push(line.trim().to_owned());
    }
    (said, children)
}

fn kill_all(children: Vec<Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits for `child` at most `limit`, then kills it and fails.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Finding 2: a local user binds `@pacserved/agent` while pacserved is down. root's pacman must
/// not take a byte from it, and pacserved must refuse to start rather than log a line.
#[test]
fn a_squatted_agent_socket_is_refused_by_clients_and_stops_pacserved() {
    let Some(s) = site(1, 300_000, None) else {
        return;
    };
    let log = s.scratch("squatter.log");
    let squatter = r#"
import socket, sys, time
log = open(sys.argv[1], "a", buffering=1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0pacserved/agent")
s.listen(16)
s.settimeout(1)
print("ready", flush=True)
body = b"squatted" * 10000
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    log.write("got %r\n" % data[:60])
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    c.close()
"#;
    let mut squat = s
        .as_user(ATTACKER, PYTHON)
        .args(["-c", squatter])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(squat.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");

    let out = s.pacman(&["-Syyw", "la0"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("not by root or pacserved: not using it"),
        "the client says why it ignored the socket: {said}"
    );
    let file = s.file(0);
    assert_eq!(
        fs::read(s.pacman.cache().join(&file)).ok(),
        fs::read(s.repo.dir.join(&file)).ok(),
        "the package is the mirror's"
    );
    let db = s.pacman.base.path().join("db/sync/la.db");
    assert_eq!(
        fs::read(&db).ok(),
        fs::read(s.repo.dir.join("la.db.tar.gz")).ok(),
        "the database is the mirror's"
    );
    let heard = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !heard.contains("PSRV-AGENT"),
        "no request was ever sent to the squatter: {heard}"
    );

    // pacserved started now stops with the reason, instead of running without its agent.
    let state = util::tempdir();
    let daemon = s
        .host()
        .command(daemon_bin())
        .args(["--config", "/dev/null", "--http-port", "0", "--cache-dir"])
        .arg(s.pacman.cache())
        .arg("--state-dir")
        .arg(state.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(daemon, Duration::from_secs(20), "pacserved");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("@pacserved/agent is taken"), "{said}");
    let _ = squat.kill();
    let _ = squat.wait();
}

/// Findings 3 and 5: plans come only from root's pacman, are bounded in size and number, and so
/// cannot grow the daemon or crowd root's own transaction out of prefetch.
#[test]
fn plans_from_anyone_but_roots_pacman_are_refused_and_plans_are_bounded() {
    let Some(s) = site(4, 500_000, None) else {
        return;
    };
    let daemon = s.daemon(&["--prefetch", "3"]);
    let pid = daemon.pid();
    let rss_before = proc_kb(pid, "VmRSS:");

    // Eight fake pacmans of the attacker, each planning 20,000 files (one of them 2 GiB).
    let plan = s.scratch("plan-20000");
    plan_file(&plan, 20_000, 110);
    let plan_env = [("FAKE_PLAN", plan.to_str().unwrap()), ("FAKE_HOLD", "5")];
    let (said, held) = fake_pacmans(&s, Some(ATTACKER), 8, &plan_env, &[]);
    for answer in &said {
        assert!(
            answer.contains("400") && answer.contains("PLAN"),
            "refused: {said:?}"
        );
    }
    let refused = daemon
        .log()
        .iter()
        .filter(|l| l.contains("not a pacman run by root"))
        .count();
    assert_eq!(refused, 8, "{:?}", daemon.log());
    kill_all(held);

    // root's own: a plan beyond the byte bound is refused, and at most 4 plans per uid.
    let huge = s.scratch("plan-huge");
    plan_file(&huge, 2_000, 4_000);
    let (said, held) = fake_pacmans(
        &s,
        None,
        1,
        &[("FAKE_PLAN", huge.to_str().unwrap()), ("FAKE_HOLD", "20")],
        &[],
    );
    assert!(
        said[0].contains("ERR") && said[0].contains("bytes"),
        "{said:?}"
    );
    kill_all(held);
    let small = s.scratch("plan-small");
    plan_file(&small, 10, 110);
    let env = [("FAKE_PLAN", small.to_str().unwrap()), ("FAKE_HOLD", "20")];
    let (said, held) = fake_pacmans(&s, None, 6, &env, &[]);
    let accepted = said.iter().filter(|a| a.contains("OK")).count();
    assert_eq!(accepted, 4, "{said:?}");
    assert!(said.iter().any(|a| a.contains("plans held")), "{said:?}");
    let rss_after = proc_kb(pid, "VmRSS:");
    eprintln!("pacserved RSS {rss_before} kB before, {rss_after} kB after the plans");
    // 637 MB before the fix; the daemon's own footprint is a few MB.
    assert!(rss_after < 48 * 1024, "RSS {rss_after} kB");
    kill_all(held);

    // root's real transaction still gets its files prefetched (the attacker's plans took no
    // place; finding 5).
    let out = s.pacman(&["-Sw", "la0", "la1", "la2", "la3"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let prefetched = daemon
            .log()
            .iter()
            .filter(|l| l.contains("prefetch:") && l.contains("verified"))
            .count();
        if prefetched >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 4: whatever plans arrive, prefetch runs at most its bounded number of fetches, and
/// the daemon's threads stay bounded (1,506 before the fix).
#[test]
fn prefetch_threads_stay_bounded_whoever_plans() {
    let Some(s) = site(1, 100_000, None) else {
        return;
    };
    // A server on host 1 that sends every file one byte a second (bounded to 60 s).
    let drip = r#"
import socket, threading, time, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 18080))
srv.listen(512)
srv.settimeout(1)
print("ready", flush=True)
def drip(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(60):
            c.sendall(b"x")
            time.sleep(1)
    except OSError:
        pass
    c.close()
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    threading.Thread(target=drip, args=(c,), daemon=True).start()
"#;
    let me = s.lan.ipv4(1);
    let mut server = s
        .host()
        .command("python3")
        .args(["-c", drip, &me])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    // root's fake pacmans plan 30 files each that a sync database of theirs lists, all on the
    // dripping server; each then asks for the first, which starts prefetching the rest.
    let dbpath = s.scratch("fakedb");
    let entries: Vec<(String, u64, [u8; 32])> = (0..30)
        .map(|i| {
            let name = format!("drip{i}-1-1-any.pkg.tar.zst");
            (
                name.clone(),
                100_000,
                Sha256::digest(name.as_bytes()).into(),
            )
        })
        .collect();
    write_sync_db_entries(&dbpath, "drip", &entries);
    let plan: String = entries
        .iter()
        .map(|(name, size, sha)| {
            let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
            format!("http://{me}:18080/{name} {size} {hex}\n")
        })
        .collect();
    let plan_path = s.scratch("plan-drip");
    fs::write(&plan_path, plan).unwrap();
    let daemon = s.daemon(&[]);
    let origin = format!("http://{me}:18080");
    let fetch = format!("{origin} /{}", entries[0].0);
    let env = [
        ("FAKE_PLAN", plan_path.to_str().unwrap()),
        ("FAKE_FETCH", fetch.as_str()),
        ("FAKE_HOLD", "30"),
    ];
    let args = ["-S", "--dbpath", dbpath.to_str().unwrap()];
    let (roots, root_held) = fake_pacmans(&s, None, 8, &env, &args);
    // And 300 of the attacker's, refused outright.
    let (users, user_held) = fake_pacmans(&s, Some(ATTACKER), 300, &env, &args);
    assert!(users.iter().all(|a| a.contains("400")), "{users:?}");
    let accepted = roots.iter().filter(|a| a.contains("OK")).count();
    assert_eq!(accepted, 4, "four plans per uid: {roots:?}");
    // Let the prefetches start and pile up, then count.
    std::thread::sleep(Duration::from_secs(3));
    let threads = proc_kb(daemon.pid(), "Threads:");
    let running = daemon
        .log()
        .iter()
        .filter(|l| l.contains("prefetch:"))
        .count();
    eprintln!("pacserved threads: {threads}; prefetch lines: {running}");
    assert!(threads <= 64, "{threads} threads");
    assert!(threads > 8, "the prefetches did start ({threads} threads)");
    kill_all(root_held);
    kill_all(user_held);
    let _ = server.kill();
    let _ = server.wait();
}

/// Asks host 1's daemon from host 2, in protocol version 2, about `name`: its answer's state
/// (0 MISS, 1 HAVE, 2 GROWING, 3 CLAIMING).
fn state_of(s: &Site, name: &str) -> Option<u8> {
    let to = s.lan.ipv4(1);
    let script = format!(
        r#"
import socket
name = {name:?}.encode()
q = (b"PSRV\x02\x01" + b"12345678" + bytes([len(name)]) + name + b"\x00" + b"\x00" * 9).ljust(64, b"\x00")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, ({to:?}, 15678))
d, _ = s.recvfrom(512)
print(d[14])
"#
    );
    let out = s
        .lan
        .host(2)
        .command("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Finding 6: a user's `X-Pacserve-Share` is believed only as the sync database describes the
/// file: a lie about its hash shares nothing; the truth shares it (the control).
#[test]
fn a_share_a_user_claims_is_believed_only_as_the_sync_database_says() {
    let Some(s) = site(2, 3_000_000, Some("4mbit")) else {
        return;
    };
    let _daemon = s.daemon(&["--prefetch", "0"]);
    let client = r#"
import socket, sys, time
origin, path, share = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect("\0pacserved/agent")
s.sendall(b"PSRV-AGENT 1 FETCH %s 10000 10000\nGET %s HTTP/1.1\r\nHost: x\r\nX-Pacserve-Share: %s\r\n\r\n" % (origin.encode(), path.encode(), share.encode()))
head = s.recv(4096)
print(head.split(b"\r\n")[0].decode(), flush=True)
end = time.time() + 30
while time.time() < end and s.recv(65536):
    pass
"#;
    let origin = format!("http://{}:8080", s.lan.url_host(2));
    let run_share = |i: usize, sha: [u8; 32]| -> (String, Option<u8>) {
        let name = s.file(i);
        let size = fs::metadata(s.repo.dir.join(&name)).unwrap().len();
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = s
            .as_user(ATTACKER, PYTHON)
            .args(["-c", client, &origin, &format!("/la/{name}")])
            .arg(format!("{name} {size} {hex}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut status = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut status)
            .unwrap();
        // The download takes about 6 s at 4 Mbit/s: ask while it is under way.
        std::thread::sleep(Duration::from_millis(1500));
        let state = state_of(&s, &name);
        let _ = wait_bounded(child, Duration::from_secs(40), "the attacker's download");
        (status, state)
    };
    let zeros: [u8; 32] = Sha256::digest(vec![0u8; 3_000_000]).into();
    let (status, lie) = run_share(0, zeros);
    assert!(
        status.contains("200"),
        "the download itself is relayed: {status}"
    );
    assert_eq!(
        lie,
        Some(0),
        "a hash the database does not give is never announced"
    );
    let truth: [u8; 32] = Sha256::digest(fs::read(s.repo.dir.join(s.file(1))).unwrap()).into();
    let (_, told) = run_share(1, truth);
    assert_eq!(told, Some(2), "the database's own hash is shared (GROWING)");

    // The issue's own attack: the user's server of zeros, named as the package: refused.
    let zeros_url = format!("http://{}:18081", s.lan.ipv4(1));
    let out = run(s
        .as_user(ATTACKER, PYTHON)
        .args(["-c", client, &zeros_url, &format!("/{}", s.file(0))])
        .arg(format!("{} 3000000 {}", s.file(0), "00".repeat(32))));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("421"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Finding 7: what a user's own firewall rules forbid them, the agent does not do for them.
#[test]
fn the_agent_reaches_nothing_a_users_firewall_forbids() {
    if !require_tools(&["nft", "curl"]) {
        return;
    }
    let Some(s) = site(1, 100_000, None) else {
        return;
    };
    let _daemon = s.daemon(&[]);
    let secret_log = s.scratch("secret.log");
    let secret = r#"
import http.server, sys, threading, time
log = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open(log, "a").write(self.path + "\n")
        body = b"SECRET" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 18999), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"#;
    let mut server = s
        .host()
        .command("python3")
        .args(["-c", secret])
        .arg(&secret_log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let (uid, _) = local_user(ATTACKER);
    s.host().sh(&format!(
        "nft add table inet pstest && \
         nft add chain inet pstest out '{{ type filter hook output priority 0; }}' && \
         nft add rule inet pstest out meta skuid {uid} tcp dport 18999 reject"
    ));
    let url = "http://127.0.0.1:18999/secret-1-1-any.pkg.tar.zst";
    // The user's own curl is refused by the rule; root's is not (the server works).
    let theirs = run(s.as_user(ATTACKER, "curl").args(["-sf", url]));
    assert!(!theirs.status.success());
    assert!(
        run(s.host().command("curl").args(["-sf", url]))
            .status
            .success()
    );
    fs::remove_file(&secret_log).unwrap();
    // Through the agent: refused as well, and the server never sees the daemon.
    let out_dir = s.scratch("out");
    fs::create_dir(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let part = out_dir.join("secret-1-1-any.pkg.tar.zst.part");
    let fetched = run(s
        .as_user(ATTACKER, fetch_bin())
        .args(["--config", "/dev/null", "--no-peers", "-v"])
        .arg(&part)
        .arg(url));
    assert!(!fetched.status.success());
    assert!(
        !fs::read(&part).unwrap_or_default().starts_with(b"SECRET"),
        "no secret"
    );
    assert!(
        util::stderr(&fetched).contains("pacserved refused to fetch this"),
        "{}",
        util::stderr(&fetched)
    );
    assert!(
        !secret_log.exists(),
        "the daemon never asked: {:?}",
        fs::read_to_string(&secret_log)
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A name the sync databases list, smuggled after a query or past dot segments, is no licence
/// to fetch another path of a server pacman.conf names (found by attacking the agent).
#[test]
fn a_listed_name_in_a_query_or_past_dot_segments_fetches_nothing() {
    if !require_tools(&["nft"]) {
        return;
    }
    let Some(s) = site(1, 1000, None) else {
        return;
    };
    let _daemon = s.daemon(&[]);
    let private = s._root.path().join("private");
    fs::create_dir_all(&private).unwrap();
    fs::write(private.join("secret"), b"PRIVATE").unwrap();
    let (uid, _) = local_user(ATTACKER);
    // The attacker may not reach the mirror host at all.
    s.host().sh(&format!(
        "nft add table inet pstest && \
         nft add chain inet pstest out '{{ type filter hook output priority 0; }}' && \
         nft add rule inet pstest out meta skuid {uid} ip daddr {} reject",
        s.lan.ipv4(2)
    ));
    let client = r#"
import socket, sys
origin, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect("\0pacserved/agent")
s.sendall(b"PSRV-AGENT 1 FETCH %s 10000 10000\nGET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (origin.encode(), path.encode()))
answer = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    answer += b
head, _, body = answer.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode(), body[:7].decode(errors="replace"))
"#;
    let origin = format!("http://{}:8080", s.lan.url_host(2));
    let listed = format!("la/{}", s.file(0));
    let ask = |path: &str| {
        let out = run(s
            .as_user(ATTACKER, PYTHON)
            .args(["-c", client, &origin, path]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(ask(&format!("/{listed}")).contains(" 200 "), "the control");
    for sneaky in [
        format!("/private/secret?/{listed}"),
        format!("/private/secret#/{listed}"),
        format!("/private/x/../secret?a=/../{listed}"),
        format!("/private/../{listed}"),
        format!("/private/%2e%2e/{listed}"),
    ] {
        let answer = ask(&sneaky);
        assert!(
            answer.contains(" 421 ") && !answer.contains("PRIVATE"),
            "{sneaky}: {answer}"
        );
    }
    assert!(
        s.mirror.requests_for("secret").is_empty(),
        "{:?}",
        s.mirror.log()
    );
}

/// Finding 8: the agent's per-uid job limit holds between real users: one user holding every
/// job of theirs does not stop another's download.
#[test]
fn one_users_jobs_never_crowd_out_another_user() {
    let Some(s) = site(1, 300_000, None) else {
        return;
    };
    let daemon = s.daemon(&["--prefetch", "0"]);
    let hog = r#"
import socket, time
socks = []
for _ in range(24):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0pacserved/agent")
    socks.append(s)
time.sleep(1)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1, socket.MSG_PEEK) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print("closed", closed, flush=True)
time.sleep(20)
"#;
    let mut hogging = s
        .as_user(ATTACKER, PYTHON)
        .args(["-c", hog])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hogging.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // 16 jobs per uid: the 8 beyond them were closed at once.
    assert_eq!(line.trim(), "closed 8", "{:?}", daemon.log());
    // Another user's download still goes through the agent.
    let (other_uid, _) = local_user(OTHER);
    let out_dir = s.scratch("other");
    fs::create_dir(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let part = out_dir.join(format!("{}.part", s.file(0)));
    let dbpath = s.pacman.base.path().join("db");
    let fetched = run(s
        .as_user(OTHER, fetch_bin())
        .args(["--config", "/dev/null", "--no-peers", "--dbpath"])
        .arg(&dbpath)
        .arg(&part)
        .arg(s.mirror_url(0)));
    assert!(fetched.status.success(), "{}", util::stderr(&fetched));
    assert_eq!(
        fs::read(&part).ok(),
        fs::read(s.repo.dir.join(s.file(0))).ok()
    );
    let served = daemon
        .log()
        .iter()
        .any(|l| l.contains(&format!("agent: uid {other_uid} ")) && l.contains(": 200,"));
    assert!(served, "{:?}", daemon.log());
    assert_eq!(s.mirror.requests_for(&s.file(0)).len(), 1);
    let _ = hogging.kill();
    let _ = hogging.wait();
}

/// Runs inside a fresh pid namespace (root): pacserved; the attacker (argv uid and gid), whose
/// child connects to the agent, hands the connection to its parent and exits; then root's
/// "pacman", started so that its downloader child gets the dead child's pid (ns_last_pid). The
/// attacker then asks about that pacman's transaction on the connection it kept. Prints
/// `REUSED <bool>` and the agent's answer.
const PID_REUSE: &str = r#"
import os, socket, subprocess, sys, time
pacserved, uid, gid, fake, state, cache = sys.argv[1:7]
daemon = subprocess.Popen([pacserved, "--config", "/dev/null", "--http-port", "0",
                           "--cache-dir", cache, "--state-dir", state],
                          stderr=subprocess.DEVNULL)
for _ in range(200):
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect("\0pacserved/agent")
        probe.close()
        break
    except OSError:
        time.sleep(0.05)
attacker = r'''
import os, socket, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0pacserved/agent")
    socket.send_fds(b, [b"x"], [s.fileno()])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(a, 16, 1)
os.waitpid(pid, 0)
held = socket.socket(fileno=fds[0])
print("CHILD", pid, flush=True)
txn = sys.stdin.readline().strip()
held.sendall(("PSRV-AGENT 1 KNOWS %s\n" % txn).encode())
held.settimeout(10)
print("ANSWER", held.recv(4096).split(b"\r\n")[0].decode(errors="replace"), flush=True)
'''
# The downloader must get exactly the dead child's pid; the fake pacman claims it right before
# its fork, and anything forking in that instant takes it, so this is tried a few times.
for attempt in range(5):
    att = subprocess.Popen(["setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups", "--",
                            "/usr/bin/python3", "-c", attacker],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(att.stdout.readline().split()[1])
    time.sleep(0.3)
    pacman = subprocess.Popen([fake, str(child)], stdout=subprocess.PIPE, text=True)
    downloader = int(pacman.stdout.readline().split()[1])
    if downloader == child or attempt == 4:
        break
    pacman.kill()
    att.kill()
print("REUSED", downloader == child, flush=True)
stat = open("/proc/%d/stat" % pacman.pid).read()
start = stat[stat.rfind(")") + 2:].split()[19]
att.stdin.write("%d-%s\n" % (pacman.pid, start))
att.stdin.flush()
print(att.stdout.readline().strip(), flush=True)
pacman.kill()
att.kill()
daemon.kill()
"#;

/// root's "pacman" for [`PID_REUSE`]: forks its downloader, which prints its pid and waits.
const ROOT_PACMAN: &str = r#"#!/usr/bin/python3
import os, sys, time
# The pid the downloader must get is claimed here, right before the fork, so that nothing
# else forking in the namespace (a thread the daemon starts) can take it first.
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(int(sys.argv[1]) - 1))
child = os.fork()
if child == 0:
    print("DOWNLOADER", os.getpid(), flush=True)
    time.sleep(30)
    os._exit(0)
os.waitpid(child, 0)
"#;

/// A connection held open while its pid is reused by a downloader of root's pacman never gets
/// that downloader's standing (found by attacking the agent: SO_PEERCRED names the pid that
/// connected, which may be another process's by the time the request arrives).
#[test]
fn a_reused_pid_lends_a_held_connection_no_standing() {
    if !require_tools(&["unshare", "setpriv"]) {
        return;
    }
    let Some(s) = site(1, 1000, None) else {
        return;
    };
    let (uid, gid) = local_user(ATTACKER);
    let dir = s.scratch("pidreuse");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let fake = dir.join("pacman");
    fs::write(&fake, ROOT_PACMAN).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let state = util::tempdir();
    let out = run(s
        .host()
        .command("unshare")
        .args(["--pid", "--fork", "--mount-proc", PYTHON, "-c", PID_REUSE])
        .arg(daemon_bin())
        .args([uid.to_string(), gid.to_string()])
        .arg(&fake)
        .arg(state.path())
        .arg(s.pacman.cache()));
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{said}");
    assert!(
        said.contains("REUSED True"),
        "the downloader got the attacker's dead pid: {said}"
    );
    assert!(
        said.contains("ANSWER HTTP/1.1 400") && !said.contains("ANSWER NO"),
        "the held connection is judged as the attacker, not root's downloader: {said}"
    );
}
