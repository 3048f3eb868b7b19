//! A package's detached signature, `<package>.sig`: pacman asks for it right after the package
//! whenever the repository's `SigLevel` checks packages (Arch's `Required`), from the same server,
//! and a signature it rejects fails the transaction.
//!
//! Where one comes from, cheapest first:
//! - the sync database's `%PGPSIG%` ([`from_database`]): Arch's own databases carry every
//!   signature, so no network at all;
//! - a signature this user took together with the package from the same peer, in the package's
//!   own run, and checked there ([`fetch_along`], [`Along::check_and_keep`], given by [`kept`]):
//!   pacman's next call, for the `.sig`, costs no LAN round trip;
//! - a LAN peer's, accepted only when GnuPG says pacman would accept it over the package pacman
//!   downloaded just before, itself matching the sync database ([`Proof`]);
//! - the mirror (or the local daemon's prefetched copy of it), as pacman would.
//!
//! A peer's signature reaches pacman only through [`Proof`] or [`Along::check_and_keep`], both
//! [`crate::pacman::gpg::Verifier`], which is never more lenient than pacman's TrustedOnly.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::client::output::verify;
use crate::pacman::gpg::{MAX_SIGNATURE, Verifier};
use crate::pacman::repos::Repos;
use crate::pacman::syncdb::Entry;
use crate::statedir;

/// A kept signature older than this is stale: pacman asks for it right after the package.
const KEPT_FOR: Duration = Duration::from_secs(3600);

/// Whether pacman checks the signatures of `repo`'s packages under `conf` (then it will ask for
/// `.sig` files).
pub fn checked(conf: &Path, repo: &str) -> bool {
    Repos::read(conf).package_signatures_checked(repo)
}

/// The `%PGPSIG%` of `entry`: a signature that needs no source but the database.
pub fn from_database(entry: &Entry) -> Option<&[u8]> {
    entry.signature.as_deref()
}

/// The signature of the package `entry` describes, when it needs no source: the database's, or
/// one kept by [`Along::check_and_keep`]; and where it came from, for the report.
pub fn local(entry: &Entry) -> Option<(Vec<u8>, &'static str)> {
    if let Some(bytes) = from_database(entry) {
        return Some((bytes.to_vec(), "the sync database's %PGPSIG%"));
    }
    let kept = kept(&entry.filename, entry.sha256.as_ref()?)?;
    Some((kept, "the LAN peer of its package (checked then)"))
}

/// Keeps `signature`, checked over the package whose database SHA-256 is `package_sha256`, for
/// the run pacman starts next for `<package>.sig`.
pub fn keep(package: &str, package_sha256: &[u8; 32], signature: &[u8]) {
    if let Some(dir) = statedir::dir() {
        keep_in(&dir, package, package_sha256, signature);
    }
}

/// The signature [`keep`] kept for this package version, taken (so it is used once).
pub fn kept(package: &str, package_sha256: &[u8; 32]) -> Option<Vec<u8>> {
    kept_in(&statedir::dir()?, package, package_sha256)
}

fn keep_in(dir: &Path, package: &str, package_sha256: &[u8; 32], signature: &[u8]) {
    forget_stale(dir);
    statedir::write_atomically(&kept_path(dir, package, package_sha256), signature);
}

fn kept_in(dir: &Path, package: &str, package_sha256: &[u8; 32]) -> Option<Vec<u8>> {
    let path = kept_path(dir, package, package_sha256);
    let fresh = fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < KEPT_FOR);
    let bytes = fs::read(&path).ok();
    let _ = fs::remove_file(&path);
    bytes.filter(|b| fresh && !b.is_empty() && b.len() <= MAX_SIGNATURE)
}

/// `<statedir>/sig-<sha256 of the package's database hash and name>`: the package version, not
/// only its name, so a signature is never given for another build of the same file name.
fn kept_path(dir: &Path, package: &str, package_sha256: &[u8; 32]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut key = Sha256::new();
    key.update(package_sha256);
    key.update(package.as_bytes());
    let key = crate::hex::encode(&key.finalize()[..16]);
    dir.join(format!("sig-{key}"))
}

/// Deletes kept signatures nobody asked for (pacman stopped between the package and its .sig).
fn forget_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= KEPT_FOR);
        if name.to_string_lossy().starts_with("sig-") && stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// What makes a peer's signature acceptable: the package file pacman downloaded just before
/// (next to `%o`), matching the sync database, and pacman's keyring.
pub struct Proof {
    pub package_file: PathBuf,
    verifier: Verifier,
}

