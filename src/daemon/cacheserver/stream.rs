//! The body of a `/cache/` answer: the verified LAN copy, at once or after keeping pacman's
//! transfer alive with the mirror's first bytes.
//!
//! pacman's libcurl gives up on a transfer that has brought no body byte for about 10 s
//! (`CURLOPT_LOW_SPEED_LIMIT 1`, `CURLOPT_LOW_SPEED_TIME 10`; measured against pacman 7.1:
//! header bytes do not count, a first body byte at 9.5 s passes and one at 10.5 s does not, and
//! once bytes flow a 64-byte write every 11 s still passes). So:
//!
//! 1. For [`HOLD`] the answer waits for the LAN copy: most packages are verified by then, and
//!    get the whole file (or 404: no peer had a good copy), and the mirror is never asked.
//! 2. Then the head goes out, with the full length, and [`CHUNK`] bytes of the mirror's copy
//!    every [`TICK`] ([`super::mirror`]), never the answer's last byte, while the LAN copy
//!    arrives and is verified.
//! 3. Once it is, the bytes pacman has are compared with the verified copy, and the rest goes
//!    from that copy by sendfile. A failed LAN copy, or mirror bytes that are not the file's,
//!    cut the connection instead: pacman then resumes its `.part` from its mirror with a Range
//!    (a cache server's errors are silent and never count against it), so a bad peer costs a
//!    resume, never a wrong file.
//!
//! A client that goes away ends the answer at once, and with it the LAN fetch (the place, the
//! pacserve-fetch process and its file). Every wait here is bounded by the LAN fetch's own limit
//! ([`super::FETCH_LIMIT`]); nothing is held per answer but the mirror's bytes sent so far,
//! at most [`MAX_TRICKLE`].

use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;

use super::lan::Verified;
use super::mirror::MirrorBytes;
use crate::daemon::http::answer::Span;
use crate::daemon::http::response::Head;
use crate::daemon::http::send;
use crate::daemon::ledger::Ledger;
use crate::daemon::server::{self, Next, SEND_TIMEOUT};
use crate::daemon::stats::Stats;
use crate::{info, warn};

/// How long an answer waits for the LAN copy before it starts keeping pacman's transfer alive.
pub const HOLD: Duration = Duration::from_secs(2);
/// Bytes of the mirror's copy sent every [`TICK`]: far above libcurl's 1 byte/s, far below
/// anything that costs the mirror.
pub const CHUNK: usize = 64;
pub const TICK: Duration = Duration::from_secs(2);
/// The most ticks an answer keeps alive: the LAN fetch's limit ends it before.
const MAX_TICKS: u64 = super::FETCH_LIMIT.as_secs() / TICK.as_secs() + 1;
/// The most of the mirror's bytes one answer sends.
pub const MAX_TRICKLE: u64 = MAX_TICKS * CHUNK as u64;

/// The LAN fetch of an answer: the verified copy, or why there is none.
pub type LanFetch = Pin<Box<dyn Future<Output = Result<Verified, String>> + Send>>;

/// A GET or HEAD of a package that is not verified yet.
pub struct Pending {
    pub name: String,
    /// The whole file's size, as the sync database gave it.
    pub size: u64,
    /// 200 or 206 with the answer's length, as [`crate::daemon::http::answer::decide`] put it.
    pub head: Head,
    pub span: Span,
    /// A HEAD: the head once the copy is verified, no body, nothing kept alive.
    pub head_only: bool,
    pub lan: LanFetch,
    /// The mirror's bytes from the span's offset.
    pub mirror: MirrorBytes,
}

/// What ended a wait: the LAN fetch, the thing waited for, or the client leaving.
enum Race<T> {
    Lan(Result<Verified, String>),
    Done(T),
    Gone,
}

