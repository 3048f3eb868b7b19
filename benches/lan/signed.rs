//! Signed packages as Arch runs them (issue 19): pacman 7.1 with its DownloadUser, `SigLevel =
//! Required DatabaseOptional`, a keyring made by pacman-key, packages signed by a key in it.
//!
//! - `mirror-signed`: `pacman -Sw` from a mirror 20 ms away each way at 200 Mbit/s, no peer:
//!   pacman's own downloader (ParallelDownloads = 5, the reference) against pacserve-fetch with
//!   the local pacserved, for 40 × 1 MB and 200 × 96 KiB packages whose database carries no
//!   signatures, and 200 × 96 KiB whose database does (as Arch's). Goal ≤ 1.10×.
//! - `lan-signed`: `pacman -S` of 30 signed packages a peer holds with their `.sig` files, the
//!   database without signatures against the same with `%PGPSIG%`, both through pacserve-fetch
//!   with the local pacserved. Goal ≤ 1.05×. Also the cost of one signature check.
//!
//! Rows alternate within each round, so drift hits all alike; medians of [`ROUNDS`].

use std::fs;
use std::time::{Duration, Instant};

use pacserve_fetch::pacman::gpg::Verifier;

use crate::archrepo::{Pacman, Repo};
use crate::daemon::Daemon;
use crate::median;
use crate::netns::{Family, Lan};
use crate::nginx::Nginx;
use crate::pacman7_setup::{self, pacman7_with};
use crate::signing::{Db, Keys, add_signed, require_signatures};
use crate::util::tempdir;

const ROUNDS: usize = 3;
const ONE_WAY: Duration = Duration::from_millis(20);
const RATE: &str = "200mbit";
const PACMAN_KEY7: &str = "/opt/pacman7/bin/pacman-key";

/// One repository of the benchmark: its name, how many packages of what size, the database.
struct Set {
    repo: &'static str,
    count: usize,
    payload: usize,
    db: Db,
}

pub fn mirror_signed() {
    let (Some(keys), Some(program)) = (Keys::get(), pacman7_setup::pacman7()) else {
        println!("mirror-signed: skipped (gpg, pacman-key or pacman 7.1 missing)");
        return;
    };
    let lan = Lan::new(2, Family::Dual).expect("LAN");
    let root = tempdir();
    let sets = [
        Set {
            repo: "sa",
            count: 40,
            payload: 1_000_000,
            db: Db::WithoutSigs,
        },
        Set {
            repo: "sb",
            count: 200,
            payload: 96 * 1024,
            db: Db::WithoutSigs,
        },
        Set {
            repo: "sc",
            count: 200,
            payload: 96 * 1024,
            db: Db::WithSigs,
        },
    ];
    for set in &sets {
        let repo = Repo::create(root.path(), set.repo);
        for i in 0..set.count {
            let name = format!("{}{i}", set.repo);
            add_signed(&repo, &name, set.payload, keys, &keys.good, set.db);
        }
    }
    let _mirror = Nginx::mirror_on(lan.host(2), root.path()).expect("nginx");
    assert!(lan.delay_link(2, ONE_WAY), "the long link needs ethtool");
    lan.limit_rate(2, RATE);
    let server = |repo: &str| format!("http://{}:8080/{repo}", lan.ipv4(2));
    for set in &sets {
        let names: Vec<String> = (0..set.count).map(|i| format!("{}{i}", set.repo)).collect();
        let mut args = vec!["-Sw"];
        args.extend(names.iter().map(String::as_str));
        let (mut own, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for with_us in [false, true] {
                let pacman = pacman7_with(&program, &[(set.repo, server(set.repo))]);
                require_signatures(&pacman, keys, PACMAN_KEY7);
                if !with_us {
                    pacmans_own_downloader(&pacman, 5);
                }
                let daemon = with_us.then(|| Daemon::start(lan.host(1), &pacman.cache(), &[]));
                let took = timed(&lan, &pacman, &args);
                drop(daemon);
                let cached = fs::read_dir(pacman.cache())
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pkg.tar.zst"))
                    .count();
                assert_eq!(cached, set.count, "not every package arrived");
                match with_us {
                    false => own.push(took),
                    true => ours.push(took),
                }
            }
        }
        let (own, ours) = (median(own), median(ours));
        println!(
            "mirror-signed, pacman 7.1 -Sw of {} × {} KiB signed (SigLevel = Required), database \
             {}, mirror {} ms away each way at {RATE}, median of {ROUNDS}: pacman's own \
             (ParallelDownloads = 5) {own:.2} s, pacserve-fetch + pacserved {ours:.2} s: {:.2}×",
            set.count,
            set.payload / 1024,
            match set.db {
                Db::WithSigs => "with %PGPSIG%",
                Db::WithoutSigs => "without signatures",
            },
            ONE_WAY.as_millis(),
            ours / own
        );
    }
}

