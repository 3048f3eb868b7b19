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
/// file. Best effort. The sibling is the writer's own, per process and per call: threads of one
/// process (pacserved's `/cache/` answers looking up one database at once) must not write into
/// each other's sibling and rename it half written.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes));
    if written.is_err() || fs::rename(&tmp, path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_replacing_one_file_never_leave_it_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 1 << 20]).collect();
        std::thread::scope(|scope| {
            for content in &contents {
                scope.spawn(|| {
                    for _ in 0..20 {
                        write_atomically(&path, content);
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..400 {
                    if let Ok(read) = fs::read(&path) {
                        assert!(contents.contains(&read), "a half-written file was read");
                    }
                }
            });
        });
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no sibling is left behind");
    }
}