impl Pending {
    /// Sends the answer on `stream` (see the module doc); counted in `stats`, and what pacman
    /// got (or a 404) in `ledger`.
    pub async fn send(
        mut self,
        stream: &mut TcpStream,
        keep_alive: bool,
        (stats, ledger): (&Stats, &Ledger),
    ) -> Next {
        if self.head_only {
            return match race(&mut self.lan, stream, std::future::pending::<()>()).await {
                Race::Lan(Ok(_)) => server::answer_with(stream, self.head, &[], keep_alive).await,
                Race::Lan(Err(why)) => {
                    info!("cache: {}: not from the LAN ({why}); 404", self.name);
                    server::answer_with(stream, Head::new(404), &[], keep_alive).await
                }
                Race::Gone | Race::Done(()) => Next::Close,
            };
        }
        match race(&mut self.lan, stream, tokio::time::sleep(HOLD)).await {
            Race::Lan(result) => {
                return self
                    .at_once(stream, result, keep_alive, (stats, ledger))
                    .await;
            }
            Race::Gone => return Next::Close,
            Race::Done(()) => {}
        }
        // The mirror's bytes pacman has: checked against the verified copy at the end.
        let mut sent: Vec<u8> = Vec::new();
        // Never the last byte, and never more than MAX_TRICKLE.
        let room = MAX_TRICKLE.min(self.span.len.saturating_sub(1));
        let mut trickling = room > 0;
        for _ in 0..MAX_TICKS {
            if trickling {
                let want = CHUNK.min((room - sent.len() as u64) as usize);
                match race(&mut self.lan, stream, self.mirror.take(want)).await {
                    Race::Lan(result) => {
                        return self
                            .finish(stream, result, &sent, keep_alive, (stats, ledger))
                            .await;
                    }
                    Race::Gone => return Next::Close,
                    Race::Done(Ok(bytes)) => {
                        let mut out = match sent.is_empty() {
                            true => self.head.to_bytes(keep_alive),
                            false => Vec::new(),
                        };
                        out.extend_from_slice(&bytes);
                        if send::write_all(stream, &out, SEND_TIMEOUT).await.is_err() {
                            return Next::Close;
                        }
                        if sent.is_empty() {
                            Stats::add(&stats.cache_kept_alive, 1);
                        }
                        Stats::add(&stats.cache_mirror_bytes, bytes.len() as u64);
                        sent.extend_from_slice(&bytes);
                        trickling = (sent.len() as u64) < room;
                    }
                    Race::Done(Err(why)) => {
                        info!(
                            "cache: {}: no mirror bytes to keep pacman waiting ({why})",
                            self.name
                        );
                        trickling = false;
                    }
                }
            }
            match race(&mut self.lan, stream, tokio::time::sleep(TICK)).await {
                Race::Lan(result) => {
                    return self
                        .finish(stream, result, &sent, keep_alive, (stats, ledger))
                        .await;
                }
                Race::Gone => return Next::Close,
                Race::Done(()) => {}
            }
        }
        // Only a package and its signature fetched each near their limit get here.
        warn!(
            "cache: {}: the LAN fetch took over {} s; cut, pacman resumes from its mirror",
            self.name,
            MAX_TICKS * TICK.as_secs()
        );
        Stats::add(&stats.cache_cut, 1);
        Next::Close
    }

    /// The LAN fetch's result, unless the copy is not the size the answer announced (the sync
    /// database changed under the request, `pacman -Sy` in between).
    fn checked(&self, result: Result<Verified, String>) -> Result<Verified, String> {
        match result {
            Ok(verified) if verified.len != self.size => Err(format!(
                "{} bytes verified, {} announced: the sync database changed",
                verified.len, self.size
            )),
            other => other,
        }
    }