pub fn lan_signed() {
    let (Some(keys), Some(program)) = (Keys::get(), pacman7_setup::pacman7()) else {
        println!("lan-signed: skipped (gpg, pacman-key or pacman 7.1 missing)");
        return;
    };
    const COUNT: usize = 30;
    let lan = Lan::new(3, Family::Dual).expect("LAN");
    let root = tempdir();
    let peer_cache = tempdir();
    for (repo, db) in [("lw", Db::WithoutSigs), ("ls", Db::WithSigs)] {
        let repo = Repo::create(root.path(), repo);
        for i in 0..COUNT {
            let file = add_signed(
                &repo,
                &format!("{}{i}", repo.name),
                500_000,
                keys,
                &keys.good,
                db,
            );
            for name in [file.clone(), format!("{file}.sig")] {
                fs::copy(repo.dir.join(&name), peer_cache.path().join(&name)).unwrap();
            }
        }
    }
    let _peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let mirror = Nginx::mirror_on(lan.host(3), root.path()).expect("nginx");
    lan.wait_for_daemons(1);
    let server = |repo: &str| format!("http://{}:8080/{repo}", lan.ipv4(3));
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for repo in ["lw", "ls"] {
            let pacman = pacman7_with(&program, &[(repo, server(repo))]);
            require_signatures(&pacman, keys, PACMAN_KEY7);
            let _daemon = Daemon::start(lan.host(1), &pacman.cache(), &[]);
            let names: Vec<String> = (0..COUNT).map(|i| format!("{repo}{i}")).collect();
            let mut args = vec!["-S"];
            args.extend(names.iter().map(String::as_str));
            let took = timed(&lan, &pacman, &args);
            match repo {
                "lw" => without.push(took),
                _ => with.push(took),
            }
        }
    }
    let package_gets = mirror
        .log()
        .iter()
        .filter(|l| l.path.contains(".pkg.tar.zst"))
        .count();
    assert_eq!(package_gets, 0, "everything came from the peer");
    let (without, with) = (median(without), median(with));
    println!(
        "lan-signed, pacman 7.1 -S of {COUNT} × 500 KB signed packages a peer holds with their \
         .sig, median of {ROUNDS}: database without signatures {without:.2} s, with %PGPSIG% \
         {with:.2} s: {:.2}×",
        without / with
    );
    check_cost(keys);
}

/// The cost of one signature check ([`Verifier::check`]: gpg --verify, and gpg --list-keys
/// when the key's verdict is not remembered yet) over a 500 KB package.
fn check_cost(keys: &Keys) {
    let dir = tempdir();
    let repo = Repo::create(dir.path(), "cc");
    let file = repo.build("cc", "1.0", 500_000);
    let package = repo.dir.join(&file);
    let sig = keys.sign(&keys.good, &package);
    let gpgdir = dir.path().join("gnupg");
    keys.keyring(&gpgdir, PACMAN_KEY7);
    let verifier = Verifier::new(&gpgdir);
    let once = |_| {
        let started = Instant::now();
        verifier.check(&sig, &package).expect("a good signature");
        started.elapsed().as_secs_f64() * 1e3
    };
    let first = once(0);
    let warm = median((0..20).map(once).collect());
    println!(
        "signature check (gpg, pacman's keyring, 500 KB package): first {first:.1} ms (the key's \
         validity asked of gpg too), then median {warm:.1} ms"
    );
}

/// pacman's own downloader instead of the XferCommand line, `parallel` at once.
fn pacmans_own_downloader(pacman: &Pacman, parallel: u32) {
    let conf: String = fs::read_to_string(&pacman.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("XferCommand"))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = conf.replacen(
        "[options]\n",
        &format!("[options]\nParallelDownloads = {parallel}\n"),
        1,
    );
    fs::write(&pacman.config, conf).unwrap();
}

/// Seconds `pacman args` takes on host 1, after a `-Sy` outside the clock.
fn timed(lan: &Lan, pacman: &Pacman, args: &[&str]) -> f64 {
    let env = pacman7_setup::env(pacman);
    let synced = pacman.run_in(lan.host(1), &env, &["-Sy"]);
    assert!(synced.status.success(), "-Sy");
    let started = Instant::now();
    let out = pacman.run_in(lan.host(1), &env, args);
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}
