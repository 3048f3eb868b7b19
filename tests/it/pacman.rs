//! The real pacman with pacserve-fetch as its XferCommand, against nginx as the mirror.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::nginx::{self, Nginx};
use crate::util::{fetch_bin, tempdir};

#[test]
fn pacman_syncs_installs_and_skips_an_unchanged_database() {
    if !require_pacman_tools() {
        return;
    }
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "pstest");
    let files: Vec<String> = [("alpha", 200_000), ("beta", 1_500_000), ("gamma", 40_000)]
        .iter()
        .map(|(name, size)| repo.add_package(name, *size))
        .collect();
    let Some(mirror) = Nginx::start(mirror_root.path()) else {
        return;
    };
    let pacman = Pacman::new(
        Some(&Pacman::xfer_line(fetch_bin())),
        &[("pstest", mirror.url("pstest"))],
    );

    let started = Instant::now();
    assert!(pacman.run(&["-Sy"]).status.success());
    assert!(
        pacman
            .run(&["-S", "alpha", "beta", "gamma"])
            .status
            .success()
    );
    let elapsed = started.elapsed();

    for name in ["alpha", "beta", "gamma"] {
        assert!(pacman.installed_data(name).is_some(), "{name} installed");
    }
    for file in &files {
        let cached = fs::read(pacman.cache().join(file)).unwrap();
        assert_eq!(
            cached,
            fs::read(repo.dir.join(file)).unwrap(),
            "{file} in cache is the mirror's"
        );
    }
    let log = mirror.log();
    let bytes: u64 = log.iter().map(|l| l.body_bytes).sum();
    eprintln!(
        "REAL-PACMAN: -Sy + -S of {} packages: {} requests, {bytes} body bytes, {:.0} ms",
        files.len(),
        log.len(),
        elapsed.as_secs_f64() * 1000.0
    );

    // A second -Sy with nothing changed: If-Modified-Since, 304, no body.
    assert!(pacman.run(&["-Sy"]).status.success());
    let db = mirror.requests_for("pstest.db");
    assert_eq!(db.len(), 2, "{db:?}");
    assert_eq!((db[1].status, db[1].body_bytes), (304, 0), "{db:?}");
    assert!(
        pacman.run(&["-S", "--needed", "alpha"]).status.success(),
        "db still usable"
    );
}

#[test]
fn an_interrupted_package_download_resumes_on_the_next_pacman_run() {
    if !require_pacman_tools() {
        return;
    }
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "pstest");
    let file = repo.add_package("bigpkg", 2_000_000);
    let size = fs::metadata(repo.dir.join(&file)).unwrap().len();
    let options = nginx::Options {
        throttle_fresh: true,
        ..Default::default()
    };
    let Some(mirror) = Nginx::start_with(mirror_root.path(), options) else {
        return;
    };
    let pacman = Pacman::new(
        Some(&Pacman::xfer_line(fetch_bin())),
        &[("pstest", mirror.url("pstest"))],
    );
    assert!(pacman.run(&["-Sy"]).status.success());

    // First attempt: the mirror slows to a crawl after 256 KiB; we stop the download with the
    // SIGTERM a shutdown would send, and pacman gives up on the package.
    let part = pacman.cache().join(format!("{file}.part"));
    let mut first = pacman
        .command(&["-S", "bigpkg"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    crate::util::wait_for_len(&part, 300_000, Duration::from_secs(20));
    let killed = std::process::Command::new("pkill")
        .args(["-TERM", "-f"])
        .arg(part.to_str().unwrap())
        .status()
        .unwrap();
    assert!(killed.success(), "pkill found the downloader");
    let status = first.wait().unwrap();
    assert!(!status.success(), "pacman reports the failed download");
    let kept = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept >= 300_000 && kept < size,
        "partial kept: {kept} of {size}"
    );
    assert!(pacman.installed_data("bigpkg").is_none());

    // Second attempt: only the rest crosses the wire (Range requests are not throttled).
    assert!(pacman.run(&["-S", "bigpkg"]).status.success());
    pacman.assert_installed_from(&repo, "bigpkg", &file);
    let log = mirror.requests_for(&file);
    let last = log.last().unwrap();
    assert_eq!(last.range, format!("bytes={kept}-"), "{log:?}");
    assert_eq!((last.status, last.body_bytes), (206, size - kept));
    eprintln!(
        "REAL-PACMAN-RESUME: {file} {size} bytes, interrupted at {kept}, resumed with {} bytes",
        last.body_bytes
    );
}