    /// Nothing sent yet: the whole answer from the verified copy, or 404.
    async fn at_once(
        self,
        stream: &mut TcpStream,
        result: Result<Verified, String>,
        keep_alive: bool,
        (stats, ledger): (&Stats, &Ledger),
    ) -> Next {
        let name = &self.name;
        match self.checked(result) {
            Ok(verified) => {
                info!(
                    "cache: {name} ({} bytes) from a LAN peer, verified",
                    verified.len
                );
                Stats::add(&stats.cache_lan, 1);
                let body = (&verified.file, Some(self.span));
                // The local pacman's answer: no upload cap applies.
                let (sent, next) =
                    server::file_body(stream, self.head, body, (keep_alive, stats), None).await;
                ledger.cache_served(name, sent);
                next
            }
            Err(why) => {
                info!("cache: {name}: not from the LAN ({why}); pacman's mirrors");
                ledger.cache_missed(name);
                server::answer_with(stream, Head::new(404), &[], keep_alive).await
            }
        }
    }

    /// The LAN fetch ended after the answer began with `sent`: the rest from the verified copy,
    /// or a cut.
    async fn finish(
        self,
        stream: &mut TcpStream,
        result: Result<Verified, String>,
        sent: &[u8],
        keep_alive: bool,
        (stats, ledger): (&Stats, &Ledger),
    ) -> Next {
        if sent.is_empty() {
            return self
                .at_once(stream, result, keep_alive, (stats, ledger))
                .await;
        }
        let name = &self.name;
        let n = sent.len() as u64;
        let verified = match self.checked(result) {
            Ok(verified) => verified,
            Err(why) => {
                info!(
                    "cache: {name}: not from the LAN ({why}) after {n} bytes of the mirror's; \
                     cut, pacman resumes from its mirror"
                );
                Stats::add(&stats.cache_cut, 1);
                return Next::Close;
            }
        };
        let mut theirs = vec![0; sent.len()];
        let same = verified
            .file
            .read_exact_at(&mut theirs, self.span.offset)
            .is_ok_and(|()| theirs == sent);
        if !same {
            warn!(
                "cache: {name}: the mirror's first {n} bytes are not the sync database's file; \
                 cut, pacman resumes from its mirror"
            );
            Stats::add(&stats.cache_cut, 1);
            return Next::Close;
        }
        info!(
            "cache: {name} ({} bytes) from a LAN peer, verified, after {n} bytes of the \
             mirror's",
            verified.len
        );
        Stats::add(&stats.cache_lan, 1);
        let rest = Span {
            offset: self.span.offset + n,
            len: self.span.len - n,
        };
        let (rest_sent, outcome) =
            send::file(stream, &verified.file, rest, (SEND_TIMEOUT, None)).await;
        // The mirror's first bytes were the mirror's: the LAN gave pacman the rest.
        ledger.cache_served(name, rest_sent);
        server::ended(outcome, keep_alive, stats)
    }
}

/// Waits for `what`, unless the LAN fetch ends or the client goes away first.
async fn race<T>(lan: &mut LanFetch, stream: &TcpStream, what: impl Future<Output = T>) -> Race<T> {
    tokio::select! {
        result = lan => Race::Lan(result),
        done = what => Race::Done(done),
        () = gone(stream) => Race::Gone,
    }
}

