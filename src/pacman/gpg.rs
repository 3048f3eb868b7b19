//! Would pacman accept this detached signature? Asked of GnuPG itself, against pacman's keyring.
//!
//! A package's `.sig` from a LAN peer may reach pacman only when pacman would accept it: with
//! `SigLevel = Required` a signature pacman rejects fails the whole transaction, with no fallback
//! to another server. pacman verifies through gpgme, which runs `gpg` against its `GPGDir`, and
//! trusts a signature only as far as GnuPG's web of trust says (pacman-key's master keys, their
//! local signatures and ownertrust, revocations, disabled keys). No OpenPGP library reads
//! GnuPG's trust database, so rather than reimplement that model (and differ from pacman in
//! either direction), this module runs the same `gpg` on the same keyring and accepts only what
//! pacman's default `TrustedOnly` accepts, and is stricter wherever the two could differ:
//!
//! 1. the signature is 1 byte to 16 KiB of binary OpenPGP (pacman's own downloader's limit; an
//!    armored one pacman takes with an error message, so it is refused here);
//! 2. `gpg --verify` exits 0, every status line is one a good signature produces, and every
//!    signature in it has exactly one GOODSIG, one VALIDSIG and TRUST_FULLY or TRUST_ULTIMATE
//!    (an expired or revoked key shows as EXPKEYSIG or REVKEYSIG, both refused);
//! 3. every issuer key id pacman's own parser finds in it ([`issuer_key_ids`], a port of
//!    libalpm's `alpm_extract_keyid`) is one of the keys that verified (otherwise pacman would
//!    look that key up on keyservers and fail);
//! 4. `gpg --list-keys` of the verifying primary keys shows each fully or ultimately valid and
//!    not disabled (pacman refuses disabled keys, which `--verify` alone calls fully trusted).
//!
//! Once gpg has accepted a signature by a key, later signatures by that key under the same
//! keyring version are checked in process ([`crate::pacman::known_keys`]), as fast as hashing the
//! package; anything unusual about them still goes to gpg.
//!
//! It runs as whoever runs pacserve-fetch (pacman 7's unprivileged DownloadUser included): the
//! keyring is world-readable and gpg only reads it. A trust database that needs rebuilding makes
//! a read-only gpg fail; then the keyring is copied into a private directory and checked there,
//! as pacman (root) would rebuild it. gpg runs with a clean environment, by absolute path, with
//! key retrieval off, so a peer's signature never makes this machine ask a keyserver.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::pacman::known_keys;
use crate::statedir;

/// Where Debian and Arch install GnuPG.
pub const GPG: &str = "/usr/bin/gpg";
/// pacman's default GPGDir.
pub const DEFAULT_GPGDIR: &str = "/etc/pacman.d/gnupg";
/// pacman's own downloader refuses larger signatures.
pub const MAX_SIGNATURE: usize = 16 * 1024;

/// Status keywords a good signature may produce; anything else is refused.
const ALLOWED: &[&str] = &[
    "NEWSIG",
    "KEY_CONSIDERED",
    "SIG_ID",
    "GOODSIG",
    "VALIDSIG",
    "TRUST_FULLY",
    "TRUST_ULTIMATE",
    // Also printed for an unrelated expired subkey; the signing key's own expiry is EXPKEYSIG.
    "KEYEXPIRED",
    "NOTATION_NAME",
    "NOTATION_FLAGS",
    "NOTATION_DATA",
    "POLICY_URL",
    "VERIFICATION_COMPLIANCE_MODE",
];

/// Checks signatures against one pacman keyring.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub gpgdir: PathBuf,
    pub gpg: PathBuf,
}

impl Verifier {
    pub fn new(gpgdir: &Path) -> Verifier {
        Verifier {
            gpgdir: gpgdir.to_owned(),
            gpg: PathBuf::from(GPG),
        }
    }

    /// Whether GnuPG and the keyring are there at all.
    pub fn usable(&self) -> bool {
        self.gpg.is_file() && self.gpgdir.join("pubring.gpg").is_file()
    }

