//! The mirror path: real pacman downloading 40 packages of 1 MB that no peer has, from a mirror
//! 20 ms away each way behind 200 Mbit/s, through each downloader a user could pick.
//!
//! Rows, all in one run on the same LAN, alternating so that drift hits every row alike:
//! pacman's own downloader with ParallelDownloads 5 and 1 (the reference), curl as XferCommand,
//! pacserve-fetch alone, and pacserve-fetch with the local pacserved running. Every pacman gets a
//! fresh cache and has synced its databases before the clock starts; the figure is
//! `pacman -Sw` of all 40 packages. pacserve-fetch runs with its defaults (verification on),
//! named in XferCommand exactly as the man page says.
//!
//! Then the same over HTTPS, with a certificate from a private CA. So that pacman's libcurl, curl,
//! pacserve-fetch and pacserved all trust it the way they would trust a real mirror — through the
//! system store, not a flag — the benchmark process enters a mount namespace of its own at start
//! ([`private_mounts`]) and binds a bundle with the CA added over the system bundle there; the
//! machine's own trust store is never touched.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo};
use crate::daemon::Daemon;
use crate::median;
use crate::netns::{Family, Lan};
use crate::nginx::{Nginx, Options};
use crate::util::{fetch_bin, tempdir};

const PACKAGES: usize = 40;
const PAYLOAD: usize = 1_000_000;
const ONE_WAY: Duration = Duration::from_millis(20);
const RATE: &str = "200mbit";
const ROUNDS: usize = 3;

/// One way of downloading: what pacman.conf says, and whether the local daemon runs.
struct Row {
    label: &'static str,
    xfer: Option<String>,
    parallel: u32,
    with_daemon: bool,
}

/// The system CA bundle that pacman's libcurl, curl and rustls-native-certs read.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Moves this process into a mount namespace of its own (before any thread exists: a process
/// with threads cannot unshare its file-system context), so that [`trust`] can change what the
/// system trust store says for this benchmark's children only.
pub fn private_mounts() -> bool {
    // SAFETY: unshare(2) with a valid flag, at start while single-threaded.
    let ok = unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNS) } == 0;
    ok && std::process::Command::new("mount")
        .args(["--make-rprivate", "/"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Adds `ca` to the system bundle as this benchmark's children see it.
fn trust(ca: &Path, scratch: &Path) {
    let bundle = scratch.join("ca-certificates.crt");
    let mut text = fs::read(SYSTEM_BUNDLE).unwrap_or_default();
    text.extend(fs::read(ca).unwrap());
    fs::write(&bundle, text).unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&bundle)
        .arg(SYSTEM_BUNDLE)
        .status()
        .expect("mount");
    assert!(bound.success(), "bind the bundle over {SYSTEM_BUNDLE}");
}

pub fn run(private: bool) {
    if !crate::archrepo::require_pacman_tools()
        || !crate::util::require_tools(&["ethtool", "curl", "nginx", "openssl"])
    {
        return;
    }
    let lan = Lan::new(4, Family::Dual).expect("LAN");
    let (mirror_root, scratch) = (tempdir(), tempdir());
    let repo = Repo::create(mirror_root.path(), "bench");
    let names: Vec<String> = (0..PACKAGES).map(|i| format!("mp{i}")).collect();
    for name in &names {
        repo.add_package(name, PAYLOAD);
    }
    assert!(lan.delay_link(4, ONE_WAY), "the long link needs ethtool");
    lan.limit_rate(4, RATE);
    for https in [false, true] {
        if https && !private {
            println!("mirror path, https: skipped (could not make a private mount namespace)");
            continue;
        }
        let options = Options {
            https,
            https_ip: lan.ipv4(4).parse().ok(),
            ..Options::default()
        };
        let mirror =
            Nginx::start_in(Some(lan.host(4)), mirror_root.path(), options).expect("nginx");
        if https {
            trust(&mirror.ca_file(), scratch.path());
        }
        let scheme = if https { "https" } else { "http" };
        let server = format!("{scheme}://{}:8080/bench", lan.ipv4(4));
        rows_against(&lan, &server, &names, scheme);
    }
}

/// Every row, [`ROUNDS`] times alternating, against the mirror at `server`.
fn rows_against(lan: &Lan, server: &str, names: &[String], scheme: &str) {
    let (memory, daemon_cache) = (tempdir(), tempdir());

    let fetch = format!("{} --dbpath @DBPATH@ '%o' '%u'", fetch_bin());
    let rows = [
        Row {
            label: "pacman's own, ParallelDownloads = 5",
            xfer: None,
            parallel: 5,
            with_daemon: false,
        },
        Row {
            label: "pacman's own, ParallelDownloads = 1",
            xfer: None,
            parallel: 1,
            with_daemon: false,
        },
        Row {
            label: "XferCommand curl",
            xfer: Some("/usr/bin/curl -s -f -C - -o %o %u".to_owned()),
            parallel: 1,
            with_daemon: false,
        },
        Row {
            label: "XferCommand pacserve-fetch, standalone",
            xfer: Some(fetch.clone()),
            parallel: 1,
            with_daemon: false,
        },
        Row {
            label: "XferCommand pacserve-fetch, local pacserved",
            xfer: Some(fetch),
            parallel: 1,
            with_daemon: true,
        },
    ];
    let targets: Vec<&str> = ["-Sw"]
        .into_iter()
        .chain(names.iter().map(String::as_str))
        .collect();
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.path().as_os_str())];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (row, times) in rows.iter().zip(&mut seconds) {
            let _daemon = row
                .with_daemon
                .then(|| Daemon::start(lan.host(1), daemon_cache.path(), &[]));
            let pacman = Pacman::new(row.xfer.as_deref(), &[("bench", server.to_owned())]);
            set_parallel_downloads(&pacman.config, row.parallel);
            let synced = pacman.run_in(lan.host(1), &env, &["-Sy"]);
            assert!(synced.status.success(), "{}: -Sy failed", row.label);
            let started = Instant::now();
            let out = pacman.run_in(lan.host(1), &env, &targets);
            let elapsed = started.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{}: {}",
                row.label,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                fs::read_dir(pacman.cache()).unwrap().count(),
                PACKAGES,
                "{}: not every package arrived",
                row.label
            );
            times.push(elapsed);
        }
    }
    let reference = median(seconds[0].clone());
    println!(
        "mirror path, real pacman -Sw of {PACKAGES} × 1 MB, mirror {} ms away each way at {RATE}, {scheme}, median of {ROUNDS}:",
        ONE_WAY.as_millis()
    );
    for (row, times) in rows.iter().zip(seconds) {
        let m = median(times);
        println!(
            "  {:<46} {m:6.2} s  {:5.2}× pacman ParallelDownloads=5",
            row.label,
            m / reference
        );
    }
}

/// Adds `ParallelDownloads = n` to the `[options]` of a test pacman's configuration.
fn set_parallel_downloads(config: &Path, n: u32) {
    let text = fs::read_to_string(config).unwrap();
    let text = text.replacen(
        "[options]\n",
        &format!("[options]\nParallelDownloads = {n}\n"),
        1,
    );
    fs::write(config, text).unwrap();
}
