//! The output file, `%o`: the only file pacserve-fetch ever writes.
//!
//! pacman renames `%o` to its final name when we exit 0, and leaves it in place when we fail,
//! so the file must always hold a prefix of the real file: bytes are only ever appended, a
//! restart truncates to zero before the first new byte, and nothing is buffered in memory that
//! a signal could lose. The file is opened (or created) before the first request, so an output
//! we cannot write (pacman 7's `DownloadUser` with `DisableSandbox`) fails before any byte
//! crosses the network. (The file is first created by [`crate::client::output::lock`], which also
//! removes it again when a failed run leaves it empty.) Every change to the file is also told to
//! its running SHA-256 ([`crate::client::output::hash`]), so the final check need not read it back.

pub mod adopt;
pub mod credits;
pub mod dbcopy;
pub mod hash;
pub mod lock;
pub mod verify;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::client::error::Error;
use crate::client::output::credits::{Credit, Credits};
use crate::client::output::hash::RunningHash;

/// The output file and how many bytes of it are already written.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    /// The SHA-256 of the file's first bytes, when known (see [`Output::sha256`]).
    hash: RunningHash,
    /// Which source wrote which of the bytes.
    credits: Credits,
}

impl Output {
    /// Looks at the output path without creating anything; an existing file's length becomes the
    /// resume offset.
    pub fn inspect(path: &Path) -> Result<Output, Error> {
        let len = match fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                return Err(Error::BadOutput {
                    path: path.to_owned(),
                    reason: "exists and is not a regular file",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => return Err(write_error(path, "inspect", source)),
        };
        Ok(Output {
            path: path.to_owned(),
            file: None,
            len,
            hash: RunningHash::default(),
            credits: Credits::default(),
        })
    }

    /// [`Output::inspect`], then opens the file for writing, creating it when missing.
    pub fn open(path: &Path) -> Result<Output, Error> {
        let mut out = Output::inspect(path)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| write_error(path, "create", e))?;
        out.file = Some(file);
        Ok(out)
    }

    /// Keeps the SHA-256 of the output as it is written, for [`Output::sha256`]; without this
    /// nothing is hashed (the file is read back if it must be checked).
    pub fn hash_as_written(&mut self) {
        self.hash = RunningHash::wanted();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes already in the output.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes written from now on come from `credit` ([`credits`]).
    pub fn credit(&mut self, credit: Credit) {
        self.credits.set(credit);
    }

    /// The peer at `ip` sent a file that failed verification.
    pub fn blame(&mut self, ip: std::net::IpAddr) {
        self.credits.blame(ip);
    }

    /// Who wrote what, taken: for the run's report.
    pub fn take_credits(&mut self) -> Credits {
        std::mem::take(&mut self.credits)
    }

    /// Opens the output for appending at `offset`, which must be either 0 (start over: the file
    /// is truncated) or the current length (resume). On a resume the running hash catches up on
    /// the bytes already there, reading them back unless it already follows them.
    pub fn begin_at(&mut self, offset: u64) -> Result<(), Error> {
        debug_assert!(offset == 0 || offset == self.len);
        let mut file = match self.file.take() {
            Some(file) => file,
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(|e| write_error(&self.path, "create", e))?,
        };
        if offset == 0 {
            self.hash.forget();
            file.set_len(0)
                .map_err(|e| write_error(&self.path, "truncate", e))?;
            self.hash.restart();
            self.credits.cut(0);
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| write_error(&self.path, "seek in", e))?;
        self.len = offset;
        self.file = Some(file);
        self.hash.catch_up(&self.path, offset);
        Ok(())
    }

    /// Appends bytes; [`Output::begin_at`] must have been called.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let file = self.file.as_mut().ok_or_else(|| Error::BadOutput {
            path: self.path.clone(),
            reason: "written before it was opened",
        })?;
        if let Err(e) = file.write_all(bytes) {
            // Some of the bytes may be in the file now: the hash cannot say which.
            self.hash.forget();
            return Err(write_error(&self.path, "write", e));
        }
        self.hash.update(bytes);
        self.credits.wrote(self.len, bytes.len() as u64);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the output back to its first `len` bytes (discarding what a bad source wrote), ready
    /// to append after them. The running hash cannot be cut back: unless nothing was cut, it
    /// is rebuilt from the file when a download next resumes ([`Output::begin_at`]).
    pub fn truncate(&mut self, len: u64) -> Result<(), Error> {
        let len = len.min(self.len);
        if len != self.len || self.hash.covers() != Some(len) {
            self.hash.forget();
        }
        let mut file = self.take_or_open()?;
        file.set_len(len)
            .map_err(|e| write_error(&self.path, "truncate", e))?;
        file.seek(SeekFrom::Start(len))
            .map_err(|e| write_error(&self.path, "seek in", e))?;
        self.len = len;
        self.file = Some(file);
        self.credits.cut(len);
        if len == 0 {
            self.hash.restart();
        }
        Ok(())
    }

    /// Replaces the output with a copy of `current` (a database the server says is unchanged),
    /// keeping its modification time so the next If-Modified-Since is right too.
    pub fn copy_from(&mut self, current: &Path) -> Result<(), Error> {
        self.file = None;
        self.hash.forget();
        self.credits.cut(0);
        let mtime = fs::metadata(current).and_then(|m| m.modified()).ok();
        fs::copy(current, &self.path).map_err(|source| Error::ReadSource {
            path: current.to_owned(),
            source,
        })?;
        self.len = fs::metadata(&self.path)
            .map_err(|e| write_error(&self.path, "inspect", e))?
            .len();
        self.finish(mtime)
    }

    /// The SHA-256 of the whole output, without reading it, when the running hash describes
    /// every byte of it; None otherwise (then read the file). The file's length on disk is
    /// checked too, so a file changed behind our back is never vouched for by a stale hash.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        if self.hash.covers() != Some(self.len) {
            return None;
        }
        let on_disk = fs::metadata(&self.path).ok()?.len();
        (on_disk == self.len).then(|| self.hash.digest()).flatten()
    }

    /// Closes the output, setting its modification time (from Last-Modified) when known.
    pub fn finish(&mut self, mtime: Option<SystemTime>) -> Result<(), Error> {
        let file = self.take_or_open()?;
        if let Some(mtime) = mtime {
            file.set_modified(mtime)
                .map_err(|e| write_error(&self.path, "set the time of", e))?;
        }
        Ok(())
    }
}