impl Proof {
    /// The proof for `output` (`<dir>/<package>.sig.part`): `<dir>/<package>` must be the file
    /// `entry` describes. The error says why peers cannot be asked.
    pub fn for_output(output: &Path, entry: &Entry, verifier: Verifier) -> Result<Proof, String> {
        if !verifier.usable() {
            return Err(format!(
                "no keyring to check a peer's signature with ({} or {} missing)",
                verifier.gpg.display(),
                verifier.gpgdir.join("pubring.gpg").display()
            ));
        }
        let dir = output.parent().unwrap_or(Path::new("."));
        let package_file = dir.join(&entry.filename);
        let expected = verify::Expected {
            size: entry.csize,
            sha256: entry.sha256,
        };
        match verify::mismatch(&package_file, &expected) {
            Ok(None) if expected.sha256.is_some() => Ok(Proof {
                package_file,
                verifier,
            }),
            Ok(None) => Err("the sync database gives the package no SHA-256".into()),
            Ok(Some(why)) => Err(format!("{}: {why}", package_file.display())),
            Err(e) => Err(format!(
                "the package is not next to the signature ({}: {e})",
                package_file.display()
            )),
        }
    }

    /// Ok when pacman would accept the signature in `signature_file`.
    pub fn check(&self, signature_file: &Path) -> Result<(), String> {
        let mut bytes = Vec::new();
        File::open(signature_file)
            .and_then(|f| {
                f.take(MAX_SIGNATURE as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map(|_| ())
            })
            .map_err(|e| format!("{}: {e}", signature_file.display()))?;
        self.verifier.check(&bytes, &self.package_file)
    }
}

/// How long a package's run waits for the signature fetched along with it, once the package
/// itself is verified. A peer's `.sig` (at most 16 KiB) arrives in milliseconds on a LAN, in
/// parallel with the package; one still missing after this is left for pacman's own request
/// for it, where every source applies. Without its own limit the wait was the package's whole
/// peer phase (10 s and more), paid on every package by a peer that drips its signatures.
pub const ALONG_WAIT: Duration = Duration::from_secs(3);

/// Why a signature fetched along was not kept, and whether that counts against the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotKept {
    pub why: String,
    /// The peer failed the transfer (stalled, too slow, broke off): it is avoided for a while,
    /// as after any failed transfer. A missing signature (the peer may have just dropped it)
    /// or one gpg refuses (the peer's honest copy under a key this keyring does not trust) is
    /// no failure of the peer.
    pub peer_failed: bool,
}

/// In a package's run, while the package itself comes from `peer_url`: the peer's signature of
/// it (`<peer_url>.sig`), fetched alongside, for [`Along::check_and_keep`] once the package is
/// verified.
pub struct Along {
    url: String,
    result: mpsc::Receiver<Result<Vec<u8>, NotKept>>,
}

/// Starts fetching `<peer_url>.sig` with `agent` (the package's, with its limits).
pub fn fetch_along(agent: &ureq::Agent, peer_url: &str) -> Along {
    let (agent, url) = (agent.clone(), format!("{peer_url}.sig"));
    let (send, result) = mpsc::channel();
    let thread_url = url.clone();
    std::thread::spawn(move || {
        // Nobody may be listening any more (the wait ended): then the result goes nowhere.
        let _ = send.send(get_signature(&agent, &thread_url));
    });
    Along { url, result }
}

fn get_signature(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, NotKept> {
    let failed = |e: &dyn std::fmt::Display| NotKept {
        why: format!("{url}: {e}"),
        peer_failed: true,
    };
    let mut response = agent.get(url).call().map_err(|e| failed(&e))?;
    if response.status() != 200 {
        return Err(NotKept {
            why: format!("{url}: {}", response.status()),
            peer_failed: false,
        });
    }
    let mut signature = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_SIGNATURE as u64 + 1)
        .read_to_end(&mut signature)
        .map_err(|e| failed(&e))?;
    Ok(signature)
}

impl Along {
    /// Waits at most `wait` for the signature, then checks it over the verified package at
    /// `package_file` and keeps it for pacman's next call, which asks for it: no LAN round trip
    /// then.
    pub fn check_and_keep(
        self,
        wait: Duration,
        entry: &Entry,
        package_file: &Path,
        verifier: &Verifier,
    ) -> Result<(), NotKept> {
        let signature = match self.result.recv_timeout(wait) {
            Ok(fetched) => fetched?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(NotKept {
                    why: format!(
                        "{}: not there {:.0} s after the package; not waiting any longer",
                        self.url,
                        wait.as_secs_f64()
                    ),
                    peer_failed: true,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(NotKept {
                    why: format!("{}: the fetch panicked", self.url),
                    peer_failed: false,
                });
            }
        };
        let refused = |why: String| NotKept {
            why,
            peer_failed: false,
        };
        let sha256 = entry
            .sha256
            .ok_or_else(|| refused("no SHA-256 in the database".into()))?;
        verifier
            .check(&signature, package_file)
            .map_err(|why| refused(format!("refused: {why}")))?;
        keep(&entry.filename, &sha256, &signature);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_signature_is_given_once_and_only_for_that_build() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let package = "k-1-1-any.pkg.tar.zst";
        keep_in(dir, package, &[1; 32], b"signature");
        assert_eq!(kept_in(dir, package, &[2; 32]), None, "another build");
        assert_eq!(
            kept_in(dir, package, &[1; 32]).as_deref(),
            Some(&b"signature"[..])
        );
        assert_eq!(kept_in(dir, package, &[1; 32]), None, "taken");
    }
}
