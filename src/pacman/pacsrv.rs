//! `pacsrv`: run pacman once with pacserve-fetch as its downloader, without editing pacman.conf
//! (the original Pacserve's `pacsrv -Syu`).
//!
//! pacman has no option to set XferCommand, so pacsrv writes a copy of the configuration pacman
//! would read (its `--config`, else `/etc/pacman.conf`) with the XferCommand line replaced or
//! added in `[options]`, runs pacman with `--config` pointing at the copy and every other argument
//! untouched, removes the copy, and exits with pacman's status.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::pacman::download_user;
use crate::pacman::invocation::{Invocation, Paths};
use crate::pacman::process::Transaction;

pub const DEFAULT_PACMAN_CONF: &str = "/etc/pacman.conf";

/// `conf` with its `[options]` XferCommand set to `xfer`: existing XferCommand lines in
/// `[options]` are replaced by one, or the line is added right after the `[options]` header.
pub fn with_xfer_command(conf: &str, xfer: &str) -> String {
    let line = format!("XferCommand = {xfer}");
    let mut out = Vec::new();
    let mut in_options = false;
    let mut placed = false;
    for raw in conf.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('[') {
            in_options = trimmed == "[options]";
            out.push(raw.to_owned());
            if in_options && !placed {
                out.push(line.clone());
                placed = true;
            }
            continue;
        }
        let is_xfer = trimmed
            .split('=')
            .next()
            .is_some_and(|k| k.trim() == "XferCommand");
        if in_options && is_xfer {
            continue;
        }
        out.push(raw.to_owned());
    }
    if !placed {
        out.insert(0, "[options]".to_owned());
        out.insert(1, line);
    }
    out.join("\n") + "\n"
}

/// Splits pacman's `--config FILE` / `--config=FILE` out of the arguments; the rest is kept in
/// order. Arguments after `--` are never touched.
pub fn take_config_arg(args: Vec<OsString>) -> (Option<PathBuf>, Vec<OsString>) {
    let mut config = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            rest.push(arg);
            rest.extend(iter.by_ref());
            break;
        }
        if arg == "--config" {
            config = iter.next().map(PathBuf::from);
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            config = Some(PathBuf::from(path));
        } else {
            rest.push(arg);
        }
    }
    (config, rest)
}

/// The pacserve-fetch next to the running binary (a build tree, or the installed pair), else
/// the installed one. pacsrv writes it into XferCommand; pacserved runs it for `/cache/`.
pub fn fetch_program() -> PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name("pacserve-fetch"))
        .ok()
        .filter(|sibling| sibling.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/pacserve-fetch"))
}

/// The XferCommand value for `program`. No other options: pacserve-fetch reads the invoking
/// pacman's command line (its `--config` is our copy, with the same DBPath and CacheDir).
pub fn xfer_command(program: &Path) -> String {
    format!("'{}' '%o' '%u'", program.display())
}

/// The pacman to run: `$PACMAN` when set (as makepkg honours it), else `pacman` from PATH.
pub fn pacman_program() -> OsString {
    std::env::var_os("PACMAN")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("pacman"))
}

/// Removes the empty `download-*` directories pacman 7 left in its CacheDirs and `DBPath/sync`,
/// and returns them. pacman 7 strands a batch's directory when a download fails; pacserve-fetch
/// (as the download user) moves everything out of it on the next run, but cannot remove the
/// directory itself: only root may change CacheDir. pacsrv runs as root once pacman has exited,
/// so it does. Only empty directories go (rmdir refuses others), and none while another pacman
/// holds the database lock (its own download directory may be empty for a moment).
pub fn remove_empty_download_dirs(paths: &Paths) -> Vec<PathBuf> {
    if paths.dbpath.join("db.lck").exists() {
        return Vec::new();
    }
    let parents = paths
        .cachedirs
        .iter()
        .cloned()
        .chain([paths.dbpath.join("sync")]);
    parents
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("download-"))
        .filter(|e| std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir()))
        .map(|e| e.path())
        .filter(|dir| std::fs::remove_dir(dir).is_ok())
        .collect()
}

/// What [`run_once`] ran: pacman's exit status, and its transaction (for the summary of where
/// its packages came from).
pub struct Ran {
    /// pacman's exit status, or 128 + the signal that ended it.
    pub status: u8,
    pub txn: Option<Transaction>,
}

