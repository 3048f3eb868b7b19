//! The verified peer hit: a 200 MB package that a sync database lists, fetched from a peer by
//! pacserve-fetch with its defaults (no `--unverified-peers`: the size and SHA-256 are checked
//! before it exits 0), against curl from the same daemon, which checks nothing.
//!
//! This is the row the "hash while receiving" goal is measured on: the check costs nothing
//! extra only if the SHA-256 is computed as the bytes arrive rather than by reading the finished
//! file back. The sync database is written directly (a plain tar with one `desc`), which is all
//! the client reads of it; `--dbpath` points the client at it.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::daemon::Daemon;
use crate::netns::{Family, Lan};
use crate::util::{fetch_bin, tempdir};
use crate::{curl, median, timed, write_random_file};

const NAME: &str = "verified-1-1-any.pkg.tar.zst";
const SIZE: usize = 200_000_000;
const ROUNDS: usize = 7;

pub fn run() {
    let lan = Lan::new(3, Family::Dual).expect("LAN");
    let (cache, memory, dbpath) = (tempdir(), tempdir(), tempdir());
    // Both clients write into RAM (tmpfs), so the disk's writeback does not decide the race.
    let dir = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .unwrap_or_else(|_| tempdir());
    let file = cache.path().join(NAME);
    write_random_file(&file, SIZE);
    write_sync_db(dbpath.path(), &file);
    let daemon = Daemon::start(lan.host(2), cache.path(), &[]);
    lan.wait_for_daemons(1);
    let mirror = format!("http://127.0.0.1:9/dead-mirror/{NAME}");
    let direct = format!("http://{}:{}/pkg/{NAME}", lan.ipv4(2), daemon.http_port);
    let out = dir.path().join(format!("{NAME}.part"));
    let want = fs::read(&file).unwrap();

    for limit in [None, Some("1gbit")] {
        if let Some(rate) = limit {
            lan.limit_rate(2, rate);
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Alternate who goes first.
        for round in 0..ROUNDS {
            for turn in 0..2 {
                let _ = fs::remove_file(&out);
                if (round + turn) % 2 == 0 {
                    let mut cmd = lan.host(1).command(fetch_bin());
                    cmd.env("TMPDIR", memory.path())
                        .args(["--config", "/dev/null", "--dbpath"])
                        .arg(dbpath.path())
                        .arg("-q")
                        .arg(&out)
                        .arg(&mirror);
                    ours.push(SIZE as f64 / 1e3 / timed(&mut cmd));
                    // The mirror is dead: the file can only have come from the peer.
                    assert!(fs::read(&out).unwrap() == want, "pacserve-fetch: wrong bytes");
                } else {
                    theirs.push(SIZE as f64 / 1e3 / timed(&mut curl(lan.host(1), &out, &direct)));
                }
            }
        }
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}-{hi:.0}")
        };
        let (so, st) = (spread(&ours), spread(&theirs));
        let (o, t) = (median(ours), median(theirs));
        println!(
            "verified hit, 200 MB in the sync db, {} link: pacserve-fetch {o:.0} MB/s (range {so}) vs curl from the same daemon {t:.0} MB/s (range {st}): ratio {:.2} [target: 0.95]",
            limit.unwrap_or("unlimited veth"),
            o / t
        );
    }
    let _ = fs::remove_file(&out);
}

/// `<dbpath>/sync/bench.db`: an uncompressed tar with the one `desc` that vouches for `file`.
fn write_sync_db(dbpath: &Path, file: &Path) {
    let sha: String = Sha256::digest(fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let len = fs::metadata(file).unwrap().len();
    let desc = format!(
        "%FILENAME%\n{NAME}\n\n%NAME%\nverified\n\n%VERSION%\n1-1\n\n%CSIZE%\n{len}\n\n%SHA256SUM%\n{sha}\n\n%ARCH%\nany\n\n"
    );
    fs::create_dir_all(dbpath.join("sync")).unwrap();
    let mut tar = tar::Builder::new(fs::File::create(dbpath.join("sync/bench.db")).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(desc.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "verified-1-1/desc", desc.as_bytes())
        .unwrap();
    tar.finish().unwrap();
}