    /// Ok when pacman (SigLevel TrustedOnly) would accept `signature` over the file at `data`;
    /// otherwise why not, for `-v` and the log.
    pub fn check(&self, signature: &[u8], data: &Path) -> Result<(), String> {
        if signature.is_empty() || signature.len() > MAX_SIGNATURE {
            return Err(format!("{} bytes is no signature", signature.len()));
        }
        if signature[0] & 0x80 == 0 {
            return Err("not a binary OpenPGP signature".into());
        }
        let issuers = issuer_key_ids(signature)
            .ok_or("pacman's signature parser would fail on it (signature format error)")?;
        let issued_by = |key_id: &str| issuers.iter().all(|id| id.eq_ignore_ascii_case(key_id));
        if let Ok(key_id) = known_keys::verify(&self.gpgdir, signature, data)
            && issued_by(&key_id)
        {
            return Ok(());
        }
        let scratch = statedir::dir().ok_or("no private directory for the signature")?;
        let sig_file = tempfile::Builder::new()
            .prefix("sig-")
            .tempfile_in(&scratch)
            .and_then(|mut f| f.write_all(signature).map(|_| f))
            .map_err(|e| format!("cannot write the signature to check it: {e}"))?;
        let verdict = match self.verify(&self.gpgdir, sig_file.path(), data) {
            Err(Outcome::StaleTrust) => {
                let copy = self.private_copy(&scratch)?;
                self.verify(copy.path(), sig_file.path(), data)
                    .and_then(|keys| self.keys_valid(copy.path(), &keys).map(|v| (keys, v)))
            }
            Ok(keys) => self.keys_valid(&self.gpgdir, &keys).map(|v| (keys, v)),
            Err(e) => Err(e),
        };
        let (keys, valid_until) = verdict.map_err(|o| o.to_string())?;
        for id in &issuers {
            if !keys
                .iter()
                .any(|k| k.signing.to_ascii_uppercase().ends_with(id.as_str()))
            {
                return Err(format!(
                    "issuer key id {id} is not the key that verified it (pacman would look it up \
                     on a keyserver and fail)"
                ));
            }
        }
        // One signature, one key: the next one by it needs no gpg run.
        if let [key] = &keys[..] {
            self.remember(key, valid_until);
        }
        Ok(())
    }

    /// Keeps `key`'s public part for [`known_keys`], as gpg exports it.
    fn remember(&self, key: &Key, valid_until: u64) {
        let exported = self
            .base(&self.gpgdir)
            .args(["--export", "--"])
            .arg(&key.primary)
            .output();
        if let Ok(out) = exported
            && out.status.success()
            && !out.stdout.is_empty()
        {
            let id = &key.signing[key.signing.len().saturating_sub(16)..];
            known_keys::remember(
                &self.gpgdir,
                &id.to_ascii_lowercase(),
                valid_until,
                &out.stdout,
            );
        }
    }

    fn base(&self, gpgdir: &Path) -> Command {
        let mut cmd = Command::new(&self.gpg);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .arg("--homedir")
            .arg(gpgdir)
            .args([
                "--batch",
                "--no-tty",
                "--no-permission-warning",
                "--lc-messages",
                "C",
                // A stale trust database is rebuilt, or (read-only) gpg fails: never used stale.
                "--auto-check-trustdb",
                "--no-auto-key-retrieve",
                "--auto-key-locate",
                "local",
                "--keyserver-options",
                "no-auto-key-retrieve",
            ])
            .stdin(Stdio::null());
        cmd
    }

