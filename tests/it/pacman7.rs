//! pacman 7.1 — the pacman Arch ships — with pacserve-fetch as its XferCommand, `DownloadUser`
//! set to an unprivileged user the tests create, and its sandbox on (root, namespace LAN).
//!
//! pacman 7 runs the downloader as that user in a fresh 0700 `<CacheDir>/download-XXXXXX`
//! directory per batch. Every test here uses a pacman.conf given with `--config`, with its own
//! DBPath and CacheDir, and the XferCommand `pacserve-fetch '%o' '%u'` with no other options:
//! what pacserve-fetch knows of DBPath, CacheDir and `-yy` it learns from the invoking pacman.
//! pacman 7 is `PACSERVE_PACMAN7` (`.ci/run` builds 7.1 with `../shared/pacman7/build.sh`), else
//! the system pacman when it is 7.x (Arch's); with neither, the tests skip saying so.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::nginx;
use crate::pacman7_setup::{
    DOWNLOAD_USER, Scene, assert_nothing_stranded, create_download_user, download_dirs, env,
    find_pacman7, left_in_download_dirs, ok, pacsrv_in, wait_for_part,
};
use crate::util::{self, fetch_bin, require, run, stderr, tempdir};

/// A directory holding a fake `pacman` whose `--version` says `version`.
fn fake_pacman(version: &str) -> tempfile::TempDir {
    let dir = tempdir();
    let pacman = dir.path().join("pacman");
    fs::write(
        &pacman,
        format!("#!/bin/sh\necho ' .--.                  Pacman v{version} - libalpm v15.0.0'\n"),
    )
    .unwrap();
    fs::set_permissions(&pacman, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn the_system_pacman_is_used_when_it_is_7_and_pacserve_pacman7_is_unset() {
    // On Arch /usr/bin/pacman is 7.x: nothing should need building or naming.
    let seven = fake_pacman("7.0.0");
    let path = std::env::join_paths([tempdir().path(), seven.path()]).unwrap();
    assert_eq!(
        find_pacman7(None, Some(&path)),
        Ok(seven.path().join("pacman"))
    );
    // The variable wins over the system pacman.
    let other = seven.path().join("other-pacman");
    fs::copy(seven.path().join("pacman"), &other).unwrap();
    assert_eq!(
        find_pacman7(Some(other.as_os_str()), Some(&path)),
        Ok(other.clone())
    );
    // Debian's 6.0.2 is not pacman 7: the reason says what was found and what to do.
    let six = fake_pacman("6.0.2");
    let why = find_pacman7(None, Some(six.path().as_os_str())).unwrap_err();
    assert!(
        why.contains("6.0.2") && why.contains("PACSERVE_PACMAN7"),
        "{why}"
    );
    let why = find_pacman7(None, Some(tempdir().path().as_os_str())).unwrap_err();
    assert!(why.contains("no pacman"), "{why}");
    let why = find_pacman7(Some(std::ffi::OsStr::new("/nonexistent/pacman")), None).unwrap_err();
    assert!(why.contains("/nonexistent/pacman"), "{why}");
}

#[test]
fn pacman7_databases_304_on_sy_full_on_syy_and_a_truncated_one_is_repaired() {
    let Some(scene) = Scene::new(2, "p7db") else {
        return;
    };
    let repo = &scene.repo;
    repo.add_package("dbpkg", 50_000);
    let Some(mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let pacman = scene.pacman();
    let env = env(&pacman);
    let host = scene.lan.host(1);
    let db_size = fs::metadata(repo.dir.join("p7db.db")).unwrap().len();

    ok(&pacman.run_in(host, &env, &["-Sy"]), "first -Sy");
    ok(&pacman.run_in(host, &env, &["-Sy"]), "second -Sy");
    ok(&pacman.run_in(host, &env, &["-Syy"]), "-Syy");
    let db = mirror.requests_for("p7db.db");
    let seen: Vec<_> = db
        .iter()
        .map(|l| (l.status, l.body_bytes, !l.if_modified_since.is_empty()))
        .collect();
    eprintln!("P7-DB: -Sy, -Sy, -Syy: {seen:?} (status, body bytes, If-Modified-Since sent)");
    assert_eq!(db.len(), 3, "{db:?}");
    assert_eq!((db[0].status, db[0].body_bytes), (200, db_size));
    assert_eq!(
        (db[1].status, db[1].body_bytes),
        (304, 0),
        "unchanged -Sy: 304"
    );
    assert_eq!(
        (db[2].status, db[2].body_bytes),
        (200, db_size),
        "-Syy: full body"
    );
    assert!(
        db[2].if_modified_since.is_empty(),
        "-Syy sends no If-Modified-Since"
    );

    // A damaged database with its mtime kept: pacman cannot read it, and neither -Sy nor -Syy
    // may keep it with a 304.
    let current = pacman.base.path().join("db/sync/p7db.db");
    let mtime = fs::metadata(&current).unwrap().modified().unwrap();
    let bytes = fs::read(&current).unwrap();
    let damage = || {
        fs::write(&current, &bytes[..bytes.len() / 2]).unwrap();
        fs::File::options()
            .write(true)
            .open(&current)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    damage();
    ok(
        &pacman.run_in(host, &env, &["-Sy"]),
        "-Sy over a truncated db",
    );
    damage();
    ok(
        &pacman.run_in(host, &env, &["-Syy"]),
        "-Syy over a truncated db",
    );
    ok(
        &pacman.run_in(host, &env, &["-S", "dbpkg"]),
        "install from the repaired db",
    );
    assert!(pacman.installed_data("dbpkg").is_some());
    let db = mirror.requests_for("p7db.db");
    let seen: Vec<_> = db.iter().map(|l| (l.status, l.body_bytes)).collect();
    eprintln!(
        "P7-DB-REPAIR: truncated, -Sy then truncated, -Syy: {:?}",
        &seen[3..]
    );
    assert_eq!(
        (db[3].status, db[3].body_bytes),
        (200, db_size),
        "truncated: -Sy refetches"
    );
    assert_eq!(
        (db[4].status, db[4].body_bytes),
        (200, db_size),
        "truncated: -Syy refetches"
    );
    assert_eq!(
        fs::read(&current).unwrap(),
        fs::read(repo.dir.join("p7db.db")).unwrap()
    );
    assert!(left_in_download_dirs(&pacman).is_empty());
}

#[test]
fn pacman7_installs_through_peers_and_mirror_and_refuses_a_tampered_copy() {
    // Host 1 runs pacman, host 2 an honest pacserved holding `frompeer`, host 3 a hostile peer
    // offering a tampered `tampered` (right size, wrong bytes), host 4 the mirror.
    let Some(scene) = Scene::new(4, "p7lan") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let Some(peers) = scene.peers(&[]) else {
        return;
    };
    lan.wait_for_daemons(2);
    let pacman = scene.pacman();
    let env = env(&pacman);

    let out = peers.sync_and_install(&pacman, lan.host(1), &env);
    ok(&out, "-S");

    let log = peers.assert_installed(&pacman, repo);
    let text = stderr(&out);
    assert!(
        text.contains("sent a bad file"),
        "the tampered copy was refused: {text}"
    );
    assert!(
        peers.mirror.requests_for("p7lan.db").len() == 1,
        "the database came from the mirror"
    );
    assert!(
        !log.contains(".db"),
        "databases are never asked of peers: {log}"
    );
    assert!(left_in_download_dirs(&pacman).is_empty());
    eprintln!(
        "P7-LAN: {} from the peer, {} refused from the hostile peer then {} bytes from the \
         mirror, {} {} bytes from the mirror",
        peers.frompeer,
        peers.tampered,
        peers.mirror.body_bytes(&peers.tampered),
        peers.frommirror,
        peers.mirror.body_bytes(&peers.frommirror)
    );
}

#[test]
fn pacman7_resumes_an_interrupted_download_on_the_next_run() {
    let Some(scene) = Scene::new(2, "p7resume") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let file = repo.add_package("p7big", 2_000_000);
    let size = fs::metadata(repo.dir.join(&file)).unwrap().len();
    // Fresh requests slow to 64 KiB/s after 256 KiB; Range requests run at full speed.
    let options = nginx::Options {
        throttle_fresh: true,
        ..Default::default()
    };
    let Some(mirror) = scene.mirror(options) else {
        return;
    };
    let pacman = scene.pacman();
    let env = env(&pacman);
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");

    // The SIGTERM a shutdown (or Ctrl-C's SIGINT) would send, to the downloader only.
    let mut first = pacman
        .command_in(lan.host(1), &env, &["-S", "p7big"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let part = wait_for_part(&pacman, &file, 300_000);
    let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&part).unwrap());
    let pattern = format!("{}/download-.*/{file}.part", pacman.cache().display());
    let killed = Command::new("pkill")
        .args(["-TERM", "-f", &pattern])
        .status()
        .unwrap();
    assert!(killed.success(), "pkill found the downloader");
    assert!(
        !first.wait().unwrap().success(),
        "pacman reports the failed download"
    );
    let kept = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept >= 300_000 && kept < size,
        "partial stranded in {}: {kept}",
        part.display()
    );
    let user_uid = run(Command::new("id").args(["-u", DOWNLOAD_USER]));
    assert_eq!(
        String::from_utf8_lossy(&user_uid.stdout).trim(),
        owner.to_string(),
        "the download user wrote it"
    );

    ok(
        &pacman.run_in(lan.host(1), &env, &["-S", "p7big"]),
        "second -S",
    );
    pacman.assert_installed_from(repo, "p7big", &file);
    let log = mirror.requests_for(&file);
    let last = log.last().unwrap();
    assert_eq!(last.range, format!("bytes={kept}-"), "{log:?}");
    assert_eq!(
        (last.status, last.body_bytes),
        (206, size - kept),
        "{log:?}"
    );
    assert_nothing_stranded(&pacman);
    eprintln!(
        "P7-RESUME: {file} {size} bytes, interrupted at {kept}; next run: {} {} range={} {} bytes",
        log.len(),
        last.status,
        last.range,
        last.body_bytes
    );
}

#[test]
fn pacman7_batch_with_one_failed_file_does_not_download_the_others_twice() {
    let Some(scene) = Scene::new(2, "p7batch") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let files: Vec<String> = ["aaone", "bbtwo", "zzlast"]
        .iter()
        .map(|name| repo.add_package(name, 150_000))
        .collect();
    let Some(mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let pacman = scene.pacman();
    let env = env(&pacman);
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");

    // The mirror loses the last file of the batch: pacman 7 fails the batch and strands the
    // finished ones in its download directory.
    let last = repo.dir.join(&files[2]);
    let hidden = scene.mirror_root.path().join("hidden");
    fs::rename(&last, &hidden).unwrap();
    // Through pacsrv, which also removes the directories pacman 7 leaves empty.
    let failed = pacsrv_in(
        &pacman,
        lan.host(1),
        &env,
        &["-S", "aaone", "bbtwo", "zzlast"],
    );
    assert!(!failed.status.success(), "the batch failed");
    for file in &files[..2] {
        assert_eq!(
            mirror.requests_for(file).len(),
            1,
            "{file} was downloaded before the failure"
        );
    }
    let stranded = download_dirs(&pacman);
    assert!(
        !stranded.is_empty(),
        "pacman 7 left its download directory behind"
    );

    fs::rename(&hidden, &last).unwrap();
    let retry = pacsrv_in(
        &pacman,
        lan.host(1),
        &env,
        &["-S", "aaone", "bbtwo", "zzlast"],
    );
    ok(&retry, "retry");
    for (name, file) in ["aaone", "bbtwo", "zzlast"].iter().zip(&files) {
        pacman.assert_installed_from(repo, name, file);
    }
    let counts: Vec<(String, Vec<u16>)> = files
        .iter()
        .map(|f| {
            (
                f.clone(),
                mirror.requests_for(f).iter().map(|l| l.status).collect(),
            )
        })
        .collect();
    eprintln!("P7-BATCH: mirror requests per file over both runs: {counts:?}");
    for file in &files[..2] {
        assert_eq!(
            mirror.requests_for(file).len(),
            1,
            "{file} not downloaded twice: {counts:?}"
        );
    }
    assert_eq!(counts[2].1, [404, 200], "{counts:?}");
    let left = left_in_download_dirs(&pacman);
    assert!(
        left.is_empty(),
        "no download directories left behind: {left:?}"
    );
    let text = stderr(&failed);
    eprintln!("P7-BATCH: first run's stderr: {}", text.trim());
}

#[test]
fn pacman7_with_disable_sandbox_fails_before_any_request() {
    // pacman 7.1's documented trap: DownloadUser + DisableSandbox runs the command as the
    // download user with %o in a root-owned directory. Nothing may cross the network first.
    let Some(scene) = Scene::new(2, "p7trap") else {
        return;
    };
    scene.repo.add_package("trapped", 2_000_000);
    let Some(mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let pacman = scene.pacman();
    let conf = fs::read_to_string(&pacman.config).unwrap();
    fs::write(
        &pacman.config,
        conf.replacen("[options]\n", "[options]\nDisableSandbox\n", 1),
    )
    .unwrap();
    let out = pacman.run_in(scene.lan.host(1), &env(&pacman), &["-Sy"]);
    assert!(!out.status.success(), "pacman 7.1 cannot write there");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(mirror.log().is_empty(), "no request: {:?}", mirror.log());
}

#[test]
fn pacsrv_says_when_the_download_user_cannot_execute_pacserve_fetch() {
    if !require(util::is_root(), "creating the download user needs root")
        || !util::require_tools(&["pacman"])
    {
        return;
    }
    create_download_user();
    // A build tree under a directory only root may enter, as /root/… is.
    let closed = tempdir();
    let bin = closed.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for (from, name) in [
        (env!("CARGO_BIN_EXE_pacsrv"), "pacsrv"),
        (fetch_bin(), "pacserve-fetch"),
    ] {
        fs::copy(from, bin.join(name)).unwrap();
    }
    let conf = closed.path().join("pacman.conf");
    fs::write(
        &conf,
        format!("[options]\nDownloadUser = {DOWNLOAD_USER}\n"),
    )
    .unwrap();
    let pacsrv = || {
        run(Command::new(bin.join("pacsrv"))
            .arg("--config")
            .arg(&conf)
            .arg("-V"))
    };

    fs::set_permissions(closed.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let refused = pacsrv();
    let text = stderr(&refused);
    assert!(!refused.status.success(), "refused before running pacman");
    assert!(
        text.contains(&format!(
            "DownloadUser {DOWNLOAD_USER}, which cannot execute"
        )) && text.contains("not searchable")
            && text.contains("chmod o+x"),
        "{text}"
    );
    fs::set_permissions(closed.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ran = pacsrv();
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert!(
        String::from_utf8_lossy(&ran.stdout).contains("Pacman v"),
        "pacman ran"
    );
}

/// Without pacsrv, the shipped pacman hook removes what pacman 7 leaves: a failed batch strands
/// its download directory, the next run takes over its files, and the hook (the shipped file,
/// with Exec pointed at this build and this pacman's config) removes the emptied directory.
///
/// pacman runs a hook's Exec chrooted into RootDir, which for this confined test pacman is a
/// scratch directory without our binary or its libraries; so the test checks that pacman loads
/// and triggers the shipped hook after the transaction, then runs its Exec line itself, as pacman
/// does on a real system (RootDir = /).
#[test]
fn pacman7_the_shipped_hook_removes_emptied_download_directories() {
    let Some(scene) = Scene::new(2, "p7hook") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let files: Vec<String> = ["hkone", "hktwo"]
        .iter()
        .map(|name| repo.add_package(name, 100_000))
        .collect();
    let Some(_mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let pacman = scene.pacman();
    let shipped = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib/pacserve-download-dirs.hook"),
    )
    .unwrap();
    let exec = format!(
        "{} --clean-download-dirs --config {}",
        env!("CARGO_BIN_EXE_pacsrv"),
        pacman.config.display()
    );
    let hook = shipped.replace("/usr/bin/pacsrv --clean-download-dirs", &exec);
    assert_ne!(
        hook, shipped,
        "the shipped hook runs pacsrv --clean-download-dirs"
    );
    fs::write(
        pacman.base.path().join("hooks/pacserve-download-dirs.hook"),
        &hook,
    )
    .unwrap();
    let env = env(&pacman);
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");

    let last = repo.dir.join(&files[1]);
    let hidden = scene.mirror_root.path().join("hidden");
    fs::rename(&last, &hidden).unwrap();
    let failed = pacman.run_in(lan.host(1), &env, &["-S", "hkone", "hktwo"]);
    assert!(!failed.status.success(), "the batch failed");
    assert!(
        !download_dirs(&pacman).is_empty(),
        "pacman 7 left its download directory behind"
    );

    fs::rename(&hidden, &last).unwrap();
    let retry = pacman.run_in(lan.host(1), &env, &["-S", "hkone", "hktwo"]);
    ok(&retry, "retry");
    let stdout = String::from_utf8_lossy(&retry.stdout);
    assert!(
        stdout.contains("Removing pacman's emptied download directories"),
        "pacman ran the shipped hook after the transaction: {stdout}"
    );
    assert_nothing_stranded(&pacman);
    assert!(
        !download_dirs(&pacman).is_empty(),
        "emptied, not yet removed"
    );
    let words: Vec<&str> = exec.split_whitespace().collect();
    let cleaned = run(Command::new(words[0]).args(&words[1..]));
    assert!(cleaned.status.success(), "{}", stderr(&cleaned));
    let left = left_in_download_dirs(&pacman);
    assert!(left.is_empty(), "download directories left: {left:?}");
}
