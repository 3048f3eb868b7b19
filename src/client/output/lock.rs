//! One writer per output: an exclusive `flock` on `%o` for the whole run.
//!
//! pacman never runs two downloads of one file, but a user can (by hand, or two pacman roots on
//! one cache). Two writers on one file interleave: one truncates and starts over while the other
//! keeps writing at its own offset, and the result is a file with zero-filled holes that the
//! second run may report as complete. So the output is opened and locked before anything else
//! happens; a second run waits up to [`LOCK_WAIT`] for the first to finish, then fails naming
//! the file. `flock` (not `fcntl`) because its lock belongs to this open file description alone:
//! [`crate::client::output`] opening and closing its own handle does not release it.
//!
//! Locking needs the file to exist. When this run had to create it and fails before writing a
//! byte, [`OutputLock::release`] removes it again, so a failed run leaves no empty file behind.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::error::Error;

/// How long a second run waits for the first to finish with the same output.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often it looks.
const POLL: Duration = Duration::from_millis(50);

/// The held lock; dropping it (or [`OutputLock::release`]) unlocks.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
    created: bool,
}

impl OutputLock {
    /// Opens `path` (creating it if needed) and locks it, waiting up to [`LOCK_WAIT`].
    pub fn acquire(path: &Path) -> Result<OutputLock, Error> {
        let started = Instant::now();
        loop {
            let (file, created) = match open(path) {
                Ok(opened) => opened,
                // Creating failed for want of a directory: no other run can be holding a file
                // there, so say so now rather than wait for one.
                Err(Open::NoDirectory(dir)) => {
                    return Err(Error::NoDirectory {
                        path: path.to_owned(),
                        dir,
                    });
                }
                // Removed between our two opens by a run that just failed: look again.
                Err(Open::Vanished) => {
                    retry_or_give_up(path, started)?;
                    continue;
                }
                Err(Open::Failed(source)) => {
                    return Err(Error::WriteOutput {
                        path: path.to_owned(),
                        action: "create",
                        source,
                    });
                }
            };
            match file.try_lock() {
                // The holder may have removed the file while we waited: lock what the path
                // names now, not an orphan.
                Ok(()) if names(path, &file) => {
                    return Ok(OutputLock {
                        file,
                        path: path.to_owned(),
                        created,
                    });
                }
                Ok(()) | Err(TryLockError::WouldBlock) => retry_or_give_up(path, started)?,
                Err(TryLockError::Error(source)) => {
                    return Err(Error::WriteOutput {
                        path: path.to_owned(),
                        action: "lock",
                        source,
                    });
                }
            }
        }
    }

    /// Unlocks; after a failed run, removes the output if this run created it and it is empty.
    /// Only while the path still names that file: a partial moved onto it meanwhile (pacman 7's
    /// stranded downloads, [`crate::client::output::adopt`]) is kept for the next run to resume.
    pub fn release(self, succeeded: bool) {
        if !succeeded
            && self.created
            && self.file.metadata().is_ok_and(|m| m.len() == 0)
            && names(&self.path, &self.file)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Why [`open`] failed.
enum Open {
    /// The directory the output goes in does not exist (named).
    NoDirectory(PathBuf),
    /// The file existed when creating it failed, and was gone when opened a moment later.
    Vanished,
    Failed(io::Error),
}

/// Opens the output for writing, creating it if missing; says whether it was created.
///
/// `NotFound` means two different things at the two steps: from the exclusive create, that a
/// directory on the way is missing (an existing file is `AlreadyExists`); from the plain open
/// after it, that another run removed the file in between, which is worth another look.
fn open(path: &Path) -> Result<(File, bool), Open> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match OpenOptions::new().write(true).open(path) {
                Ok(file) => Ok((file, false)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Open::Vanished),
                Err(e) => Err(Open::Failed(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            Err(Open::NoDirectory(dir))
        }
        Err(e) => Err(Open::Failed(e)),
    }
}

fn retry_or_give_up(path: &Path, started: Instant) -> Result<(), Error> {
    if started.elapsed() >= LOCK_WAIT {
        return Err(Error::Locked {
            path: path.to_owned(),
            waited: LOCK_WAIT,
        });
    }
    std::thread::sleep(POLL);
    Ok(())
}

/// Whether `path` still names the file `file` has open.
fn names(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_waits_then_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let first = OutputLock::acquire(&path).unwrap();
        let started = Instant::now();
        let err = OutputLock::acquire(&path).unwrap_err();
        assert!(started.elapsed() >= LOCK_WAIT);
        assert!(err.to_string().contains("x.part"), "{err}");
        first.release(false);
        assert!(!path.exists(), "created, empty, failed: removed");
        let again = OutputLock::acquire(&path).unwrap();
        again.release(true);
        assert!(path.exists(), "kept after success");
    }

    #[test]
    fn a_missing_directory_fails_at_once_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let started = Instant::now();
        let err = OutputLock::acquire(&missing.join("x.part")).unwrap_err();
        assert!(
            started.elapsed() < LOCK_WAIT / 5,
            "waited {:?}",
            started.elapsed()
        );
        let said = err.to_string();
        assert!(
            said.contains(&format!("directory {} does not exist", missing.display())),
            "{said}"
        );
        assert!(!said.contains("another pacserve-fetch"), "{said}");
    }

    #[test]
    fn a_partial_moved_onto_the_output_survives_a_failed_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let lock = OutputLock::acquire(&path).unwrap();
        let stranded = dir.path().join("stranded");
        fs::write(&stranded, b"resume me").unwrap();
        fs::rename(&stranded, &path).unwrap();
        lock.release(false);
        assert_eq!(fs::read(&path).unwrap(), b"resume me");
    }
}
