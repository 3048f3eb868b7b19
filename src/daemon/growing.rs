//! Files the daemon is downloading right now, shared with the LAN while they arrive.
//!
//! When the agent fetches a package for a local `pacserve-fetch` (or ahead of it), the bytes also
//! go into a file under `<state>/growing`, registered here by name with the size and SHA-256
//! the sync database gives. The responder answers queries for it with GROWING ("N of S bytes")
//! and the HTTP server streams it to followers: the full length is announced, bytes are sent as
//! they land, and the last byte is held back until the whole file has been verified here, so no
//! follower ever receives a complete wrong file from us. A failed or silent download ends the
//! followers' bodies early; they go on to their next source at their own offset.
//!
//! Bounded: at most [`MAX_ENTRIES`] files at once; a finished file lingers [`LINGER`] (long
//! enough for followers that just asked, while pacman moves the leader's copy into its cache)
//! and is then deleted. The directory is emptied at start, so nothing a crash left is served.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::daemon::stats::Stats;
use crate::{info, warn};

/// Files being shared at once.
pub const MAX_ENTRIES: usize = 64;
/// How long a finished file stays shareable from here.
pub const LINGER: Duration = Duration::from_secs(30);
/// A follower waiting this long for the next byte gives up (the leader stalled).
pub const FOLLOW_STALL: Duration = Duration::from_secs(10);

/// Where a shared download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Settling with the LAN who goes to the mirror ([`crate::daemon::claims`]).
    Claiming,
    Running,
    Verified,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub bytes: u64,
    pub phase: Phase,
}

pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    sha256: [u8; 32],
    state: watch::Sender<Landed>,
    ended: Mutex<Option<Instant>>,
    /// Fetched from the mirror, not followed from another daemon ([`Writer::led`]).
    led: AtomicBool,
}

impl Entry {
    pub fn landed(&self) -> Landed {
        *self.state.borrow()
    }

    fn set(&self, change: impl FnOnce(&mut Landed)) {
        self.state.send_modify(change);
    }
}

