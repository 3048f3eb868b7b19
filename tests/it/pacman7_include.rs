//! pacman 7.1 with the Include line (`CacheServer = http://127.0.0.1:15678/cache`, the shipped
//! `contrib/pacserve.include`) and no XferCommand: pacman's own downloader, ParallelDownloads
//! = 5, its DownloadUser sandbox on, and the local pacserved's `/cache/` endpoint between it and
//! the namespace LAN.

use std::ffi::OsStr;
use std::fs;
use std::time::Instant;

use std::process::Command;

use crate::archrepo::{Pacman, Repo};
use crate::daemon::Daemon;
use crate::netns::Host;
use crate::pacman7_setup::{Scene, env, ok};
use crate::util::{random_bytes, require_tools, run, stderr, tempdir};

/// `scene.pacman()` with the XferCommand line replaced by ParallelDownloads = 5 and the
/// shipped Include file at the top of the repository section.
pub fn include_pacman(scene: &Scene) -> Pacman {
    let pacman = scene.pacman();
    let include = pacman.base.path().join("pacserve");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/pacserve.include");
    fs::copy(shipped, &include).unwrap();
    let conf: String = fs::read_to_string(&pacman.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("XferCommand"))
        .map(|l| format!("{l}\n"))
        .collect();
    let section = format!("[{}]\n", scene.repo.name);
    let conf = conf
        .replacen("[options]\n", "[options]\nParallelDownloads = 5\n", 1)
        .replacen(
            &section,
            &format!("{section}Include = {}\n", include.display()),
            1,
        );
    fs::write(&pacman.config, conf).unwrap();
    pacman
}

/// The machine's own pacserved: its cache is pacman's, its configuration and DBPath pacman's,
/// on the port the Include file names.
pub fn local_daemon(host: &Host, pacman: &Pacman) -> Daemon {
    local_daemon_with(host, pacman, &[])
}

/// [`local_daemon`] with `env` set for it (a TMPDIR of its own: its fetches' LAN memory).
pub fn local_daemon_with(host: &Host, pacman: &Pacman, env: &[(&str, &OsStr)]) -> Daemon {
    let db = pacman.base.path().join("db");
    Daemon::start_with_env(
        host,
        &pacman.cache(),
        &[
            "--http-port",
            "15678",
            "--no-agent",
            "--dbpath",
            db.to_str().unwrap(),
            "--pacman-conf",
            pacman.config.to_str().unwrap(),
        ],
        env,
    )
}

/// Puts `signature` next to `file` on the mirror and adds it again, so that the database
/// carries it as %PGPSIG% (repo-add includes a `.sig` it finds).
fn add_signature(repo: &Repo, file: &str, signature: &[u8]) {
    fs::write(repo.dir.join(format!("{file}.sig")), signature).unwrap();
    let added = run(Command::new("repo-add")
        .arg("-q")
        .arg(repo.dir.join(format!("{}.db.tar.gz", repo.name)))
        .arg(repo.dir.join(file)));
    assert!(added.status.success(), "repo-add: {}", stderr(&added));
}

fn logged(daemon: &Daemon, needle: &str) -> bool {
    daemon.log().iter().any(|l| l.contains(needle))
}

