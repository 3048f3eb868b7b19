//! The `CacheServer` endpoint: `GET`/`HEAD /cache/<file>` for this machine's own pacman, which
//! the Include line (`CacheServer = http://127.0.0.1:15678/cache`) points at.
//!
//! pacman (≥ 6.1) asks its cache servers for every package before its mirrors and never for
//! databases; a cache server's errors (a 404, a cut connection) are silent and never count
//! against it, and after one pacman resumes its `.part` from its next server with a Range
//! (pacman 7.1's `lib/libalpm/dload.c`). The rule here: pacman never receives a byte from a LAN
//! peer that has not been verified against the sync database, so a bad peer costs a fallback,
//! never a failed transaction. A package is answered in one of three ways:
//!
//! - **404 at once**: no sync database lists it with a size and SHA-256, it is in the daemon's
//!   own cache (pacman has looked in its cache before asking, so such a request means a cache
//!   directory pacman does not use, whose bytes were never checked), [`MAX_AT_ONCE`] LAN
//!   fetches run already, or no LAN peer had a good copy within [`stream::HOLD`];
//! - **the verified LAN copy** ([`lan`]), whole, when it is there within [`stream::HOLD`], as
//!   for most packages;
//! - else **200 with the full length**, kept alive with the file's first bytes from the
//!   repository's own mirror ([`mirror`]) while the LAN copy arrives and is verified, then the
//!   rest from that copy at loopback speed ([`stream`]); a LAN copy that fails cuts the
//!   answer, and pacman resumes from its mirror. pacman's libcurl gives up on a transfer that
//!   brings no body byte for 10 s, so without this every package that takes longer than that
//!   to cross the LAN came whole from the mirror.
//!
//! The length, range and conditions of every answer are [`answer::decide`]'s, over the sync
//! database's size (pacman resumes a `.part` with `Range: bytes=N-`).
//!
//! pacman asks for a package's `.sig` only from the cache server that sent the package, and with
//! `SigLevel = Required` a 404 there fails the transaction. So a package is served only when its
//! signature can be too: the sync database's `%PGPSIG%`, or a LAN peer's that `pacserve-fetch`
//! accepted (gpg, pacman's keyring) over the package just fetched, kept here in memory for the
//! request that follows ([`signature`]). A repository that checks no signatures needs neither.
//!
//! Who may ask: loopback only (403 otherwise), because the endpoint makes this machine fetch
//! on the asker's behalf, and only for files the sync databases list. Concurrency: at most
//! [`MAX_AT_ONCE`] LAN fetches at once, one per answer (pacman's ParallelDownloads is 5 by
//! default, so one pacman never meets the limit); a request beyond it gets 404 at once and
//! that package comes from pacman's mirror, since a wait could outlast pacman's 10 s. An
//! answer whose client leaves ends its fetch at once.

mod lan;
mod mirror;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use crate::daemon::cache::Cache;
use crate::daemon::http::answer::{self, Conditions, Resource};
use crate::daemon::http::request::Request;
use crate::daemon::http::response::Head;
use crate::daemon::stats::Stats;
use crate::info;
use crate::pacman::name::{FileKind, is_shareable_name};
use crate::pacman::repos::Repos;
use crate::pacman::syncdb;

pub use lan::{FETCH_LIMIT, MAX_AT_ONCE};
pub use stream::Pending;

/// The endpoint: how to run `pacserve-fetch --peers-only` here, its places, the signatures it
/// keeps, and its client for mirrors.
#[derive(Debug, Clone)]
pub struct CacheServer {
    /// The pacserve-fetch binary.
    pub program: PathBuf,
    /// pacman's DBPath, whose sync databases vouch for what peers send.
    pub dbpath: PathBuf,
    /// pacman's configuration: which repositories check signatures, and its keyring.
    pub pacman_conf: PathBuf,
    /// Where fetches write, each in a directory of its own (`<state>/cache-fetch`).
    pub work_dir: PathBuf,
    /// The UDP port the LAN's daemons listen on.
    pub udp_port: u16,
    /// Interfaces to ask on; empty for pacserve-fetch's default.
    pub interfaces: Vec<String>,
    running: Arc<AtomicUsize>,
    /// Checked signatures of packages just served, until pacman asks.
    signatures: Arc<Mutex<Vec<lan::KeptSignature>>>,
    /// The HTTP client for mirrors' first bytes.
    mirrors: ureq::Agent,
}

impl CacheServer {
    pub fn new(
        program: PathBuf,
        (dbpath, pacman_conf): (PathBuf, PathBuf),
        state_dir: &Path,
        udp_port: u16,
        interfaces: Vec<String>,
    ) -> CacheServer {
        // Nothing a crash left behind is ever served: each fetch makes its own directory.
        let work_dir = state_dir.join("cache-fetch");
        let _ = std::fs::remove_dir_all(&work_dir);
        CacheServer {
            program,
            dbpath,
            pacman_conf,
            work_dir,
            udp_port,
            interfaces,
            running: Arc::new(AtomicUsize::new(0)),
            signatures: Arc::default(),
            mirrors: mirror::agent(),
        }
    }

