//! The daemon's view of the pacman cache: which shareable files it holds.
//!
//! The one question is "do you have this file name?", asked by the responder for every query
//! and by the HTTP server for every request, and answered only for package files and their
//! signatures lying directly in a cache directory as regular files. A symlink counts only if
//! it resolves to a regular file directly inside one of the cache directories, so nothing
//! outside the cache can be reached through a link; `.part` files, pacman 7's `download-*`
//! directories and databases never match because the name gate refuses them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::pacman::name::is_shareable_name;

/// A file the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

#[derive(Debug, Clone)]
pub struct Cache {
    /// Canonical paths, so symlink targets can be compared with them.
    dirs: Vec<PathBuf>,
}

impl Cache {
    /// Cache directories that do not exist (yet) are kept: pacman may create them later.
    pub fn new(dirs: &[PathBuf]) -> Cache {
        Cache {
            dirs: dirs
                .iter()
                .map(|d| fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
                .collect(),
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Looks `name` up in each directory in order.
    pub fn find(&self, name: &str) -> Option<Found> {
        if !is_shareable_name(name) {
            return None;
        }
        self.dirs
            .iter()
            .find_map(|dir| self.regular_file_in(dir, name))
    }

    fn regular_file_in(&self, dir: &Path, name: &str) -> Option<Found> {
        let path = dir.join(name);
        let link = fs::symlink_metadata(&path).ok()?;
        let path = if link.file_type().is_symlink() {
            let target = fs::canonicalize(&path).ok()?;
            let parent = target.parent()?;
            if !self.dirs.iter().any(|d| d == parent)
                || !target.file_name()?.to_str().is_some_and(is_shareable_name)
            {
                return None;
            }
            target
        } else {
            path
        };
        let meta = fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Some(Found {
            path,
            size: meta.len(),
            mtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_only_plain_package_files_inside_the_cache() {
        let base = std::env::temp_dir().join(format!("psf-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let cache = base.join("pkg");
        let outside = base.join("outside");
        fs::create_dir_all(&cache).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(cache.join("a-1-1-any.pkg.tar.zst"), b"pkg").unwrap();
        fs::write(cache.join("a-1-1-any.pkg.tar.zst.sig"), b"sig").unwrap();
        fs::write(cache.join("b-1-1-any.pkg.tar.zst.part"), b"part").unwrap();
        fs::write(cache.join("core.db"), b"db").unwrap();
        fs::create_dir(cache.join("c-1-1-any.pkg.tar.zst")).unwrap();
        fs::write(outside.join("d-1-1-any.pkg.tar.zst"), b"secret").unwrap();
        symlink(
            outside.join("d-1-1-any.pkg.tar.zst"),
            cache.join("d-1-1-any.pkg.tar.zst"),
        )
        .unwrap();
        symlink(
            cache.join("a-1-1-any.pkg.tar.zst"),
            cache.join("e-1-1-any.pkg.tar.zst"),
        )
        .unwrap();

        let c = Cache::new(std::slice::from_ref(&cache));
        assert_eq!(c.find("a-1-1-any.pkg.tar.zst").map(|f| f.size), Some(3));
        assert!(c.find("a-1-1-any.pkg.tar.zst.sig").is_some());
        assert!(c.find("b-1-1-any.pkg.tar.zst.part").is_none());
        assert!(c.find("b-1-1-any.pkg.tar.zst").is_none());
        assert!(c.find("core.db").is_none());
        assert!(c.find("c-1-1-any.pkg.tar.zst").is_none(), "directory");
        assert!(
            c.find("d-1-1-any.pkg.tar.zst").is_none(),
            "symlink out of the cache"
        );
        assert!(
            c.find("e-1-1-any.pkg.tar.zst").is_some(),
            "symlink within the cache"
        );
        assert!(c.find("../outside/d-1-1-any.pkg.tar.zst").is_none());
        fs::remove_dir_all(base).unwrap();
    }
}
