//! The few settings we read from pacman's own configuration (`/etc/pacman.conf`).
//!
//! Only the `[options]` section, only `Key = value` lines; values may list several
//! space-separated paths and keys may repeat, as pacman allows. Anything we cannot read means
//! "use pacman's default", never an error: the daemon must start on a host whose pacman.conf
//! is unusual.

use std::path::{Path, PathBuf};

/// Every value of `key` in `[options]`, in order.
pub fn option_values(conf: &str, key: &str) -> Vec<String> {
    let mut in_options = false;
    let mut values = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_options = section.trim() == "options";
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if in_options && k.trim() == key {
            values.extend(v.split_whitespace().map(str::to_owned));
        }
    }
    values
}

pub const DEFAULT_DBPATH: &str = "/var/lib/pacman";

/// pacman's cache directories according to `conf_path`, or pacman's default.
pub fn cache_dirs(conf_path: &Path) -> Vec<PathBuf> {
    let dirs = std::fs::read_to_string(conf_path)
        .map(|c| option_values(&c, "CacheDir"))
        .unwrap_or_default();
    if dirs.is_empty() {
        vec![PathBuf::from("/var/cache/pacman/pkg")]
    } else {
        dirs.into_iter().map(PathBuf::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_repeated_and_listed_values_from_options_only() {
        let conf = "[options]\nCacheDir = /a/ /b/\n#CacheDir = /no/\nCacheDir=/c/ # note\n[core]\nCacheDir = /x/\n";
        assert_eq!(option_values(conf, "CacheDir"), ["/a/", "/b/", "/c/"]);
        assert!(option_values(conf, "DBPath").is_empty());
    }
}
