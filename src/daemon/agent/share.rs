//! The agent's side of sharing downloads in progress: every package it fetches for a local
//! `pacserve-fetch` (or ahead of one) is also written to a growing file the LAN can follow
//! ([`crate::daemon::growing`]), and when another daemon is already fetching it (settled by
//! [`crate::daemon::claims`]) the agent follows that daemon instead of going to the mirror.
//!
//! Only files the client vouches for take part: it names the file with its size and SHA-256
//! from the sync database in an `X-Pacserve-Share` request header (old daemons ignore it), so
//! every shared file is verified before its last byte is released. Following a peer, the agent
//! answers its client as the mirror would (200, full length); if the peer breaks off or stalls
//! for [`PEER_STALL`], the rest comes from the mirror by a range request at the agent's own
//! offset, and the whole file is checked before the last byte goes out. A wrong file is cut
//! short, and the client's own fallback and checks take over.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::Agent;

use crate::daemon::claims::{Claims, Verdict};
use crate::daemon::growing::{Growing, Writer};
use crate::info;
use crate::protocol::agent::Share;

/// A followed daemon silent this long is left for the mirror.
pub const PEER_STALL: Duration = Duration::from_secs(3);
/// …and so is one sending less than this per [`PEER_STALL`] (a drip would hold us for ever):
/// 64 KiB/s, the client's floor for peers.
pub const PEER_FLOOR: u64 = 3 * 64 * 1024;
const PEER_CONNECT: Duration = Duration::from_secs(2);

/// The registry and the claims, shared by the relay and prefetch.
pub struct Sharing {
    pub growing: Arc<Growing>,
    pub claims: Arc<Claims>,
}

impl Sharing {
    /// Registers `share` as arriving here and settles who fetches it: None when it is already
    /// arriving here (or sharing is full); else the writer and whether to follow someone.
    pub fn begin(&self, share: &Share) -> Option<(Writer, Verdict)> {
        let writer = self.growing.begin(&share.name, share.size, share.sha256)?;
        let verdict = self.claims.settle(&share.name);
        writer.commit();
        Some((writer, verdict))
    }
}

/// A followed daemon's body, cut off (an error) when a window of [`PEER_STALL`] brings fewer
/// than [`PEER_FLOOR`] bytes.
pub struct Floor<R> {
    body: R,
    window: Instant,
    bytes: u64,
}

impl<R> Floor<R> {
    pub fn new(body: R) -> Floor<R> {
        Floor {
            body,
            window: Instant::now(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for Floor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        self.bytes += n as u64;
        if self.window.elapsed() >= PEER_STALL {
            if self.bytes < PEER_FLOOR {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer is too slow",
                ));
            }
            (self.window, self.bytes) = (Instant::now(), 0);
        }
        Ok(n)
    }
}

/// Reads a body through to the client and into the shared file; at the end the shared file is
/// verified (what the client gets is its own business: the relay stays dumb).
pub struct Tee<R> {
    pub body: R,
    pub writer: Option<Writer>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        if n == 0 {
            if let Some(writer) = self.writer.take() {
                writer.finish();
            }
        } else if let Some(writer) = self.writer.as_mut()
            && writer.write(&buf[..n]).is_err()
        {
            self.writer = None;
        }
        Ok(n)
    }
}

/// The body of a file followed from `peer`, the mirror `url` taking over at our offset if the
/// peer fails; it ends (Ok(0)) only once the whole file is verified.
pub struct Following<'a> {
    pub writer: Option<Writer>,
    pub peer: Option<SocketAddr>,
    pub url: String,
    pub user_agent: Option<String>,
    pub stall: Duration,
    pub upstream: &'a Agent,
    body: Option<Box<dyn Read + Send + Sync>>,
}

