//! Untrusted networks (issue 23): with `--network` (or `networks =`), queries go out only on an
//! interface with an address in a chosen network, so a laptop on a café's Wi-Fi names no package
//! there; `-v` says why an interface was skipped. Checked by what the peer's daemon counted.

use std::fs;

use crate::archrepo::Repo;
use crate::daemon::Daemon;
use crate::netns::{Family, Lan};
use crate::util::{fetch_bin, lan_memory_dir, run, stderr, tempdir};

const QUERIES: &str = "pacserved_queries_total";

#[test]
fn queries_go_out_only_on_the_networks_chosen_and_v_says_why_not() {
    let Some(lan) = Lan::new(2, Family::Dual) else {
        return;
    };
    let root = tempdir();
    let repo = Repo::create(root.path(), "un");
    let file = repo.add_package("unheld", 50_000);
    let cache = tempdir();
    fs::copy(repo.dir.join(&file), cache.path().join(&file)).unwrap();
    let peer = Daemon::start(lan.host(2), cache.path(), &[]);
    lan.wait_for_daemons(1);
    let before = peer.metric(lan.host(2), QUERIES, 0.0);
    let who_has = |network: &str| {
        run(lan
            .host(1)
            .command(fetch_bin())
            .env("TMPDIR", lan_memory_dir())
            .args(["--config", "/dev/null", "-v", "--network", network])
            .args(["--who-has", &file]))
    };

    // A café: this host's addresses are in none of the networks chosen.
    let away = who_has("192.168.99.0/24");
    let err = stderr(&away);
    assert_eq!(away.status.code(), Some(1), "nobody asked, nobody answered");
    let skipped = format!("not asking on eth0 ({}, ", lan.ipv4(1));
    assert!(err.contains(&skipped), "{skipped:?} in {err}");
    assert!(
        err.contains("none of its addresses is in the networks chosen (192.168.99.0/24;"),
        "{err}"
    );
    assert!(
        err.contains("no usable interface on the networks chosen (192.168.99.0/24)"),
        "{err}"
    );
    assert_eq!(
        peer.metric(lan.host(2), QUERIES, 0.0),
        before,
        "no query reached the LAN"
    );

    // Home: the LAN's own network.
    let home = who_has(&format!("{}/24", lan.ipv4(1)));
    assert!(home.status.success(), "{}", stderr(&home));
    let listing = String::from_utf8_lossy(&home.stdout);
    assert!(listing.contains("1 has"), "the peer was asked: {listing}");
    assert!(peer.metric(lan.host(2), QUERIES, before + 1.0) > before);

    // A value that is no network is refused before anything is sent.
    let bad = who_has("home");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--network: not a network or address: \"home\""));
}
