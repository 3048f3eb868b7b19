//! The running SHA-256 of the output file, so that the final check against the sync database
//! does not have to read the finished file back.
//!
//! Reading a 200 MB package back after it arrived costs as much as a second download from a
//! fast peer; hashing each chunk as it is written costs only the hashing. The one rule this
//! module keeps is that a digest it hands out describes exactly the first `len` bytes of the
//! file — never a guess: [`crate::client::output::Output`] tells it about every change to the
//! file (start over, append, cut back, replace), and anything it cannot follow (a cut to the
//! middle, a copy, a failed write) makes the hash unknown rather than wrong. An unknown hash is
//! rebuilt by reading the file's prefix back once, when a download resumes on it; until then the
//! caller falls back to reading the whole file, as before.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The hash of the output's first `len` bytes, or unknown.
#[derive(Debug, Clone, Default)]
pub struct RunningHash {
    state: Option<(Sha256, u64)>,
}

impl RunningHash {
    /// Nothing known about the file's bytes.
    pub fn unknown() -> RunningHash {
        RunningHash { state: None }
    }

    /// The file is now empty.
    pub fn restart(&mut self) {
        self.state = Some((Sha256::new(), 0));
    }

    /// The file changed in a way this hash does not follow.
    pub fn forget(&mut self) {
        self.state = None;
    }

    /// `bytes` were appended to the file.
    pub fn update(&mut self, bytes: &[u8]) {
        if let Some((hasher, len)) = &mut self.state {
            hasher.update(bytes);
            *len += bytes.len() as u64;
        }
    }

    /// Makes the hash describe the first `len` bytes of `path`, reading them back unless it
    /// already does. A failed or short read leaves the hash unknown (the caller can still
    /// verify by reading the whole file later), so it is not an error.
    pub fn catch_up(&mut self, path: &Path, len: u64) {
        if self.covers() == Some(len) {
            return;
        }
        self.state = hash_prefix(path, len).ok().flatten().map(|h| (h, len));
    }

    /// How many bytes the hash describes, when known.
    pub fn covers(&self) -> Option<u64> {
        self.state.as_ref().map(|(_, len)| *len)
    }

    /// The SHA-256 of the bytes described, when known.
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.state
            .as_ref()
            .map(|(hasher, _)| hasher.clone().finalize().into())
    }
}

/// The hash of the first `len` bytes of `path`; None when the file is shorter.
fn hash_prefix(path: &Path, len: u64) -> io::Result<Option<Sha256>> {
    let mut file = File::open(path)?.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((read == len).then_some(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn follows_appends_and_forgets_what_it_cannot_follow() {
        let mut h = RunningHash::unknown();
        h.update(b"lost");
        assert_eq!(h.digest(), None, "appends to an unknown hash stay unknown");
        h.restart();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.covers(), Some(11));
        assert_eq!(h.digest(), Some(sha(b"hello world")));
        h.forget();
        assert_eq!((h.covers(), h.digest()), (None, None));
    }

    #[test]
    fn catching_up_reads_exactly_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut h = RunningHash::unknown();
        h.catch_up(&path, 4);
        assert_eq!((h.covers(), h.digest()), (Some(4), Some(sha(b"0123"))));
        h.update(b"x");
        assert_eq!(h.digest(), Some(sha(b"0123x")));
        // Already covering the length: nothing is read (the file no longer matters).
        std::fs::write(&path, b"").unwrap();
        h.catch_up(&path, 5);
        assert_eq!(h.digest(), Some(sha(b"0123x")));
        // A file shorter than claimed, or missing: unknown, not wrong.
        h.catch_up(&path, 3);
        assert_eq!(h.digest(), None);
        h.catch_up(&dir.path().join("missing"), 0);
        assert_eq!(h.digest(), None);
    }
}
