//! Whether a finished output is the file the sync databases describe.
//!
//! Anyone on the LAN can run a peer, so bytes are trusted only once they match the local sync
//! database: a package's `%CSIZE%` and `%SHA256SUM%` (a signature is checked by what pacman
//! would accept, [`crate::client::signature`]). pacman would
//! eventually notice a bad package too, but only after it has failed the whole transaction and
//! left the user to delete the file; checking here lets us throw the bad bytes away and take the
//! file from the next source instead.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// What a correct file looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha256: Option<[u8; 32]>,
}

impl Expected {
    /// Nothing to check against.
    pub fn is_empty(&self) -> bool {
        self.size.is_none() && self.sha256.is_none()
    }
}

/// Checks `path` against `expected` by reading it: Ok(None) when it matches, Ok(Some(reason))
/// when not.
pub fn mismatch(path: &Path, expected: &Expected) -> io::Result<Option<String>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if let Some(why) = size_mismatch(len, expected) {
        return Ok(Some(why));
    }
    if expected.sha256.is_none() {
        return Ok(None);
    }
    let (hasher, _) = hash_all(file)?;
    Ok(digest_mismatch(len, hasher.finalize().into(), expected))
}

/// The SHA-256 of everything `reader` yields, and how many bytes that was.
pub fn hash_all(mut reader: impl Read) -> io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok((hasher, read)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Checks a file of `len` bytes whose SHA-256 is already known (hashed as it was written)
/// against `expected`, without reading it: the same verdicts as [`mismatch`].
pub fn digest_mismatch(len: u64, sha256: [u8; 32], expected: &Expected) -> Option<String> {
    if let Some(why) = size_mismatch(len, expected) {
        return Some(why);
    }
    let want = expected.sha256?;
    (sha256 != want).then(|| "SHA-256 differs from the sync database".to_owned())
}

fn size_mismatch(len: u64, expected: &Expected) -> Option<String> {
    let size = expected.size.filter(|&s| s != len)?;
    Some(format!("{len} bytes where the sync database says {size}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_then_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"test").unwrap();
        let sha: [u8; 32] = Sha256::digest(b"test").into();
        let good = Expected {
            size: Some(4),
            sha256: Some(sha),
        };
        assert_eq!(mismatch(&path, &good).unwrap(), None);
        let short = Expected {
            size: Some(5),
            ..good
        };
        assert!(mismatch(&path, &short).unwrap().unwrap().contains("says 5"));
        std::fs::write(&path, b"tesT").unwrap();
        assert!(mismatch(&path, &good).unwrap().unwrap().contains("SHA-256"));

        // The same verdicts from a digest computed elsewhere.
        assert_eq!(digest_mismatch(4, sha, &good), None);
        assert!(digest_mismatch(4, sha, &short).unwrap().contains("says 5"));
        let other: [u8; 32] = Sha256::digest(b"tesT").into();
        assert!(
            digest_mismatch(4, other, &good)
                .unwrap()
                .contains("SHA-256")
        );
        let size_only = Expected {
            sha256: None,
            ..good
        };
        assert_eq!(digest_mismatch(4, other, &size_only), None);
    }
}
