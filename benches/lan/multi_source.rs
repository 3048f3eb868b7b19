//! One big package from several peers at once (issue 21), `multi-source`: pacman 7.1
//! (`PACSERVE_PACMAN7`, XferCommand = pacserve-fetch, defaults) downloads (`-Sw`) one 300 MiB
//! package that 4 peers hold, each peer's link limited to 100 Mbit/s both ways and pacman's
//! host to 1 Gbit/s, against the same download with only one of those peers running, and curl
//! taking the file from that one peer, all in the same run and LAN. Goal: 4 peers ≥ 3 × one.
//! Also printed: how many bytes each peer sent (its pacserved's `served_bytes`).

use std::fs;
use std::time::Instant;

use crate::daemon::Daemon;
use crate::pacman7_setup::{Scene, env, ok};
use crate::util::tempdir;

const PEERS: usize = 4;
const SIZE: usize = 300 << 20;

pub fn run() {
    // Hosts: 1 pacman, 2..=5 the peers, 6 the mirror.
    let Some(scene) = Scene::new(PEERS + 2, "benchmulti") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let file = repo.add_package("huge", SIZE);
    let size = fs::metadata(repo.dir.join(&file)).expect("package").len();
    let caches: Vec<_> = (0..PEERS).map(|_| tempdir()).collect();
    for cache in &caches {
        fs::copy(repo.dir.join(&file), cache.path().join(&file)).expect("copy");
    }
    let _mirror = scene.mirror(Default::default()).expect("nginx");
    lan.limit_link(1, "1gbit");
    for peer in 2..=PEERS + 1 {
        lan.limit_link(peer, "100mbit");
    }
    let pacman = scene.pacman();
    let env = env(&pacman);
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
    let download = |what: &str| -> f64 {
        let _ = fs::remove_file(pacman.cache().join(&file));
        let started = Instant::now();
        ok(
            &pacman.run_in(lan.host(1), &env, &["-Sw", "--noconfirm", "huge"]),
            what,
        );
        let took = started.elapsed().as_secs_f64();
        let got = fs::read(pacman.cache().join(&file)).expect("downloaded");
        assert!(
            got == fs::read(repo.dir.join(&file)).unwrap(),
            "{what}: wrong file"
        );
        took
    };
    let mb = size as f64 / 1e6;

    // One peer: curl, then pacman through pacserve-fetch.
    let mut daemons = vec![Daemon::start(lan.host(2), caches[0].path(), &[])];
    lan.wait_for_daemons(1);
    let sink = tempdir();
    let started = Instant::now();
    let curl = crate::util::run(
        lan.host(1)
            .command("curl")
            .args(["-sf", "-o"])
            .arg(sink.path().join("x"))
            .arg(format!("http://{}:15678/pkg/{file}", lan.ipv4(2))),
    );
    assert!(curl.status.success(), "curl from one peer");
    let curl_one = started.elapsed().as_secs_f64();
    let one = download("one peer");

    // Four peers.
    for (i, cache) in caches.iter().enumerate().skip(1) {
        daemons.push(Daemon::start(lan.host(i + 2), cache.path(), &[]));
    }
    lan.wait_for_daemons(PEERS);
    let sent_before: Vec<f64> = (daemons.iter().enumerate())
        .map(|(i, d)| served_bytes(d, lan.host(i + 2)))
        .collect();
    let four = download("four peers");
    let shares: Vec<String> = (daemons.iter().enumerate())
        .map(|(i, d)| {
            let sent = served_bytes(d, lan.host(i + 2)) - sent_before[i];
            format!("{:.0}%", 100.0 * sent / size as f64)
        })
        .collect();
    println!(
        "multi-source, pacman 7.1 -Sw of one {mb:.0} MB package, every peer at 100 Mbit/s, pacman's \
         host at 1 Gbit/s: 4 peers {four:.1} s ({:.1} MB/s) vs 1 peer {one:.1} s ({:.1} MB/s) = \
         {:.2}x [target: >= 3x]; curl from the one peer {curl_one:.1} s ({:.1} MB/s); share each \
         peer sent with 4: {}",
        mb / four,
        mb / one,
        one / four,
        mb / curl_one,
        shares.join(", ")
    );
}

fn served_bytes(daemon: &Daemon, host: &crate::netns::Host) -> f64 {
    (daemon.metrics(host))
        .get("pacserved_served_bytes_total")
        .copied()
        .unwrap_or(0.0)
}
