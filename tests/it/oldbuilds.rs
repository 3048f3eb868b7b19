//! Real older releases of pacserve-fetch and pacserved, built from this repository's own git
//! history, for the tests where old and new hosts share one LAN (`lan_versions`).
//!
//! Each release is the last commit before the protocol moved on (see `src/protocol/mod.rs`,
//! VERSIONS), taken out of history with `git archive` (the working tree is never touched) and
//! built as its own Cargo.lock says, with this machine's toolchain. What a hand-written imitation
//! of an old peer would miss (the old client's choice of peers, its agent, its HTTP server,
//! whatever the old daemon really answered) is only there in the old code itself.
//!
//! Layout, under the target directory this test binary was built in:
//!
//! ```text
//! <target>/old-versions/target/           one CARGO_TARGET_DIR for every old build, so crates
//!                                         of the same version are compiled once
//! <target>/old-versions/<commit>/src/     the release's files (git archive)
//! <target>/old-versions/<commit>/bin/     its pacserved and pacserve-fetch, there only once the
//!                                         build succeeded: a later run reuses them
//! <target>/old-versions/lock              held while checking and building (flock), so tests
//!                                         and test binaries running at once build each once
//! ```
//!
//! The builds are debug builds without debug information (`CARGO_PROFILE_DEV_DEBUG=0`) and
//! without incremental state: only the two binaries the tests run, as cheaply as cargo makes
//! them. From scratch on a two-core machine (crates already downloaded, other builds running
//! beside it) the three took 2 min 12 s: 60 s for the first, which compiles most crates, 15 s
//! for the next, which reuses them, 57 s for version 3's new ones (pgp, prometheus-client).
//! With debug information, on a busier machine, they had taken 6 min 45 s. Every later run
//! reuses them. None of the three needed a change to build with Rust 1.95; a release that one
//! day does would get its minimal patch applied in [`build`], after the `git archive`, with the
//! reason beside it.
//!
//! A copy of the source without history (a release tarball) or a shallow clone cannot build
//! them: the tests then skip with that reason, and fail with it under `PACSERVE_E2E=require`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, require, require_tools};

/// An older release: the protocol version it speaks and the commit that is its last.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub protocol: u8,
    pub commit: &'static str,
}

/// Protocol version 1: the parent of 4406544 (protocol v2: GROWING and CLAIMING), the merge
/// of issue 14 (pacserved as the download agent).
pub const V1: Release = Release {
    protocol: 1,
    commit: "b7ce2ed0e697ef7e4784ddddb711a16185f79752",
};
/// Protocol version 2 (claims settled by the lowest daemon id): the parent of 4984c76
/// (protocol v3, with signatures), the end of issue 18.
pub const V2: Release = Release {
    protocol: 2,
    commit: "02fd979647449e8b51acc440f766eaf0bb2a784d",
};
/// Protocol version 3 (SIG and uploads in answers, QUIET queries): the parent of 92305d7
/// (protocol v4, ranked claims), the merge of issue 20.
pub const V3: Release = Release {
    protocol: 3,
    commit: "623b257cbeb5bba02e17d5539efabc23b0e911e9",
};
/// Protocol version 4 (claims settled by rank; links unknown): the parent of the commit that
/// brought protocol v5 (the sender's link speed), the last of issue 21's work on claims without
/// it.
pub const V4: Release = Release {
    protocol: 4,
    commit: "66dbd62600a47c19767623a03848d42d2fbe925e",
};

/// The longest one release's build may take. Generous: crates to download and compile on two
/// busy cores; a hung build still ends.
const BUILD_LIMIT: Duration = Duration::from_secs(45 * 60);

/// A built release.
pub struct Build {
    pub release: Release,
    bin: PathBuf,
}

impl Build {
    pub fn pacserved(&self) -> String {
        self.binary("pacserved")
    }

    pub fn pacserve_fetch(&self) -> String {
        self.binary("pacserve-fetch")
    }

    fn binary(&self, name: &str) -> String {
        self.bin.join(name).to_str().expect("UTF-8 path").to_owned()
    }
}

