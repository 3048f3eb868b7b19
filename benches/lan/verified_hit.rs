//! The verified peer hit: a 200 MB package that a sync database lists, fetched from a peer by
//! pacserve-fetch with its defaults (no `--unverified-peers`: the size and SHA-256 are checked
//! before it exits 0), against curl from the same daemon, which checks nothing.
//!
//! This is the row the "hash while receiving" goal is measured on: the check costs nothing
//! extra only if the SHA-256 is computed as the bytes arrive rather than by reading the finished
//! file back. The sync database is written directly (a plain tar with one `desc`), which is all
//! the client reads of it; `--dbpath` points the client at it. A third row, the same client
//! taking the file as unlisted (`--unverified-peers`), shows what the check itself costs.
//! Each line gives medians with (min-max) over the rounds. With `PACSERVE_BENCH_BASELINE` set,
//! the same rows are measured again with that older pacserved as the peer.

use std::fs;

use crate::archrepo::write_sync_db;
use crate::daemon::Daemon;
use crate::netns::{Family, Lan};
use crate::util::{fetch_bin, tempdir};
use crate::{curl, median, timed, write_random_file};

const NAME: &str = "verified-1-1-any.pkg.tar.zst";
const SIZE: usize = 200_000_000;
const ROUNDS: usize = 7;

pub fn run() {
    once((crate::daemon::daemon_bin(), fetch_bin()), "");
    if let Some(old) = crate::baseline() {
        // The baseline's own client, when it sits beside its daemon (a build's target dir).
        let client = std::path::Path::new(&old).with_file_name("pacserve-fetch");
        let client = match client.exists() {
            true => client.to_string_lossy().into_owned(),
            false => fetch_bin().to_owned(),
        };
        once(
            (&old, &client),
            &format!(" (baseline: {client} from {old})"),
        );
    }
}

/// The rows for the peer running the pacserved at `binary` and the client at `client`,
/// labelled with `label`.
fn once((binary, client): (&str, &str), label: &str) {
    let lan = Lan::new(3, Family::Dual).expect("LAN");
    let (cache, memory, dbpath) = (tempdir(), tempdir(), tempdir());
    // Both clients write into RAM (tmpfs), so the disk's writeback does not decide the race.
    let dir = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .unwrap_or_else(|_| tempdir());
    let file = cache.path().join(NAME);
    write_random_file(&file, SIZE);
    let want = fs::read(&file).unwrap();
    write_sync_db(dbpath.path(), "bench", NAME, &want);
    let daemon = Daemon::start_binary(binary, lan.host(2), cache.path(), &[], &[]);
    lan.wait_for_daemons(1);
    let mirror = format!("http://127.0.0.1:9/dead-mirror/{NAME}");
    let direct = format!("http://{}:{}/pkg/{NAME}", lan.ipv4(2), daemon.http_port);
    let out = dir.path().join(format!("{NAME}.part"));

    for limit in [None, Some("1gbit")] {
        if let Some(rate) = limit {
            lan.limit_rate(2, rate);
        }
        // MB/s of: pacserve-fetch verifying, pacserve-fetch not verifying (the same file taken
        // as unlisted: what the check costs on top of the transfer), curl.
        let mut rates: [Vec<f64>; 3] = Default::default();
        // Rotate who goes first.
        for round in 0..ROUNDS {
            for turn in 0..3 {
                let who = (round + turn) % 3;
                let _ = fs::remove_file(&out);
                let mut cmd = match who {
                    2 => curl(lan.host(1), &out, &direct),
                    _ => {
                        let mut cmd = lan.host(1).command(client);
                        cmd.env("TMPDIR", memory.path()).args([
                            "--config",
                            "/dev/null",
                            "-q",
                            "--dbpath",
                        ]);
                        match who {
                            0 => cmd.arg(dbpath.path()),
                            _ => cmd.arg(memory.path()).arg("--unverified-peers"),
                        };
                        cmd.arg(&out).arg(&mirror);
                        cmd
                    }
                };
                rates[who].push(SIZE as f64 / 1e3 / timed(&mut cmd));
                // The mirror is dead: the file can only have come from the peer.
                assert!(fs::read(&out).unwrap() == want, "wrong bytes");
            }
        }
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}-{hi:.0}")
        };
        let [v, u, c] = rates.map(|r| (spread(&r), median(r)));
        println!(
            "verified hit{label}, 200 MB in the sync db, {} link: pacserve-fetch {:.0} MB/s ({}) vs curl from the same daemon {:.0} MB/s ({}): ratio {:.2} [target: 0.95]; unverified {:.0} MB/s ({})",
            limit.unwrap_or("unlimited veth"),
            v.1,
            v.0,
            c.1,
            c.0,
            v.1 / c.1,
            u.1,
            u.0
        );
    }
    let _ = fs::remove_file(&out);
}
