//! The pacman that is running us: its command line, and the paths it resolved from it.
//!
//! pacman gives an XferCommand only `%o` and `%u`. Everything else it knows — `--config`,
//! `--dbpath`, `--cachedir`, `--root`, `--sysroot`, whether `-yy` forces a refresh, the
//! transaction's targets — is on its own command line, and pacman is our parent process (under
//! pacman 7 its sandboxed download child, which keeps the same arguments). `/proc/<ppid>/cmdline`
//! is readable by any user, including pacman 7's unprivileged `DownloadUser`. Run by hand, the
//! parent is a shell: then there is no invocation and the defaults (`/etc/pacman.conf`) apply.
//!
//! Arguments are parsed the way pacman's `getopt_long` does (short options bundle, `-b` and
//! `-r` take a value attached or in the next word, long options take `=value` or the next word,
//! `--` ends options); the paths are resolved as pacman's `conf.c` does (command line over
//! pacman.conf over defaults, `--root` moving the default DBPath, `--sysroot` prefixing all).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::pacman::conf;

/// pacman's default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/pacman.conf";
const DEFAULT_CACHEDIR: &str = "/var/cache/pacman/pkg";

/// Long options of pacman that take a value (`required_argument` in pacman.c).
pub const LONG_WITH_VALUE: &[&str] = &[
    "dbpath",
    "root",
    "sysroot",
    "config",
    "ignore",
    "assume-installed",
    "overwrite",
    "ask",
    "cachedir",
    "hookdir",
    "logfile",
    "ignoregroup",
    "arch",
    "print-format",
    "gpgdir",
    "color",
];

/// What pacman's command line says, as far as downloads are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// argv\[0\]: the pacman binary (pacman 6 and 7 may both be installed).
    pub program: PathBuf,
    /// Every argument after argv\[0\], unchanged, to run the same pacman again (`-Sp`).
    pub args: Vec<OsString>,
    /// The operation letter: `S`, `U`, `Q`…
    pub operation: Option<char>,
    pub config: Option<PathBuf>,
    pub dbpath: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub sysroot: Option<PathBuf>,
    pub gpgdir: Option<PathBuf>,
    pub cachedirs: Vec<PathBuf>,
    /// How often `-y`/`--refresh` was given: 2 or more forces a database refresh.
    pub refresh: u8,
    /// How often `-u`/`--sysupgrade` was given.
    pub sysupgrade: u8,
    /// `-w`/`--downloadonly`.
    pub download_only: bool,
    /// The words that are not options: package names, groups, files or URLs.
    pub targets: Vec<String>,
}

impl Invocation {
    /// The invoking pacman, when our parent process is one.
    pub fn of_parent() -> Option<Invocation> {
        Invocation::of_pid(std::os::unix::process::parent_id())
    }