/// Completes when the client has closed its side (or the connection broke); a client that sends
/// more (a pipelined request) is still there.
async fn gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::http::answer::{self, Conditions, Resource};
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    /// The file the sync database describes, and a mirror's copy of it (file://) whose first
    /// bytes may differ.
    struct Files {
        _dir: tempfile::TempDir,
        good: Vec<u8>,
        verified: std::path::PathBuf,
        mirror_url: String,
    }

    fn files(mirror_differs: bool) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let good: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let verified = dir.path().join("verified");
        std::fs::write(&verified, &good).unwrap();
        let mut theirs = good.clone();
        if mirror_differs {
            theirs[10] ^= 1;
        }
        let mirror = dir.path().join("a-1-1-any.pkg.tar.zst");
        std::fs::write(&mirror, &theirs).unwrap();
        let mirror_url = format!("file://{}", mirror.display());
        Files {
            _dir: dir,
            good,
            verified,
            mirror_url,
        }
    }

    /// Sends an answer for `range` whose LAN fetch ends after `after` with `ok`; returns what
    /// the client received (head and body) and the counters.
    async fn answer(
        files: &Files,
        range: Option<&str>,
        after: Duration,
        ok: bool,
    ) -> (Vec<u8>, Stats) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got);
            got
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let size = files.good.len() as u64;
        let decided = answer::decide(
            Resource {
                len: size,
                modified: None,
            },
            Conditions {
                range,
                ..Conditions::default()
            },
        );
        let span = decided.body.unwrap();
        let verified = files.verified.clone();
        let paths = ("/db".into(), "/c".into());
        let state = std::path::Path::new("/nonexistent");
        let place = super::super::CacheServer::new("x".into(), paths, state, 1, vec![]).take();
        let lan: LanFetch = Box::pin(async move {
            tokio::time::sleep(after).await;
            match ok {
                true => {
                    let file = std::fs::File::open(&verified).map_err(|e| e.to_string())?;
                    let _place = place.ok_or("no place")?;
                    Ok(Verified {
                        file,
                        len: size,
                        _place,
                    })
                }
                false => Err("the peer lied".to_owned()),
            }
        });
        let urls = vec![files.mirror_url.clone()];
        let mirror = MirrorBytes::new(
            super::super::mirror::agent(),
            urls,
            size,
            (span.offset, span.offset + span.len - 1),
        );
        let pending = Pending {
            name: "a-1-1-any.pkg.tar.zst".to_owned(),
            size,
            head: decided.head,
            span,
            head_only: false,
            lan,
            mirror,
        };
        let stats = Stats::default();
        let state = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(state.path(), state.path().join("db"), Default::default());
        pending.send(&mut stream, false, (&stats, &ledger)).await;
        drop(stream);
        (client.join().unwrap(), stats)
    }

    fn body(received: &[u8]) -> (&str, &[u8]) {
        let at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            std::str::from_utf8(&received[..at]).unwrap(),
            &received[at + 4..],
        )
    }

    #[tokio::test]
    async fn a_copy_verified_within_the_hold_is_sent_whole_and_the_mirror_never_asked() {
        let files = files(false);
        let (got, stats) = answer(&files, None, Duration::from_millis(50), true).await;
        let (head, got) = body(&got);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, files.good);
        assert_eq!(stats.cache_mirror_bytes.load(Relaxed), 0);
        assert_eq!(stats.cache_lan.load(Relaxed), 1);
        let (got, _) = answer(&files, None, Duration::from_millis(50), false).await;
        assert!(body(&got).0.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn a_slow_copy_is_kept_alive_with_the_mirrors_bytes_then_sent_from_where_they_end() {
        let files = files(false);
        let after = HOLD + Duration::from_millis(500);
        let (got, stats) = answer(&files, Some("bytes=1000-"), after, true).await;
        let (head, got) = body(&got);
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(got, &files.good[1000..]);
        assert_eq!(stats.cache_kept_alive.load(Relaxed), 1);
        assert_eq!(stats.cache_mirror_bytes.load(Relaxed), CHUNK as u64);
        assert_eq!(stats.cache_lan.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_copy_or_a_mirror_that_is_not_the_file_cuts_the_answer_short() {
        let after = HOLD + Duration::from_millis(500);
        for (mirror_differs, ok) in [(false, false), (true, true)] {
            let files = files(mirror_differs);
            let (got, stats) = answer(&files, None, after, ok).await;
            let (head, got) = body(&got);
            assert!(head.contains("content-length: 100000"), "{head}");
            assert_eq!(got.len(), CHUNK, "only the mirror's bytes, then the cut");
            assert_eq!(stats.cache_cut.load(Relaxed), 1);
            assert_eq!(stats.cache_lan.load(Relaxed), 0);
        }
    }
}
