//! The line after a transaction ("pacserve: 412 MiB of 430 MiB from the LAN (3 hosts), 18 MiB
//! from the mirror") and `pacsrv --totals`, with the real pacman on a namespace LAN: its figures
//! are checked against what the peers' pacserved counted (`/metrics`) and what the mirror's
//! nginx logged, never against what pacserve-fetch says of itself.
//!
//! The shipped hook runs as pacman runs every hook: chrooted into RootDir, which for these
//! confined pacmans is a scratch directory; this build's pacsrv and the libraries it links are
//! copied there, as on a real system they are under `/`.

use std::fs;
use std::path::Path;
use std::process::Command;

use pacserve_fetch::protocol::report::{Tally, UNKNOWN_HOST, size};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::netns::{Family, Host, Lan};
use crate::nginx::Nginx;
use crate::pacman7_setup::{Scene, env, ok, pacsrv_in};
use crate::util::{fetch_bin, lan_memory_dir, require_tools, run, stderr, tempdir};

const PACSRV: &str = env!("CARGO_BIN_EXE_pacsrv");

/// Puts the shipped summary hook in `pacman`'s HookDir, its Exec pointed at a copy of pacsrv in
/// RootDir (with the libraries `ldd` names, at the same paths).
fn install_summary_hook(pacman: &Pacman) {
    let root = pacman.root();
    let linked = run(Command::new("ldd").arg(PACSRV));
    assert!(linked.status.success(), "ldd {PACSRV}");
    let libraries = String::from_utf8_lossy(&linked.stdout).into_owned();
    let libraries = libraries.split_whitespace().filter(|w| w.starts_with('/'));
    for file in libraries.chain([PACSRV]) {
        let inside = match file {
            PACSRV => root.join("pacsrv"),
            library => root.join(library.trim_start_matches('/')),
        };
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::copy(file, &inside).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pacserve-summary.hook"),
    )
    .unwrap();
    let hook = shipped.replace(
        "Exec = /usr/bin/pacsrv --summary",
        "Exec = /pacsrv --summary",
    );
    assert_ne!(hook, shipped, "the shipped hook runs pacsrv --summary");
    fs::write(pacman.base.path().join("hooks/pacserve-summary.hook"), hook).unwrap();
}

/// The line for a transaction that got `lan` bytes from one LAN host (`host`: None when it is
/// not recorded) and `mirror` from the mirror (`by_pacman`: fetched by pacman's own downloader).
fn expected_line(lan: u64, host: Option<&str>, mirror: u64, by_pacman: bool) -> String {
    let mut tally = Tally::default();
    tally.add_lan(host.unwrap_or(UNKNOWN_HOST).to_owned(), lan);
    match by_pacman {
        true => tally.pacman = mirror,
        false => tally.mirror = mirror,
    }
    tally.sentence().expect("something was downloaded")
}

/// This machine's own pacserved: pacman's cache and sync databases, the agent on.
fn local_daemon(host: &Host, pacman: &Pacman, extra: &[&str]) -> Daemon {
    let db = pacman.base.path().join("db");
    let mut args = vec!["--dbpath", db.to_str().unwrap()];
    args.extend_from_slice(extra);
    Daemon::start(host, &pacman.cache(), &args)
}

/// pacsrv run by hand (not by pacman) in `host`.
fn pacsrv(host: &Host, args: &[&str]) -> std::process::Output {
    run(host.command(PACSRV).args(args))
}

