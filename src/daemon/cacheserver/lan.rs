//! The LAN half of `/cache/`: a verified copy of one package from a LAN peer, fetched by the
//! hardened downloader, `pacserve-fetch --peers-only` (found next to this binary), into a private
//! directory; and, when pacman will ask for it and the database does not carry it, the
//! package's signature, checked over the package and kept for pacman's `.sig` request.
//!
//! Rather than a second LAN downloader in the daemon, the client's is run: it asks the LAN,
//! survives bad and stalled peers (speed floor, deadlines, at most three peers), checks size and
//! SHA-256 against the sync databases under the machine's DBPath, and exits 0 only with the
//! verified file. What the daemon spends per file on running it (a process start, a few ms) is
//! measured in the `cache-latency` row of the LAN benchmark.
//!
//! At most [`MAX_AT_ONCE`] fetches run at once ([`CacheServer::take`]); a fetch is killed with
//! its future (the client went away) or after [`FETCH_LIMIT`].

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::CacheServer;

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

/// A signature [`CacheServer::signature_along`] checked: its `.sig` name, its bytes, when.
pub(super) type KeptSignature = (String, Vec<u8>, Instant);

/// A fetch in progress, counted in [`CacheServer::running`].
pub struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CacheServer {
    /// One of the [`MAX_AT_ONCE`] places, held until dropped.
    pub(super) fn take(&self) -> Option<Running> {
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

    /// After `name` arrived in `dir`: its signature from the LAN, checked over the package,
    /// kept for pacman's request. An error means the package must not be served either.
    pub(super) async fn signature_along(&self, name: &str, dir: &Path) -> Result<(), String> {
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
    pub(super) fn kept_signature(&self, sig: &str) -> Option<Vec<u8>> {
        let mut kept = self.signatures.lock().ok()?;
        let at = kept
            .iter()
            .position(|(n, _, at)| n == sig && at.elapsed() < SIGNATURE_FOR)?;
        Some(kept.remove(at).1)
    }

    /// The verified LAN copy of `name`, opened (its directory is gone already), and its
    /// signature kept when `signature_needed`; Err says why not. `place` goes with the copy:
    /// it is free once the answer is sent, so that clients that stop reading hold at most
    /// [`MAX_AT_ONCE`] copies on the disk, not one per connection.
    pub(super) async fn lan_copy(
        &self,
        name: &str,
        signature_needed: bool,
        place: Running,
    ) -> Result<Verified, String> {
        let dir = std::fs::create_dir_all(&self.work_dir)
            .and_then(|()| {
                tempfile::Builder::new()
                    .prefix("fetch-")
                    .tempdir_in(&self.work_dir)
            })
            .map_err(|e| format!("no room in {}: {e}", self.work_dir.display()))?;
        let part = dir.path().join(format!("{name}.part"));
        self.fetch(name, &part, &dir.path().join("log")).await?;
        // Where pacman would have it: the signature's check looks for the package there.
        let out = dir.path().join(name);
        std::fs::rename(&part, &out).map_err(|e| format!("{}: {e}", part.display()))?;
        if signature_needed {
            self.signature_along(name, dir.path()).await?;
        }
        // Opened before the directory goes: the open file lives until the body is sent.
        let file = File::open(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", out.display()))?
            .len();
        drop(dir);
        Ok(Verified {
            file,
            len,
            _place: place,
        })
    }
}

/// A LAN copy that matched the sync database, open, its name already gone from the disk, and
/// the place it holds until it is dropped.
pub struct Verified {
    pub file: File,
    pub len: u64,
    pub(super) _place: Running,
}

/// The last lines of pacserve-fetch's `-v` account, on one line for the journal: why no peer
/// was asked or which peer failed how.
fn tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.len().saturating_sub(TAIL_LINES);
    (!lines.is_empty()).then(|| lines[last..].join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

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