/// The registry of files being shared.
pub struct Growing {
    dir: Option<PathBuf>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Growing {
    /// `state_dir/growing`, emptied; sharing is off when it cannot be made.
    pub fn new(state_dir: &Path) -> Growing {
        let dir = state_dir.join("growing");
        let _ = fs::remove_dir_all(&dir);
        let dir = match fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                warn!(
                    "sharing downloads in progress off: cannot make {}: {e}",
                    dir.display()
                );
                None
            }
        };
        Growing {
            dir,
            entries: Mutex::default(),
        }
    }

    /// Starts sharing `name`; None when it is already being shared (or sharing is off or full).
    pub fn begin(&self, name: &str, size: u64, sha256: [u8; 32]) -> Option<Writer> {
        let dir = self.dir.as_ref()?;
        let mut entries = self.lock();
        expire(&mut entries);
        if entries.contains_key(name) || entries.len() >= MAX_ENTRIES || size == 0 {
            return None;
        }
        let path = dir.join(format!("{name}.growing"));
        let file = File::create(&path).ok()?;
        let (state, _) = watch::channel(Landed {
            bytes: 0,
            phase: Phase::Claiming,
        });
        let entry = Arc::new(Entry {
            name: name.to_owned(),
            path,
            size,
            sha256,
            state,
            ended: Mutex::new(None),
            led: AtomicBool::new(false),
        });
        entries.insert(name.to_owned(), entry.clone());
        Some(Writer {
            entry,
            file,
            hash: Sha256::new(),
            written: 0,
        })
    }

    /// Downloads this daemon fetches from the mirror right now for the LAN to follow (the claims
    /// it won and has not finished).
    pub fn leading(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| e.led.load(Ordering::Relaxed))
            .filter(|e| matches!(e.landed().phase, Phase::Claiming | Phase::Running))
            .count()
    }

    /// The entry for `name` unless its download failed.
    pub fn find(&self, name: &str) -> Option<Arc<Entry>> {
        let mut entries = self.lock();
        expire(&mut entries);
        entries
            .get(name)
            .filter(|e| e.landed().phase != Phase::Failed)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Drops entries that ended more than [`LINGER`] ago, and failed ones at once. A follower still
/// reading holds the open file, so deleting its name is safe.
fn expire(entries: &mut HashMap<String, Arc<Entry>>) {
    entries.retain(|_, e| {
        let ended = e.ended.lock().ok().and_then(|t| *t);
        let keep = match (e.landed().phase, ended) {
            (Phase::Failed, _) => false,
            (_, Some(at)) => at.elapsed() < LINGER,
            (_, None) => true,
        };
        if !keep {
            let _ = fs::remove_file(&e.path);
        }
        keep
    });
}

/// The one writer of a shared file. Dropped unfinished, the download counts as failed.
pub struct Writer {
    entry: Arc<Entry>,
    file: File,
    hash: Sha256,
    written: u64,
}

impl Writer {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The claim is settled: this daemon downloads the file (from a mirror or a peer).
    pub fn commit(&self) {
        self.entry.set(|l| l.phase = Phase::Running);
    }

    /// This daemon won the claim: it fetches the file from the mirror ([`Growing::leading`]).
    pub fn led(&self) {
        self.entry.led.store(true, Ordering::Relaxed);
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written + bytes.len() as u64 > self.entry.size {
            return Err(io::Error::other("longer than the file"));
        }
        self.file.write_all(bytes)?;
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        let written = self.written;
        self.entry.set(|l| l.bytes = written);
        Ok(())
    }

    /// Ends the download: verified when the size and SHA-256 match, else failed.
    pub fn finish(mut self) -> bool {
        let hash = std::mem::take(&mut self.hash);
        let ok = self.written == self.entry.size && hash.finalize()[..] == self.entry.sha256;
        self.end(if ok { Phase::Verified } else { Phase::Failed });
        ok
    }

    fn end(&self, phase: Phase) {
        if let Ok(mut ended) = self.entry.ended.lock() {
            ended.get_or_insert_with(Instant::now);
        }
        self.entry.set(|l| l.phase = phase);
        if phase == Phase::Failed {
            let _ = fs::remove_file(&self.entry.path);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if matches!(self.entry.landed().phase, Phase::Claiming | Phase::Running) {
            self.end(Phase::Failed);
        }
    }
}

/// A follower's view of a shared file from `pos`: chunks as they land, the last byte only once
/// verified, an error when the download fails or stalls for [`FOLLOW_STALL`].
pub struct Follow {
    entry: Arc<Entry>,
    file: Arc<File>,
    pos: u64,
    changes: watch::Receiver<Landed>,
}

impl Follow {
    pub fn open(entry: Arc<Entry>, pos: u64) -> io::Result<Follow> {
        let file = Arc::new(File::open(&entry.path)?);
        let changes = entry.state.subscribe();
        Ok(Follow {
            entry,
            file,
            pos,
            changes,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// `n` more bytes were sent.
    pub fn advance(&mut self, n: u64) {
        self.pos += n;
    }

    /// How far the follower may read now, waiting for bytes to land: Some(limit) past `pos`,
    /// or None at the end of the file.
    pub async fn landed(&mut self) -> io::Result<Option<u64>> {
        let size = self.entry.size;
        loop {
            if self.pos >= size {
                return Ok(None);
            }
            let landed = *self.changes.borrow_and_update();
            let limit = match landed.phase {
                Phase::Verified => size,
                Phase::Failed => return Err(io::Error::other("the download failed")),
                Phase::Claiming | Phase::Running => landed.bytes.min(size - 1),
            };
            if self.pos < limit {
                return Ok(Some(limit));
            }
            match tokio::time::timeout(FOLLOW_STALL, self.changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(io::Error::other("the download went away")),
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

/// Logs a follower of `name` (the log readers' and `contrib/try-lan.sh`'s format) and counts
/// it as a file served.
pub fn count_follower(stats: &Stats, method: &str, name: &str, client: IpAddr) {
    info!("{method} /pkg/{name} from {client}: following the download in progress");
    Stats::add(&stats.files_served, 1);
    Stats::add(&stats.served_growing, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// Reads a follower to its end, as the sender does: the bytes, and the error that ended it
    /// early if one did.
    fn drain(follow: &mut Follow) -> (Vec<u8>, Option<io::Error>) {
        use std::os::unix::fs::FileExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut got = Vec::new();
            loop {
                let limit = match follow.landed().await {
                    Ok(Some(limit)) => limit,
                    Ok(None) => return (got, None),
                    Err(e) => return (got, Some(e)),
                };
                let mut buf = vec![0u8; (limit - follow.pos()) as usize];
                let n = follow.file().read_at(&mut buf, follow.pos()).unwrap();
                got.extend_from_slice(&buf[..n]);
                follow.advance(n as u64);
            }
        })
    }

    #[test]
    fn followers_get_the_last_byte_only_of_a_verified_file() {
        let dir = tempfile::tempdir().unwrap();
        let growing = Growing::new(dir.path());
        let body = b"0123456789".repeat(1000);
        let name = "g-1-1-any.pkg.tar.zst";
        let mut writer = growing.begin(name, body.len() as u64, sha(&body)).unwrap();
        assert!(
            growing.begin(name, 1, [0; 32]).is_none(),
            "one writer per name"
        );
        assert_eq!(growing.find(name).unwrap().landed().phase, Phase::Claiming);
        writer.commit();
        writer.write(&body).unwrap();
        // Everything landed but not yet verified: a follower from the middle waits at the last
        // byte; verified, it gets the rest.
        let entry = growing.find(name).unwrap();
        let mut follow = Follow::open(entry, 5000).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                assert!(writer.finish());
            });
            let (got, error) = drain(&mut follow);
            assert!(error.is_none(), "{error:?}");
            assert_eq!(got, body[5000..]);
        });
    }

    #[test]
    fn a_wrong_file_ends_its_followers_one_byte_short_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let growing = Growing::new(dir.path());
        let body = vec![7u8; 3000];
        let name = "w-1-1-any.pkg.tar.zst";
        let mut writer = growing.begin(name, 3000, sha(b"something else")).unwrap();
        writer.commit();
        writer.write(&body).unwrap();
        assert!(writer.write(b"x").is_err(), "past the size");
        let mut follow = Follow::open(growing.find(name).unwrap(), 0).unwrap();
        assert!(!writer.finish());
        let (got, error) = drain(&mut follow);
        assert!(error.is_some());
        assert!(got.len() < body.len());
        assert!(growing.find(name).is_none());
        // A writer dropped unfinished fails too, and the name is free again.
        let writer = growing.begin(name, 3000, sha(&body)).unwrap();
        drop(writer);
        assert!(growing.find(name).is_none());
    }
}
