//! The Include line with big packages and small ones (issue 22).
//!
//! `include-big`: pacman 7.1 (`PACSERVE_PACMAN7`, DownloadUser) installing one 160 MiB package
//! that a peer holds, through the Include line (`CacheServer`, pacman's own downloader, the
//! local pacserved's `/cache/`) against the XferCommand line (pacserve-fetch), in the same run
//! and LAN, in the order XferCommand, Include, Include, XferCommand; every link limited with tc:
//! pacman's host 1 Gbit/s, the peer 100 Mbit/s, the mirror 40 Mbit/s. Both ways must take the
//! package from the peer (the mirror gives the Include way at most its 2 KiB block). Goal:
//! Include ≤ 1.1 × XferCommand.
//!
//! `cache-latency`: what one `/cache/` answer costs for a 1 MiB package a peer holds (the LAN
//! fetch is a `pacserve-fetch` process per request), against curl taking the same file from the
//! peer directly, and the cost of starting that process at all (`pacserve-fetch --version`).
//! With `PACSERVE_BENCH_BASELINE` (an older pacserved, next to its own pacserve-fetch), its
//! `/cache/` is measured in the same rounds.

use std::fs;
use std::process::Command;
use std::time::Instant;

use crate::archrepo::Pacman;
use crate::daemon::Daemon;
use crate::pacman7_include::{include_pacman, local_daemon};
use crate::pacman7_setup::{Scene, env, ok};
use crate::util::{fetch_bin, tempdir};
use crate::{baseline, median};

/// The Include way's deliberate bytes from the mirror: one block.
const BLOCK: u64 = 2048;

pub fn include_big() {
    let Some(scene) = Scene::new(3, "benchbig") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let file = repo.add_package("big", 160 << 20);
    let size = fs::metadata(repo.dir.join(&file)).expect("package").len();
    let peer_cache = tempdir();
    fs::copy(repo.dir.join(&file), peer_cache.path().join(&file)).expect("copy");
    let _peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let mirror = scene.mirror(Default::default()).expect("nginx");
    lan.limit_rate(1, "1gbit");
    lan.limit_rate(2, "100mbit");
    lan.limit_rate(3, "40mbit");
    lan.wait_for_daemons(1);
    let time = |pacman: &Pacman, how: &str| -> f64 {
        let env = env(pacman);
        ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
        let before = mirror.body_bytes(&file);
        let started = Instant::now();
        ok(&pacman.run_in(lan.host(1), &env, &["-S", "big"]), how);
        let took = started.elapsed().as_secs_f64();
        pacman.assert_installed_from(repo, "big", &file);
        let from_mirror = mirror.body_bytes(&file) - before;
        assert!(
            from_mirror <= BLOCK,
            "{how}: {from_mirror} bytes from the mirror"
        );
        took
    };
    let (mut xfer, mut include) = (Vec::new(), Vec::new());
    for include_way in [false, true, true, false] {
        match include_way {
            false => xfer.push(time(&scene.pacman(), "XferCommand")),
            true => {
                let pacman = include_pacman(&scene);
                let _local = local_daemon(lan.host(1), &pacman);
                include.push(time(&pacman, "Include"));
            }
        }
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (i, x) = (median(include.clone()), median(xfer.clone()));
    println!(
        "include-big, pacman 7.1 -S of one {:.1} MB package a peer holds (peer 100 Mbit/s, mirror \
         40 Mbit/s): Include/CacheServer {i:.1} s ({}) vs XferCommand {x:.1} s ({}): ratio \
         {:.2} [target: 1.1]",
        size as f64 / 1e6,
        list(&include),
        list(&xfer),
        i / x
    );
}

pub fn cache_latency() {
    const N: usize = 30;
    let Some(scene) = Scene::new(3, "benchlat") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let peer_cache = tempdir();
    let files: Vec<String> = (0..N)
        .map(|i| {
            let file = repo.add_package(&format!("lat{i}"), 1 << 20);
            fs::copy(repo.dir.join(&file), peer_cache.path().join(&file)).expect("copy");
            file
        })
        .collect();
    let peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let _mirror = scene.mirror(Default::default()).expect("nginx");
    let pacman = include_pacman(&scene);
    ok(&pacman.run_in(lan.host(1), &env(&pacman), &["-Sy"]), "-Sy");
    for i in 1..=3 {
        lan.limit_rate(i, "1gbit");
    }
    // Ours and the baseline's, each with a port of its own, both reading pacman's databases.
    let db = pacman.base.path().join("db");
    let args = [
        "--http-port",
        "0",
        "--no-agent",
        "--dbpath",
        db.to_str().expect("path"),
        "--pacman-conf",
        pacman.config.to_str().expect("path"),
    ];
    let empty = tempdir();
    let mut daemons = vec![("pacserved", Daemon::start(lan.host(1), empty.path(), &args))];
    if let Some(old) = baseline() {
        let daemon = Daemon::start_binary(&old, lan.host(1), empty.path(), &args, &[]);
        daemons.push(("baseline pacserved", daemon));
    }
    lan.wait_for_daemons(1);
    let curl_ms = |url: &str| -> f64 {
        let out = lan.host(1).sh(&format!(
            "curl -s -f -o /dev/null -w '%{{time_total}}' '{url}'"
        ));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .expect("curl's time")
            * 1e3
    };
    let mut cache = vec![Vec::new(); daemons.len()];
    let mut direct = Vec::new();
    for (round, file) in files.iter().enumerate() {
        direct.push(curl_ms(&format!(
            "http://{}:{}/pkg/{file}",
            lan.ipv4(2),
            peer.http_port
        )));
        // Rotate who goes first.
        for turn in 0..daemons.len() {
            let at = (round + turn) % daemons.len();
            let port = daemons[at].1.http_port;
            cache[at].push(curl_ms(&format!("http://127.0.0.1:{port}/cache/{file}")));
        }
    }
    let exec: Vec<f64> = (0..N)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new(fetch_bin())
                .arg("--version")
                .output()
                .expect("run pacserve-fetch");
            assert!(out.status.success());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let answers = (daemons.iter().zip(&cache))
        .map(|((label, _), ms)| format!("{label} {:.1} ms", median(ms.clone())))
        .collect::<Vec<_>>()
        .join(" vs ");
    println!(
        "cache-latency, GET /cache/ of a 1 MiB package a peer holds (1 Gbit/s links), medians of \
         {N}: {answers}; curl from the peer directly {:.1} ms; starting pacserve-fetch \
         (--version) {:.1} ms",
        median(direct),
        median(exec)
    );
}
