//! Cost of one sync-database lookup, as pacserve-fetch pays it once per file.
//!
//! Builds an extra.db-sized database (15,000 entries with descriptions, gzip, as repo-add makes
//! them), then times the first lookup (which writes the index) and many later ones (which read
//! only the index), 200 names looked up at once as a prefetch plan does, against a full scan of
//! the database for comparison.
//! Run: `cargo bench --bench syncdb`.

use std::io::Write;
use std::time::{Duration, Instant};

use pacserve_fetch::pacman::syncdb;

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is only a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let entries = if full { 15_000 } else { 500 };
    let dir = tempfile::tempdir().expect("temp dir");
    // Keep the index in this run's own directory.
    set_tmpdir(dir.path());
    let db = dir.path().join("sync").join("extra.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..entries {
        let name = format!("package{i}-1.{i}-1");
        let desc = format!(
            "%FILENAME%\n{name}-x86_64.pkg.tar.zst\n\n%NAME%\npackage{i}\n\n%VERSION%\n1.{i}-1\n\n\
             %DESC%\nA package used to measure lookups, with a description of ordinary length\n\n\
             %CSIZE%\n{}\n\n%ISIZE%\n{}\n\n%SHA256SUM%\n{:064x}\n\n%PGPSIG%\n{}\n\n%URL%\nhttps://example.org\n\n\
             %DEPENDS%\nglibc\ngcc-libs\nzlib\n\n",
            1000 + i,
            4000 + i,
            i,
            "iQIzBAABCAAdFiEE".repeat(20)
        );
        let mut header = tar::Header::new_gnu();
        header.set_size(desc.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{name}/desc"), desc.as_bytes())
            .unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    std::fs::write(&db, gz.finish().unwrap()).unwrap();
    let size = std::fs::metadata(&db).unwrap().len();

    let last = format!(
        "package{}-1.{}-1-x86_64.pkg.tar.zst",
        entries - 1,
        entries - 1
    );
    let started = Instant::now();
    assert!(syncdb::lookup(dir.path(), &last).is_some());
    let first = started.elapsed();

    let names: Vec<String> = (0..200)
        .map(|i| {
            let i = i * 73 % entries;
            format!("package{i}-1.{i}-1-x86_64.pkg.tar.zst")
        })
        .collect();
    let mut times: Vec<Duration> = names
        .iter()
        .map(|name| {
            let started = Instant::now();
            assert!(syncdb::lookup(dir.path(), name).is_some());
            started.elapsed()
        })
        .collect();
    times.sort();
    // A transaction's plan: all 200 names at once, as the client plans prefetching.
    let started = Instant::now();
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(syncdb::lookup_all(dir.path(), &wanted).len(), names.len());
    let plan = started.elapsed();

    let started = Instant::now();
    let mut n = 0;
    syncdb::scan(&db, |_| {
        n += 1;
        true
    })
    .unwrap();
    let scan = started.elapsed();

    println!(
        "syncdb: {} entries, {:.1} MB gzip; first lookup (builds the index) {:.1} ms; \
         later lookups median {:.3} ms, p99 {:.3} ms; 200 at once (a plan) {:.1} ms; \
         a full scan without index {:.1} ms",
        entries,
        size as f64 / 1e6,
        first.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 99 / 100].as_secs_f64() * 1e3,
        plan.as_secs_f64() * 1e3,
        scan.as_secs_f64() * 1e3
    );
}

/// The index lives under TMPDIR; point it at this run's directory before any thread exists.
fn set_tmpdir(dir: &std::path::Path) {
    // SAFETY: single-threaded at this point, before any other code reads the environment.
    unsafe { std::env::set_var("TMPDIR", dir) };
}
