//! pacserve-fetch against nginx: what crosses the wire, proved by nginx's access log.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::nginx::Nginx;
use crate::util::{fetch_cmd, random_bytes, run, stderr, tempdir};

const PKG: &str = "hello-1.0-1-x86_64.pkg.tar.zst";

/// A mirror root holding one package of `len` random bytes.
fn mirror_with_package(len: usize) -> (tempfile::TempDir, Vec<u8>) {
    let root = tempdir();
    let bytes = random_bytes(len, 7);
    fs::write(root.path().join(PKG), &bytes).unwrap();
    (root, bytes)
}

#[test]
fn fresh_download_is_identical_and_takes_the_mirrors_mtime() {
    let (root, bytes) = mirror_with_package(1_500_000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), bytes);
    let served = fs::metadata(root.path().join(PKG))
        .unwrap()
        .modified()
        .unwrap();
    let got = fs::metadata(&out).unwrap().modified().unwrap();
    let whole_seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        whole_seconds(got),
        whole_seconds(served),
        "mtime from Last-Modified"
    );
    let log = mirror.requests_for(PKG);
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].status, log[0].body_bytes), (200, 1_500_000));
    assert!(log[0].user_agent.starts_with("pacserve-fetch/"), "{log:?}");
}

#[test]
fn resume_transfers_only_the_missing_bytes() {
    let (root, bytes) = mirror_with_package(2_000_000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &bytes[..750_001]).unwrap();

    let result = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));

    assert!(result.status.success());
    assert_eq!(
        fs::read(&out).unwrap(),
        bytes,
        "byte-identical after resume"
    );
    let log = mirror.requests_for(PKG);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range, "bytes=750001-");
    assert_eq!(log[0].status, 206);
    assert_eq!(
        log[0].body_bytes,
        2_000_000 - 750_001,
        "only the missing bytes crossed"
    );
}

#[test]
fn a_complete_partial_is_accepted_after_416() {
    let (root, bytes) = mirror_with_package(300_000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &bytes).unwrap();

    let result = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), bytes);
    let log = mirror.requests_for(PKG);
    assert_eq!(log.iter().map(|l| l.status).collect::<Vec<_>>(), [416]);
}

#[test]
fn a_partial_longer_than_the_file_starts_over() {
    let (root, bytes) = mirror_with_package(300_000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, random_bytes(400_000, 99)).unwrap();

    let result = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), bytes);
    let statuses: Vec<_> = mirror.requests_for(PKG).iter().map(|l| l.status).collect();
    assert_eq!(statuses, [416, 200]);
}

#[test]
fn databases_and_signatures_start_over() {
    let root = tempdir();
    let db = random_bytes(50_000, 1);
    let sig = random_bytes(566, 2);
    fs::write(root.path().join("core.db"), &db).unwrap();
    fs::write(root.path().join(format!("{PKG}.sig")), &sig).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();

    for (name, bytes) in [("core.db", &db), (&*format!("{PKG}.sig"), &sig)] {
        let out = dir.path().join(format!("{name}.part"));
        fs::write(&out, &bytes[..100]).unwrap();
        assert!(
            run(fetch_cmd().arg(&out).arg(mirror.url(name)))
                .status
                .success()
        );
        assert_eq!(&fs::read(&out).unwrap(), bytes);
        let log = mirror.requests_for(name);
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].range.as_str(), log[0].status),
            ("", 200),
            "{name}: {log:?}"
        );
    }
}

