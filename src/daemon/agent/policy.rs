//! Who may make the agent do what: the agent acts for local users, so it must never do for one
//! what that user could not do alone.
//!
//! - A caller is **pacman's** when it is the downloader of a pacman transaction run by root: its
//!   parent process is `pacman` run by root, or pacman 7's sandboxed download child (run by the
//!   download user) whose own parent is `pacman` run by root. Its requests are pacman's, and
//!   are checked against that pacman's own configuration and sync databases (its command line
//!   names them; root chose them). Only such a caller may plan a transaction ([`Standing::txn`]).
//! - **Root** running pacserve-fetch by hand is held to the daemon's own configuration.
//! - **Anyone else** gets only what pacman would fetch: a package, or its signature, that the
//!   sync databases list, from a server pacman.conf names. Everything else is refused, so the
//!   agent relays nothing a user's own firewall rules or permissions would stop.
//! - **Nobody** reaches loopback or link-local addresses unless a pacman configuration names
//!   that server: [`Guard`] applies this when a name is resolved, so DNS answers and redirects
//!   are covered as well as the URLs themselves.
//! - What a caller says of a file (an `X-Pacserve-Share`, a plan's sizes and hashes) is believed
//!   only as far as the sync database confirms it: the daemon shares with the LAN, and verifies
//!   prefetched files against, the database's word, never the caller's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::daemon::agent::Caller;
use crate::pacman::gpg::MAX_SIGNATURE;
use crate::pacman::invocation::Invocation;
use crate::pacman::name::{FileKind, is_shareable_name};
use crate::pacman::process::{Transaction, is_pacman, parent_of};
use crate::pacman::repos::{self, Repos};
use crate::pacman::syncdb;
use crate::protocol::agent::{Planned, Share};

/// What the agent may do for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The downloader of root's pacman transaction `txn` (pacman 7: the sandboxed download
    /// child's), run by root's pacman `owner` (the same for pacman 6, and for a pacman hook).
    Pacman {
        txn: Transaction,
        owner: Transaction,
    },
    /// Root, not as a pacman's downloader.
    Root,
    /// Anyone else.
    User,
}

/// A caller's standing and the pacman configuration its requests are held to.
#[derive(Debug, Clone)]
pub struct Judged {
    pub standing: Standing,
    /// The pacman.conf whose servers the caller may use.
    pub conf: PathBuf,
    /// The DBPath whose sync databases vouch for the caller's files.
    pub dbpath: PathBuf,
}

impl Standing {
    /// The transaction a caller may plan and take prefetched files of.
    pub fn txn(&self) -> Option<Transaction> {
        match self {
            Standing::Pacman { txn, .. } => Some(*txn),
            _ => None,
        }
    }

    /// The transaction of root's pacman behind the caller: what its summary is kept under.
    pub fn owner(&self) -> Option<Transaction> {
        match self {
            Standing::Pacman { owner, .. } => Some(*owner),
            _ => None,
        }
    }
}

/// The daemon's side of the rules: its own pacman configuration, and the origins every
/// pacman configuration seen so far names.
pub struct Policy {
    conf: PathBuf,
    dbpath: PathBuf,
    origins: Arc<Origins>,
}

impl Policy {
    pub fn new(conf: PathBuf, dbpath: PathBuf) -> Policy {
        let origins = Arc::new(Origins::default());
        origins.learn(&conf);
        // A proxy in the daemon's environment is the administrator's choice: reachable.
        for var in [
            "https_proxy",
            "HTTPS_PROXY",
            "http_proxy",
            "HTTP_PROXY",
            "ALL_PROXY",
        ] {
            if let Some(origin) = std::env::var(var).ok().and_then(|v| repos::origin(&v)) {
                origins.insert(origin);
            }
        }
        Policy {
            conf,
            dbpath,
            origins,
        }
    }

    /// The resolver guard for the agent's HTTP client; see the module doc.
    pub fn guard(&self) -> Guard {
        Guard {
            origins: self.origins.clone(),
        }
    }

