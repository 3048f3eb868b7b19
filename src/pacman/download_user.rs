//! Whether pacman 7's `DownloadUser` can run a given XferCommand program.
//!
//! pacman 7 switches its download child to `DownloadUser` (Arch: `alpm`) with no supplementary
//! groups before it execs the XferCommand. A program under a directory that user cannot search
//! (a build tree under `/root`, a 0700 home) then fails inside pacman with the misleading
//! "fork failed!". `pacsrv` asks here first and says what to fix instead. The check follows the
//! kernel's rule for exec: search permission on every directory of the path and execute
//! permission on the file, judged by owner, then group, then other bits — for that user's uid
//! and primary group only, as pacman runs it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user pacman 7 downloads as, from its configuration text; None when unset (pacman 6, or
/// pacman 7 downloading as root).
pub fn configured(pacman_conf: &str) -> Option<String> {
    crate::pacman::conf::option_values(pacman_conf, "DownloadUser")
        .into_iter()
        .next()
}

/// Why `user` cannot execute `program`; None when it can. An unknown user is a reason too
/// (pacman itself refuses to start then).
pub fn cannot_execute(program: &Path, user: &str) -> Option<String> {
    let account = match nix::unistd::User::from_name(user) {
        Ok(Some(account)) => account,
        _ => return Some(format!("there is no user {user}")),
    };
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let program = fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    let mut dirs: Vec<PathBuf> = program.ancestors().skip(1).map(Path::to_owned).collect();
    dirs.reverse();
    for dir in dirs {
        let Ok(meta) = fs::metadata(&dir) else {
            return Some(format!("{} cannot be read", dir.display()));
        };
        if !allowed(&meta, uid, gid) {
            return Some(format!(
                "{} (mode {:o}, owner uid {}) is not searchable by {user}",
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ));
        }
    }
    match fs::metadata(&program) {
        Ok(meta) if meta.is_file() && allowed(&meta, uid, gid) => None,
        Ok(meta) => Some(format!(
            "{} (mode {:o}) is not executable by {user}",
            program.display(),
            meta.mode() & 0o7777
        )),
        Err(e) => Some(format!("{}: {e}", program.display())),
    }
}

/// The execute/search bit that applies to `uid`/`gid` (root needs any execute bit on files and
/// none on directories, but pacman's download user is never root when this matters).
fn allowed(meta: &fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.mode();
    if uid == 0 {
        return meta.is_dir() || mode & 0o111 != 0;
    }
    let bit = match (meta.uid() == uid, meta.gid() == gid) {
        (true, _) => 0o100,
        (false, true) => 0o010,
        (false, false) => 0o001,
    };
    mode & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_the_download_user_from_options() {
        assert_eq!(
            configured("[options]\nDownloadUser = alpm\n[core]\n").as_deref(),
            Some("alpm")
        );
        assert_eq!(configured("[options]\n#DownloadUser = alpm\n"), None);
    }

    #[test]
    fn a_closed_directory_or_a_missing_x_bit_is_named() {
        // `nobody` exists on every Debian and Arch system; it owns none of our files.
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let program = open.join("prog");
        fs::write(&program, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        if dir
            .path()
            .ancestors()
            .any(|a| fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0 && m.is_dir()))
        {
            // The temporary directory itself is closed to others here; nothing to compare.
            return;
        }
        assert_eq!(cannot_execute(&program, "nobody"), None);
        fs::set_permissions(&program, fs::Permissions::from_mode(0o744)).unwrap();
        let why = cannot_execute(&program, "nobody").unwrap();
        assert!(why.contains("not executable by nobody"), "{why}");
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).unwrap();
        let why = cannot_execute(&program, "nobody").unwrap();
        assert!(
            why.contains("open (mode 700") && why.contains("not searchable"),
            "{why}"
        );
        assert!(cannot_execute(&program, "no-such-user-here").is_some());
    }
}