impl<'a> Following<'a> {
    pub fn new(
        writer: Writer,
        peer: SocketAddr,
        url: String,
        user_agent: Option<String>,
        stall: Duration,
        upstream: &'a Agent,
    ) -> Self {
        Following {
            writer: Some(writer),
            peer: Some(peer),
            url,
            user_agent,
            stall,
            upstream,
            body: None,
        }
    }

    /// The next source from `pos`: the peer first, then the mirror.
    fn open(&mut self, pos: u64, size: u64, name: &str) -> io::Result<Box<dyn Read + Send + Sync>> {
        let (url, range, connect, stall) = match self.peer {
            Some(peer) => (
                format!("http://{peer}/pkg/{name}"),
                pos,
                PEER_CONNECT,
                PEER_STALL,
            ),
            None => (self.url.clone(), pos, self.stall, self.stall),
        };
        let mut call = self
            .upstream
            .get(&url)
            .config()
            .timeout_connect(Some(connect))
            .timeout_per_read(Some(stall))
            .build();
        if range > 0 {
            call = call.header("Range", format!("bytes={range}-"));
        }
        if let Some(ua) = &self.user_agent {
            call = call.header("User-Agent", ua);
        }
        let response = call.call().map_err(io::Error::other)?;
        let header = |n: &str| response.headers().get(n).and_then(|v| v.to_str().ok());
        let length = header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
        let start = match (response.status().as_u16(), header("Content-Range")) {
            (200, _) if range == 0 => 0,
            (206, Some(cr)) => cr
                .trim()
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('-'))
                .and_then(|(s, _)| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX),
            (status, _) => return Err(io::Error::other(format!("{url}: status {status}"))),
        };
        if start != pos || length.is_some_and(|l| pos + l != size) {
            return Err(io::Error::other(format!("{url}: not the rest of the file")));
        }
        let body = response.into_body().into_reader();
        Ok(match self.peer {
            Some(_) => Box::new(Floor::new(body)),
            None => Box::new(body),
        })
    }
}

impl Read for Following<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("already ended"))?;
        let (pos, size) = (writer.written(), writer.entry().size);
        let name = writer.entry().name.clone();
        if pos == size {
            let verified = self.writer.take().is_some_and(Writer::finish);
            return match verified {
                true => Ok(0),
                false => Err(io::Error::other("the followed file is not the file")),
            };
        }
        loop {
            let body = match self.body.as_mut() {
                Some(body) => body,
                None => match self.open(pos, size, &name) {
                    Ok(body) => self.body.insert(body),
                    Err(e) if self.peer.is_some() => {
                        info!("agent: following {name}: {e}; using the mirror from byte {pos}");
                        self.peer = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let room = buf.len().min((size - pos) as usize);
            match body.read(&mut buf[..room]) {
                Ok(n) if n > 0 => {
                    let writer = self
                        .writer
                        .as_mut()
                        .ok_or_else(|| io::Error::other("ended"))?;
                    writer.write(&buf[..n])?;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result if self.peer.is_some() => {
                    let why = result
                        .err()
                        .map_or("ended early".to_owned(), |e| e.to_string());
                    info!("agent: following {name}: peer {why}; using the mirror from byte {pos}");
                    self.peer = None;
                    self.body = None;
                }
                Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One byte per read, `pause` apart.
    struct Drip(Duration);

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.0);
            buf[0] = 1;
            Ok(1)
        }
    }

    #[test]
    fn a_dripping_peer_is_cut_off_after_one_window() {
        let started = Instant::now();
        let mut floor = Floor::new(Drip(Duration::from_millis(200)));
        let mut buf = [0u8; 16];
        let error = loop {
            if let Err(e) = floor.read(&mut buf) {
                break e;
            }
            assert!(started.elapsed() < PEER_STALL * 2, "never cut off");
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // A peer at full speed passes.
        let mut fast = Floor::new(io::repeat(7).take(1 << 20));
        assert_eq!(io::copy(&mut fast, &mut io::sink()).unwrap(), 1 << 20);
    }
}