impl Output {
    /// The open file, or the existing output opened for writing.
    fn take_or_open(&mut self) -> Result<File, Error> {
        match self.file.take() {
            Some(file) => Ok(file),
            None => OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| write_error(&self.path, "open", e)),
        }
    }
}

fn write_error(path: &Path, action: &'static str, source: io::Error) -> Error {
    Error::WriteOutput {
        path: path.to_owned(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("psf-output-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn resume_appends_and_restart_truncates() {
        let dir = temp_dir("resume");
        let path = dir.join("a.pkg.tar.zst.part");
        fs::write(&path, b"hello ").unwrap();

        let mut out = Output::inspect(&path).unwrap();
        assert_eq!(out.len(), 6);
        out.begin_at(6).unwrap();
        out.append(b"world").unwrap();
        out.finish(None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world");

        let mut out = Output::inspect(&path).unwrap();
        out.begin_at(0).unwrap();
        out.append(b"new").unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        out.finish(Some(when)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), when);
        fs::remove_dir_all(dir).unwrap();
    }

    /// The running hash, when the output offers one, is the SHA-256 of the file's bytes.
    fn hash_is_the_files(out: &Output) -> bool {
        use sha2::{Digest, Sha256};
        let on_disk: [u8; 32] = Sha256::digest(fs::read(out.path()).unwrap()).into();
        out.sha256().is_none_or(|h| h == on_disk)
    }

    #[test]
    fn the_running_hash_follows_every_change() {
        let dir = temp_dir("hash");
        let path = dir.join("c.part");
        // A prefix an earlier run wrote: read back once on resume.
        fs::write(&path, b"earlier ").unwrap();
        let mut out = Output::open(&path).unwrap();
        out.hash_as_written();
        out.begin_at(out.len()).unwrap();
        out.append(b"run, then a bad peer").unwrap();
        assert!(out.sha256().is_some() && hash_is_the_files(&out));
        // Cut back to the middle (a bad peer's bytes): unknown until the next resume.
        out.truncate(12).unwrap();
        assert!(hash_is_the_files(&out));
        out.begin_at(12).unwrap();
        out.append(b" good").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"earlier run, good");
        assert!(out.sha256().is_some() && hash_is_the_files(&out));
        // Appending straight after a cut, without a resume, is never vouched for wrongly.
        out.truncate(3).unwrap();
        out.append(b"X").unwrap();
        assert!(hash_is_the_files(&out));
        // Cutting nothing keeps the hash; cutting to 0 or starting over restarts it.
        let len = out.len();
        out.begin_at(len).unwrap();
        out.truncate(len).unwrap();
        assert!(out.sha256().is_some() && hash_is_the_files(&out));
        out.truncate(0).unwrap();
        out.append(b"fresh").unwrap();
        assert!(out.sha256().is_some() && hash_is_the_files(&out));
        out.begin_at(0).unwrap();
        out.append(b"again").unwrap();
        out.finish(None).unwrap();
        assert!(out.sha256().is_some() && hash_is_the_files(&out));

        // A new Output on the same file resumes with the prefix read back.
        let mut out = Output::open(&path).unwrap();
        out.hash_as_written();
        assert_eq!(out.sha256(), None, "nothing hashed before the resume");
        out.begin_at(5).unwrap();
        out.append(b"!").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again!");
        assert!(out.sha256().is_some() && hash_is_the_files(&out));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_hash_is_offered_for_bytes_it_did_not_see() {
        let dir = temp_dir("nohash");
        let (path, other) = (dir.join("d.part"), dir.join("current.db"));
        fs::write(&other, b"a copy").unwrap();
        let mut out = Output::open(&path).unwrap();
        out.hash_as_written();
        out.begin_at(0).unwrap();
        out.append(b"abc").unwrap();
        assert!(out.sha256().is_some());
        out.copy_from(&other).unwrap();
        assert_eq!(out.sha256(), None, "a copy is read back, not assumed");
        // The file changed behind the Output's back: its length no longer matches.
        let mut out = Output::open(&path).unwrap();
        out.hash_as_written();
        out.begin_at(0).unwrap();
        out.append(b"abc").unwrap();
        assert!(out.sha256().is_some());
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"d")
            .unwrap();
        assert_eq!(out.sha256(), None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_is_created_until_begin() {
        let dir = temp_dir("lazy");
        let path = dir.join("b.part");
        let out = Output::inspect(&path).unwrap();
        assert!(out.is_empty());
        drop(out);
        assert!(!path.exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_is_not_an_output() {
        let dir = temp_dir("dir");
        let err = Output::inspect(&dir).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