    /// What the sync databases and pacman.conf say of package `name`; None when no database
    /// lists it with a size and SHA-256 (nothing could verify a peer's copy).
    async fn known(&self, name: &str) -> Option<Known> {
        let (dbpath, conf, name) = (
            self.dbpath.clone(),
            self.pacman_conf.clone(),
            name.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let entry = syncdb::lookup(&dbpath, &name)?;
            let size = entry
                .csize
                .filter(|&size| size > 0 && entry.sha256.is_some())?;
            let repos = Repos::read(&conf);
            let signature_needed =
                entry.signature.is_none() && repos.package_signatures_checked(&entry.repo);
            // pacman's order: its Server lines (CacheServer lines, this endpoint among them, are
            // no mirror), as http(s) or file URLs of the file.
            let mirror_urls = repos
                .repo(&entry.repo)
                .map(|repo| {
                    (repo.servers.iter())
                        .filter(|s| {
                            ["http://", "https://", "file://"].iter().any(|p| {
                                s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p))
                            })
                        })
                        .map(|s| format!("{s}/{name}"))
                        .collect()
                })
                .unwrap_or_default();
            Some(Known {
                size,
                signature_needed,
                mirror_urls,
            })
        })
        .await
        .ok()
        .flatten()
    }
}

/// What is known of a package before any peer is asked.
struct Known {
    /// Its size: the answer's length.
    size: u64,
    /// pacman will ask for its `.sig` and the database does not carry it.
    signature_needed: bool,
    /// The file on its repository's mirrors, in pacman's order.
    mirror_urls: Vec<String>,
}

/// What `/cache/` answers: a package's answer to send ([`Pending`], a HEAD's included), a head
/// alone (a range no file could satisfy), a signature's bytes, or a bare status.
pub enum CacheAnswer {
    Body(Box<Pending>),
    Head(Head),
    Signature(Vec<u8>),
    Status(u16),
}

/// `GET`/`HEAD /cache/<file>` from `client`; `server` None answers 404, and so does a file
/// already in the daemon's `cache`.
pub async fn handle(
    server: Option<&CacheServer>,
    cache: &Cache,
    (request, name): (&Request, &str),
    client: SocketAddr,
    stats: &Stats,
) -> CacheAnswer {
    let Some(server) = server else {
        return CacheAnswer::Status(404);
    };
    if !client.ip().to_canonical().is_loopback() {
        return CacheAnswer::Status(403);
    }
    // Databases and anything else no sync database can vouch for: pacman's mirrors.
    if !is_shareable_name(name) || cache.find(name).is_some() {
        return CacheAnswer::Status(404);
    }
    if FileKind::of(name) == FileKind::PackageSignature {
        return signature(server, name).await;
    }
    let Some(known) = server.known(name).await else {
        info!("cache: {name}: no sync database lists it with a size and SHA-256; 404");
        return CacheAnswer::Status(404);
    };
    // No file yet to take a date from: no validators, so a conditional request gets the whole
    // file, as for a file still arriving.
    let resource = Resource {
        len: known.size,
        modified: None,
    };
    let conditions = Conditions::of(request);
    let decided = answer::decide(resource, conditions);
    let Some(span) = decided.body else {
        return CacheAnswer::Head(decided.head);
    };
    if decided.head.status == 206 {
        Stats::add(&stats.cache_ranges, 1);
    }
    let Some(place) = server.take() else {
        info!("cache: {name}: {MAX_AT_ONCE} fetches already running; pacman's mirrors");
        Stats::add(&stats.cache_busy, 1);
        return CacheAnswer::Status(404);
    };
    let lan = {
        let (server, name) = (server.clone(), name.to_owned());
        let signature_needed = known.signature_needed;
        Box::pin(async move { server.lan_copy(&name, signature_needed, place).await })
    };
    let range = (span.offset, span.offset + span.len - 1);
    let mirror =
        mirror::MirrorBytes::new(server.mirrors.clone(), known.mirror_urls, known.size, range);
    CacheAnswer::Body(Box::new(Pending {
        name: name.to_owned(),
        size: known.size,
        head: decided.head,
        span,
        head_only: request.is_head(),
        lan,
        mirror,
    }))
}

/// `<package>.sig`: pacman 7.1 asks for it from the very cache server that sent the package
/// (and from no other server), and with `SigLevel = Required` a 404 there fails the download.
/// The sync database's `%PGPSIG%` is that signature, served from there; else the LAN peer's
/// that was checked when the package was served; else 404.
async fn signature(server: &CacheServer, name: &str) -> CacheAnswer {
    let dbpath = server.dbpath.clone();
    let package = name.strip_suffix(".sig").unwrap_or(name).to_owned();
    let from_db =
        tokio::task::spawn_blocking(move || syncdb::detached_signature(&dbpath, &package))
            .await
            .ok()
            .flatten();
    let found = match from_db {
        Some(bytes) => Some((bytes, "the sync database's PGPSIG")),
        None => server
            .kept_signature(name)
            .map(|bytes| (bytes, "a LAN peer, checked over the package")),
    };
    match found {
        Some((bytes, from)) => {
            info!("cache: {name} from {from}");
            CacheAnswer::Signature(bytes)
        }
        None => CacheAnswer::Status(404),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_earlier_run_left_in_the_work_directory_is_removed_at_start() {
        let state = tempfile::tempdir().unwrap();
        let left = state.path().join("cache-fetch/fetch-x");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("a-1-1-any.pkg.tar.zst.part"), b"from a crash").unwrap();
        let paths = ("/db".into(), "/c".into());
        let server = CacheServer::new("x".into(), paths, state.path(), 1, vec![]);
        assert!(
            !server.work_dir.exists(),
            "nothing a crash left is ever served"
        );
    }
}
