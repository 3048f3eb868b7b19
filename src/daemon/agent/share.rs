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
//! short, and the client's own fallback and checks take over. A followed peer gets what a
//! client gives one ([`crate::protocol::budget`]): a speed floor and a deadline for the whole
//! file; one that fails in any way is reported to the [`Claims`], which then never settle on
//! it again for that file (and for no file for a while), so a liar costs one round, not a loop.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::unversioned::transport::DefaultConnector;

use crate::daemon::claims::{Claims, Verdict};
use crate::daemon::growing::{Growing, Writer};
use crate::daemon::stats::Stats;
use crate::info;
use crate::protocol::agent::Share;
use crate::protocol::budget::{self, FLOOR_BYTES_PER_SEC, FLOOR_WINDOW};
use crate::protocol::peerhttp::{self, FixedAddress};

/// A followed daemon silent this long is left for the mirror (the floor's window: nothing in it
/// is certainly below the floor).
pub const PEER_STALL: Duration = FLOOR_WINDOW;
const PEER_CONNECT: Duration = Duration::from_secs(2);

/// An HTTP client for one followed peer: it connects to exactly the address that answered (an
/// IPv6 link-local one included) and follows no redirect, so a peer cannot send the agent
/// anywhere else.
pub fn peer_client(peer: SocketAddr) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .accept_encoding("identity")
        .user_agent(concat!("pacserved/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::with_parts(config, DefaultConnector::new(), FixedAddress(peer))
}

/// The registry and the claims, shared by the relay and prefetch, and the counters they bump.
pub struct Sharing {
    pub growing: Arc<Growing>,
    pub claims: Arc<Claims>,
    pub stats: Arc<Stats>,
}

impl Sharing {
    /// Registers `share` as arriving here and settles who fetches it: None when it is already
    /// arriving here (or sharing is full); else the writer and whether to follow someone.
    pub fn begin(&self, share: &Share) -> Option<(Writer, Verdict)> {
        // Arriving here already (the relay and prefetch can ask for one file at once): nothing
        // to settle, and no reason to make way first.
        if self.growing.find(&share.name).is_some() {
            return None;
        }
        let (turn, found) = self.claims.make_way(&share.name, self.growing.leading());
        let writer = self.growing.begin(&share.name, share.size, share.sha256)?;
        let (verdict, deferred) = match found {
            Some(http) => (Verdict::Follow { http }, false),
            None => self.claims.settle(&share.name),
        };
        if deferred {
            Stats::add(&self.stats.claims_deferred, 1);
        }
        if turn.made_way() {
            Stats::add(&self.stats.claims_made_way, 1);
        }
        let counter = match verdict {
            Verdict::Lead => &self.stats.claims_led,
            Verdict::Follow { .. } => &self.stats.claims_followed,
        };
        Stats::add(counter, 1);
        if verdict == Verdict::Lead {
            writer.led();
        }
        writer.commit();
        drop(turn);
        Some((writer, verdict))
    }
}

/// A followed daemon's body, cut off (an error) when a window of [`FLOOR_WINDOW`] brings fewer
/// bytes than the floor allows, or at `deadline` (a peer just above the floor must not hold a
/// large file for hours).
pub struct Floor<R> {
    body: R,
    window: Instant,
    bytes: u64,
    deadline: Instant,
}

impl<R> Floor<R> {
    pub fn new(body: R, deadline: Instant) -> Floor<R> {
        Floor {
            body,
            window: Instant::now(),
            bytes: 0,
            deadline,
        }
    }
}

impl<R: Read> Read for Floor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the time given to the peer is over",
            ));
        }
        let n = self.body.read(buf)?;
        self.bytes += n as u64;
        if self.window.elapsed() >= FLOOR_WINDOW {
            if self.bytes < FLOOR_BYTES_PER_SEC * FLOOR_WINDOW.as_secs() {
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
    /// Told of a peer that fails, or whose bytes fail the check; counts the fallbacks.
    pub sharing: &'a Sharing,
    body: Option<Box<dyn Read + Send + Sync>>,
    /// The peer that sent bytes of this file, if any: blamed when the whole does not verify.
    sent_by: Option<SocketAddr>,
    /// When the peer's time for the whole file is over ([`budget::phase`]).
    deadline: Instant,
    /// When following began: how fast the peer delivered counts from there.
    began: Instant,
}

impl<'a> Following<'a> {
    pub fn new(
        writer: Writer,
        peer: SocketAddr,
        url: String,
        user_agent: Option<String>,
        (stall, upstream): (Duration, &'a Agent),
        sharing: &'a Sharing,
    ) -> Self {
        let deadline = Instant::now() + budget::phase(writer.entry().size);
        Following {
            writer: Some(writer),
            peer: Some(peer),
            url,
            user_agent,
            stall,
            upstream,
            sharing,
            body: None,
            sent_by: None,
            deadline,
            began: Instant::now(),
        }
    }

    /// Leaves the peer for the mirror: it failed with `why`.
    fn drop_peer(&mut self, name: &str, pos: u64, why: &str) {
        if let Some(peer) = self.peer.take() {
            info!("agent: following {name}: peer {peer} {why}; using the mirror from byte {pos}");
            self.sharing.claims.failed(name, peer.ip());
            Stats::add(&self.sharing.stats.follow_failures, 1);
        }
        self.body = None;
    }

    /// The next source from `pos`: the peer first, then the mirror.
    fn open(&mut self, pos: u64, size: u64, name: &str) -> io::Result<Box<dyn Read + Send + Sync>> {
        let range = pos;
        let peer_agent = self.peer.map(peer_client);
        let (agent, url, connect, stall) = match (self.peer, &peer_agent) {
            (Some(peer), Some(agent)) => {
                (agent, peerhttp::url(peer, name), PEER_CONNECT, PEER_STALL)
            }
            _ => (self.upstream, self.url.clone(), self.stall, self.stall),
        };
        let mut config = agent
            .get(&url)
            .config()
            .timeout_connect(Some(connect))
            .timeout_per_read(Some(stall));
        if self.peer.is_some() {
            // A peer's head within the budget, the whole file within the deadline: a drip of
            // headers or `100 Continue` holds nothing longer than a drip of body bytes.
            let left = self.deadline.saturating_duration_since(Instant::now());
            config = config
                .timeout_recv_response(Some(budget::HEADER_BUDGET))
                .timeout_global(Some(left));
        }
        let mut call = config.build();
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
            Some(_) => Box::new(Floor::new(body, self.deadline)),
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
            return match (verified, self.sent_by) {
                (true, Some(peer)) => {
                    // Only a whole file from the peer says how fast it delivers.
                    let (bytes, took) = match self.peer {
                        Some(_) => (size, self.began.elapsed()),
                        None => (0, Duration::ZERO),
                    };
                    self.sharing.claims.succeeded(peer.ip(), bytes, took);
                    Ok(0)
                }
                (true, None) => Ok(0),
                (false, peer) => {
                    if let Some(peer) = peer {
                        self.sharing.claims.failed(&name, peer.ip());
                    }
                    Stats::add(&self.sharing.stats.follow_failures, 1);
                    Err(io::Error::other("the followed file is not the file"))
                }
            };
        }
        loop {
            let body = match self.body.as_mut() {
                Some(body) => body,
                None => match self.open(pos, size, &name) {
                    Ok(body) => self.body.insert(body),
                    Err(e) if self.peer.is_some() => {
                        self.drop_peer(&name, pos, &e.to_string());
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
                    if self.peer.is_some() {
                        self.sent_by = self.peer;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result if self.peer.is_some() => {
                    let why = result
                        .err()
                        .map_or("ended early".to_owned(), |e| e.to_string());
                    self.drop_peer(&name, pos, &why);
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
        let far = Instant::now() + Duration::from_secs(3600);
        let mut floor = Floor::new(Drip(Duration::from_millis(200)), far);
        let mut buf = [0u8; 16];
        let error = loop {
            if let Err(e) = floor.read(&mut buf) {
                break e;
            }
            assert!(started.elapsed() < PEER_STALL * 2, "never cut off");
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // A peer at full speed passes.
        let mut fast = Floor::new(io::repeat(7).take(1 << 20), far);
        assert_eq!(io::copy(&mut fast, &mut io::sink()).unwrap(), 1 << 20);
        // …but not past its deadline.
        let mut late = Floor::new(io::repeat(7), Instant::now());
        let error = io::copy(&mut late, &mut io::sink()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
