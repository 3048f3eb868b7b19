//! The `CacheServer` endpoint: `GET`/`HEAD /cache/<file>` for this machine's own pacman, which
//! the Include line (`CacheServer = http://127.0.0.1:15678/cache`) points at.
//!
//! pacman (≥ 6.1) asks its cache servers for every package before its mirrors, keeps asking
//! them after a 404, and never asks them for databases. So this endpoint answers with a LAN
//! peer's copy or 404, and nothing in between: it must never hand pacman a byte the sync
//! database has not vouched for, since pacman would fail the whole transaction on a bad file.
//! The LAN copy is fetched and verified by [`lan`] (the hardened downloader, `pacserve-fetch
//! --peers-only`, into a private directory under the daemon's state dir); once the response
//! has opened the verified file it is unlinked, and pacman receives it with its Content-Length
//! (and Range, for a resumed `.part`).
//!
//! pacman asks for a package's `.sig` only from the cache server that sent the package, and with
//! `SigLevel = Required` a 404 there fails the transaction. So a package is served only when its
//! signature can be too: the sync database's `%PGPSIG%`, or a LAN peer's that `pacserve-fetch`
//! accepted (gpg, pacman's keyring) over the package just fetched, kept here in memory for the
//! request that follows ([`signature`]). A repository that checks no signatures needs neither.
//!
//! Who may ask: loopback only (403 otherwise), because the endpoint makes this machine fetch
//! on the asker's behalf. Files in the daemon's own cache get 404: pacman has already looked in
//! its cache before asking, so such a request means a cache directory pacman does not use, and
//! its bytes were never checked. At most [`MAX_AT_ONCE`] fetches run at once (pacman's
//! ParallelDownloads is 5 by default); more get 404 too, since pacman counts other errors
//! against a server and would stop asking it.

mod lan;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use crate::daemon::cache::Cache;
use crate::pacman::name::{FileKind, is_shareable_name};
use crate::pacman::repos::Repos;
use crate::pacman::syncdb;
use crate::{info, warn};

pub use lan::{FETCH_LIMIT, MAX_AT_ONCE};

/// How to run `pacserve-fetch --peers-only` for this machine.
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
        }
    }

    /// Whether pacman will ask for `name`'s signature and the database does not carry it.
    async fn signature_needed(&self, name: &str) -> bool {
        let (dbpath, conf, package) = (
            self.dbpath.clone(),
            self.pacman_conf.clone(),
            name.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            syncdb::lookup(&dbpath, &package).is_some_and(|entry| {
                entry.signature.is_none()
                    && Repos::read(&conf).package_signatures_checked(&entry.repo)
            })
        })
        .await
        .unwrap_or(true)
    }
}

/// What `/cache/` answers: a file to serve (by the one decision of
/// [`crate::daemon::http::answer`], Range included), a signature's bytes, or a bare status.
#[derive(Debug)]
pub enum CacheAnswer {
    /// A verified LAN copy, opened: its directory is gone already.
    File {
        file: File,
        len: u64,
    },
    Signature(Vec<u8>),
    Status(u16),
}

/// `GET`/`HEAD /cache/<file>` from `client`; `server` None answers 404, and so does a file
/// already in the daemon's `cache`.
pub async fn handle(
    server: Option<&CacheServer>,
    cache: &Cache,
    name: &str,
    client: SocketAddr,
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
    let Some(running) = server.take() else {
        info!("cache: {name}: {MAX_AT_ONCE} fetches already running; pacman's mirrors");
        return CacheAnswer::Status(404);
    };
    let needed = server.signature_needed(name).await;
    match server.lan_copy(name, needed, running).await {
        Ok(lan::Verified { file, len }) => {
            info!("cache: {name} ({len} bytes) from a LAN peer, verified");
            CacheAnswer::File { file, len }
        }
        Err(why) if why.starts_with("no room") => {
            warn!("cache: {name}: {why}");
            CacheAnswer::Status(404)
        }
        Err(why) => {
            info!("cache: {name}: not from the LAN ({why}); pacman's mirrors");
            CacheAnswer::Status(404)
        }
    }
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
