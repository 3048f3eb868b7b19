//! A hostile LAN peer's signatures (issue 19's attack report): doctored after signing by a key
//! gpg has already vouched for, or dripped a byte at a time.
//!
//! Once gpg accepts a signature by a key, later ones by that key are checked in process
//! ([`known_keys`]); that check must leave to gpg whatever gpg, and so pacman, might refuse. Two
//! doctorings got past it: a second signature packet after the good one (gpg checks both,
//! rPGP read only the first), and a critical subpacket in the unhashed area, which anyone may
//! add (gpg calls the signature bad, rPGP looked only at the hashed area). Each is compared with
//! pacman 7.1's own verdict, then offered by a peer in a real transaction.
//!
//! A peer that serves packages honestly but drips their signatures must not hold each
//! package's run for its whole peer phase: the signature fetched along gets a short wait of its
//! own, the peer is avoided afterwards, and pacman's request for the `.sig` goes to the mirror.

use std::fs;
use std::time::{Duration, Instant};

use pacserve_fetch::client::signature::ALONG_WAIT;
use pacserve_fetch::pacman::gpg::Verifier;
use pacserve_fetch::pacman::known_keys;

use crate::archrepo::{Repo, require_pacman_tools};
use crate::hostile::Hostile;
use crate::netns::{Family, Lan};
use crate::nginx::Nginx;
use crate::pacman7_setup::{self, pacman7_with};
use crate::signed::{PACMAN_KEY7, Pacmans, pacman_accepts, site};
use crate::signing::{
    Db, Keys, add_signed, followed_by, require_signatures, spoiled, with_unhashed,
};
use crate::util::{self, tempdir};

/// How the peer doctors the good key's signature `good`, and what pacman makes of it.
fn doctorings(good: &[u8]) -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        (
            "good, then a spoiled copy",
            followed_by(good, &spoiled(good)),
            false,
        ),
        (
            "a spoiled copy, then good",
            followed_by(&spoiled(good), good),
            false,
        ),
        (
            "unhashed critical subpacket 100 (private)",
            with_unhashed(good, 100, b"xx", true),
            false,
        ),
        (
            "unhashed critical subpacket 0 (reserved)",
            with_unhashed(good, 0, b"xx", true),
            false,
        ),
        (
            "unhashed critical subpacket 28 (signer's user id)",
            with_unhashed(good, 28, b"x@y", true),
            false,
        ),
        // What pacman takes: the check must not become stricter than it needs to be.
        ("good twice", followed_by(good, good), true),
        (
            "unhashed subpacket 100, not critical",
            with_unhashed(good, 100, b"xx", false),
            true,
        ),
    ]
}

/// Each doctored signature by a key gpg has vouched for gets pacman 7.1's verdict from our check,
/// and those pacman refuses never pass the in-process check.
#[test]
fn doctored_signatures_by_a_key_gpg_vouched_for_get_pacmans_verdict() {
    let Some(keys) = Keys::get() else { return };
    let Some(program) = pacman7_setup::pacman7() else {
        return;
    };
    let root = tempdir();
    let repo = Repo::create(root.path(), "dc");
    let package = repo.dir.join(repo.build("dc", "1.0", 50_000));
    let gpgdir = root.path().join("gnupg");
    keys.keyring(&gpgdir, PACMAN_KEY7);
    let good = keys.sign(&keys.good, &package);
    let verifier = Verifier::new(&gpgdir);
    // gpg vouches for the key: from now on its signatures are checked in process first.
    assert_eq!(verifier.check(&good, &package), Ok(()));
    let fast = known_keys::verify(&gpgdir, &good, &package);
    assert!(fast.is_ok(), "the key is remembered: {fast:?}");
    let mut wrong = Vec::new();
    for (name, sig, pacman_takes) in doctorings(&good) {
        let pacmans = pacman_accepts(&program, &gpgdir, &package, &sig);
        let fast = known_keys::verify(&gpgdir, &sig, &package);
        let ours = verifier.check(&sig, &package);
        eprintln!("{name}: in process {fast:?}, ours {ours:?}, pacman's {pacmans}");
        assert_eq!(pacmans, pacman_takes, "{name}: pacman 7.1");
        if ours.is_ok() != pacmans || (!pacmans && fast.is_ok()) {
            wrong.push(format!("{name}: in process {fast:?}, ours {ours:?}"));
        }
    }
    // Every case's verdict is shown before the test fails.
    assert!(wrong.is_empty(), "not pacman's verdict: {wrong:#?}");
}

