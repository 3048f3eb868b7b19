//! A hostile LAN peer's signatures (issue 19's attack report): doctored after signing by a key
//! gpg has already vouched for.
//!
//! Once gpg accepts a signature by a key, later ones by that key are checked in process
//! ([`known_keys`]); that check must leave to gpg whatever gpg, and so pacman, might refuse. Two
//! doctorings got past it: a second signature packet after the good one (gpg checks both,
//! rPGP read only the first), and a critical subpacket in the unhashed area, which anyone may
//! add (gpg calls the signature bad, rPGP looked only at the hashed area). Each is compared with
//! pacman 7.1's own verdict, then offered by a peer in a real transaction.

use std::fs;

use pacserve_fetch::pacman::gpg::Verifier;
use pacserve_fetch::pacman::known_keys;

use crate::archrepo::Repo;
use crate::pacman7_setup;
use crate::signed::{PACMAN_KEY7, Pacmans, pacman_accepts, site};
use crate::signing::{Db, Keys, followed_by, spoiled, with_unhashed};
use crate::util::tempdir;

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
