//! Packages signed as Arch signs them: OpenPGP keys of the test's own (real gpg), pacman's
//! keyring made by pacman-key (`--init`, `--add`, `--lsign-key`), detached `.sig` files, and
//! repositories whose database carries the signatures (`%PGPSIG%`) or does not.
//!
//! Keys are made once per test run and shared (gpg takes a moment per key): `good` is lsigned
//! in every keyring; `stranger` is in no keyring; `revoked` is lsigned, then revoked; `expired`
//! was made in 2020 with a one-day lifetime and signs as it did then. No key is ever looked up
//! on a network: gpg and pacman-key run without one.
//!
//! A signature can also be doctored after signing, as a LAN peer could: [`followed_by`] appends
//! a second packet, [`with_unhashed`] adds a subpacket to the area the signature does not cover.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::archrepo::{Pacman, Repo};
use crate::util::{self, require_tools, run};

/// One key: its primary fingerprint and its public key, armored.
pub struct Key {
    pub fpr: String,
    pub asc: PathBuf,
}

pub struct Keys {
    /// The GNUPGHOME holding every secret key.
    home: PathBuf,
    pub good: Key,
    pub stranger: Key,
    pub revoked: Key,
    pub expired: Key,
    /// The revocation certificate of `revoked`, ready to import.
    revocation: PathBuf,
}

/// gpg's date for keys that are long expired.
const PAST: &str = "20200101T000000";
const PAST_SIGN: &str = "20200101T120000";

