//! pacserve-fetch's scratch directory: `<tmp>/pacserve-fetch-<uid>/`.
//!
//! pacman 7 runs us as its unprivileged download user, which can write only its private download
//! directory and the temporary directory, so small caches (the LAN memory, sync-database indexes)
//! live here, per user. The directory is created 0700 and used only if it is a real directory
//! owned by us and writable by nobody else, so another local user cannot plant files in it.
//! Nothing kept here is needed for correctness: without it, work is just redone.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The directory, created if needed; None when it cannot be trusted or made.
pub fn dir() -> Option<PathBuf> {
    let uid = fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("pacserve-fetch-{uid}"));
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0).then_some(dir)
}

/// Replaces `path` atomically (write a sibling, rename), so concurrent runs never read half a
/// file. Best effort.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes));
    if written.is_err() || fs::rename(&tmp, path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}