    /// Decides a caller's standing from the processes around it.
    pub fn judge(&self, caller: Caller) -> Judged {
        let daemons = || Judged {
            standing: if caller.uid == 0 {
                Standing::Root
            } else {
                Standing::User
            },
            conf: self.conf.clone(),
            dbpath: self.dbpath.clone(),
        };
        // Only while the process that connected still runs under that pid is its parent chain
        // its own: a pid reused by one of root's processes must not lend it its standing.
        let pid = u32::try_from(caller.pid).ok();
        let same_process = pid.and_then(Transaction::of_process).map(|t| t.start);
        if caller.start.is_none() || same_process != caller.start {
            return daemons();
        }
        let Some((pacman, roots)) = pid.and_then(roots_pacman) else {
            return daemons();
        };
        let (Some(txn), Some(owner)) = (
            Transaction::of_process(pacman),
            Transaction::of_process(roots),
        ) else {
            return daemons();
        };
        // Root's pacman: its own configuration and databases, as its command line names them
        // (paths relative to a working directory we cannot see fall back to ours).
        let paths = Invocation::of_pid(pacman).map(|inv| inv.paths());
        let (conf, dbpath) = match paths {
            Some(p) if p.config.is_absolute() && p.dbpath.is_absolute() => (p.config, p.dbpath),
            _ => (self.conf.clone(), self.dbpath.clone()),
        };
        self.origins.learn(&conf);
        Judged {
            standing: Standing::Pacman { txn, owner },
            conf,
            dbpath,
        }
    }

    /// Whether `judged` may have the agent GET `url`; the error says why not.
    pub fn may_fetch(&self, judged: &Judged, url: &str) -> Result<(), String> {
        if judged.standing != Standing::User {
            return Ok(());
        }
        let origin = repos::origin(url).ok_or_else(|| format!("{url}: not an http(s) URL"))?;
        if !Repos::read(&judged.conf).origins().contains(&origin) {
            return Err(format!(
                "{origin} is no server of {}; ask it yourself",
                judged.conf.display()
            ));
        }
        let name = file_name(url)?;
        let listed = match FileKind::of(name) {
            FileKind::Package => syncdb::lookup(&judged.dbpath, name).is_some(),
            FileKind::PackageSignature => name
                .strip_suffix(".sig")
                .is_some_and(|package| syncdb::lookup(&judged.dbpath, package).is_some()),
            _ => false,
        };
        match listed && is_shareable_name(name) {
            true => Ok(()),
            false => Err(format!(
                "{name} is not a package the sync databases under {} list",
                judged.dbpath.display()
            )),
        }
    }

    /// Whether the sync databases confirm `share` (name, size and SHA-256) for `judged`.
    pub fn confirms(&self, judged: &Judged, share: &Share) -> bool {
        syncdb::lookup(&judged.dbpath, &share.name).is_some_and(|entry| {
            entry.csize == Some(share.size) && entry.sha256 == Some(share.sha256)
        })
    }

    /// The files of `plan` the sync databases confirm, in order: a package by its size and
    /// SHA-256, a signature (at most pacman's limit) by its package being listed. The rest are
    /// dropped, never fetched.
    pub fn confirmed(&self, judged: &Judged, plan: Vec<Planned>) -> Vec<Planned> {
        let package = |p: &Planned| {
            let name = p.url.rsplit('/').next().unwrap_or_default();
            match p.sha256 {
                Some(_) => name.to_owned(),
                None => name.strip_suffix(".sig").unwrap_or_default().to_owned(),
            }
        };
        let names: Vec<String> = plan.iter().map(package).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let listed = syncdb::lookup_all(&judged.dbpath, &names);
        plan.into_iter()
            .filter(|p| {
                let entry = listed.get(&package(p));
                match p.sha256 {
                    Some(sha256) => entry.is_some_and(|entry| {
                        entry.csize == Some(p.size) && entry.sha256 == Some(sha256)
                    }),
                    None => entry.is_some() && p.size <= MAX_SIGNATURE as u64,
                }
            })
            .collect()
    }
}

/// The file a URL's path names, for a caller held to what pacman would fetch: its last
/// segment, in a path with no query, fragment, percent-escape or dot segment, so that the name
/// checked is the file the server will send.
fn file_name(url: &str) -> Result<&str, String> {
    let (_, path) = crate::protocol::agent::split_url(url).ok_or("not a URL")?;
    if path.contains(['?', '#', '%', '\\']) {
        return Err(format!("{path:?}: a query, fragment or escape"));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!("{path:?}: a dot segment"));
    }
    Ok(path.rsplit('/').next().unwrap_or_default())
}

