//! Signing keys GnuPG has already vouched for, so that the next signature by the same key costs
//! a check in process (about a millisecond) instead of a gpg run (several).
//!
//! pacman asks for one `.sig` per package, one process per file, and most of an upgrade's
//! packages are signed by a handful of packager keys. [`crate::pacman::gpg::Verifier`] asks gpg
//! itself the first time a key signs: whether the signature is good and the key fully valid,
//! not disabled, not expired, not revoked, under pacman's own keyring and trust database. When
//! gpg accepts, the key's public part (exported by gpg) is remembered here, in
//! [`crate::statedir`], with the keyring's version in the name and a time after which gpg must be
//! asked again (the key's expiry, the trust database's next check, a day at most). A later
//! signature by that key is then verified by rPGP, with every check that depends on the signature
//! rather than on the key: exactly one signature packet and nothing after it, the same signing
//! (sub)key, a binary-document signature of version 4 with a SHA-2 digest, made after the key
//! and not in the future, not expired, no critical subpacket beyond those gpg itself writes in
//! the hashed area and none at all in the unhashed one, and the cryptography. Anything else
//! unusual is no refusal but a reason to ask gpg after all, so this path can only ever accept
//! what gpg has accepted the like of.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    Packet, PacketParser, PacketTrait, Signature, SignatureType, SignatureVersion, SubpacketData,
};
use pgp::types::KeyDetails;
use sha2::{Digest, Sha256};

use crate::statedir;

/// gpg is asked again about a key at least this often, whatever else says the key stays valid.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Remembers that gpg accepted a signature by key `key_id` (16 hex digits), under the keyring
/// in `gpgdir` as it is now, until `valid_until` (seconds since the epoch); `exported` is what
/// `gpg --export` gave for the key.
pub fn remember(gpgdir: &Path, key_id: &str, valid_until: u64, exported: &[u8]) {
    let Some(path) = memo_path(gpgdir, key_id) else {
        return;
    };
    let mut bytes = format!("{valid_until}\n").into_bytes();
    bytes.extend_from_slice(exported);
    statedir::write_atomically(&path, &bytes);
}

