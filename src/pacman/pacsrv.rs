//! `pacsrv`: run pacman once with pacserve-fetch as its downloader, without editing pacman.conf
//! (the original Pacserve's `pacsrv -Syu`).
//!
//! pacman has no option to set XferCommand, so pacsrv writes a copy of the configuration pacman
//! would read (its `--config`, else `/etc/pacman.conf`) with the XferCommand line replaced or
//! added in `[options]`, runs pacman with `--config` pointing at the copy and every other argument
//! untouched, removes the copy, and exits with pacman's status.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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

/// The XferCommand value for the pacserve-fetch next to `exe`, or the installed one; it reads
/// DBPath from the same `pacman_conf` pacman is given, to verify what peers send.
pub fn xfer_command_for(exe: &Path, pacman_conf: &Path) -> String {
    let sibling = exe.with_file_name("pacserve-fetch");
    let program = if sibling.is_file() {
        sibling
    } else {
        PathBuf::from("/usr/bin/pacserve-fetch")
    };
    format!(
        "'{}' --pacman-conf '{}' '%o' '%u'",
        program.display(),
        pacman_conf.display()
    )
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