fn curl_status(host: &Host, url: &str) -> String {
    let out = host.sh(&format!(
        "curl -s -m 20 -o /dev/null -w '%{{http_code}}' '{url}'"
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pacman7_include_line_takes_verified_peer_copies_and_the_rest_from_mirrors() {
    // Host 1: pacman and its own pacserved (the CacheServer); host 2 an honest pacserved
    // holding `frompeer` and `notasked`; host 3 a hostile peer offering a tampered `tampered`
    // (right size, wrong bytes); host 4 the mirror.
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(scene) = Scene::new(4, "p7inc") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let Some(peers) = scene.peers(&["notasked"]) else {
        return;
    };
    // A detached signature for `frompeer` in the database (%PGPSIG%), as Arch's have.
    let signature = random_bytes(310, 0x51f);
    add_signature(repo, &peers.frompeer, &signature);
    let pacman = include_pacman(&scene);
    let local = local_daemon(lan.host(1), &pacman);
    lan.wait_for_daemons(3);
    let env = env(&pacman);

    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
    assert!(
        !logged(&local, "p7inc.db"),
        "pacman never asks a cache server for databases"
    );
    let out = pacman.run_in(
        lan.host(1),
        &env,
        &["-S", "frompeer", "tampered", "frommirror"],
    );
    ok(&out, "-S with the Include line");
    // frompeer from the peer through the endpoint; tampered tried on the hostile peer, never
    // handed to pacman, then from the mirror; frommirror from the mirror.
    peers.assert_installed(&pacman, repo);
    let (frompeer, tampered) = (&peers.frompeer, &peers.tampered);
    assert!(
        logged(&local, &format!("cache: {frompeer} (")),
        "the endpoint served frompeer from the LAN: {:?}",
        local.log()
    );
    for refused in [tampered, &peers.frommirror] {
        assert!(
            logged(&local, &format!("cache: {refused}: not from the LAN")),
            "the endpoint answered 404 for {refused}: {:?}",
            local.log()
        );
    }

    let notasked = &peers.also_held[0];
    // Only this machine may use the endpoint: host 2 gets 403 and starts no fetch; loopback gets
    // the peer's verified copy; databases are 404.
    let from_host2 = curl_status(
        lan.host(2),
        &format!("http://{}:15678/cache/{notasked}", lan.ipv4(1)),
    );
    assert_eq!(from_host2, "403", "a LAN host may not use /cache/");
    assert!(!logged(&local, &format!("cache: {notasked}")));
    let local_get = curl_status(
        lan.host(1),
        &format!("http://127.0.0.1:15678/cache/{notasked}"),
    );
    assert_eq!(local_get, "200", "{:?}", local.log());
    let db = curl_status(lan.host(1), "http://127.0.0.1:15678/cache/p7inc.db");
    assert_eq!(db, "404");
    // pacman 7.1 asks the cache server that sent a package for its `.sig`, and no other
    // server: it comes from the database's %PGPSIG%; a package without one gets 404.
    let sig_file = pacman.base.path().join("got.sig");
    let got = lan.host(1).sh(&format!(
        "curl -s -m 20 -o '{}' -w '%{{http_code}}' 'http://127.0.0.1:15678/cache/{frompeer}.sig'",
        sig_file.display()
    ));
    assert_eq!(String::from_utf8_lossy(&got.stdout), "200");
    assert_eq!(fs::read(&sig_file).unwrap(), signature);
    let unsigned = format!("http://127.0.0.1:15678/cache/{}.sig", peers.frommirror);
    assert_eq!(curl_status(lan.host(1), &unsigned), "404");
    eprintln!(
        "P7-INCLUDE: {frompeer} via /cache/ from the peer, {tampered} refused then {} bytes \
         from the mirror; -S stderr: {}",
        peers.mirror.body_bytes(tampered),
        stderr(&out)
    );
}

/// Not a check: one timed `pacman -S` of N peer-held packages each way, for the README.
/// The bench's `include` row (`cargo bench --bench lan -- include`): pacman -S of 20 packages
/// of 1 MB held by a peer, through the XferCommand line and then through the Include line, both
/// checked to come from the peer. Not a test: a timing belongs in a benchmark.
#[allow(dead_code)] // used by benches/lan.rs
pub fn include_vs_xfercommand_time_from_a_peer() {
    const N: usize = 20;
    let Some(scene) = Scene::new(3, "p7time") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let peer_cache = tempdir();
    let (names, files): (Vec<String>, Vec<String>) = (0..N)
        .map(|i| {
            let name = format!("timed{i}");
            let file = repo.add_package(&name, 1_000_000);
            fs::copy(repo.dir.join(&file), peer_cache.path().join(&file)).unwrap();
            (name, file)
        })
        .unzip();
    let _peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let Some(mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let time = |pacman: &Pacman, how: &str| {
        let env = env(pacman);
        ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
        let mut args = vec!["-S"];
        args.extend(names.iter().map(String::as_str));
        let start = Instant::now();
        ok(&pacman.run_in(lan.host(1), &env, &args), how);
        let took = start.elapsed();
        for name in &names {
            assert!(pacman.installed_data(name).is_some(), "{how}: {name}");
        }
        took
    };
    let xfer = scene.pacman();
    lan.wait_for_daemons(1);
    let by_xfer = time(&xfer, "XferCommand");
    let include = include_pacman(&scene);
    let local = local_daemon(lan.host(1), &include);
    let by_include = time(&include, "Include");
    let from_mirror: usize = files.iter().map(|f| mirror.requests_for(f).len()).sum();
    assert_eq!(from_mirror, 0, "every package came from the peer");
    assert!(logged(&local, "from a LAN peer, verified"));
    println!(
        "include, pacman 7.1 -S of {N} packages of 1 MB held by a peer: Include/CacheServer {:.2} s \
         vs XferCommand {:.2} s: ratio {:.2}",
        by_include.as_secs_f64(),
        by_xfer.as_secs_f64(),
        by_include.as_secs_f64() / by_xfer.as_secs_f64()
    );
}

/// The Include line with signed packages whose database carries no signature (issue 19): the
/// endpoint serves a peer's package only with a signature gpg accepted over it, pacman asks the
/// endpoint for that `.sig`, and neither comes from the mirror.
#[test]
fn pacman7_include_line_serves_a_peers_signature_checked_with_its_package() {
    let Some(keys) = crate::signing::Keys::get() else {
        return;
    };
    let Some(scene) = Scene::new(3, "p7sig") else {
        return;
    };
    let (lan, repo) = (&scene.lan, &scene.repo);
    let db = crate::signing::Db::WithoutSigs;
    let files: Vec<String> = (0..2)
        .map(|i| {
            crate::signing::add_signed(repo, &format!("signed{i}"), 300_000, keys, &keys.good, db)
        })
        .collect();
    // The peer holds both packages, but the signature of only the first.
    let peer_cache = tempdir();
    for file in &files {
        fs::copy(repo.dir.join(file), peer_cache.path().join(file)).unwrap();
    }
    let sig = format!("{}.sig", files[0]);
    fs::copy(repo.dir.join(&sig), peer_cache.path().join(&sig)).unwrap();
    let _peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let Some(mirror) = scene.mirror(Default::default()) else {
        return;
    };
    let pacman = include_pacman(&scene);
    crate::signing::require_signatures(&pacman, keys, "/opt/pacman7/bin/pacman-key");
    let local = local_daemon(lan.host(1), &pacman);
    lan.wait_for_daemons(2);
    let env = env(&pacman);
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
    let out = pacman.run_in(lan.host(1), &env, &["-S", "signed0", "signed1"]);
    ok(&out, "-S of signed packages with the Include line");
    for (i, file) in files.iter().enumerate() {
        pacman.assert_installed_from(repo, &format!("signed{i}"), file);
    }
    // The first, package and signature, from the peer through the endpoint.
    assert!(
        mirror.requests_for(&files[0]).is_empty(),
        "{:?}",
        mirror.log()
    );
    assert!(mirror.requests_for(&sig).is_empty(), "{:?}", mirror.log());
    assert!(
        logged(&local, &format!("cache: {sig} from a LAN peer")),
        "{:?}",
        local.log()
    );
    // The second's signature is on no peer: the endpoint did not serve the package either
    // (pacman would have failed on its missing signature), and both came from the mirror.
    assert!(logged(
        &local,
        &format!("cache: {}: not from the LAN", files[1])
    ));
    assert_eq!(mirror.requests_for(&format!("{}.sig", files[1])).len(), 1);
}
