//! Signed packages as Arch runs them (issue 19): `SigLevel = Required DatabaseOptional`, a keyring
//! made by pacman-key, real gpg. A peer's `.sig` reaches pacman only when pacman would accept it;
//! with the database carrying `%PGPSIG%` no `.sig` needs the network; with the internet down,
//! what the LAN holds installs.
//!
//! Hosts: 1 runs pacman, 2 a daemon whose cache holds the packages and their `.sig` files, 3 the
//! mirror (nginx), which some tests unplug.
//!
//! pacman 6.0.2 asks an XferCommand for no package signature at all (only pacman 7 does): it
//! verifies only what the database carries, so its tests use databases with `%PGPSIG%`, and the
//! `.sig` files themselves are pacman 7.1's.

use std::fs;
use std::path::Path;
use std::process::Command;

use pacserve_fetch::pacman::gpg::Verifier;
use pacserve_fetch::pacman::known_keys;

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::netns::{Family, Lan};
use crate::nginx::Nginx;
use crate::pacman7_setup::{self, pacman7_with};
use crate::signing::{Db, Keys, add_signed, db_carries_signature, require_signatures};
use crate::util::{self, fetch_bin, lan_memory_dir, run, tempdir};

/// Debian's pacman-key (6.0.2) and pacman 7.1's own.
const PACMAN_KEY: &str = "pacman-key";
pub(crate) const PACMAN_KEY7: &str = "/opt/pacman7/bin/pacman-key";

/// Which pacman runs the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacmans {
    Six,
    Seven,
}

pub(crate) struct Site {
    pub lan: Lan,
    pub repo: Repo,
    pub mirror: Nginx,
    pub peer: Daemon,
    pub peer_cache: tempfile::TempDir,
    pub files: Vec<String>,
    _root: tempfile::TempDir,
}

/// `count` packages signed by the good key, the database as `db` says; the peer (host 2) holds
/// every package and its `.sig`.
pub(crate) fn site(keys: &Keys, db: Db, count: usize) -> Option<Site> {
    if !require_pacman_tools() || !util::require_tools(&["nginx"]) {
        return None;
    }
    let lan = Lan::new(3, Family::Dual)?;
    let root = tempdir();
    let repo = Repo::create(root.path(), "sg");
    let files: Vec<String> = (0..count)
        .map(|i| add_signed(&repo, &format!("sg{i}"), 200_000, keys, &keys.good, db))
        .collect();
    assert_eq!(
        db_carries_signature(&repo, &files[0]),
        db == Db::WithSigs,
        "the database is as the test says"
    );
    let peer_cache = tempdir();
    for file in &files {
        for name in [file.clone(), format!("{file}.sig")] {
            fs::copy(repo.dir.join(&name), peer_cache.path().join(&name)).unwrap();
        }
    }
    let peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
    let mirror = Nginx::mirror_on(lan.host(3), root.path())?;
    lan.wait_for_daemons(1);
    Some(Site {
        lan,
        repo,
        mirror,
        peer,
        peer_cache,
        files,
        _root: root,
    })
}

impl Site {
    fn server(&self) -> String {
        format!("http://{}:8080/sg", self.lan.url_host(3))
    }

    /// The pacman on host 1 through pacserve-fetch, checking signatures with the good key:
    /// pacman 6.0.2, or pacman 7.1 with its DownloadUser. None when pacman 7.1 is missing.
    pub fn pacman(&self, keys: &Keys, version: Pacmans) -> Option<Pacman> {
        let pacman = match version {
            Pacmans::Six => {
                let pacman = Pacman::new(
                    Some(&Pacman::lan_xfer_line(fetch_bin())),
                    &[("sg", self.server())],
                );
                require_signatures(&pacman, keys, PACMAN_KEY);
                pacman
            }
            Pacmans::Seven => {
                let program = pacman7_setup::pacman7()?;
                let pacman = pacman7_with(&program, &[("sg", self.server())]);
                require_signatures(&pacman, keys, PACMAN_KEY7);
                pacman
            }
        };
        let synced = self.run(&pacman, &["-Sy"]);
        assert!(synced.status.success());
        Some(pacman)
    }

