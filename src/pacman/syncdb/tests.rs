use super::*;
use std::io::Write;

const DESC: &str = "%FILENAME%\nfoo-1.0-1-x86_64.pkg.tar.zst\n\n%NAME%\nfoo\n\n%CSIZE%\n1234\n\n\
%SHA256SUM%\n9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\n%PGPSIG%\naGVsbG8=\n\n";

fn db_with(entries: &[(&str, String)], compress: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (dirname, desc) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(desc.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{dirname}/desc"), desc.as_bytes())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let bytes = match compress {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(&tar[..], 3).unwrap(),
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        _ => tar,
    };
    let path = dir.path().join("core.db");
    fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn parses_the_fields_we_verify_with() {
    let e = parse_desc(DESC).unwrap();
    assert_eq!(e.filename, "foo-1.0-1-x86_64.pkg.tar.zst");
    assert_eq!(e.csize, Some(1234));
    assert_eq!(
        crate::hex::encode(&e.sha256.unwrap()),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    assert_eq!(e.signature.as_deref(), Some(&b"hello"[..]));
    assert!(parse_desc("%NAME%\nfoo\n").is_none());
}

#[test]
fn reads_every_compression_pacman_uses() {
    for compress in ["gz", "zst", "xz", "tar"] {
        let other = DESC.replace("foo-1.0-1", "bar-2.0-1");
        let (_dir, db) = db_with(
            &[("bar-2.0-1", other), ("foo-1.0-1", DESC.to_owned())],
            compress,
        );
        let mut seen = Vec::new();
        scan(&db, |e| {
            seen.push(e.filename);
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "bar-2.0-1-x86_64.pkg.tar.zst",
                "foo-1.0-1-x86_64.pkg.tar.zst"
            ],
            "{compress}"
        );
        let found = lookup_in(&db, "foo-1.0-1-x86_64.pkg.tar.zst").unwrap();
        assert_eq!(found.csize, Some(1234), "{compress}");
        assert!(lookup_in(&db, "nope-1-1-any.pkg.tar.zst").is_none());
    }
}

#[test]
fn garbage_databases_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    for bytes in [
        &b"\x1f\x8bnot gzip"[..],
        b"\x28\xb5\x2f\xfdjunk",
        b"plain junk that is no tar",
        b"",
    ] {
        fs::write(&path, bytes).unwrap();
        let _ = scan(&path, |_| true);
        assert!(lookup_in(&path, "x.pkg.tar.zst").is_none());
    }
}

#[test]
fn a_truncated_database_is_not_complete() {
    for compress in ["gz", "zst", "xz"] {
        let other = DESC.replace("foo-1.0-1", "bar-2.0-1");
        let (_dir, db) = db_with(
            &[("bar-2.0-1", other), ("foo-1.0-1", DESC.to_owned())],
            compress,
        );
        assert!(is_complete(&db), "{compress}");
        let bytes = fs::read(&db).unwrap();
        // Cut a few bytes off the end: every entry may still read, but the stream is unfinished.
        fs::write(&db, &bytes[..bytes.len() - 4]).unwrap();
        assert!(!is_complete(&db), "{compress}: 4 bytes short");
        fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
        assert!(!is_complete(&db), "{compress}: half");
    }
}

#[test]
fn the_detached_signature_is_the_decoded_pgpsig_of_that_package_only() {
    let (dir, db) = db_with(&[("foo-1.0-1", DESC.to_owned())], "zst");
    let dbpath = dir.path().join("var");
    fs::create_dir_all(dbpath.join("sync")).unwrap();
    fs::rename(&db, dbpath.join("sync/core.db")).unwrap();
    let sig = detached_signature(&dbpath, "foo-1.0-1-x86_64.pkg.tar.zst");
    assert_eq!(sig.as_deref(), Some(&b"hello"[..]));
    assert!(detached_signature(&dbpath, "bar-1.0-1-x86_64.pkg.tar.zst").is_none());
}

#[test]
fn many_names_are_found_in_one_pass_the_first_database_winning() {
    let bar = DESC.replace("foo-1.0-1", "bar-2.0-1");
    let (dir, core) = db_with(&[("foo-1.0-1", DESC.to_owned())], "zst");
    let dbpath = dir.path().join("var");
    fs::create_dir_all(dbpath.join("sync")).unwrap();
    fs::rename(&core, dbpath.join("sync/core.db")).unwrap();
    // extra.db lists foo again (a different size, which must lose to core's) and bar.
    let extra_foo = DESC.replace("%CSIZE%\n1234", "%CSIZE%\n99");
    let (_extra_dir, extra) = db_with(&[("foo-1.0-1", extra_foo), ("bar-2.0-1", bar)], "gz");
    fs::copy(&extra, dbpath.join("sync/extra.db")).unwrap();
    let (foo, bar, nope) = (
        "foo-1.0-1-x86_64.pkg.tar.zst",
        "bar-2.0-1-x86_64.pkg.tar.zst",
        "nope-1-1-any.pkg.tar.zst",
    );
    let found = lookup_all(&dbpath, &[foo, bar, nope]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[foo].csize, Some(1234), "core.db comes first");
    assert_eq!(found[bar].filename, bar);
    for name in [foo, bar] {
        assert_eq!(lookup(&dbpath, name).as_ref(), found.get(name), "{name}");
    }
    assert!(lookup(&dbpath, nope).is_none());
}