    /// The command line of process `ppid`, when it is a pacman.
    pub fn of_pid(ppid: u32) -> Option<Invocation> {
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        if comm.trim_end() != "pacman" {
            return None;
        }
        let raw = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
        let mut words = raw
            .split(|b| *b == 0)
            .map(|w| OsString::from_vec(w.to_vec()))
            .collect::<Vec<_>>();
        // The buffer ends with a NUL, which leaves one empty word behind.
        if words.last().is_some_and(|w| w.is_empty()) {
            words.pop();
        }
        let program = PathBuf::from(words.first()?.clone());
        let mut invocation = Invocation::parse(&words[1..]);
        invocation.program = program;
        // Relative paths are pacman's, from its working directory, not ours (pacman 7 runs us
        // in its download directory). Only readable when we run as pacman's user (pacman 6, or
        // pacman 7 without DownloadUser); otherwise they stay relative, as before.
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{ppid}/cwd")) {
            invocation.relative_to(&cwd);
        }
        Some(invocation)
    }

    /// Makes every relative path of the command line relative to `cwd`.
    pub fn relative_to(&mut self, cwd: &Path) {
        let paths = [
            &mut self.config,
            &mut self.dbpath,
            &mut self.root,
            &mut self.sysroot,
            &mut self.gpgdir,
        ];
        for path in paths.into_iter().flatten().chain(self.cachedirs.iter_mut()) {
            if path.is_relative() {
                *path = cwd.join(&*path);
            }
        }
    }

    /// Parses pacman's arguments (without argv\[0\]).
    pub fn parse(args: &[OsString]) -> Invocation {
        let mut inv = Invocation {
            args: args.to_vec(),
            ..Invocation::default()
        };
        let mut words = args.iter().map(|w| String::from_utf8_lossy(w.as_bytes()));
        while let Some(word) = words.next() {
            if word == "--" {
                inv.targets.extend(words.by_ref().map(|w| w.into_owned()));
                break;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, attached) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (long, None),
                };
                let value = match LONG_WITH_VALUE.contains(&name) {
                    true => attached.or_else(|| words.next().map(|w| w.into_owned())),
                    false => None,
                };
                inv.long_option(name, value);
            } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
                for (i, letter) in shorts.char_indices() {
                    if letter == 'b' || letter == 'r' {
                        let rest = &shorts[i + letter.len_utf8()..];
                        let value = match rest.is_empty() {
                            true => words.next().map(|w| w.into_owned()),
                            false => Some(rest.to_owned()),
                        };
                        inv.long_option(if letter == 'b' { "dbpath" } else { "root" }, value);
                        break;
                    }
                    inv.short_option(letter);
                }
            } else {
                inv.targets.push(word.into_owned());
            }
        }
        inv
    }

    fn long_option(&mut self, name: &str, value: Option<String>) {
        let path = value.map(PathBuf::from);
        match name {
            "config" => self.config = path,
            "dbpath" => self.dbpath = path,
            "root" => self.root = path,
            "sysroot" => self.sysroot = path,
            "gpgdir" => self.gpgdir = path,
            "cachedir" => self.cachedirs.extend(path),
            "refresh" => self.refresh = self.refresh.saturating_add(1),
            "sysupgrade" => self.sysupgrade = self.sysupgrade.saturating_add(1),
            "downloadonly" => self.download_only = true,
            "sync" => self.operation = Some('S'),
            "upgrade" => self.operation = Some('U'),
            "database" => self.operation = Some('D'),
            "files" => self.operation = Some('F'),
            "query" => self.operation = Some('Q'),
            "remove" => self.operation = Some('R'),
            "deptest" => self.operation = Some('T'),
            _ => {}
        }
    }

    fn short_option(&mut self, letter: char) {
        match letter {
            'D' | 'F' | 'Q' | 'R' | 'S' | 'T' | 'U' | 'V' => self.operation = Some(letter),
            'y' => self.refresh = self.refresh.saturating_add(1),
            'u' => self.sysupgrade = self.sysupgrade.saturating_add(1),
            'w' => self.download_only = true,
            _ => {}
        }
    }

    /// `-Syy`: pacman wants every database downloaded again, even if unchanged.
    pub fn forced_refresh(&self) -> bool {
        self.refresh >= 2
    }

    /// The paths pacman resolved from this command line and its configuration file.
    pub fn paths(&self) -> Paths {
        let sysroot = self.sysroot.as_deref();
        let config = prefixed(
            sysroot,
            self.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG)),
        );
        Paths::resolve(config, self, sysroot)
    }
}

/// Where pacman keeps its databases, packages and keyring for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config: PathBuf,
    pub dbpath: PathBuf,
    pub cachedirs: Vec<PathBuf>,
    pub gpgdir: PathBuf,
}

impl Paths {
    /// pacman's paths when run with no options: `/etc/pacman.conf` and what it says.
    pub fn default_for(config: &Path) -> Paths {
        Paths::resolve(config.to_owned(), &Invocation::default(), None)
    }

