//! A prefetched file while it arrives and after: its shared state ([`Staging`]) and the reader
//! that hands it to pacman's request ([`StagedReader`]).
//!
//! The reader is where a staged file's promises are kept: it never runs ahead of what has
//! landed, holds back the last byte until the whole file is verified, ends with an error when
//! the fetch fails or stays silent for [`STALL_LIMIT`], and never mixes two attempts (a failed
//! peer, then the mirror starting the file over) in one answer. Prefetching itself, which
//! files and when, is [`crate::daemon::agent::prefetch`].

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// A fetch silent this long fails its readers (what a standalone download would allow).
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// One file being fetched or fetched.
pub struct Staging {
    pub path: PathBuf,
    /// The file's size: the planned one for a package; for a signature, whose size no database
    /// gives, the size it arrived with (set before its verified outcome).
    pub size: AtomicU64,
    pub state: Mutex<StagingState>,
    pub changed: Condvar,
}

#[derive(Default)]
pub struct StagingState {
    pub written: u64,
    /// None while running; Some(Ok(mtime)) once complete and verified.
    pub outcome: Option<Result<Option<SystemTime>, String>>,
    /// Handed to a request: delete the file once the fetch ends.
    pub claimed: bool,
    /// Attempts begun (a failed peer, then the mirror): each starts the file over.
    pub attempt: u32,
}

impl Staging {
    pub fn new(path: PathBuf, size: u64) -> Staging {
        Staging {
            path,
            size: AtomicU64::new(size),
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn running(&self) -> bool {
        self.state.lock().is_ok_and(|state| state.outcome.is_none())
    }
}

/// A planned file handed to one request.
pub struct Staged {
    pub reader: StagedReader,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

/// Reads a staged file as it arrives. The last byte is held back until the whole file is
/// verified, so a request never receives a complete wrong file; a failed fetch or one silent
/// for the stall limit ends the read with an error, which the client sees as a cut.
pub struct StagedReader {
    file: File,
    staging: Arc<Staging>,
    pos: u64,
    /// The attempt whose bytes this reader has sent, once it has sent any.
    sent_of: Option<u32>,
}

impl StagedReader {
    pub fn new(file: File, staging: Arc<Staging>) -> StagedReader {
        StagedReader {
            file,
            staging,
            pos: 0,
            sent_of: None,
        }
    }

    pub fn skip_to(&mut self, pos: u64) {
        self.pos = pos;
    }
}

impl Read for StagedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self
            .staging
            .state
            .lock()
            .map_err(|_| io::Error::other("prefetch state poisoned"))?;
        loop {
            let size = self.staging.size();
            let limit = match &state.outcome {
                Some(Ok(_)) => size,
                Some(Err(e)) => return Err(io::Error::other(format!("prefetch failed: {e}"))),
                None => state.written.min(size.saturating_sub(1)),
            };
            if self.pos >= size {
                return Ok(0);
            }
            if self.pos < limit {
                // Bytes of one attempt only: after a restart, what was sent is not a prefix
                // of the new file. (A chunk read as a restart begins is followed by this error
                // too, as the restart cannot come after the last byte, which waits for the
                // verified outcome.)
                match self.sent_of {
                    Some(attempt) if attempt != state.attempt => {
                        return Err(io::Error::other("the prefetch started over"));
                    }
                    _ => self.sent_of = Some(state.attempt),
                }
                drop(state);
                let want = buf.len().min((limit - self.pos) as usize);
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.pos += n as u64;
                return Ok(n);
            }
            let (next, timeout) = self
                .staging
                .changed
                .wait_timeout(state, STALL_LIMIT)
                .map_err(|_| io::Error::other("prefetch state poisoned"))?;
            if timeout.timed_out() && next.outcome.is_none() && next.written <= self.pos {
                return Err(io::ErrorKind::TimedOut.into());
            }
            state = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn staging(dir: &std::path::Path, size: u64) -> Arc<Staging> {
        Arc::new(Staging::new(dir.join("s.part"), size))
    }

    /// Writes `bytes` as attempt `attempt`'s first bytes, as a fetch does.
    fn land(staging: &Staging, attempt: u32, bytes: &[u8]) {
        let mut file = File::create(&staging.path).unwrap();
        file.write_all(bytes).unwrap();
        let mut state = staging.state.lock().unwrap();
        state.attempt = attempt;
        state.written = bytes.len() as u64;
        staging.changed.notify_all();
    }

    #[test]
    fn a_reader_holds_back_the_last_byte_and_never_mixes_two_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging(dir.path(), 8);
        land(&staging, 1, b"peer");
        let mut reader = StagedReader::new(File::open(&staging.path).unwrap(), staging.clone());
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"peer");
        // The peer failed; the mirror starts the file over with other bytes.
        land(&staging, 2, b"mirror!!");
        let err = reader.read(&mut buf).unwrap_err();
        assert!(err.to_string().contains("started over"), "{err}");

        // A reader that starts after the restart gets the new attempt, the last byte only once
        // the file is verified.
        let mut fresh = StagedReader::new(File::open(&staging.path).unwrap(), staging.clone());
        assert_eq!(fresh.read(&mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"mirror!");
        staging.state.lock().unwrap().outcome = Some(Ok(None));
        assert_eq!(fresh.read(&mut buf).unwrap(), 1);
        assert_eq!(fresh.read(&mut buf).unwrap(), 0);
    }
}
