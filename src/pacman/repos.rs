//! The repositories pacman.conf declares: their `Server` and `CacheServer` URLs and their
//! `SigLevel`, as pacman reads them (`Include` files followed, `$repo` and `$arch` expanded).
//!
//! The daemon needs them to know which mirrors pacman itself would use (the agent fetches for an
//! unprivileged caller only from those, and loopback only when they name it), the client to know
//! whether a repository wants signatures. Like [`crate::pacman::conf`], anything unreadable means
//! "nothing configured", never an error.

use std::path::{Path, PathBuf};

/// At most this many files are read for one configuration (pacman.conf and its Includes), so an
/// Include loop or a glob over a huge directory cannot hold the reader.
const MAX_FILES: usize = 64;

/// One `[repo]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repo {
    pub name: String,
    /// `Server` URLs in order, `$repo` and `$arch` expanded.
    pub servers: Vec<String>,
    /// `CacheServer` URLs in order (pacman ≥ 6.1), expanded likewise.
    pub cache_servers: Vec<String>,
    /// The repository's own `SigLevel` words (empty: the `[options]` default applies).
    pub siglevel: Vec<String>,
}

/// What pacman.conf says about repositories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repos {
    pub repos: Vec<Repo>,
    /// `SigLevel` of `[options]` (empty: pacman's default, `Required DatabaseOptional`).
    pub default_siglevel: Vec<String>,
}

impl Repos {
    /// Reads `conf` and every file it includes.
    pub fn read(conf: &Path) -> Repos {
        let mut reader = Reader::default();
        reader.file(conf);
        let arch = reader.architecture();
        let mut repos = reader.repos;
        for repo in &mut repos {
            let name = repo.name.clone();
            for url in repo.servers.iter_mut().chain(repo.cache_servers.iter_mut()) {
                *url = url.replace("$repo", &name).replace("$arch", &arch);
            }
        }
        Repos {
            repos,
            default_siglevel: reader.default_siglevel,
        }
    }

    /// `scheme://host[:port]` of every Server and CacheServer, lowercased, with the default
    /// port made explicit, so that two spellings of one origin compare equal.
    pub fn origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = (self.repos.iter())
            .flat_map(|r| r.servers.iter().chain(&r.cache_servers))
            .filter_map(|url| origin(url))
            .collect();
        origins.sort();
        origins.dedup();
        origins
    }

    pub fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos.iter().find(|r| r.name == name)
    }

    /// Whether pacman checks the signatures of `repo`'s packages (its `SigLevel`, over the
    /// `[options]` one, over pacman's compiled default, which checks them optionally): then it
    /// asks for a `.sig` after each of them.
    pub fn package_signatures_checked(&self, repo: &str) -> bool {
        let own = self
            .repo(repo)
            .map(|r| r.siglevel.as_slice())
            .unwrap_or(&[]);
        let mut checked = true;
        for word in self.default_siglevel.iter().chain(own) {
            match word.as_str() {
                "Never" | "PackageNever" => checked = false,
                "Optional" | "Required" | "PackageOptional" | "PackageRequired" => checked = true,
                _ => {}
            }
        }
        checked
    }
}

/// `scheme://host:port` of an http(s) URL, lowercased and with the default port explicit;
/// None for other schemes or a URL without a host.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // User info is no part of the origin.
    let authority = authority.rsplit('@').next()?.to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    Some(match has_port {
        true => format!("{scheme}://{authority}"),
        false => format!("{scheme}://{authority}:{default_port}"),
    })
}

#[derive(Default)]
struct Reader {
    repos: Vec<Repo>,
    default_siglevel: Vec<String>,
    architecture: Vec<String>,
    /// The section being read, across Include files (an included file continues it, as in
    /// pacman).
    section: Option<String>,
    files: usize,
}