/// The binaries of `releases`, built now if an earlier run has not; None (after
/// [`util::require`]) without git or without this repository's history.
pub fn builds(releases: &[Release]) -> Option<Vec<Build>> {
    if !require_tools(&["git"]) {
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The top level must be this directory itself: a tarball unpacked inside some other
    // checkout would otherwise find that checkout's history.
    let toplevel = git(repo, &["rev-parse", "--show-toplevel"]);
    let own = toplevel
        .as_deref()
        .and_then(|top| fs::canonicalize(top.trim()).ok())
        .is_some_and(|top| fs::canonicalize(repo).is_ok_and(|repo| repo == top));
    if !require(
        own,
        &format!(
            "older releases are built from this repository's git history, and {} has none \
             (a release tarball?)",
            repo.display()
        ),
    ) {
        return None;
    }
    for release in releases {
        let spec = format!("{}^{{commit}}", release.commit);
        if !require(
            git(repo, &["cat-file", "-e", &spec]).is_some(),
            &format!(
                "commit {} (protocol version {}) is not in this repository's history \
                 (a shallow clone? git fetch --unshallow)",
                release.commit, release.protocol
            ),
        ) {
            return None;
        }
    }
    let base = old_versions_dir();
    fs::create_dir_all(&base).expect("create the old versions' directory");
    // Threads of this binary and other processes alike: flock on one file. Bounded: a builder
    // elsewhere gives up after its own limit for each of the three releases, so this one waits
    // a little longer than that.
    let lock = fs::File::create(base.join("lock")).expect("create the lock file");
    let deadline = Instant::now() + BUILD_LIMIT * 3 + Duration::from_secs(5 * 60);
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("cannot lock {}: {e}", base.join("lock").display()),
        }
    }
    let built = releases
        .iter()
        .map(|release| Build {
            release: *release,
            bin: build(repo, &base, release),
        })
        .collect();
    drop(lock);
    Some(built)
}

/// `<target>/old-versions`, `<target>` being where this test binary was built.
fn old_versions_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/debug/deps/it-…
    exe.ancestors()
        .nth(3)
        .expect("a target directory")
        .join("old-versions")
}

/// `git -C repo args…`'s stdout, None when it fails.
fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds `release` (unless built already) and returns the directory holding its binaries.
fn build(repo: &Path, base: &Path, release: &Release) -> PathBuf {
    const BINARIES: [&str; 2] = ["pacserved", "pacserve-fetch"];
    let dir = base.join(release.commit);
    let bin = dir.join("bin");
    if BINARIES.iter().all(|b| bin.join(b).is_file()) {
        return bin;
    }
    let started = Instant::now();
    let _ = writeln!(
        std::io::stderr(),
        "building the protocol version {} release ({}) for the mixed-version tests: \
         the first run only, a few minutes",
        release.protocol,
        release.commit
    );
    // Whatever an interrupted run left is thrown away.
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&src).expect("create the source directory");
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", release.commit])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git archive");
    tar::Archive::new(archive.stdout.take().expect("git archive's output"))
        .unpack(&src)
        .expect("unpack git archive's output");
    assert!(
        archive.wait().expect("git archive").success(),
        "git archive"
    );
    // The commit must be the release it is said to be.
    let spec = fs::read_to_string(src.join("src/protocol/mod.rs")).unwrap_or_default();
    let says = format!("pub const VERSION: u8 = {};", release.protocol);
    assert!(
        spec.contains(&says),
        "{}: src/protocol/mod.rs does not say `{says}`",
        release.commit
    );

    let target = base.join("target");
    let log_path = dir.join("build.log");
    let log = fs::File::create(&log_path).expect("create the build log");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cargo = Command::new(cargo);
    cargo
        .current_dir(&src)
        .args([
            "build",
            "--locked",
            "--bin",
            "pacserved",
            "--bin",
            "pacserve-fetch",
        ])
        .env("CARGO_TARGET_DIR", &target)
        // Cheapest build that runs: no debug information to write and link, no incremental
        // state for a crate built once.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the build log"))
        .stderr(log);
    // The old code is built as it was written: flags meant for this build (`-D warnings`, say)
    // or the outer cargo's jobserver are not its business.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cargo.env_remove(var);
    }
    util::strip_network_env(&mut cargo);
    let mut child = cargo.spawn().expect("run cargo build");
    let limit = BUILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "building {} took over {limit:?}; see {}",
                release.commit,
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        panic!(
            "building {} (protocol version {}) failed; the end of {}:\n{}",
            release.commit,
            release.protocol,
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // The shared target directory is overwritten by the next release's build: keep copies,
    // and name the directory `bin` only once both are there.
    let partial = dir.join("bin.partial");
    fs::create_dir_all(&partial).expect("create the binaries' directory");
    for binary in BINARIES {
        fs::copy(target.join("debug").join(binary), partial.join(binary))
            .unwrap_or_else(|e| panic!("copy {binary} of {}: {e}", release.commit));
    }
    fs::rename(&partial, &bin).expect("name the binaries' directory");
    let _ = writeln!(
        std::io::stderr(),
        "built the protocol version {} release in {:.0} s",
        release.protocol,
        started.elapsed().as_secs_f64()
    );
    bin
}