impl Keys {
    /// The run's keys, made on first use; None (after `util::require`) without gpg or
    /// pacman-key.
    pub fn get() -> Option<&'static Keys> {
        if !require_tools(&["gpg", "gpgconf", "pacman-key"]) {
            return None;
        }
        static KEYS: OnceLock<Keys> = OnceLock::new();
        Some(KEYS.get_or_init(Keys::generate))
    }

    fn generate() -> Keys {
        // Leaked on purpose: the keys outlive every test of the run.
        let home = util::tempdir().keep();
        fs::create_dir_all(home.join("gnupg")).unwrap();
        let gnupg = home.join("gnupg");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        let make = |name: &str, expire: &str, faked: Option<&str>| {
            let mut cmd = gpg(&gnupg);
            if let Some(at) = faked {
                cmd.args(["--faked-system-time", at]);
            }
            let uid = format!("{name} <{name}@pacserve.invalid>");
            let made = run(cmd.args(["--quick-gen-key", &uid, "ed25519", "sign", expire]));
            assert!(made.status.success(), "gpg made no {name} key");
            let listed = run(gpg(&gnupg).args(["--with-colons", "--list-keys", &uid]));
            let fpr = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("fpr:")
                        .map(|r| r.trim_matches(':').to_owned())
                })
                .expect("fingerprint");
            let asc = home.join(format!("{name}.asc"));
            let exported = run(gpg(&gnupg)
                .args(["--armor", "--output"])
                .arg(&asc)
                .args(["--export", &fpr]));
            assert!(exported.status.success());
            Key { fpr, asc }
        };
        let good = make("good", "never", None);
        let stranger = make("stranger", "never", None);
        let revoked = make("revoked", "never", None);
        let expired = make("expired", "1d", Some(PAST));
        // gpg writes a revocation for every key it makes, its armor escaped with a ':'.
        let made = gnupg
            .join("openpgp-revocs.d")
            .join(format!("{}.rev", revoked.fpr));
        let text = fs::read_to_string(made).expect("the revocation gpg made");
        let revocation = home.join("revoked.rev");
        fs::write(&revocation, text.replace(":-----BEGIN", "-----BEGIN")).unwrap();
        Keys {
            home,
            good,
            stranger,
            revoked,
            expired,
            revocation,
        }
    }

    /// A detached binary signature by `key` over `file`.
    pub fn sign(&self, key: &Key, file: &Path) -> Vec<u8> {
        self.sign_as(key, file, false)
    }

    /// The same, ASCII-armored (pacman takes those too, with an error message).
    pub fn sign_armored(&self, key: &Key, file: &Path) -> Vec<u8> {
        self.sign_as(key, file, true)
    }

    fn sign_as(&self, key: &Key, file: &Path, armor: bool) -> Vec<u8> {
        // Tests sign at the same time: each signature gets a file of its own.
        let dir = tempfile::tempdir_in(&self.home).unwrap();
        let out = dir.path().join("sig");
        let mut cmd = gpg(&self.home.join("gnupg"));
        if key.fpr == self.expired.fpr {
            cmd.args(["--faked-system-time", PAST_SIGN]);
        }
        if armor {
            cmd.arg("--armor");
        }
        let signed = run(cmd
            .args(["--yes", "--detach-sign", "--local-user"])
            .arg(format!("{}!", key.fpr))
            .arg("--output")
            .arg(&out)
            .arg(file));
        assert!(signed.status.success(), "gpg could not sign");
        fs::read(&out).unwrap()
    }

    /// Revokes `key` in the keyring at `gpgdir` (its revocation imported, as
    /// `pacman-key --populate` does for a revoked packager key).
    pub fn revoke(&self, gpgdir: &Path, key: &Key) {
        let made = self
            .home
            .join("gnupg/openpgp-revocs.d")
            .join(format!("{}.rev", key.fpr));
        let text = fs::read_to_string(made).expect("the revocation gpg made");
        let revocation = gpgdir.with_extension("revocation");
        fs::write(&revocation, text.replace(":-----BEGIN", "-----BEGIN")).unwrap();
        let out = run(Command::new("gpg")
            .arg("--homedir")
            .arg(gpgdir)
            .args(["--batch", "--quiet", "--no-permission-warning", "--import"])
            .arg(&revocation));
        assert!(out.status.success(), "import the revocation");
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(gpgdir)
            .args(["--kill", "all"])
            .status();
    }

    /// Makes pacman's keyring in `gpgdir` as an administrator would (pacman-key `program`):
    /// `good`, `revoked` and `expired` added and locally signed, then `revoked` revoked.
    pub fn keyring(&self, gpgdir: &Path, program: &str) {
        let conf = gpgdir.with_extension("pacman-key.conf");
        fs::write(&conf, format!("[options]\nGPGDir = {}\n", gpgdir.display())).unwrap();
        let pacman_key = |args: &[&str]| {
            // unshare -n: pacman-key never reaches a keyserver.
            let out = run(Command::new("unshare")
                .args(["-n", program, "--config"])
                .arg(&conf)
                .arg("--gpgdir")
                .arg(gpgdir)
                .args(args));
            assert!(out.status.success(), "pacman-key {args:?}");
        };
        let _ = fs::remove_dir_all(gpgdir);
        pacman_key(&["--init"]);
        for key in [&self.good, &self.revoked, &self.expired] {
            pacman_key(&["--add", key.asc.to_str().unwrap()]);
            pacman_key(&["--lsign-key", &key.fpr]);
        }
        pacman_key(&["--add", self.revocation.to_str().unwrap()]);
        pacman_key(&["--updatedb"]);
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(gpgdir)
            .args(["--kill", "all"])
            .status();
        // pacman 7's download user reads it, as on Arch.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(gpgdir)
            .status();
    }
}

/// gpg in `home`, quiet and without a terminal.
fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    cmd
}

/// How a package's signature reaches the repository's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// `%PGPSIG%` in the database, as Arch's official repositories have it.
    WithSigs,
    /// Only the `.sig` file next to the package (repo-add ≥ 6.1 without `--include-sigs`).
    WithoutSigs,
}

/// Adds `<pkgname>-1.0-1-any.pkg.tar.zst` to `repo`, signed by `key` (its `.sig` on the mirror),
/// the database carrying the signature or not; returns the package's file name.
pub fn add_signed(
    repo: &Repo,
    pkgname: &str,
    payload: usize,
    keys: &Keys,
    key: &Key,
    db: Db,
) -> String {
    let file = repo.build(pkgname, "1.0", payload);
    let package = repo.dir.join(&file);
    let sig = repo.dir.join(format!("{file}.sig"));
    if db == Db::WithSigs {
        fs::write(&sig, keys.sign(key, &package)).unwrap();
        repo.register(&file);
    } else {
        repo.register(&file);
        fs::write(&sig, keys.sign(key, &package)).unwrap();
    }
    file
}