/// Verifies `signature` over the file `data` by a key gpg has vouched for under this keyring,
/// returning that key's id (16 hex digits); the error says why gpg must be asked instead.
pub fn verify(gpgdir: &Path, signature: &[u8], data: &Path) -> Result<String, String> {
    let sig = only_packet(signature)?;
    let config = sig.config().ok_or("an unusual signature version")?;
    if sig.version() != SignatureVersion::V4 || sig.typ() != Some(SignatureType::Binary) {
        return Err("not a version 4 binary-document signature".into());
    }
    if !matches!(
        config.hash_alg,
        HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha224
    ) {
        return Err(format!("digest {:?}", config.hash_alg));
    }
    let critical_known = config.hashed_subpackets.iter().all(|s| {
        !s.is_critical
            || matches!(
                s.data,
                SubpacketData::SignatureCreationTime(_)
                    | SubpacketData::SignatureExpirationTime(_)
                    | SubpacketData::IssuerKeyId(_)
                    | SubpacketData::IssuerFingerprint(_)
            )
    });
    if !critical_known {
        return Err("a critical subpacket".into());
    }
    // Anyone can add subpackets to the unhashed area without invalidating the signature, and
    // gpg calls a signature with a critical one it does not know bad ("unknown critical bit"),
    // as pacman then does. gpg itself never marks an unhashed subpacket critical: ask it.
    if config.unhashed_subpackets.iter().any(|s| s.is_critical) {
        return Err("a critical subpacket in the unhashed area".into());
    }
    let key_id = match (
        sig.issuer_fingerprint().first(),
        sig.issuer_key_id().first(),
    ) {
        (Some(fpr), _) => {
            let bytes = fpr.as_bytes();
            crate::hex::encode(&bytes[bytes.len().saturating_sub(8)..])
        }
        (None, Some(id)) => id.to_string(),
        (None, None) => return Err("no issuer".into()),
    };
    let key = recall(gpgdir, &key_id).ok_or("a key gpg has not vouched for yet")?;
    let now = now_secs();
    let created = u64::from(sig.created().ok_or("no creation time")?.as_secs());
    if created > now {
        return Err("made in the future".into());
    }
    if let Some(lasts) = sig.signature_expiration_time()
        && lasts.as_secs() != 0
        && created + u64::from(lasts.as_secs()) <= now
    {
        return Err("expired".into());
    }
    let file = File::open(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let primary = &key.primary_key;
    if primary.legacy_key_id().to_string() == key_id {
        if created < u64::from(primary.created_at().as_secs()) {
            return Err("made before its key".into());
        }
        sig.verify(primary, BufReader::new(file))
            .map_err(|e| format!("rPGP: {e}"))?;
        return Ok(key_id);
    }
    let subkey = key
        .public_subkeys
        .iter()
        .find(|s| s.key.legacy_key_id().to_string() == key_id)
        .ok_or("the signing subkey is not in what gpg exported")?;
    if created < u64::from(subkey.key.created_at().as_secs()) {
        return Err("made before its key".into());
    }
    sig.verify(&subkey.key, BufReader::new(file))
        .map_err(|e| format!("rPGP: {e}"))?;
    Ok(key_id)
}

/// The signature packet that `signature` is, when it is exactly one packet and nothing more.
///
/// gpg verifies every signature packet of a `.sig` and pacman refuses the file if any is bad,
/// while rPGP's `DetachedSignature::from_bytes` reads the first and ignores the rest (and its
/// `from_bytes_many` skips packets it deems ignorable): a good signature with a doctored copy
/// after it would pass here and fail pacman. So any second packet, or any byte the first
/// packet did not consume, is gpg's to judge.
fn only_packet(signature: &[u8]) -> Result<Signature, String> {
    let mut packets = PacketParser::new(signature);
    let first = packets.next();
    let after = packets.into_inner().len();
    match first {
        Some(Ok(Packet::Signature(sig))) if after == 0 => Ok(sig),
        Some(Ok(Packet::Signature(_))) => Err(format!("{after} bytes after the signature packet")),
        Some(Ok(other)) => Err(format!("a {:?} packet, not a signature", other.tag())),
        Some(Err(e)) => Err(format!("not a signature rPGP reads: {e}")),
        None => Err("no packet".into()),
    }
}

/// The key remembered for `key_id` under this keyring, while it is still to be believed.
fn recall(gpgdir: &Path, key_id: &str) -> Option<SignedPublicKey> {
    let bytes = fs::read(memo_path(gpgdir, key_id)?).ok()?;
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let valid_until: u64 = std::str::from_utf8(&bytes[..newline]).ok()?.parse().ok()?;
    if now_secs() >= valid_until {
        return None;
    }
    SignedPublicKey::from_bytes(&bytes[newline + 1..]).ok()
}

/// `<statedir>/gpgkey-<hash>`: the keyring's files' sizes and mtimes are in the hash, so any
/// change to the keyring (a new key, a revocation, `pacman-key --populate`, gpg.conf) is a new
/// name, and what gpg said before is never used again.
fn memo_path(gpgdir: &Path, key_id: &str) -> Option<PathBuf> {
    let mut key = gpgdir.display().to_string();
    for name in ["pubring.gpg", "trustdb.gpg", "gpg.conf"] {
        let meta = fs::metadata(gpgdir.join(name)).ok();
        let stamp = meta.map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.size(), m.mtime(), m.mtime_nsec())
        });
        key.push_str(&format!("\0{name}{stamp:?}"));
    }
    key.push_str(&format!("\0{}", key_id.to_ascii_lowercase()));
    let digest = Sha256::digest(key.as_bytes());
    Some(statedir::dir()?.join(format!("gpgkey-{}", crate::hex::encode(&digest[..12]))))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detached signature as gpg 2.2 writes one (ed25519, old-format header): only its packet
    /// structure matters here; the cryptography is tested against real keyrings in tests/it.
    const GPG_SIGNATURE: &str = "887504001608001d162104139350624ee00ca527f7dd534233001a65dba8f2050\
        26b1284eb000a09104233001a65dba8f2713600ff5e85e45ecc8595d440ef765c2e3c806f49d711c01fa897316\
        8040d9e89e452db0100cd646107a771d6b45ac83a3be5f3e8156ed856b7fb37c2714c4a9afd21b3b40f";

    #[test]
    fn only_one_whole_signature_packet_is_read_in_process() {
        let sig: [u8; 119] = crate::hex::decode(GPG_SIGNATURE).expect("the fixture is hex");
        assert!(only_packet(&sig).is_ok());
        // Another packet after it, good or not, or a stray byte: gpg's to judge.
        let mut spoiled = sig;
        spoiled[118] ^= 0xff;
        for more in [&sig[..], &spoiled[..], &[0][..], &[0x88][..]] {
            let doubled = [&sig[..], more].concat();
            assert!(only_packet(&doubled).is_err(), "{} more bytes", more.len());
        }
        for cut in 0..sig.len() {
            assert!(only_packet(&sig[..cut]).is_err(), "cut at {cut}");
        }
    }
}
