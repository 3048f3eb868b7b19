//! Shared test plumbing: the binaries, temp dirs, and the prerequisite policy.
//!
//! A test that needs an outside tool (nginx, pacman, unshare, root) calls [`require`]. On a
//! laptop a missing tool skips the test with a printed reason; with `PACSERVE_E2E=require` (as CI
//! sets it) a missing tool fails the test, so CI can never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fetch_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pacserve-fetch")
}

/// Options every mirror-only test passes: no peer discovery (the root network namespace must
/// never see our multicast) and no system configuration file.
pub const MIRROR_ONLY: [&str; 3] = ["--no-peers", "--config", "/dev/null"];

/// A mirror-only `pacserve-fetch` command with the environment pacman would not pass stripped,
/// so the developer's proxy, user agent or config cannot change what a test sees.
pub fn fetch_cmd() -> Command {
    let mut cmd = bare_fetch_cmd();
    cmd.args(MIRROR_ONLY);
    cmd
}

/// As [`fetch_cmd`] without the mirror-only options, for tests inside their own namespaces.
pub fn bare_fetch_cmd() -> Command {
    let mut cmd = Command::new(fetch_bin());
    strip_network_env(&mut cmd);
    cmd.env_remove("HTTP_USER_AGENT");
    cmd
}

/// Removes proxy settings, so a developer's proxy cannot reroute test traffic.
pub fn strip_network_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
}

/// Runs and returns the output, printing stderr so a failing test shows what the binary said.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n  exit: {:?}\n  stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pacserve-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Incompressible test content of a given size, different per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, fast, and good enough to defeat compression.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status is readable everywhere we run.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn have(tool: &str) -> bool {
    find_tool(tool).is_some()
}

pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// True when the test may go on. `what` names the missing prerequisite, `ok` says whether it is
/// there. Missing + `PACSERVE_E2E=require` is a test failure, otherwise a printed skip.
///
/// Both are written so they are seen: cargo's test harness captures `print!`/`eprint!` of
/// passing tests, but not writes to the stderr handle itself, so a skip shows up in a plain
/// `cargo test` run next to the test's name. A required prerequisite fails the test with that
/// one line and no panic message or backtrace (`resume_unwind` skips the panic hook). Every skip
/// is also counted for the summary printed when the test binary exits ([`skips`]).
pub fn require(ok: bool, what: &str) -> bool {
    use std::io::Write;
    let required = std::env::var("PACSERVE_E2E").as_deref() == Ok("require");
    if !required {
        skips::summarise_at_exit();
    }
    if ok {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    if required {
        let line = format!("MISSING ({test}): {what} (PACSERVE_E2E=require)");
        let _ = writeln!(std::io::stderr(), "{line}");
        std::panic::resume_unwind(Box::new(line));
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED ({test}): {what} (set PACSERVE_E2E=require to make this a failure)"
    );
    skips::record(test, what);
    false
}

/// The skips of this test binary, summed up when it exits.
///
/// libtest has no hook after the last test, and a test that runs "last" is not guaranteed to:
/// tests run in parallel and in any order. The process's own end is certain, so the summary is
/// an `atexit` handler, registered by the first [`require`]; it runs after libtest printed its
/// `test result:` line (libtest returns from main, or calls `exit` on failure; both run it).
pub mod skips {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::{Mutex, Once};

    /// Skipped tests by reason.
    static SKIPPED: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

    pub fn record(test: String, why: &str) {
        let mut skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
        skipped.entry(why.to_owned()).or_default().push(test);
    }

    /// Registers [`print_summary`] to run at exit (once).
    pub fn summarise_at_exit() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: atexit stores a pointer to a plain `extern "C" fn()`; print_summary does
            // not unwind (a poisoned lock is recovered, write errors are ignored).
            unsafe {
                nix::libc::atexit(print_summary);
            }
        });
    }

    /// The summary: how many tests were skipped, then each reason with its count and tests.
    pub fn summary() -> String {
        let skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = skipped.values().map(Vec::len).sum();
        let mut out = match total {
            0 => "pacserve tests: no test skipped for a missing prerequisite\n".to_owned(),
            1 => "pacserve tests: 1 test SKIPPED for a missing prerequisite \
                  (PACSERVE_E2E=require makes it a failure):\n"
                .to_owned(),
            n => format!(
                "pacserve tests: {n} tests SKIPPED for missing prerequisites \
                 (PACSERVE_E2E=require makes each a failure):\n"
            ),
        };
        let mut reasons: Vec<_> = skipped.iter().collect();
        reasons.sort_by_key(|(why, tests)| (std::cmp::Reverse(tests.len()), *why));
        for (why, tests) in reasons {
            let mut tests = tests.clone();
            tests.sort();
            out.push_str(&format!(
                "  {:>3}  {why}\n       {}\n",
                tests.len(),
                tests.join(", ")
            ));
        }
        out
    }

    extern "C" fn print_summary() {
        let _ = std::io::stderr().write_all(summary().as_bytes());
    }
}

/// Requires every tool in the list to be on PATH.
pub fn require_tools(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|tool| require(have(tool), &format!("{tool} is not installed")))
}

/// `unshare` can make user namespaces here (some containers forbid it).
pub fn can_unshare() -> bool {
    have("unshare")
        && Command::new("unshare")
            .args(["-r", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// The uid/gid that unprivileged runs use when the tests run as root: `nobody`.
pub const NOBODY: u32 = 65534;

/// A command that runs `program` as `nobody` with no supplementary groups when we are root (as
/// pacman 7 runs its DownloadUser), or as ourselves when we are not root already.
pub fn as_unprivileged(program: &str) -> Command {
    let mut cmd = unprivileged(program);
    if program == fetch_bin() {
        cmd.args(MIRROR_ONLY);
    }
    cmd
}

fn unprivileged(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    }
}

/// Makes `path` owned by the unprivileged user (when root) with `mode`.
pub fn hand_to_unprivileged(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A TMPDIR for pacserve-fetch's LAN memory, one per test thread, so concurrent tests on
/// different simulated LANs do not share what they remember.
pub fn lan_memory_dir() -> std::path::PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempdir();
    }
    DIR.with(|d| d.path().to_owned())
}

/// Waits until the file at `path` holds at least `n` bytes (a download under way has got that
/// far); panics after `limit`.
pub fn wait_for_len(path: &Path, n: u64, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached {n} bytes within {limit:?}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A field of /proc/<pid>/status (`VmRSS:`, `Threads:`, …) as a number (kB for sizes).
pub fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let value = l.strip_prefix(field)?.trim();
            value
                .strip_suffix("kB")
                .unwrap_or(value)
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A system user created for this test run (once, as root), for tests where an unprivileged
/// local user attacks; returns its uid and gid.
pub fn local_user(name: &str) -> (u32, u32) {
    use std::sync::Mutex;
    static MADE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() && !made.iter().any(|n| n == name) {
        let added = run(std::process::Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ]));
        assert!(added.status.success(), "useradd {name}");
        made.push(name.to_owned());
    }
    (
        id("-u").expect("uid of the test user"),
        id("-g").expect("gid of the test user"),
    )
}