/// Whether `repo`'s database carries `%PGPSIG%` for `file`.
pub fn db_carries_signature(repo: &Repo, file: &str) -> bool {
    let db = repo.dir.join(format!("{}.db.tar.gz", repo.name));
    let listed = run(Command::new("bsdtar").arg("-xOf").arg(&db));
    let text = String::from_utf8_lossy(&listed.stdout);
    text.split("%FILENAME%")
        .any(|desc| desc.trim_start().starts_with(file) && desc.contains("%PGPSIG%"))
}

/// Turns `pacman`'s configuration into Arch's signature checking: `SigLevel = Required
/// DatabaseOptional`, with the keyring in its GPGDir made by `program` (a pacman-key).
pub fn require_signatures(pacman: &Pacman, keys: &Keys, program: &str) {
    let gpgdir = pacman.base.path().join("gnupg");
    keys.keyring(&gpgdir, program);
    let conf = fs::read_to_string(&pacman.config)
        .unwrap()
        .replace("SigLevel = Never", "SigLevel = Required DatabaseOptional");
    fs::write(&pacman.config, conf).unwrap();
}

/// `first` followed by `second`: two signature packets in one `.sig`, which gpg verifies one
/// by one (pacman refusing the file if any is bad).
pub fn followed_by(first: &[u8], second: &[u8]) -> Vec<u8> {
    [first, second].concat()
}

/// `sig` with its last byte flipped: the same packet, issuer and length, a signature that no
/// longer verifies.
pub fn spoiled(sig: &[u8]) -> Vec<u8> {
    let mut spoiled = sig.to_vec();
    if let Some(last) = spoiled.last_mut() {
        *last ^= 0xff;
    }
    spoiled
}

/// `sig` (one version 4 signature packet, as gpg writes it) with a subpacket of type `kind`
/// added to its unhashed area, marked critical when `critical`. Anyone can: the unhashed area
/// is outside what the signature covers, so the cryptography still verifies.
pub fn with_unhashed(sig: &[u8], kind: u8, body: &[u8], critical: bool) -> Vec<u8> {
    let (header, length) = match sig[0] {
        // gpg's old-format headers: one or two length bytes.
        0x88 => (2, sig[1] as usize),
        0x89 => (3, u16::from_be_bytes([sig[1], sig[2]]) as usize),
        other => panic!("not a signature packet header gpg writes: {other:#x}"),
    };
    let packet = &sig[header..];
    assert_eq!(packet.len(), length, "one packet");
    assert_eq!(packet[0], 4, "a version 4 signature");
    let hashed = u16::from_be_bytes([packet[4], packet[5]]) as usize;
    let unhashed_at = 6 + hashed;
    let unhashed = u16::from_be_bytes([packet[unhashed_at], packet[unhashed_at + 1]]) as usize;
    let rest_at = unhashed_at + 2 + unhashed;
    let mut subpacket = vec![u8::try_from(body.len() + 1).expect("a short subpacket")];
    subpacket.push(if critical { kind | 0x80 } else { kind });
    subpacket.extend_from_slice(body);
    let unhashed_len = u16::try_from(unhashed + subpacket.len()).expect("a short area");
    let mut body = packet[..unhashed_at].to_vec();
    body.extend_from_slice(&unhashed_len.to_be_bytes());
    body.extend_from_slice(&packet[unhashed_at + 2..rest_at]);
    body.extend_from_slice(&subpacket);
    body.extend_from_slice(&packet[rest_at..]);
    let length = u16::try_from(body.len()).expect("a short packet");
    let mut doctored = vec![0x89];
    doctored.extend_from_slice(&length.to_be_bytes());
    doctored.extend(body);
    doctored
}
