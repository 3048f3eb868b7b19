//! Taking over what an earlier pacman 7 run left stranded in its own `download-XXXXXX` directory.
//!
//! pacman 7 runs us in a fresh 0700 `<CacheDir>/download-XXXXXX/` per batch. When a download of
//! the batch fails (Ctrl-C, a killed downloader, one missing file), pacman returns early and
//! leaves that directory behind with our partial `.part` and every file the batch had already
//! finished; it never looks there again, and `-Sc` never removes it. The next run would download
//! all of it again. So before the first request we look in the sibling `download-*` directories
//! of the same CacheDir for this file:
//!
//! - a finished copy that matches the sync database (size and SHA-256) becomes `%o` at once;
//! - else the longest partial that is shorter than the database's size becomes `%o` and is
//!   resumed (its bytes are then checked with the rest: a bad prefix is downloaded again);
//! - copies of the same name that lose are deleted, and every directory left empty is removed.
//!
//! Only files and directories owned by our own user are touched (pacman's DownloadUser owns
//! them; root's and other users' are never read), only for files a sync database describes,
//! and files are moved (renamed within the CacheDir), never copied. Databases are never
//! adopted — they are small and a stale one must not win — but their stranded copies are
//! cleaned up the same way. Under pacman 6 `%o` is not in a `download-*` directory and nothing
//! here runs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::client::output::verify::{self, Expected};
use crate::client::terminal::progress::Progress;
use crate::pacman::name::FileKind;

/// The prefix of pacman 7's temporary download directories.
const DOWNLOAD_DIR_PREFIX: &str = "download-";

/// What [`stranded`] put into `%o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Nothing: `%o` is as pacman left it.
    Nothing,
    /// A partial file of this many bytes, to be resumed.
    Partial(u64),
    /// The complete file, verified against the sync database.
    Complete,
}

/// Adopts this file's stranded copies into `output` (see the module documentation).
pub fn stranded(
    output: &Path,
    name: &str,
    kind: FileKind,
    expected: Option<&Expected>,
    progress: &Progress,
) -> Adopted {
    let Some(dirs) = stranded_dirs(output) else {
        return Adopted::Nothing;
    };
    let uid = nix::unistd::geteuid().as_raw();
    let ours = |path: &Path| {
        fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file() && m.uid() == uid)
    };
    let part_name = format!("{name}{}", crate::pacman::name::PART_SUFFIX);
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        candidates.extend(
            [dir.join(name), dir.join(&part_name)]
                .into_iter()
                .filter(|p| ours(p).is_some()),
        );
    }
    if candidates.is_empty() {
        return Adopted::Nothing;
    }
    let adoptable = matches!(kind, FileKind::Package | FileKind::PackageSignature);
    let expected = expected.filter(|_| adoptable);

    let complete = expected.and_then(|expected| {
        candidates
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == name))
            .find(|p| matches!(verify::mismatch(p, expected), Ok(None)))
    });
    let have = fs::metadata(output).map_or(0, |m| m.len());
    let partial = || {
        let size = expected?.size?;
        candidates
            .iter()
            .filter(|p| kind.resumable() && p.file_name().is_some_and(|n| *n == *part_name))
            .filter_map(|p| Some((p, ours(p)?.len())))
            .filter(|(_, len)| *len > have && *len < size)
            .max_by_key(|(_, len)| *len)
    };
    let outcome = match (complete, partial()) {
        (Some(file), _) => adopt(file, output, progress).then_some((file, Adopted::Complete)),
        (None, Some((file, len))) => {
            adopt(file, output, progress).then_some((file, Adopted::Partial(len)))
        }
        (None, None) => None,
    };
    // What lost is of no use to anyone: pacman never reads these directories again. Without a
    // sync database entry to judge by (a package no database lists yet), everything stays.
    let judged = expected.is_some() || !adoptable;
    let losers = candidates.iter().filter(|_| judged);
    for other in losers.filter(|c| Some(*c) != outcome.map(|(f, _)| f)) {
        if fs::remove_file(other).is_ok() {
            progress.note(|| format!("removed the stranded {}", other.display()));
        }
    }
    for dir in &dirs {
        // Only succeeds once empty, which is the point.
        let _ = fs::remove_dir(dir);
    }
    outcome.map_or(Adopted::Nothing, |(_, adopted)| adopted)
}