    /// `gpg --verify`: the keys that made good, fully trusted signatures.
    fn verify(&self, gpgdir: &Path, sig: &Path, data: &Path) -> Result<Vec<Key>, Outcome> {
        let out = self
            .base(gpgdir)
            .args(["--status-fd", "1", "--verify"])
            .arg("--")
            .arg(sig)
            .arg(data)
            .output()
            .map_err(|e| Outcome::Refused(format!("cannot run {}: {e}", self.gpg.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("trustdb") && !stderr.contains("BADSIG") {
                return Err(Outcome::StaleTrust);
            }
            return Err(Outcome::Refused(format!(
                "gpg refused it ({})",
                first_status(&out.stdout).unwrap_or_else(|| stderr.trim().to_owned())
            )));
        }
        accepted(&String::from_utf8_lossy(&out.stdout)).map_err(Outcome::Refused)
    }

    /// `gpg --list-keys` of the verifying primary keys: each fully or ultimately valid, none
    /// disabled. Returns until when that verdict may be believed (seconds since the epoch): the
    /// keys' and subkeys' expiry, the trust database's next check, a day at most.
    fn keys_valid(&self, gpgdir: &Path, keys: &[Key]) -> Result<u64, Outcome> {
        let mut primaries: Vec<&str> = keys.iter().map(|k| k.primary.as_str()).collect();
        primaries.sort();
        primaries.dedup();
        let mut valid_until = known_keys::now_secs() + known_keys::ASK_AGAIN_AFTER.as_secs();
        let mut until = |field: Option<&&str>| {
            if let Some(t) = field.and_then(|t| t.parse::<u64>().ok()).filter(|t| *t > 0) {
                valid_until = valid_until.min(t);
            }
        };
        let out = self
            .base(gpgdir)
            .args(["--with-colons", "--list-keys", "--"])
            .args(&primaries)
            .output()
            .map_err(|e| Outcome::Refused(format!("cannot run {}: {e}", self.gpg.display())))?;
        if !out.status.success() {
            return Err(Outcome::Refused("gpg cannot list the signing key".into()));
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        let mut seen = Vec::new();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[..] {
                ["tru", flags, ..] if flags.contains('o') => {
                    return Err(Outcome::StaleTrust);
                }
                ["tru", ..] => until(fields.get(4)),
                ["sub", ..] => until(fields.get(6)),
                ["pub", validity, _, _, keyid, ..] => {
                    until(fields.get(6));
                    if fields.get(11).is_some_and(|caps| caps.contains('D')) {
                        return Err(Outcome::Refused(format!("key {keyid} is disabled")));
                    }
                    if validity != "f" && validity != "u" {
                        return Err(Outcome::Refused(format!(
                            "key {keyid} is not fully valid ({validity})"
                        )));
                    }
                    seen.push(keyid.to_ascii_uppercase());
                }
                _ => {}
            }
        }
        for primary in &primaries {
            if !seen
                .iter()
                .any(|id| primary.to_ascii_uppercase().ends_with(id))
            {
                return Err(Outcome::Refused(format!(
                    "key {primary} is not in the keyring"
                )));
            }
        }
        Ok(valid_until)
    }

    /// The keyring copied into a private directory, for gpg to rebuild its trust database in.
    fn private_copy(&self, scratch: &Path) -> Result<tempfile::TempDir, String> {
        let dir = tempfile::Builder::new()
            .prefix("gnupg-")
            .tempdir_in(scratch)
            .map_err(|e| format!("cannot copy the keyring: {e}"))?;
        let _ = fs::DirBuilder::new().mode(0o700).create(dir.path());
        for name in ["pubring.gpg", "trustdb.gpg", "gpg.conf"] {
            let from = self.gpgdir.join(name);
            if from.exists() {
                fs::copy(&from, dir.path().join(name))
                    .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
            }
        }
        Ok(dir)
    }
}

/// Why gpg's answer is not an acceptance.
enum Outcome {
    Refused(String),
    /// The trust database must be rebuilt first (gpg could not, read-only).
    StaleTrust,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Refused(why) => f.write_str(why),
            Outcome::StaleTrust => f.write_str("the keyring's trust database is out of date"),
        }
    }
}

/// A key that made a good signature: the signing (sub)key and its primary key, fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    signing: String,
    primary: String,
}