#[test]
fn an_unchanged_database_costs_no_body_bytes() {
    let root = tempdir();
    // A real (plain tar) archive: only a copy that reads as one may be kept by a 304.
    let db = tar_of(random_bytes(80_000, 3));
    fs::write(root.path().join("extra.db"), &db).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    // pacman 6 layout: sync/extra.db.part next to sync/extra.db; pacman 7: sync/download-X/ below.
    let sync = tempdir();
    let sandbox = sync.path().join("download-AbC123");
    fs::create_dir(&sandbox).unwrap();

    // First -Sy: no current copy, full download, mtime from Last-Modified.
    let first = sync.path().join("extra.db.part");
    assert!(
        run(fetch_cmd().arg(&first).arg(mirror.url("extra.db")))
            .status
            .success()
    );
    fs::rename(&first, sync.path().join("extra.db")).unwrap(); // what pacman does on exit 0

    for out in [
        sync.path().join("extra.db.part"),
        sandbox.join("extra.db.part"),
    ] {
        let result = run(fetch_cmd().arg(&out).arg(mirror.url("extra.db")));
        assert!(result.status.success());
        assert_eq!(
            fs::read(&out).unwrap(),
            db,
            "output made from the current copy"
        );
        let last = mirror.requests_for("extra.db").pop().unwrap();
        assert!(!last.if_modified_since.is_empty(), "{last:?}");
        assert_eq!((last.status, last.body_bytes), (304, 0));
        fs::remove_file(&out).unwrap();
    }

    // The mirror's copy changes: the next fetch gets the new body.
    let newer = tar_of(random_bytes(81_000, 4));
    fs::write(root.path().join("extra.db"), &newer).unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(root.path().join("extra.db"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let out = sync.path().join("extra.db.part");
    assert!(
        run(fetch_cmd().arg(&out).arg(mirror.url("extra.db")))
            .status
            .success()
    );
    assert_eq!(fs::read(&out).unwrap(), newer);
    assert_eq!(mirror.requests_for("extra.db").pop().unwrap().status, 200);
}

#[test]
fn run_by_hand_on_the_database_itself_does_not_destroy_it() {
    let root = tempdir();
    let db = random_bytes(10_000, 5);
    fs::write(root.path().join("core.db"), &db).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join("core.db");
    fs::write(&out, b"old database").unwrap();

    assert!(
        run(fetch_cmd().arg(&out).arg(mirror.url("core.db")))
            .status
            .success()
    );
    assert_eq!(fs::read(&out).unwrap(), db);
}

#[test]
fn not_found_fails_with_one_line_and_writes_nothing() {
    let root = tempdir();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = run(fetch_cmd().arg(&out).arg(mirror.url(PKG)));

    assert_eq!(result.status.code(), Some(1));
    let err = stderr(&result);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("404") && err.contains(PKG), "{err}");
    assert!(!out.exists(), "no empty output left behind");
}

#[test]
fn user_agent_comes_from_pacman() {
    let (root, _) = mirror_with_package(1000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    let ua = "pacman/7.1.0 (Linux x86_64) libalpm/15.0.0";

    let out = dir.path().join("x.part");
    assert!(
        run(fetch_cmd()
            .env("HTTP_USER_AGENT", ua)
            .arg(&out)
            .arg(mirror.url(PKG)))
        .status
        .success()
    );

    assert_eq!(mirror.requests_for(PKG)[0].user_agent, ua);
}

#[test]
fn a_missing_optional_signature_is_quiet_unless_verbose() {
    let (root, _) = mirror_with_package(1000);
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let dir = tempdir();
    for (name, verbose, says_404) in [
        (format!("{PKG}.sig"), false, false),
        ("core.db.sig".to_owned(), false, false),
        (format!("{PKG}.sig"), true, true),
        ("nothere-1-1-any.pkg.tar.zst".to_owned(), false, true),
    ] {
        let mut cmd = fetch_cmd();
        if verbose {
            cmd.arg("-v");
        }
        let out = run(cmd
            .arg(dir.path().join(format!("{name}.part")))
            .arg(mirror.url(&name)));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: still a failure for pacman"
        );
        assert_eq!(
            stderr(&out).contains("404"),
            says_404,
            "{name} verbose={verbose}"
        );
    }
}

/// `data` as the one file of a plain tar archive, as a sync database would be one.
fn tar_of(data: Vec<u8>) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, "data", &data[..]).unwrap();
    builder.into_inner().unwrap()
}
