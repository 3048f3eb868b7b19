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
//!
//! The hashing runs on a thread of its own, fed copies of the appended chunks through a short
//! queue: on a fast LAN the receiving thread is busy with the socket and the file, and hashing
//! inline would slow the download by the hashing time (a fifth of it at 800 MB/s). It is kept
//! only when asked for ([`RunningHash::wanted`]): a file nothing will check is not hashed.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use sha2::{Digest, Sha256};

use crate::client::output::verify;

/// Chunks waiting for the hashing thread at most: enough to ride out a scheduling hiccup, few
/// enough (with 512 KiB chunks) to keep the client's memory small. A full queue makes the
/// writer wait, so hashing can never fall behind without bound.
const QUEUE: usize = 4;

/// The hash of the output's first `len` bytes, or unknown; or not kept at all (the default),
/// for files nothing will check.
#[derive(Debug, Default)]
pub struct RunningHash {
    wanted: bool,
    state: Option<Hashing>,
}

/// A hashing thread fed the appended bytes in order, and how many bytes it was given.
#[derive(Debug)]
struct Hashing {
    jobs: SyncSender<Job>,
    /// Buffers the thread is done with, reused so that a download allocates only a few.
    spare: Receiver<Vec<u8>>,
    len: u64,
}

#[derive(Debug)]
enum Job {
    Bytes(Vec<u8>),
    /// Reply with the digest of every byte received so far.
    Digest(SyncSender<[u8; 32]>),
}

impl RunningHash {
    /// A hash that is kept: unknown until the file starts over or is caught up on.
    pub fn wanted() -> RunningHash {
        RunningHash {
            wanted: true,
            state: None,
        }
    }

    /// The file is now empty.
    pub fn restart(&mut self) {
        self.state = self.spawn(Sha256::new(), 0);
    }

    /// The file changed in a way this hash does not follow.
    pub fn forget(&mut self) {
        // Dropping the sender ends the thread once it has drained its queue.
        self.state = None;
    }

    /// `bytes` were appended to the file.
    pub fn update(&mut self, bytes: &[u8]) {
        let Some(hashing) = &mut self.state else {
            return;
        };
        let mut buf = hashing.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        match hashing.jobs.send(Job::Bytes(buf)) {
            Ok(()) => hashing.len += bytes.len() as u64,
            // The thread is gone: what it saw is no longer the whole file.
            Err(_) => self.state = None,
        }
    }

    /// Makes the hash describe the first `len` bytes of `path`, reading them back unless it
    /// already does. A failed or short read leaves the hash unknown (the caller can still
    /// verify by reading the whole file later), so it is not an error.
    pub fn catch_up(&mut self, path: &Path, len: u64) {
        if !self.wanted || self.covers() == Some(len) {
            return;
        }
        self.state = match hash_prefix(path, len) {
            Ok(Some(hasher)) => self.spawn(hasher, len),
            _ => None,
        };
    }

    /// How many bytes the hash describes, when known.
    pub fn covers(&self) -> Option<u64> {
        self.state.as_ref().map(|h| h.len)
    }

    /// The SHA-256 of the bytes described, when known: waits for the thread to hash every
    /// byte it was given.
    pub fn digest(&self) -> Option<[u8; 32]> {
        let hashing = self.state.as_ref()?;
        let (reply, answer) = mpsc::sync_channel(1);
        hashing.jobs.send(Job::Digest(reply)).ok()?;
        answer.recv().ok()
    }

    /// A thread that continues `hasher`, which has seen `len` bytes; None when not wanted or
    /// no thread can be started (then the file is read back at the end, as without this).
    fn spawn(&self, mut hasher: Sha256, len: u64) -> Option<Hashing> {
        if !self.wanted {
            return None;
        }
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let (done, spare) = mpsc::channel();
        thread::Builder::new()
            .name("sha256".to_owned())
            .spawn(move || {
                for job in queue {
                    match job {
                        Job::Bytes(buf) => {
                            hasher.update(&buf);
                            let _ = done.send(buf);
                        }
                        Job::Digest(reply) => {
                            let _ = reply.send(hasher.clone().finalize().into());
                        }
                    }
                }
            })
            .ok()?;
        Some(Hashing { jobs, spare, len })
    }
}

/// The hash of the first `len` bytes of `path`; None when the file is shorter.
fn hash_prefix(path: &Path, len: u64) -> io::Result<Option<Sha256>> {
    let (hasher, read) = verify::hash_all(File::open(path)?.take(len))?;
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
        let mut h = RunningHash::default();
        h.restart();
        h.update(b"unwanted");
        assert_eq!(h.digest(), None, "nothing is hashed unless wanted");
        let mut h = RunningHash::wanted();
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
    fn many_chunks_are_hashed_in_order_and_digests_can_be_taken_midway() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = RunningHash::wanted();
        h.restart();
        // Uneven chunks, more of them than the queue holds.
        let mut at = 0;
        for (i, size) in [1, 100_000, 524_288, 3, 700_000].iter().cycle().enumerate() {
            let end = (at + size).min(data.len());
            h.update(&data[at..end]);
            at = end;
            if i == 7 {
                assert_eq!(h.digest(), Some(sha(&data[..at])));
            }
            if at == data.len() {
                break;
            }
        }
        assert_eq!(h.covers(), Some(data.len() as u64));
        assert_eq!(h.digest(), Some(sha(&data)));
    }

    #[test]
    fn catching_up_reads_exactly_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut h = RunningHash::wanted();
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