/// The keys of `gpg --status-fd` output that pacman's TrustedOnly would accept; rules 2 of the
/// module doc.
fn accepted(status: &str) -> Result<Vec<Key>, String> {
    struct Sig {
        good: usize,
        valid: Vec<Key>,
        trusted: usize,
    }
    let mut sigs: Vec<Sig> = Vec::new();
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let Some(&keyword) = fields.first() else {
            continue;
        };
        if !ALLOWED.contains(&keyword) {
            return Err(format!("gpg says {keyword}"));
        }
        if keyword == "NEWSIG" {
            sigs.push(Sig {
                good: 0,
                valid: Vec::new(),
                trusted: 0,
            });
            continue;
        }
        let Some(sig) = sigs.last_mut() else {
            if matches!(keyword, "KEY_CONSIDERED" | "KEYEXPIRED") {
                continue;
            }
            return Err(format!("gpg says {keyword} before any signature"));
        };
        match keyword {
            "GOODSIG" => sig.good += 1,
            "VALIDSIG" => {
                let signing = fields.get(1).ok_or("VALIDSIG without a fingerprint")?;
                let primary = fields.get(10).unwrap_or(signing);
                sig.valid.push(Key {
                    signing: (*signing).to_owned(),
                    primary: (*primary).to_owned(),
                });
            }
            "TRUST_FULLY" | "TRUST_ULTIMATE" => sig.trusted += 1,
            _ => {}
        }
    }
    if sigs.is_empty() {
        return Err("no signature".into());
    }
    let mut keys = Vec::new();
    for sig in sigs {
        if sig.good != 1 || sig.valid.len() != 1 || sig.trusted != 1 {
            return Err("not a good, fully trusted signature".into());
        }
        keys.extend(sig.valid);
    }
    Ok(keys)
}

/// The first status keyword gpg printed, for a refusal's message.
fn first_status(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let interesting = |w: &&str| !matches!(*w, "NEWSIG" | "KEY_CONSIDERED" | "SIG_ID");
    text.lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .filter_map(|l| l.split_whitespace().next())
        .find(interesting)
        .map(str::to_owned)
}