/// Runs pacman once with `args` (pacman's own arguments) and pacserve-fetch as its XferCommand.
/// The error is one line naming what could not be read, written or run.
pub fn run_once(args: Vec<OsString>) -> Result<Ran, String> {
    let paths = Invocation::parse(&args).paths();
    let (config, pacman_args) = take_config_arg(args);
    let config = config.unwrap_or_else(|| DEFAULT_PACMAN_CONF.into());
    let original = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let program = fetch_program();
    let user = download_user::configured(&original);
    let blocked = user
        .as_deref()
        .and_then(|user| Some((user, download_user::cannot_execute(&program, user)?)));
    if let Some((user, why)) = blocked {
        return Err(format!(
            "pacman runs its XferCommand as DownloadUser {user}, which cannot execute {}: \
             {why}.\nInstall pacserve-fetch (/usr/bin), or make that path searchable \
             (chmod o+x on each directory), or run the installed pacsrv.",
            program.display()
        ));
    }
    let patched = with_xfer_command(&original, &xfer_command(&program));
    let mut copy = tempfile::Builder::new()
        .prefix("pacsrv-")
        .suffix(".conf")
        .tempfile()
        .map_err(|e| format!("cannot create the temporary pacman.conf: {e}"))?;
    copy.write_all(patched.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", copy.path().display()))?;
    // pacman 7's download user reads it too (pacserve-fetch finds DBPath and CacheDir there).
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("cannot make {} readable: {e}", copy.path().display()))?;

    // The terminal's Ctrl-C reaches pacman directly; SIGTERM and SIGHUP sent to us are passed on.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let mut child = Command::new(pacman_program())
        .arg("--config")
        .arg(copy.path())
        .args(&pacman_args)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", pacman_program().to_string_lossy()))?;
    // Read while pacman runs: afterwards its pid names nothing.
    let txn = Transaction::of_process(child.id());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            let forward = nix::sys::signal::Signal::try_from(signal)
                .ok()
                .filter(|_| signal != SIGINT);
            if let Some(sig) = forward {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    });
    let status = child.wait().map_err(|e| format!("waiting for pacman: {e}"));
    handle.close();
    let _ = forwarder.join();
    drop(copy);
    let status = status?;
    for dir in remove_empty_download_dirs(&paths) {
        eprintln!(
            "pacsrv: removed pacman's empty download directory {}",
            dir.display()
        );
    }
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(Ran {
        status: u8::try_from(code).unwrap_or(1),
        txn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_or_inserts_the_xfer_command_in_options_only() {
        let conf = "# comment\n[options]\nHoldPkg = pacman\nXferCommand = /usr/bin/curl %o %u\n\n[core]\nXferCommand = not-an-option\nInclude = /etc/pacman.d/mirrorlist\n";
        let out = with_xfer_command(conf, "'/x/pacserve-fetch' '%o' '%u'");
        assert_eq!(out.matches("XferCommand").count(), 2, "{out}");
        assert!(
            out.contains(
                "[options]\nXferCommand = '/x/pacserve-fetch' '%o' '%u'\nHoldPkg = pacman\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("[core]\nXferCommand = not-an-option\n"),
            "{out}"
        );

        let bare = with_xfer_command("[core]\nServer = x\n", "f '%o' '%u'");
        assert!(
            bare.starts_with("[options]\nXferCommand = f '%o' '%u'\n[core]"),
            "{bare}"
        );
    }

    #[test]
    fn only_empty_download_directories_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let db = dir.path().join("db");
        for d in [
            "cache/download-empty",
            "cache/download-full",
            "cache/keep",
            "db/sync/download-x",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(cache.join("download-full/a.pkg.tar.zst"), b"x").unwrap();
        let paths = Paths {
            config: dir.path().join("pacman.conf"),
            dbpath: db.clone(),
            cachedirs: vec![cache.clone()],
            gpgdir: dir.path().join("gnupg"),
        };
        std::fs::write(db.join("db.lck"), b"").unwrap();
        assert!(
            remove_empty_download_dirs(&paths).is_empty(),
            "pacman is running"
        );
        std::fs::remove_file(db.join("db.lck")).unwrap();
        let mut removed = remove_empty_download_dirs(&paths);
        removed.sort();
        assert_eq!(
            removed,
            [cache.join("download-empty"), db.join("sync/download-x")]
        );
        assert!(cache.join("download-full").exists() && cache.join("keep").exists());
    }

    #[test]
    fn config_argument_is_taken_out_and_the_rest_kept_in_order() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let (conf, rest) =
            take_config_arg(args(&["-S", "--config", "/c", "vim", "--", "--config=x"]));
        assert_eq!(conf, Some(PathBuf::from("/c")));
        assert_eq!(rest, args(&["-S", "vim", "--", "--config=x"]));
        let (conf, rest) = take_config_arg(args(&["--config=/d", "-Syu"]));
        assert_eq!(conf, Some(PathBuf::from("/d")));
        assert_eq!(rest, args(&["-Syu"]));
    }
}