impl Reader {
    fn file(&mut self, path: &Path) {
        if self.files >= MAX_FILES {
            return;
        }
        self.files += 1;
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let section = section.trim().to_owned();
                if section != "options" && !self.repos.iter().any(|r| r.name == section) {
                    self.repos.push(Repo {
                        name: section.clone(),
                        ..Repo::default()
                    });
                }
                self.section = Some(section);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "Include" {
                for included in expand(value) {
                    self.file(&included);
                }
                continue;
            }
            let words = || value.split_whitespace().map(str::to_owned);
            match self.section.as_deref() {
                Some("options") => match key {
                    "SigLevel" => self.default_siglevel.extend(words()),
                    "Architecture" => self.architecture.extend(words()),
                    _ => {}
                },
                Some(name) => {
                    let Some(repo) = self.repos.iter_mut().find(|r| r.name == name) else {
                        continue;
                    };
                    match key {
                        "Server" => repo.servers.push(value.to_owned()),
                        "CacheServer" => repo.cache_servers.push(value.to_owned()),
                        "SigLevel" => repo.siglevel.extend(words()),
                        _ => {}
                    }
                }
                None => {}
            }
        }
    }

    /// The first Architecture, `auto` (or none) meaning this machine's, as pacman resolves it.
    fn architecture(&self) -> String {
        match self.architecture.first().map(String::as_str) {
            Some(arch) if arch != "auto" => arch.to_owned(),
            _ => nix::sys::utsname::uname()
                .map(|u| u.machine().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "x86_64".to_owned()),
        }
    }
}

/// The files an Include names: one path, or a glob pattern (pacman expands globs).
fn expand(pattern: &str) -> Vec<PathBuf> {
    if !pattern.contains(['*', '?', '[']) {
        return vec![PathBuf::from(pattern)];
    }
    glob::glob(pattern)
        .map(|paths| paths.filter_map(Result::ok).take(MAX_FILES).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_followed_and_variables_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let mirrors = dir.path().join("mirrorlist");
        std::fs::write(
            &mirrors,
            "# a comment\nServer = https://Mirror.example/$repo/os/$arch\n#Server = http://no/\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/local.conf"),
            "[local]\nServer = http://127.0.0.1:8080/$repo\nSigLevel = Optional\n",
        )
        .unwrap();
        let conf = dir.path().join("pacman.conf");
        std::fs::write(
            &conf,
            format!(
                "[options]\nArchitecture = x86_64\nSigLevel = Required DatabaseOptional\n\
                 [core]\nCacheServer = http://127.0.0.1:15678/cache\nInclude = {m}\n\
                 [extra]\nInclude = {m}\nInclude = {d}/conf.d/*.conf\n",
                m = mirrors.display(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        let repos = Repos::read(&conf);
        let names: Vec<&str> = repos.repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["core", "extra", "local"]);
        let core = repos.repo("core").unwrap();
        assert_eq!(core.servers, ["https://Mirror.example/core/os/x86_64"]);
        assert_eq!(core.cache_servers, ["http://127.0.0.1:15678/cache"]);
        assert_eq!(repos.repo("local").unwrap().siglevel, ["Optional"]);
        assert_eq!(repos.default_siglevel, ["Required", "DatabaseOptional"]);
        assert_eq!(
            repos.origins(),
            [
                "http://127.0.0.1:15678",
                "http://127.0.0.1:8080",
                "https://mirror.example:443"
            ]
        );
        // An Include of itself ends, bounded.
        std::fs::write(&conf, format!("[core]\nInclude = {}\n", conf.display())).unwrap();
        assert_eq!(Repos::read(&conf).repos.len(), 1);
    }

    #[test]
    fn siglevel_decides_whether_pacman_asks_for_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pacman.conf");
        let checked = |text: &str, repo: &str| {
            std::fs::write(&conf, text).unwrap();
            Repos::read(&conf).package_signatures_checked(repo)
        };
        let arch =
            "[options]\nSigLevel = Required DatabaseOptional\n[core]\n[local]\nSigLevel = Never\n";
        assert!(checked(arch, "core"));
        assert!(!checked(arch, "local"));
        let never = "[options]\nSigLevel = Never\n[core]\n[extra]\nSigLevel = PackageRequired\n";
        assert!(!checked(never, "core"));
        assert!(checked(never, "extra"));
        assert!(
            checked("[options]\n[core]\n", "core"),
            "pacman's default checks them, optionally"
        );
        assert!(
            checked("[options]\nSigLevel = DatabaseNever\n[core]\n", "core"),
            "a database level says nothing of packages"
        );
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin("HTTP://user@Host:8080/a").as_deref(),
            Some("http://host:8080")
        );
        assert_eq!(
            origin("https://[::1]/x").as_deref(),
            Some("https://[::1]:443")
        );
        assert_eq!(
            origin("http://[::1]:81").as_deref(),
            Some("http://[::1]:81")
        );
        assert_eq!(origin("file:///srv/repo"), None);
        assert_eq!(origin("ftp://host/"), None);
    }
}