/// Moves `file` onto `output`; false (and a note) when it cannot.
fn adopt(file: &Path, output: &Path, progress: &Progress) -> bool {
    match fs::rename(file, output) {
        Ok(()) => {
            progress.note(|| format!("resuming from {}, left by an earlier run", file.display()));
            true
        }
        Err(e) => {
            progress.note(|| format!("cannot take over {}: {e}", file.display()));
            false
        }
    }
}

/// The other `download-*` directories beside `output`'s, owned by us; None when `output` is not
/// in such a directory (pacman 6, or run by hand).
fn stranded_dirs(output: &Path) -> Option<Vec<PathBuf>> {
    let own_dir = output.parent()?;
    let own_name = own_dir.file_name()?.to_str()?;
    if !own_name.starts_with(DOWNLOAD_DIR_PREFIX) {
        return None;
    }
    let uid = nix::unistd::geteuid().as_raw();
    let dirs = fs::read_dir(own_dir.parent()?)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(DOWNLOAD_DIR_PREFIX) && n != own_name)
        })
        .filter(|e| {
            // symlink_metadata: a symlink planted as download-x is not followed.
            fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid)
        })
        .map(|e| e.path())
        .collect();
    Some(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::terminal::progress::Verbosity;
    use sha2::{Digest, Sha256};

    const NAME: &str = "foo-1-1-any.pkg.tar.zst";

    fn setup() -> (tempfile::TempDir, PathBuf, Expected, Vec<u8>) {
        let cache = tempfile::tempdir().unwrap();
        let own = cache.path().join("download-new");
        fs::create_dir(&own).unwrap();
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let expected = Expected {
            size: Some(body.len() as u64),
            sha256: Some(Sha256::digest(&body).into()),
        };
        (cache, own.join(format!("{NAME}.part")), expected, body)
    }

    #[test]
    fn the_longest_partial_is_moved_and_the_rest_cleaned_up() {
        let (cache, out, expected, body) = setup();
        let progress = Progress::new(Verbosity::Quiet);
        for (dir, len) in [("download-a", 300), ("download-b", 600)] {
            fs::create_dir(cache.path().join(dir)).unwrap();
            fs::write(
                cache.path().join(dir).join(format!("{NAME}.part")),
                &body[..len],
            )
            .unwrap();
        }
        let got = stranded(&out, NAME, FileKind::Package, Some(&expected), &progress);
        assert_eq!(got, Adopted::Partial(600));
        assert_eq!(fs::read(&out).unwrap(), &body[..600]);
        assert!(
            !cache.path().join("download-a").exists(),
            "emptied and removed"
        );
        assert!(!cache.path().join("download-b").exists());
    }

    #[test]
    fn a_finished_file_is_adopted_only_when_it_matches_the_database() {
        let (cache, out, expected, body) = setup();
        let progress = Progress::new(Verbosity::Quiet);
        let dir = cache.path().join("download-old");
        fs::create_dir(&dir).unwrap();
        let mut bad = body.clone();
        bad[10] ^= 1;
        fs::write(dir.join(NAME), &bad).unwrap();
        assert_eq!(
            stranded(&out, NAME, FileKind::Package, Some(&expected), &progress),
            Adopted::Nothing
        );
        assert!(
            !out.exists() && !dir.exists(),
            "the bad copy is deleted, not adopted"
        );

        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(NAME), &body).unwrap();
        fs::write(cache.path().join("download-other-file"), b"not a dir").unwrap();
        assert_eq!(
            stranded(&out, NAME, FileKind::Package, Some(&expected), &progress),
            Adopted::Complete
        );
        assert_eq!(fs::read(&out).unwrap(), body);
        // Without a database entry nothing is adopted, nor deleted.
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(NAME), &body).unwrap();
        fs::remove_file(&out).unwrap();
        stranded(&out, NAME, FileKind::Package, None, &progress);
        assert!(!out.exists() && dir.join(NAME).exists());
    }

    #[test]
    fn nothing_happens_outside_a_download_directory() {
        let (cache, _, expected, body) = setup();
        let progress = Progress::new(Verbosity::Quiet);
        fs::create_dir(cache.path().join("download-x")).unwrap();
        fs::write(cache.path().join("download-x").join(NAME), &body).unwrap();
        let out = cache.path().join(format!("{NAME}.part"));
        assert_eq!(
            stranded(&out, NAME, FileKind::Package, Some(&expected), &progress),
            Adopted::Nothing
        );
        assert!(cache.path().join("download-x").join(NAME).exists());
    }
}