/// The issuer key ids (subpacket 16) pacman's own parser takes from a signature, upper-case hex:
/// a port of libalpm's `alpm_extract_keyid` (`signing.c`), the first issuer of the hashed and
/// of the unhashed area of each v4 binary-document signature packet. None wherever pacman's
/// parser fails (partial lengths, other versions or types, lengths past the end).
pub fn issuer_key_ids(sig: &[u8]) -> Option<Vec<String>> {
    let byte = |at: usize| sig.get(at).copied();
    let be = |at: usize, n: usize| -> Option<usize> {
        let bytes = sig.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
    };
    let mut keys = Vec::new();
    let mut pos = 0usize;
    while pos < sig.len() {
        let tag = byte(pos)?;
        if tag & 0x80 == 0 {
            return None;
        }
        let body_len;
        if tag & 0x40 != 0 {
            let first = byte(pos + 1)? as usize;
            (body_len, pos) = match first {
                0..192 => (first, pos + 2),
                192..224 => (
                    ((first - 192) << 8) + byte(pos + 2)? as usize + 192,
                    pos + 3,
                ),
                255 => (be(pos + 2, 4)?, pos + 6),
                _ => return None,
            };
        } else {
            let width = match tag & 0x03 {
                0 => 1,
                1 => 2,
                2 => 4,
                _ => return None,
            };
            body_len = be(pos + 1, width)?;
            pos += 1 + width;
        }
        let start = pos;
        if byte(pos)? != 4 || byte(pos + 1)? != 0 {
            return None;
        }
        pos += 4;
        for _area in 0..2 {
            let area_len = be(pos, 2)?;
            pos += 2;
            let end = pos.checked_add(area_len)?;
            if end > sig.len() {
                return None;
            }
            let mut at = pos;
            while at < end {
                let first = byte(at)? as usize;
                let sub_len;
                (sub_len, at) = match first {
                    0..192 => (first, at + 1),
                    192..255 => (((first - 192) << 8) + byte(at + 1)? as usize + 192, at + 2),
                    _ => (be(at + 1, 4)?, at + 5),
                };
                if byte(at)? == 16 {
                    let id = sig.get(at + 1..at + 9)?;
                    keys.push(crate::hex::encode(id).to_ascii_uppercase());
                    break;
                }
                at = at.checked_add(sub_len)?;
            }
            pos = end;
        }
        pos = start.checked_add(body_len)?;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v4 binary signature packet (new format) with the given hashed and unhashed
    /// subpackets, each `(type, body)`.
    fn packet(hashed: &[(u8, &[u8])], unhashed: &[(u8, &[u8])]) -> Vec<u8> {
        let area = |subs: &[(u8, &[u8])]| {
            let mut out = Vec::new();
            for (kind, body) in subs {
                out.push(body.len() as u8 + 1);
                out.push(*kind);
                out.extend_from_slice(body);
            }
            out
        };
        let (h, u) = (area(hashed), area(unhashed));
        let mut body = vec![4, 0, 22, 8];
        body.extend_from_slice(&(h.len() as u16).to_be_bytes());
        body.extend(h);
        body.extend_from_slice(&(u.len() as u16).to_be_bytes());
        body.extend(u);
        body.extend_from_slice(&[0xab, 0xcd, 0, 1, 0]);
        let mut out = vec![0xc2, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn issuer_ids_are_read_as_pacman_reads_them() {
        let key = [1, 2, 3, 4, 5, 6, 7, 8];
        let other = [9; 8];
        let sig = packet(&[(2, &[0, 0, 0, 1]), (16, &key)], &[(16, &other)]);
        assert_eq!(
            issuer_key_ids(&sig),
            Some(vec!["0102030405060708".into(), "0909090909090909".into()])
        );
        // Only the first issuer of an area counts.
        let sig = packet(&[(16, &key), (16, &other)], &[]);
        assert_eq!(issuer_key_ids(&sig), Some(vec!["0102030405060708".into()]));
        // Not v4, not a binary document, cut short: pacman's parser fails, so do we.
        let mut v3 = packet(&[(16, &key)], &[]);
        v3[2] = 3;
        assert_eq!(issuer_key_ids(&v3), None);
        let mut text = packet(&[(16, &key)], &[]);
        text[3] = 1;
        assert_eq!(issuer_key_ids(&text), None);
        let whole = packet(&[(16, &key)], &[]);
        for cut in 1..whole.len() - 5 {
            assert_eq!(issuer_key_ids(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(issuer_key_ids(b"-----BEGIN PGP SIGNATURE"), None);
    }

    #[test]
    fn only_good_fully_trusted_signatures_are_accepted() {
        let good = "[GNUPG:] NEWSIG\n[GNUPG:] KEY_CONSIDERED AAAA 0\n[GNUPG:] SIG_ID x y z\n\
                    [GNUPG:] GOODSIG 0102 Name\n\
                    [GNUPG:] VALIDSIG SUBKEY 2024-01-01 1 0 4 0 22 8 00 PRIMARY\n\
                    [GNUPG:] TRUST_FULLY 0 pgp\n";
        assert_eq!(
            accepted(good),
            Ok(vec![Key {
                signing: "SUBKEY".into(),
                primary: "PRIMARY".into()
            }])
        );
        for (change, why) in [
            ("TRUST_FULLY 0 pgp", "TRUST_UNDEFINED 0 pgp"),
            ("TRUST_FULLY 0 pgp", "TRUST_MARGINAL 0 pgp"),
            ("GOODSIG 0102 Name", "EXPKEYSIG 0102 Name"),
            ("GOODSIG 0102 Name", "REVKEYSIG 0102 Name"),
            ("GOODSIG 0102 Name", "BADSIG 0102 Name"),
            (
                "TRUST_FULLY 0 pgp\n",
                "TRUST_FULLY 0 pgp\n[GNUPG:] KEYREVOKED\n",
            ),
        ] {
            let status = good.replace(change, why);
            assert!(accepted(&status).is_err(), "{why}");
        }
        assert!(accepted("").is_err(), "no signature at all");
        let missing_trust = good.replace("[GNUPG:] TRUST_FULLY 0 pgp\n", "");
        assert!(accepted(&missing_trust).is_err());
        let twice = format!("{good}{good}");
        assert_eq!(accepted(&twice).map(|k| k.len()), Ok(2));
        let one_bad = format!("{good}{}", good.replace("TRUST_FULLY", "TRUST_NEVER"));
        assert!(accepted(&one_bad).is_err());
    }
}