    /// Runs `pacman` on host 1 (pacman 7.1 with its download user's own TMPDIR).
    pub fn run(&self, pacman: &Pacman, args: &[&str]) -> std::process::Output {
        let env = match pacman.program == Path::new("pacman") {
            true => [("TMPDIR", lan_memory_dir().into_os_string().leak() as &_)],
            false => pacman7_setup::env(pacman),
        };
        pacman.run_in(self.lan.host(1), &env, args)
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.files.len()).map(|i| format!("sg{i}")).collect()
    }

    pub fn assert_installed(&self, pacman: &Pacman) {
        for (i, file) in self.files.iter().enumerate() {
            pacman.assert_installed_from(&self.repo, &format!("sg{i}"), file);
        }
    }

    /// GETs the mirror saw for package signatures (pacman asks for the database's too).
    pub fn signature_gets(&self) -> usize {
        self.mirror
            .log()
            .iter()
            .filter(|l| l.path.ends_with(".pkg.tar.zst.sig"))
            .count()
    }
}

/// With the internet down (the mirror unplugged), packages and signatures a peer holds install,
/// whether or not the database carries the signatures.
fn installs_from_a_peer_offline(version: Pacmans, db: Db) {
    let Some(keys) = Keys::get() else { return };
    let Some(s) = site(keys, db, 3) else { return };
    let Some(pacman) = s.pacman(keys, version) else {
        return;
    };
    s.lan.unplug(3);
    let names = s.names();
    let mut args = vec!["-S"];
    args.extend(names.iter().map(String::as_str));
    let out = s.run(&pacman, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_installed(&pacman);
    for file in &s.files {
        assert!(!s.peer.served(file).is_empty(), "{file} came from the peer");
    }
}

#[test]
fn pacman7_installs_signed_packages_from_a_peer_with_the_mirror_unreachable_db_without_signatures()
{
    installs_from_a_peer_offline(Pacmans::Seven, Db::WithoutSigs);
}

#[test]
fn pacman7_installs_signed_packages_from_a_peer_with_the_mirror_unreachable_db_with_signatures() {
    installs_from_a_peer_offline(Pacmans::Seven, Db::WithSigs);
}

#[test]
fn pacman6_installs_signed_packages_from_a_peer_with_the_mirror_unreachable() {
    installs_from_a_peer_offline(Pacmans::Six, Db::WithSigs);
}

/// With the mirror up: no `.sig` is fetched from it when a peer has the signatures (or the
/// database carries them), and each signature costs the LAN no query of its own.
fn no_signature_from_the_mirror(version: Pacmans, db: Db) {
    let Some(keys) = Keys::get() else { return };
    let Some(s) = site(keys, db, 4) else { return };
    let Some(pacman) = s.pacman(keys, version) else {
        return;
    };
    let names = s.names();
    let mut args = vec!["-S"];
    args.extend(names.iter().map(String::as_str));
    let out = s.run(&pacman, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_installed(&pacman);
    assert_eq!(s.signature_gets(), 0, "{:?}", s.mirror.log());
    for file in &s.files {
        assert!(s.mirror.requests_for(file).is_empty(), "{file}");
        // Taken with the package (db without signatures), or never asked for (db with them).
        let sig_gets = s.peer.served(&format!("{file}.sig")).len();
        let expected = usize::from(db == Db::WithoutSigs);
        assert_eq!(sig_gets, expected, "{file}.sig from the peer");
    }
}

#[test]
fn no_signature_comes_from_the_mirror_when_a_peer_has_them() {
    no_signature_from_the_mirror(Pacmans::Seven, Db::WithoutSigs);
}

#[test]
fn no_signature_comes_from_the_mirror_when_the_database_carries_them() {
    no_signature_from_the_mirror(Pacmans::Seven, Db::WithSigs);
}

#[test]
fn pacman6_asks_the_mirror_for_no_signature_when_the_database_carries_them() {
    no_signature_from_the_mirror(Pacmans::Six, Db::WithSigs);
}

/// A peer's signatures that pacman would refuse: garbage, a key in no keyring, a good
/// signature over another package, a revoked key, an expired key. Each is refused, the
/// mirror's (good) one is used instead, and the install succeeds.
#[test]
fn a_peers_bad_signatures_are_refused_and_the_install_succeeds_from_the_mirror() {
    let Some(keys) = Keys::get() else { return };
    let Some(s) = site(keys, Db::WithoutSigs, 5) else {
        return;
    };
    let other = s.repo.dir.join(&s.files[0]);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", util::random_bytes(119, 7)),
        (
            "stranger",
            keys.sign(&keys.stranger, &s.repo.dir.join(&s.files[1])),
        ),
        ("another package's", keys.sign(&keys.good, &other)),
        (
            "revoked",
            keys.sign(&keys.revoked, &s.repo.dir.join(&s.files[3])),
        ),
        (
            "expired",
            keys.sign(&keys.expired, &s.repo.dir.join(&s.files[4])),
        ),
    ];
    for ((_, sig), file) in bad.iter().zip(&s.files) {
        fs::write(s.peer_cache.path().join(format!("{file}.sig")), sig).unwrap();
    }
    let Some(pacman) = s.pacman(keys, Pacmans::Seven) else {
        return;
    };
    let names = s.names();
    let mut args = vec!["-S"];
    args.extend(names.iter().map(String::as_str));
    let out = s.run(&pacman, &args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    s.assert_installed(&pacman);
    for ((why, _), file) in bad.iter().zip(&s.files) {
        assert!(
            s.mirror.requests_for(file).is_empty(),
            "{file} came from the peer"
        );
        let from_mirror = s.mirror.requests_for(&format!("{file}.sig")).len();
        assert_eq!(
            from_mirror, 1,
            "the {why} signature of {file} was replaced by the mirror's"
        );
    }
}

/// What our check accepts, pacman accepts: for each kind of signature, our verdict and pacman
/// 7.1's own (`pacman -U` with `LocalFileSigLevel = Required`, offline) are compared, and for the
/// good key both accept.
#[test]
fn the_signature_check_never_accepts_what_pacman_rejects() {
    let Some(keys) = Keys::get() else { return };
    let Some(program) = pacman7_setup::pacman7() else {
        return;
    };
    let root = tempdir();
    let repo = Repo::create(root.path(), "vc");
    let file = repo.build("vc", "1.0", 50_000);
    let package = repo.dir.join(&file);
    let other = repo.dir.join(repo.build("vcother", "1.0", 50_000));
    let gpgdir = root.path().join("gnupg");
    keys.keyring(&gpgdir, "/opt/pacman7/bin/pacman-key");
    let armored = keys.sign_armored(&keys.good, &package);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("good", keys.sign(&keys.good, &package), true),
        ("stranger", keys.sign(&keys.stranger, &package), false),
        ("revoked", keys.sign(&keys.revoked, &package), false),
        ("expired", keys.sign(&keys.expired, &package), false),
        ("over another package", keys.sign(&keys.good, &other), false),
        ("garbage", util::random_bytes(119, 3), false),
        ("not binary", armored, false),
    ];
    let verifier = Verifier::new(&gpgdir);
    let good = cases[0].1.clone();
    let good_over_other = cases[4].1.clone();
    for (name, sig, expected) in cases {
        let ours = verifier.check(&sig, &package);
        let pacmans = pacman_accepts(&program, &gpgdir, &package, &sig);
        eprintln!("{name}: ours {ours:?}, pacman's {pacmans}");
        assert!(
            ours.is_err() || pacmans,
            "{name}: we accept what pacman rejects"
        );
        assert_eq!(ours.is_ok(), expected, "{name}: {ours:?}");
        assert_eq!(pacmans, expected || name == "not binary", "{name}: pacman");
    }
    // gpg vouched for the good key: its next signature is checked in process, and that check
    // still refuses what the key did not sign.
    let fast = known_keys::verify(&gpgdir, &good, &package);
    assert!(fast.is_ok(), "{fast:?}");
    assert!(known_keys::verify(&gpgdir, &good_over_other, &package).is_err());
    // Revoked later: the keyring changed, so nothing gpg said before counts, and the good
    // key's signature is refused, as pacman now refuses it.
    keys.revoke(&gpgdir, &keys.good);
    assert!(known_keys::verify(&gpgdir, &good, &package).is_err());
    let ours = verifier.check(&good, &package);
    assert!(ours.is_err(), "{ours:?}");
    assert!(!pacman_accepts(&program, &gpgdir, &package, &good));
}

/// Whether pacman `program` installs `package` with `sig` next to it, signatures required, its
/// keyring a copy of `gpgdir` (pacman may write into it), with no network.
pub(crate) fn pacman_accepts(program: &Path, gpgdir: &Path, package: &Path, sig: &[u8]) -> bool {
    let run_dir = tempdir();
    let d = run_dir.path();
    for dir in ["root", "db", "cache", "hooks"] {
        fs::create_dir_all(d.join(dir)).unwrap();
    }
    let copy = run(Command::new("cp")
        .arg("-a")
        .arg(gpgdir)
        .arg(d.join("gnupg")));
    assert!(copy.status.success());
    let local = d.join(package.file_name().unwrap());
    fs::copy(package, &local).unwrap();
    fs::write(local.with_extension("zst.sig"), sig).unwrap();
    let conf = d.join("pacman.conf");
    fs::write(
        &conf,
        format!(
            "[options]\nRootDir = {d}/root\nDBPath = {d}/db\nCacheDir = {d}/cache\nLogFile = \
             {d}/pacman.log\nGPGDir = {d}/gnupg\nHookDir = {d}/hooks\nArchitecture = auto\n\
             SigLevel = Required DatabaseOptional\nLocalFileSigLevel = Required\n",
            d = d.display()
        ),
    )
    .unwrap();
    let out = run(Command::new("unshare")
        .arg("-n")
        .arg(program)
        .arg("--config")
        .arg(&conf)
        .args(["--noconfirm", "--noscriptlet", "-U"])
        .arg(&local));
    out.status.success()
}

/// The mirror path with signatures the database does not carry: the local daemon prefetches
/// each package's `.sig` with it, and pacman's call for the `.sig` takes that copy (no round
/// trip to the mirror on the critical path).
#[test]
fn the_agent_prefetches_signatures_with_their_packages() {
    let Some(keys) = Keys::get() else { return };
    let Some(program) = pacman7_setup::pacman7() else {
        return;
    };
    if !require_pacman_tools() || !util::require_tools(&["nginx"]) {
        return;
    }
    let Some(lan) = Lan::new(2, Family::Dual) else {
        return;
    };
    let root = tempdir();
    let repo = Repo::create(root.path(), "sg");
    let files: Vec<String> = (0..4)
        .map(|i| {
            add_signed(
                &repo,
                &format!("sg{i}"),
                100_000,
                keys,
                &keys.good,
                Db::WithoutSigs,
            )
        })
        .collect();
    let Some(mirror) = Nginx::mirror_on(lan.host(2), root.path()) else {
        return;
    };
    let server = format!("http://{}:8080/sg", lan.url_host(2));
    let pacman = pacman7_with(&program, &[("sg", server)]);
    require_signatures(&pacman, keys, PACMAN_KEY7);
    let db = pacman.base.path().join("db");
    let daemon = Daemon::start(
        lan.host(1),
        &pacman.cache(),
        &[
            "--prefetch",
            "3",
            "--pacman-conf",
            pacman.config.to_str().unwrap(),
            "--dbpath",
            db.to_str().unwrap(),
        ],
    );
    let env = pacman7_setup::env(&pacman);
    assert!(pacman.run_in(lan.host(1), &env, &["-Sy"]).status.success());
    let out = pacman.run_in(lan.host(1), &env, &["-S", "sg0", "sg1", "sg2", "sg3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, file) in files.iter().enumerate() {
        pacman.assert_installed_from(&repo, &format!("sg{i}"), file);
        assert_eq!(
            mirror.requests_for(&format!("{file}.sig")).len(),
            1,
            "{file}.sig once"
        );
    }
    let log = daemon.log();
    let staged_sigs = log
        .iter()
        .filter(|l| l.contains(".pkg.tar.zst.sig: prefetched"))
        .count();
    // The first package's signature may be asked for before it is prefetched.
    assert!(staged_sigs >= 3, "{log:?}");
}