    fn resolve(config: PathBuf, inv: &Invocation, sysroot: Option<&Path>) -> Paths {
        let text = std::fs::read_to_string(&config).unwrap_or_default();
        let from_conf = |key| conf::option_values(&text, key).into_iter().next();
        let root = inv
            .root
            .clone()
            .or_else(|| from_conf("RootDir").map(PathBuf::from));
        let dbpath = inv
            .dbpath
            .clone()
            .or_else(|| from_conf("DBPath").map(PathBuf::from))
            .unwrap_or_else(|| match &root {
                Some(root) => root.join(&conf::DEFAULT_DBPATH[1..]),
                None => PathBuf::from(conf::DEFAULT_DBPATH),
            });
        let mut cachedirs = inv.cachedirs.clone();
        if cachedirs.is_empty() {
            cachedirs = conf::option_values(&text, "CacheDir")
                .into_iter()
                .map(PathBuf::from)
                .collect();
        }
        if cachedirs.is_empty() {
            cachedirs.push(PathBuf::from(DEFAULT_CACHEDIR));
        }
        let gpgdir = inv
            .gpgdir
            .clone()
            .or_else(|| from_conf("GPGDir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(crate::pacman::gpg::DEFAULT_GPGDIR));
        Paths {
            config,
            dbpath: prefixed(sysroot, &dbpath),
            cachedirs: cachedirs.iter().map(|d| prefixed(sysroot, d)).collect(),
            gpgdir: prefixed(sysroot, &gpgdir),
        }
    }
}

/// `path` under `sysroot`, as pacman's `prepend_dir` does.
fn prefixed(sysroot: Option<&Path>, path: &Path) -> PathBuf {
    match sysroot {
        Some(sysroot) => sysroot.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Invocation {
        let words: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        Invocation::parse(&words)
    }

    #[test]
    fn bundled_short_options_count_refreshes_and_read_attached_values() {
        let inv = parse("-Syyuw --noconfirm -b/db foo bar");
        assert_eq!(inv.operation, Some('S'));
        assert_eq!(inv.refresh, 2);
        assert!(inv.forced_refresh());
        assert_eq!(inv.sysupgrade, 1);
        assert!(inv.download_only);
        assert_eq!(inv.dbpath.as_deref(), Some(Path::new("/db")));
        assert_eq!(inv.targets, ["foo", "bar"]);

        let inv = parse("-Sy -r /mnt --refresh -- -notanoption");
        assert!(inv.forced_refresh());
        assert_eq!(inv.root.as_deref(), Some(Path::new("/mnt")));
        assert_eq!(inv.targets, ["-notanoption"]);
        assert!(!parse("-Sy foo").forced_refresh());
    }

    #[test]
    fn long_options_take_attached_or_next_values_and_repeat_cachedir() {
        let inv = parse("--sync --config=/c.conf --cachedir /a --cachedir=/b --print-format %l x");
        assert_eq!(inv.operation, Some('S'));
        assert_eq!(inv.config.as_deref(), Some(Path::new("/c.conf")));
        assert_eq!(inv.cachedirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        // %l is print-format's value, not a target.
        assert_eq!(inv.targets, ["x"]);
    }

    #[test]
    fn paths_follow_pacman_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pacman.conf");
        std::fs::write(
            &conf,
            "[options]\nDBPath = /conf/db\nCacheDir = /conf/c1 /conf/c2\n",
        )
        .unwrap();
        let conf_arg = format!("--config {}", conf.display());

        // pacman.conf over the defaults.
        let p = parse(&format!("-S {conf_arg}")).paths();
        assert_eq!(p.dbpath, Path::new("/conf/db"));
        assert_eq!(p.cachedirs, [Path::new("/conf/c1"), Path::new("/conf/c2")]);
        // The command line over pacman.conf.
        let p = parse(&format!("-S {conf_arg} -b /cli/db --cachedir /cli/c")).paths();
        assert_eq!(p.dbpath, Path::new("/cli/db"));
        assert_eq!(p.cachedirs, [Path::new("/cli/c")]);
        // --root moves the default DBPath but not the cache; missing config means defaults.
        let p = parse("-S --config /nonexistent.conf -r /mnt").paths();
        assert_eq!(p.dbpath, Path::new("/mnt/var/lib/pacman"));
        assert_eq!(p.cachedirs, [Path::new(DEFAULT_CACHEDIR)]);
        // --sysroot prefixes everything, the config file included.
        let p = parse("-S --sysroot /sys").paths();
        assert_eq!(p.config, Path::new("/sys/etc/pacman.conf"));
        assert_eq!(p.dbpath, Path::new("/sys/var/lib/pacman"));
    }

    #[test]
    fn relative_paths_are_pacmans() {
        let mut inv = parse("-S --config ./p.conf -b db --cachedir /abs --cachedir c");
        inv.relative_to(Path::new("/home/u"));
        assert_eq!(inv.config.as_deref(), Some(Path::new("/home/u/./p.conf")));
        assert_eq!(inv.dbpath.as_deref(), Some(Path::new("/home/u/db")));
        assert_eq!(inv.cachedirs, [Path::new("/abs"), Path::new("/home/u/c")]);
    }

    #[test]
    fn our_parent_under_cargo_test_is_not_pacman() {
        assert_eq!(Invocation::of_parent(), None);
    }
}