#[test]
fn the_hook_says_what_came_from_the_lan_and_the_mirror_as_they_logged_it() {
    if !require_pacman_tools() || !require_tools(&["nginx", "curl", "ldd"]) {
        return;
    }
    // Host 1: pacman 6 with pacserve-fetch as its XferCommand and its own pacserved (the
    // agent); host 2: a peer holding two of the packages; host 3: the mirror.
    let Some(lan) = Lan::new(3, Family::Dual) else {
        return;
    };
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "sm");
    let held = [
        repo.add_package("smpeera", 300_000),
        repo.add_package("smpeerb", 200_000),
    ];
    let fetched = repo.add_package("smmirror", 150_000);
    let Some(mirror) = Nginx::mirror_on(lan.host(3), mirror_root.path()) else {
        return;
    };
    let peer_cache = tempdir();
    for file in &held {
        fs::copy(repo.dir.join(file), peer_cache.path().join(file)).unwrap();
    }
    let peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let xfer = Pacman::lan_xfer_line(fetch_bin());
    let pacman = Pacman::new(
        Some(&xfer),
        &[("sm", format!("http://{}:8080/sm", lan.url_host(3)))],
    );
    install_summary_hook(&pacman);
    let local = local_daemon(lan.host(1), &pacman, &[]);
    lan.wait_for_daemons(1);
    let memory = lan_memory_dir();
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.as_os_str())];
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
    let agent_before = local.metric(lan.host(1), "pacserved_agent_mirror_bytes_total", 0.0);

    let out = pacman.run_in(lan.host(1), &env, &["-S", "smpeera", "smpeerb", "smmirror"]);
    ok(&out, "-S");
    let payload: u64 = held
        .iter()
        .map(|f| fs::metadata(repo.dir.join(f)).unwrap().len())
        .sum();
    let served = peer.metric(lan.host(2), "pacserved_served_bytes_total", payload as f64);
    assert_eq!(
        served, payload as f64,
        "the peer served both packages whole"
    );
    for file in &held {
        assert!(
            mirror.requests_for(file).is_empty(),
            "{file} not from the mirror"
        );
    }
    let from_mirror = mirror.body_bytes(&fetched);
    assert!(from_mirror > 0, "smmirror came from the mirror");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = expected_line(payload, Some("the peer"), from_mirror, false);
    assert!(
        stdout.contains(&line),
        "pacman printed {line:?} from the hook: {stdout}"
    );
    // This host's daemon counted the same bytes: the peer's, and the mirror's through its agent.
    let received = local.metric(lan.host(1), "pacserved_received_bytes_total", served);
    assert_eq!(received, served);
    let agent = local.metric(lan.host(1), "pacserved_agent_mirror_bytes_total", 0.0);
    assert_eq!(agent - agent_before, from_mirror as f64);

    // The hook took the summary: asked again, by hand, there is nothing to print.
    let again = pacsrv(lan.host(1), &["--summary"]);
    assert!(again.status.success() && again.stdout.is_empty());
    assert!(
        stderr(&again).contains("not run by a pacman run by root"),
        "a summary is only for its own pacman's hook: {}",
        stderr(&again)
    );
    let totals = pacsrv(lan.host(1), &["--totals"]);
    let text = String::from_utf8_lossy(&totals.stdout);
    assert!(totals.status.success(), "{}", stderr(&totals));
    let lan_line = format!("from the LAN{}", " ".repeat(28));
    assert!(
        text.contains(&format!("{lan_line}{:>10}", size(payload))),
        "{text}"
    );
    let peer_shown = text.contains(&lan.ipv4(2)) || text.contains("::/64 ");
    assert!(peer_shown, "the peer, as the status page shows it: {text}");
}

#[test]
fn pacsrv_with_pacman7_prints_the_summary_and_metrics_name_the_lying_peer() {
    // Host 1: pacman 7.1 through pacsrv (its DownloadUser runs pacserve-fetch) and its own
    // pacserved; host 2 an honest peer, host 3 a peer sending a tampered file, host 4 the mirror.
    let Some(scene) = Scene::new(4, "p7sum") else {
        return;
    };
    let Some(peers) = scene.peers(&[]) else {
        return;
    };
    let lan = &scene.lan;
    let pacman = scene.pacman();
    let local = local_daemon(lan.host(1), &pacman, &[]);
    lan.wait_for_daemons(3);
    let env = env(&pacman);
    ok(&pacsrv_in(&pacman, lan.host(1), &env, &["-Sy"]), "-Sy");
    let three = ["frompeer", "tampered", "frommirror"];
    let out = pacsrv_in(&pacman, lan.host(1), &env, &[&["-S"][..], &three].concat());
    ok(&out, "pacsrv -S");
    peers.assert_installed(&pacman, &scene.repo);

    let from_peer = fs::metadata(scene.repo.dir.join(&peers.frompeer))
        .unwrap()
        .len();
    let served = peers.peer.metric(
        lan.host(2),
        "pacserved_served_bytes_total",
        from_peer as f64,
    );
    assert_eq!(served, from_peer as f64);
    let from_mirror = mirror_bytes(&peers.mirror, &[&peers.tampered, &peers.frommirror]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = expected_line(from_peer, Some("the peer"), from_mirror, false);
    assert!(
        stdout.trim_end().ends_with(&line),
        "pacsrv printed {line:?} after pacman: {stdout}"
    );
    // The hostile peer's bytes were thrown away, not counted; its file failed verification.
    let failures: Vec<(String, f64)> = local
        .metrics(lan.host(1))
        .into_iter()
        .filter(|(name, _)| name.starts_with("pacserved_peer_verification_failures_total{"))
        .collect();
    let hostile_v4 = format!("{{peer=\"{}\"}}", lan.ipv4(3));
    assert!(
        failures.len() == 1
            && failures[0].1 == 1.0
            && (failures[0].0.ends_with(&hostile_v4) || failures[0].0.contains("::/64")),
        "one failure, the hostile peer's: {failures:?}"
    );
}

/// Body bytes the mirror sent for `files`.
fn mirror_bytes(mirror: &Nginx, files: &[&String]) -> u64 {
    files.iter().map(|f| mirror.body_bytes(f)).sum()
}

#[test]
fn the_include_way_counts_what_cache_served_and_what_pacman_fetched_itself() {
    if !require_tools(&["curl", "ldd"]) {
        return;
    }
    let Some(scene) = Scene::new(4, "p7isum") else {
        return;
    };
    let Some(peers) = scene.peers(&[]) else {
        return;
    };
    let lan = &scene.lan;
    let pacman = crate::pacman7_include::include_pacman(&scene);
    install_summary_hook(&pacman);
    // On the port the Include file names, with the agent the hook asks.
    let conf = pacman.config.to_str().unwrap();
    let _local = local_daemon(
        lan.host(1),
        &pacman,
        &["--http-port", "15678", "--pacman-conf", conf],
    );
    lan.wait_for_daemons(3);
    let env = env(&pacman);
    let out = peers.sync_and_install(&pacman, lan.host(1), &env);
    ok(&out, "-S with the Include line");
    for (pkg, file) in [
        ("frompeer", &peers.frompeer),
        ("tampered", &peers.tampered),
        ("frommirror", &peers.frommirror),
    ] {
        pacman.assert_installed_from(&scene.repo, pkg, file);
    }
    assert!(peers.mirror.requests_for(&peers.frompeer).is_empty());
    let from_peer = fs::metadata(scene.repo.dir.join(&peers.frompeer))
        .unwrap()
        .len();
    // pacman fetched the other two whole from its mirror: the sync database's sizes.
    let from_mirror = mirror_bytes(&peers.mirror, &[&peers.tampered, &peers.frommirror]);
    let line = expected_line(from_peer, None, from_mirror, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&line),
        "pacman printed {line:?} from the hook: {stdout}"
    );
}

