//! The copy of a database pacman already has, which decides whether the mirror may answer 304.
//!
//! pacman sends no If-Modified-Since through an XferCommand, so we send it, dated by the current
//! copy's mtime, and a 304 turns that copy into `%o`. The copy sits next to `%o` (pacman 6), or
//! one directory up when pacman 7 downloads into a temporary `download-XXXXXX` directory. Two
//! things forbid using it: a forced refresh (`pacman -Syy`, which under pacman 7 deletes only files
//! inside its temporary directory, so the old copy is still there), and a copy that does not read
//! as a complete archive — a truncated database with its mtime kept would otherwise be answered
//! 304 forever and pacman could never repair it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::pacman::name::FileKind;
use crate::pacman::syncdb;

/// The current copy of database `name` and its mtime, when a 304 may keep it.
pub fn unchanged_copy(
    kind: FileKind,
    output: &Path,
    name: &str,
    forced_refresh: bool,
) -> Option<(PathBuf, SystemTime)> {
    if kind != FileKind::Database || forced_refresh {
        return None;
    }
    let dir = output.parent()?;
    let beside = dir.join(name);
    let above = dir.parent().map(|up| up.join(name));
    let (path, mtime) = [Some(beside), above]
        .into_iter()
        .flatten()
        .filter(|candidate| !same_file(candidate, output))
        .find_map(|candidate| {
            let meta = fs::metadata(&candidate).ok().filter(|m| m.is_file())?;
            Some((candidate, meta.modified().ok()?))
        })?;
    // `<repo>.files` is read the same way; a signature (`.db.sig`) is not an archive and never
    // gets here (it is FileKind::DatabaseSignature).
    syncdb::is_complete(&path).then_some((path, mtime))
}

/// Run by hand as `pacserve-fetch core.db URL`, the "current copy" would be the output itself;
/// copying a file onto itself would empty it.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_refresh_or_a_broken_copy_gets_no_304() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("download-abc123");
        fs::create_dir(&tmp).unwrap();
        let out = tmp.join("core.db.part");
        // Not an archive at all: never the basis of a 304.
        fs::write(dir.path().join("core.db"), b"\x1f\x8bnot gzip").unwrap();
        assert_eq!(
            unchanged_copy(FileKind::Database, &out, "core.db", false),
            None
        );
        // An empty tar archive is complete.
        let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
        fs::write(dir.path().join("core.db"), tar).unwrap();
        let found = unchanged_copy(FileKind::Database, &out, "core.db", false);
        assert_eq!(found.map(|f| f.0), Some(dir.path().join("core.db")));
        assert_eq!(
            unchanged_copy(FileKind::Database, &out, "core.db", true),
            None
        );
    }
}
