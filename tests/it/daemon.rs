//! pacserved started by a test inside a namespace, with its log captured for assertions.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::Host;
use crate::util;

pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pacserved")
}

/// Writes `<dir>/pacman.conf` naming `servers` in a repository `[mirror]`, for a daemon's
/// `--pacman-conf`: the agent reaches a loopback mirror only when pacman's configuration names
/// it, as a real machine's does.
#[allow(dead_code)] // not used by benches/lan.rs
pub fn conf_naming(dir: &Path, servers: &[String]) -> std::path::PathBuf {
    let mut conf = "[options]\n[mirror]\n".to_owned();
    for server in servers {
        conf.push_str(&format!("Server = {server}\n"));
    }
    let path = dir.join("pacman.conf");
    std::fs::write(&path, conf).expect("write pacman.conf");
    path
}

/// A python3 script that sends each of its arguments (`\n`, `\r\n` written as escapes) as
/// one job on its own connection to `@pacserved/agent`, and prints each answer on one line:
/// an HTTP answer's head, or a line answer whole, line breaks shown as ` | `.
#[allow(dead_code)] // not used by benches/lan.rs
pub const AGENT_JOBS: &str = r#"
import socket, sys
for job in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0pacserved/agent")
    s.sendall(job.encode().decode("unicode_escape").encode())
    s.shutdown(socket.SHUT_WR)
    answer = b""
    while len(answer) < 1 << 20:
        b = s.recv(65536)
        if not b:
            break
        answer += b
    head = answer.decode(errors="replace").split("\r\n\r\n")[0]
    print(head.replace("\r\n", " | ").replace("\n", " | "))
"#;

/// What the kernel shows of a host's link ([`Daemon::start_on_link`]): the rig's veths show no
/// link type or speed, where a real host's NIC does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // benches/lan.rs uses one of them
pub enum KernelLink {
    /// Every interface is wireless (`/sys/class/net/<if>/wireless`).
    Wireless,
    /// Every interface is a NIC that negotiated this many Mbit/s.
    Wired(u32),
}

/// Runs `PACSERVE_TEST_BIN` with its arguments in a private mount namespace whose
/// `/sys/class/net` shows every interface as `PACSERVE_TEST_LINK` says: `wireless`, or a NIC of
/// that many Mbit/s. Only the kernel's view of the link is made up; the daemon is started as
/// always, with nothing set to tell it.
const KERNEL_LINK: &str = r#"#!/bin/sh
set -e
names=$(ls /sys/class/net)
exec unshare -m sh -ec '
names=$1; shift
mount -t tmpfs kernel-link /sys/class/net
for n in $names; do
    mkdir -p "/sys/class/net/$n/device"
    echo 1 > "/sys/class/net/$n/carrier"
    case "$PACSERVE_TEST_LINK" in
        wireless) mkdir "/sys/class/net/$n/wireless" ;;
        *) echo "$PACSERVE_TEST_LINK" > "/sys/class/net/$n/speed" ;;
    esac
done
exec "$PACSERVE_TEST_BIN" "$@"' sh "$names" "$@"
"#;

pub struct Daemon {
    child: Child,
    pub http_port: u16,
    log: Arc<Mutex<Vec<String>>>,
    _state: tempfile::TempDir,
}

impl Daemon {
    /// Starts pacserved in `host` sharing `cache`, with `extra` options; waits until it serves.
    pub fn start(host: &Host, cache: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(host, cache, extra, &[])
    }

    /// As [`Daemon::start`], with `env` set for the daemon.
    pub fn start_with_env(
        host: &Host,
        cache: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        Daemon::start_binary(daemon_bin(), host, cache, extra, env)
    }

    /// As [`Daemon::start_with_env`], on a host whose kernel shows its link as `link` (in a
    /// mount namespace of its own; needs root, as the namespace LAN does).
    #[allow(dead_code)]
    pub fn start_on_link(
        host: &Host,
        cache: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        link: KernelLink,
    ) -> Daemon {
        static SCRIPT: std::sync::OnceLock<tempfile::TempPath> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let file = tempfile::Builder::new()
                .prefix("pacserve-kernel-link")
                .suffix(".sh")
                .tempfile()
                .expect("a temporary file");
            std::fs::write(file.path(), KERNEL_LINK).expect("write the kernel-link script");
            let mode = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(file.path(), mode).expect("chmod the kernel-link script");
            file.into_temp_path()
        });
        let kind = match link {
            KernelLink::Wireless => "wireless".to_owned(),
            KernelLink::Wired(mbit) => mbit.to_string(),
        };
        let mut env = env.to_vec();
        env.push(("PACSERVE_TEST_LINK", std::ffi::OsStr::new(&kind)));
        env.push(("PACSERVE_TEST_BIN", std::ffi::OsStr::new(daemon_bin())));
        let script = script.to_str().expect("a UTF-8 temporary path");
        Daemon::start_binary(script, host, cache, extra, &env)
    }

    /// As [`Daemon::start_with_env`], running the pacserved at `binary` (a benchmark compares
    /// an older build with this one in the same run).
    pub fn start_binary(
        binary: &str,
        host: &Host,
        cache: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        let state = util::tempdir();
        let mut child = host
            .command(binary)
            .envs(env.iter().copied())
            .arg("--cache-dir")
            .arg(cache)
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pacserved");
        let stderr = child.stderr.take().expect("daemon stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[pacserved] {line}");
                    if let Some(port) = line
                        .split("HTTP port ")
                        .nth(1)
                        .and_then(|r| r.split(',').next())
                    {
                        let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                    }
                    if let Ok(mut log) = log.lock() {
                        log.push(line);
                    }
                }
            });
        }
        let http_port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("pacserved did not start");
        let daemon = Daemon {
            child,
            http_port,
            log,
            _state: state,
        };
        daemon.wait_listening();
        daemon
    }

    /// The responder joins its groups right after the HTTP port is logged; give it that moment.
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !self
                .log()
                .iter()
                .any(|l| l.contains("listening for queries"))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[allow(dead_code)] // used by benches/lan.rs
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as systemd stops it; returns the exit status once it has exited (bounded wait).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// kill -9, as a crash or power loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its `--state-dir`, where the agent stages prefetched files.
    #[allow(dead_code)] // not used by benches/lan.rs
    pub fn state_dir(&self) -> &Path {
        self._state.path()
    }

    /// The daemon's `/metrics`, asked from inside `host` (where it listens on loopback): each
    /// series' name and value.
    pub fn metrics(&self, host: &Host) -> std::collections::BTreeMap<String, f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let out = util::run(host.command("curl").args(["-s", "-f", &url]));
        assert!(out.status.success(), "GET {url} failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Series `name` (e.g. `pacserved_agent_fetches_total`) once it reaches `at_least`, or
    /// what it is after 5 s: counters are bumped as a response ends, which may be just after
    /// the client has what it needs. (A bound on a wait, not a timing.)
    #[allow(dead_code)] // not used by benches/lan.rs
    pub fn metric(&self, host: &Host, name: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = *self
                .metrics(host)
                .get(name)
                .unwrap_or_else(|| panic!("no series {name} in /metrics"));
            if value >= at_least || Instant::now() >= deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Log lines recording a GET of `name`. The log arrives through a pipe and a reader thread,
    /// so a line written just before the client finished may lag a little: wait up to half a
    /// second for the first one.
    pub fn served(&self, name: &str) -> Vec<String> {
        let needle = format!("GET /pkg/{name} ");
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let lines: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| l.contains(&needle))
                .collect();
            if !lines.is_empty() || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