/// The doctored signatures from a peer, in a real transaction, after an honest signature by the
/// same key made gpg vouch for it: each is refused, the mirror's is used, pacman 7.1 installs.
#[test]
fn a_peers_doctored_signatures_by_a_key_gpg_vouched_for_are_refused() {
    let Some(keys) = Keys::get() else { return };
    // sg0 keeps its honest signature; each of the others gets one refused doctoring.
    let Some(s) = site(keys, Db::WithoutSigs, 6) else {
        return;
    };
    let honest = |file: &str| fs::read(s.repo.dir.join(format!("{file}.sig"))).unwrap();
    let refused: Vec<_> = doctorings(&honest(&s.files[0]))
        .into_iter()
        .filter(|(_, _, pacman_takes)| !pacman_takes)
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(refused.len(), s.files.len() - 1);
    for (i, file) in s.files.iter().enumerate().skip(1) {
        let (name, sig, _) = doctorings(&honest(file)).swap_remove(i - 1);
        assert_eq!(name, refused[i - 1]);
        fs::write(s.peer_cache.path().join(format!("{file}.sig")), sig).unwrap();
    }
    let Some(pacman) = s.pacman(keys, Pacmans::Seven) else {
        return;
    };
    let first = s.run(&pacman, &["-S", "sg0"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(s.signature_gets(), 0, "sg0's signature came from the peer");
    // The download user's state directory now holds the key gpg vouched for.
    let tmp = pacman.base.path().join("tmp");
    let remembered = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .filter_map(|state| fs::read_dir(state.path()).ok())
        .flatten()
        .flatten()
        .any(|f| f.file_name().to_string_lossy().starts_with("gpgkey-"));
    assert!(
        remembered,
        "the good key is remembered under {}",
        tmp.display()
    );
    let names = s.names();
    let mut args = vec!["-S"];
    args.extend(names[1..].iter().map(String::as_str));
    let out = s.run(&pacman, &args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    s.assert_installed(&pacman);
    for (file, why) in s.files[1..].iter().zip(&refused) {
        assert!(
            s.mirror.requests_for(file).is_empty(),
            "{file} from the peer"
        );
        let from_mirror = s.mirror.requests_for(&format!("{file}.sig")).len();
        assert_eq!(from_mirror, 1, "{why}: {file}.sig replaced by the mirror's");
    }
}

/// A version 3 peer serving the package honestly and its signature two bytes a second: the
/// package's run stops waiting for the signature long before its 10 s peer phase is over, the
/// peer is not asked for the signature again, and pacman 7.1 gets it from the mirror.
#[test]
fn a_peer_dripping_signatures_holds_no_package_and_the_mirror_gives_the_signature() {
    let Some(keys) = Keys::get() else { return };
    if !require_pacman_tools() || !util::require_tools(&["nginx", "python3"]) {
        return;
    }
    let Some(program) = pacman7_setup::pacman7() else {
        return;
    };
    let Some(lan) = Lan::new(3, Family::Dual) else {
        return;
    };
    let root = tempdir();
    let repo = Repo::create(root.path(), "sg");
    let file = add_signed(&repo, "sg0", 200_000, keys, &keys.good, Db::WithoutSigs);
    let sig = format!("{file}.sig");
    let peer_dir = tempdir();
    for name in [&file, &sig] {
        fs::copy(repo.dir.join(name), peer_dir.path().join(name)).unwrap();
    }
    let hostile = Hostile::start(
        lan.host(2),
        "sig-drip",
        &peer_dir.path().join(&file),
        &lan.ipv4(2),
    );
    lan.wait_for_daemons(1);
    let Some(mirror) = Nginx::mirror_on(lan.host(3), root.path()) else {
        return;
    };
    let pacman = pacman7_with(
        &program,
        &[("sg", format!("http://{}:8080/sg", lan.url_host(3)))],
    );
    require_signatures(&pacman, keys, PACMAN_KEY7);
    let env = pacman7_setup::env(&pacman);
    assert!(pacman.run_in(lan.host(1), &env, &["-Sy"]).status.success());
    let out = pacman.run_in(lan.host(1), &env, &["-S", "sg0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pacman.assert_installed_from(&repo, "sg0", &file);
    let log = hostile.log();
    assert!(log.contains(&format!("GET /pkg/{file} ")), "{log}");
    assert!(
        mirror.requests_for(&file).is_empty(),
        "the package came from the peer"
    );
    assert_eq!(
        mirror.requests_for(&sig).len(),
        1,
        "the signature from the mirror"
    );
    let sig_gets = log
        .lines()
        .filter(|l| l.starts_with("GET") && l.contains(".sig"))
        .count();
    assert_eq!(
        sig_gets, 1,
        "asked along with the package, never again: {log}"
    );
    // The peer logs how much it dripped once the connection is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        let log = hostile.log();
        let sent = log
            .lines()
            .find_map(|l| l.strip_prefix("SENT ")?.parse::<u64>().ok());
        match sent {
            Some(sent) => break sent,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("the peer never saw the signature's connection end: {log}"),
        }
    };
    // Two bytes a second: the wait of ALONG_WAIT (plus a byte or two sent into the closing
    // connection), where the package's 10 s peer phase would have let through about 20.
    let bound = 2 * ALONG_WAIT.as_secs() + 7;
    eprintln!("the dripping peer sent {sent} bytes of the signature");
    assert!(
        sent <= bound,
        "{sent} bytes: the package's run waited too long"
    );
}