/// A local user can neither write into the records (the summary, the totals, `/metrics`) nor
/// take a transaction's summary; anyone may read the totals.
#[test]
fn a_local_user_can_neither_forge_nor_take_a_summary() {
    const PYTHON: &str = "/usr/bin/python3";
    if !require_pacman_tools()
        || !require_tools(&["nginx", "setpriv"])
        || !crate::util::require(Path::new(PYTHON).exists(), "/usr/bin/python3 is missing")
    {
        return;
    }
    let Some(lan) = Lan::new(2, Family::Dual) else {
        return;
    };
    let mirror_root = tempdir();
    let repo = Repo::create(mirror_root.path(), "fs");
    let file = repo.add_package("fsone", 120_000);
    let Some(mirror) = Nginx::mirror_on(lan.host(2), mirror_root.path()) else {
        return;
    };
    let xfer = Pacman::lan_xfer_line(fetch_bin());
    let url = format!("http://{}:8080/fs", lan.url_host(2));
    let pacman = Pacman::new(Some(&xfer), &[("fs", url)]);
    let local = local_daemon(lan.host(1), &pacman, &[]);
    let memory = lan_memory_dir();
    let env: [(&str, &std::ffi::OsStr); 1] = [("TMPDIR", memory.as_os_str())];
    ok(&pacman.run_in(lan.host(1), &env, &["-Sy"]), "-Sy");
    // root's transaction, no hook: its tally stays in the daemon.
    ok(&pacman.run_in(lan.host(1), &env, &["-S", "fsone"]), "-S");

    let (uid, gid) = crate::util::local_user("pacserve-attacker");
    let jobs = [
        "PSRV-AGENT 1 REPORT\\nmirror 1000000000\\npeer 1000000000 10.9.9.9 0101010101010101\\n\\n",
        "PSRV-AGENT 1 SUMMARY\\n",
        "PSRV-AGENT 1 SUMMARY 1-1\\n",
        "PSRV-AGENT 1 TOTALS\\n",
    ];
    let out = run(lan
        .host(1)
        .command("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            PYTHON,
            "-c",
            crate::daemon::AGENT_JOBS,
        ])
        .args(jobs));
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(answers.len(), 4, "{answers:?} {}", stderr(&out));
    assert!(
        answers[0].starts_with("ERR not the downloader"),
        "{answers:?}"
    );
    assert!(
        answers[1].starts_with("ERR not run by a pacman"),
        "{answers:?}"
    );
    assert!(answers[2].starts_with("ERR only root"), "{answers:?}");
    assert!(
        answers[3].contains("mirror ") && answers[3].ends_with("END | "),
        "{answers:?}"
    );

    // Nothing the user sent counted: the totals are root's download, as the mirror logged it.
    let from_mirror = mirror.body_bytes(&file);
    assert!(from_mirror > 0);
    assert!(
        answers[3].contains(&format!("| mirror {from_mirror} |")),
        "{answers:?}"
    );
    let metrics = local.metrics(lan.host(1));
    assert_eq!(metrics["pacserved_client_mirror_bytes_total"], 0.0);
    assert_eq!(metrics["pacserved_received_bytes_total"], 0.0);
}