/// The pacman whose downloader `pid` is, and root's pacman behind it: its parent, when that is
/// `pacman` run by root (twice), or that parent (pacman 7's sandboxed download child) and its
/// own parent, `pacman` run by root. None for anything else, a process named pacman run by a
/// user included.
fn roots_pacman(pid: u32) -> Option<(u32, u32)> {
    let parent = parent_of(pid)?;
    if !is_pacman(parent) {
        return None;
    }
    if process_uid(parent)? == 0 {
        return Some((parent, parent));
    }
    let grandparent = parent_of(parent)?;
    (is_pacman(grandparent) && process_uid(grandparent)? == 0).then_some((parent, grandparent))
}

/// The real uid of `pid`, as this process's user namespace sees it.
pub fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Origins (`scheme://host:port`) that pacman configurations name, learnt from each
/// configuration file once per change.
#[derive(Default)]
struct Origins {
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    origins: Vec<String>,
    /// Configuration files read, and their mtime then.
    read: HashMap<PathBuf, Option<SystemTime>>,
}

impl Origins {
    /// Reads `conf`'s servers unless that version of the file was read already.
    fn learn(&self, conf: &Path) {
        let mtime = std::fs::metadata(conf).and_then(|m| m.modified()).ok();
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if known.read.get(conf) == Some(&mtime) || known.read.len() >= 64 {
            return;
        }
        known.read.insert(conf.to_owned(), mtime);
        for origin in Repos::read(conf).origins() {
            if !known.origins.contains(&origin) {
                known.origins.push(origin);
            }
        }
    }

    fn insert(&self, origin: String) {
        if let Ok(mut known) = self.known.lock()
            && !known.origins.contains(&origin)
        {
            known.origins.push(origin);
        }
    }

    fn contains(&self, origin: &str) -> bool {
        self.known
            .lock()
            .is_ok_and(|known| known.origins.iter().any(|o| o == origin))
    }
}

/// The agent's resolver: the system's, minus loopback, link-local, unspecified and multicast
/// addresses for any origin no pacman configuration names.
#[derive(Clone)]
pub struct Guard {
    origins: Arc<Origins>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Resolver for Guard {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let origin = repos::origin(&uri.to_string()).unwrap_or_default();
        if self.origins.contains(&origin) {
            return Ok(resolved);
        }
        let mut kept = self.empty();
        for addr in resolved.iter().filter(|a| !forbidden(a)) {
            kept.push(*addr);
        }
        match kept.is_empty() {
            false => Ok(kept),
            true => Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refused: {origin} is a loopback or link-local address no pacman.conf names"
                ),
            ))),
        }
    }
}

/// Addresses a caller-supplied URL may not reach.
fn forbidden(addr: &SocketAddr) -> bool {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
        }
        IpAddr::V6(ip) => {
            ip.is_loopback()
                || ip.is_unicast_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_are_forbidden_and_the_lan_is_not() {
        for no in [
            "127.0.0.1:80",
            "127.8.9.1:80",
            "[::1]:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::ffff:127.0.0.1]:80",
            "224.0.0.1:80",
        ] {
            assert!(forbidden(&no.parse().unwrap()), "{no}");
        }
        for ok in [
            "10.0.0.1:80",
            "192.168.1.2:443",
            "[fd00::1]:80",
            "8.8.8.8:80",
        ] {
            assert!(!forbidden(&ok.parse().unwrap()), "{ok}");
        }
    }

    #[test]
    fn this_test_is_not_a_pacman_downloader() {
        assert_eq!(roots_pacman(std::process::id()), None);
        let policy = Policy::new("/nonexistent.conf".into(), "/nonexistent".into());
        let judged = policy.judge(Caller {
            uid: 1000,
            pid: std::process::id() as i32,
            start: None,
        });
        assert_eq!(judged.standing, Standing::User);
        let refused = policy.may_fetch(&judged, "http://mirror.example/core/a-1-1-any.pkg.tar.zst");
        assert!(refused.unwrap_err().contains("no server"));
    }

    #[test]
    fn a_listed_name_must_be_the_file_the_server_sends() {
        let name = "a-1-1-any.pkg.tar.zst";
        assert_eq!(file_name(&format!("http://m/core/{name}")), Ok(name));
        for sneaky in [
            format!("http://m/private/secret?/{name}"),
            format!("http://m/private/secret#/{name}"),
            format!("http://m/private/x/../secret?a=/../{name}"),
            format!("http://m/private/../core/{name}"),
            format!("http://m/private/%2e%2e/{name}"),
            format!("http://m/./{name}"),
        ] {
            assert!(file_name(&sneaky).is_err(), "{sneaky}");
        }
    }
}
