//! The `CacheServer` endpoint: `GET`/`HEAD /cache/<file>` for this machine's own pacman, which
//! the Include line (`CacheServer = http://127.0.0.1:15678/cache`) points at.
//!
//! pacman (≥ 6.1) asks its cache servers for every package before its mirrors, keeps asking
//! them after a 404, and never asks them for databases. So this endpoint answers with a LAN
//! peer's copy or 404, and nothing in between: it must never hand pacman a byte the sync
//! database has not vouched for, since pacman would fail the whole transaction on a bad file.
//! Rather than a second LAN downloader here, it runs the hardened one: `pacserve-fetch
//! --peers-only` (found next to this binary), which asks the LAN, survives bad and stalled
//! peers, checks size and SHA-256 against the sync databases under the machine's DBPath, and
//! exits 0 only with the verified file. That file lives in a private directory under the daemon's
//! state dir until the response has opened it; then it is unlinked, and pacman receives it with
//! its Content-Length (and Range, for a resumed `.part`).
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

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::daemon::cache::Cache;
use crate::pacman::name::{FileKind, is_shareable_name};
use crate::pacman::repos::Repos;
use crate::pacman::syncdb;
use crate::{info, warn};

/// Signatures of served packages kept for pacman's `.sig` request, and for how long.
const SIGNATURES_KEPT: usize = 64;
const SIGNATURE_FOR: Duration = Duration::from_secs(300);

/// Peer fetches running at once; requests beyond it get 404 and pacman uses its mirrors.
pub const MAX_AT_ONCE: usize = 8;
/// A fetch still running after this long is killed (404). pacserve-fetch bounds its time with
/// peers itself; this only guards against a hung subprocess.
pub const FETCH_LIMIT: Duration = Duration::from_secs(300);
/// Lines of a failed fetch's account that go into the log.
const TAIL_LINES: usize = 4;

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
    signatures: Arc<Mutex<Vec<KeptSignature>>>,
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

    /// One of the [`MAX_AT_ONCE`] places, held until dropped.
    fn take(&self) -> Option<Running> {
        let taken = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_AT_ONCE).then_some(n + 1)
            });
        taken.ok().map(|_| Running(self.running.clone()))
    }

    /// Runs pacserve-fetch for `name` into `out`; Ok only when it exited 0.
    async fn fetch(&self, name: &str, out: &Path, log: &Path) -> Result<(), String> {
        let log_file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(["--peers-only", "--no-agent", "-v", "--dbpath"])
            .arg(&self.dbpath)
            .arg("--pacman-conf")
            .arg(&self.pacman_conf)
            .arg("--port")
            .arg(self.udp_port.to_string());
        for interface in &self.interfaces {
            command.arg("--interface").arg(interface);
        }
        // The URL is never fetched (--peers-only); it only has to be valid.
        command
            .arg(out)
            .arg(format!("http://127.0.0.1/cache/{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let status = match tokio::time::timeout(FETCH_LIMIT, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(format!("waiting for {}: {e}", self.program.display())),
            Err(_) => {
                let _ = child.kill().await;
                return Err(format!("killed after {} s", FETCH_LIMIT.as_secs()));
            }
        };
        match status.success() {
            true => Ok(()),
            false => Err(tail(log).unwrap_or_else(|| status.to_string())),
        }
    }
}

impl CacheServer {
    /// After `name` arrived in `dir`: its signature, when pacman will ask for it and the
    /// database does not carry it, from the LAN, checked over the package, kept for pacman's
    /// request. An error means the package must not be served either.
    async fn signature_along(&self, name: &str, dir: &Path) -> Result<(), String> {
        let (dbpath, conf, package) = (
            self.dbpath.clone(),
            self.pacman_conf.clone(),
            name.to_owned(),
        );
        let needed = tokio::task::spawn_blocking(move || {
            syncdb::lookup(&dbpath, &package).is_some_and(|entry| {
                entry.signature.is_none()
                    && Repos::read(&conf).package_signatures_checked(&entry.repo)
            })
        })
        .await
        .unwrap_or(true);
        if !needed {
            return Ok(());
        }
        let sig = format!("{name}.sig");
        let part = dir.join(format!("{sig}.part"));
        self.fetch(&sig, &part, &dir.join("sig.log"))
            .await
            .map_err(|why| format!("its signature is not on the LAN ({why})"))?;
        let bytes = std::fs::read(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        if let Ok(mut kept) = self.signatures.lock() {
            kept.retain(|(n, _, at)| *n != sig && at.elapsed() < SIGNATURE_FOR);
            if kept.len() >= SIGNATURES_KEPT {
                kept.remove(0);
            }
            kept.push((sig, bytes, Instant::now()));
        }
        Ok(())
    }

    /// The signature [`CacheServer::signature_along`] kept for `sig`, taken.
    fn kept_signature(&self, sig: &str) -> Option<Vec<u8>> {
        let mut kept = self.signatures.lock().ok()?;
        let at = kept
            .iter()
            .position(|(n, _, at)| n == sig && at.elapsed() < SIGNATURE_FOR)?;
        Some(kept.remove(at).1)
    }
}

/// A signature [`CacheServer::signature_along`] checked: its `.sig` name, its bytes, when.
type KeptSignature = (String, Vec<u8>, Instant);

/// A fetch in progress, counted in [`CacheServer::running`].
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The last lines of pacserve-fetch's `-v` account, on one line for the journal: why no peer
/// was asked or which peer failed how.
fn tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.len().saturating_sub(TAIL_LINES);
    (!lines.is_empty()).then(|| lines[last..].join(" | "))
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
    let dir = match std::fs::create_dir_all(&server.work_dir).and_then(|()| {
        tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(&server.work_dir)
    }) {
        Ok(dir) => dir,
        Err(e) => {
            warn!(
                "cache: {name}: no room in {}: {e}",
                server.work_dir.display()
            );
            return CacheAnswer::Status(404);
        }
    };
    let part = dir.path().join(format!("{name}.part"));
    let log = dir.path().join("log");
    let fetched = server.fetch(name, &part, &log).await;
    // Where pacman would have it: the signature's check looks for the package there.
    let out = dir.path().join(name);
    let fetched = fetched.and_then(|()| {
        std::fs::rename(&part, &out).map_err(|e| format!("{}: {e}", part.display()))
    });
    let fetched = match fetched {
        Ok(()) => server.signature_along(name, dir.path()).await,
        Err(why) => Err(why),
    };
    drop(running);
    if let Err(why) = fetched {
        info!("cache: {name}: not from the LAN ({why}); pacman's mirrors");
        return CacheAnswer::Status(404);
    }
    // Opened before the directory goes: the open file lives until the body is sent.
    let opened = File::open(&out).and_then(|f| f.metadata().map(|m| (f, m.len())));
    drop(dir);
    match opened {
        Ok((file, len)) => {
            info!("cache: {name} ({len} bytes) from a LAN peer, verified");
            CacheAnswer::File { file, len }
        }
        Err(e) => {
            warn!("cache: {name}: {e}");
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

    #[test]
    fn at_most_max_at_once_fetches_and_a_finished_one_frees_its_place() {
        let paths = ("/db".into(), "/c".into());
        let server = CacheServer::new("x".into(), paths, Path::new("/s"), 1, vec![]);
        let held: Vec<Running> = (0..MAX_AT_ONCE).filter_map(|_| server.take()).collect();
        assert_eq!(held.len(), MAX_AT_ONCE);
        assert!(server.take().is_none());
        drop(held);
        assert!(server.take().is_some());
        assert_eq!(server.work_dir, Path::new("/s/cache-fetch"));
    }
}
