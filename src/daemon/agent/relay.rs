//! One `FETCH` job: read the client's GET, make it to the mirror over the daemon's warm
//! connections (or answer it from a prefetched file), and write the answer back unchanged.
//!
//! The relay is deliberately dumb about the download itself: it passes `Range` and
//! `If-Modified-Since` on and the mirror's status and framing headers back, and the client
//! applies every rule (checked Content-Range, 304, sizes, hashes) exactly as it does standalone.
//! What the daemon adds is one long-lived [`ureq::Agent`] whose pool keeps the TCP and TLS
//! connections of earlier jobs open for the next `pacserve-fetch`, so a file costs no handshake
//! and no slow start.

use std::io::{self, BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ureq::Agent;
use ureq::unversioned::transport::DefaultConnector;

use crate::daemon::agent;
use crate::daemon::agent::Caller;
use crate::daemon::agent::policy::{Guard, Judged};
use crate::daemon::agent::share::{Following, Tee};
use crate::daemon::agent::staged::Staged;
use crate::daemon::claims::Verdict;
use crate::daemon::http::answer::{self, Conditions, Resource};
use crate::daemon::http::response::{self, Head};
use crate::daemon::http::{self, request};
use crate::daemon::ledger::From;
use crate::daemon::stats::Stats;
use crate::pacman::name::FileKind;
use crate::protocol::agent::{NOT_FOR_YOU, REASON_HEADER, SHARE_HEADER, Share};
use crate::{info, warn};

/// Bytes per read and write of a body.
const COPY_BUFFER: usize = 256 * 1024;
/// Most idle connections kept open to one mirror.
const MAX_IDLE_PER_MIRROR: usize = 16;
/// The largest request head a client may send.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Response headers passed back: what the client's rules look at, nothing else.
const PASSED_BACK: &[&str] = &[
    "Content-Length",
    "Content-Range",
    "Content-Encoding",
    "Last-Modified",
    "Location",
    "Content-Type",
];

/// The client's time limits, which the daemon applies to the mirror on its behalf.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub stall: Duration,
}

impl Limits {
    /// Clamped to 1 ms – 10 min, so a bad number can neither spin nor hold a thread forever.
    pub fn from_millis(connect_ms: u64, stall_ms: u64) -> Limits {
        let clamp = |ms: u64| Duration::from_millis(ms.clamp(1, 600_000));
        Limits {
            connect: clamp(connect_ms),
            stall: clamp(stall_ms),
        }
    }
}

/// The daemon's one HTTP client for mirrors. Redirects are answered to the client, which
/// follows them through the agent again; the proxy is the daemon's own environment's.
///
/// `parallel` is how many requests to one mirror run at once in a transaction: the prefetch
/// window plus pacman's current file. The pool keeps that many connections per mirror (ureq
/// keeps 3 by default): every connection it drops costs the next file a handshake and TCP slow
/// start, which on a 40 ms round trip is most of a 1 MB file's time. Bounded, like the window.
pub fn upstream_agent(parallel: usize, guard: Guard) -> Agent {
    let per_host = parallel.clamp(3, MAX_IDLE_PER_MIRROR);
    let config = Agent::config_builder()
        .max_idle_connections_per_host(per_host)
        .max_idle_connections(per_host.max(10) * 2)
        .tls_config(crate::tls::system_trust())
        .http_status_as_error(false)
        .max_redirects(0)
        .accept_encoding("identity")
        .input_buffer_size(COPY_BUFFER)
        .proxy(ureq::Proxy::try_from_env())
        .user_agent(concat!("pacserved/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::with_parts(config, DefaultConnector::new(), guard)
}

/// The parts of the client's request that are passed on.
#[derive(Debug)]
pub(crate) struct Request {
    /// The head as read.
    pub head: http::request::Request,
    pub path: String,
    pub range: Option<String>,
    pub if_modified_since: Option<String>,
    pub user_agent: Option<String>,
    /// The client's `X-Pacserve-Share`: the file may be shared while it arrives.
    pub share: Option<Share>,
}

/// What a `FETCH` or `STAGED` line asked for.
pub struct Job<'a> {
    pub origin: &'a str,
    pub limits: Limits,
    /// Answer only from a prefetched file; 404 when there is none.
    pub staged_only: bool,
}

pub fn relay(
    mut reader: impl BufRead,
    mut conn: UnixStream,
    (caller, judged): (Caller, &Judged),
    job: Job<'_>,
    agent: &agent::Agent,
) {
    let (upstream, prefetch) = (&agent.upstream, &agent.prefetch);
    let stats = &*prefetch.sharing.stats;
    let Job {
        origin,
        limits,
        staged_only,
    } = job;
    let request = match read_request(&mut reader) {
        Ok(request) => request,
        Err(why) => {
            warn!(
                "agent: uid {} pid {}: refused: {why}",
                caller.uid, caller.pid
            );
            return refuse(&mut conn, &why, stats);
        }
    };
    let url = format!("{origin}{}", request.path);
    let who = format!("uid {} pid {}", caller.uid, caller.pid);
    if let Err(why) = agent.policy.may_fetch(judged, &url) {
        info!("agent: {who}: {url}: refused: {why}");
        Stats::add(&stats.agent_refused, 1);
        let head = Head::new(NOT_FOR_YOU).with(REASON_HEADER, format!("refused: {why}"));
        let _ = conn.write_all(&head.to_bytes(false));
        return;
    }
    let txn = judged.standing.txn();
    // A package's (or signature's) bytes go into the ledger, for the transaction's summary.
    let file = request.path.rsplit('/').next().unwrap_or_default();
    let counted = FileKind::of(file).shareable();
    let record = |from: From, bytes: u64| {
        if counted {
            agent.ledger.record(judged.standing.owner(), from, bytes);
        }
    };
    if let Some(staged) = prefetch.claim(&url, txn, request.user_agent.as_deref(), upstream) {
        return match answer_from_staged(&mut conn, staged, &request.head) {
            Ok(sent) => {
                Stats::add(&stats.prefetch_hits, 1);
                Stats::add(&stats.prefetch_bytes, sent);
                record(From::Mirror, sent);
                info!("agent: {who}: {url}: prefetched, {sent} bytes")
            }
            Err(e) => info!("agent: {who}: {url}: prefetched, client went away: {e}"),
        };
    }
    if staged_only {
        let head = Head::new(404).with(REASON_HEADER, "not staged");
        let _ = conn.write_all(&head.to_bytes(false));
        return;
    }
    // A whole package the client vouches for: share it while it arrives, or follow the daemon
    // already fetching it.
    // Shared only as the sync database describes it: never what a caller merely says.
    let shared = request
        .share
        .as_ref()
        .filter(|_| request.range.is_none() && request.if_modified_since.is_none())
        .filter(|share| agent.policy.confirms(judged, share))
        .and_then(|share| prefetch.sharing.begin(share));
    let writer = match shared {
        Some((writer, Verdict::Follow { http })) => {
            let size = writer.entry().size;
            let ua = request.user_agent.clone();
            let mut body = Following::new(
                writer,
                http,
                url.clone(),
                ua,
                (limits.stall, upstream),
                &prefetch.sharing,
            );
            let head = Head::new(200).with("content-length", size.to_string());
            let sent = conn
                .write_all(&head.to_bytes(false))
                .and_then(|_| copy_body(&mut body, &mut conn, false));
            return match sent {
                Ok(sent) => {
                    record(From::Lan(Some(http.ip())), sent);
                    info!("agent: {who}: {url}: followed {http}, {sent} bytes, verified")
                }
                Err(e) => info!("agent: {who}: {url}: following {http}: {e}"),
            };
        }
        Some((writer, Verdict::Lead)) => Some(writer),
        None => None,
    };
    let mut call = upstream
        .get(&url)
        .config()
        .timeout_resolve(Some(limits.connect))
        .timeout_connect(Some(limits.connect))
        .timeout_per_read(Some(limits.stall))
        .build();
    for (name, value) in [
        ("Range", &request.range),
        ("If-Modified-Since", &request.if_modified_since),
        ("User-Agent", &request.user_agent),
    ] {
        if let Some(value) = value {
            call = call.header(name, value);
        }
    }
    let response = match call.call() {
        Ok(response) => response,
        Err(e) => {
            let code = match e {
                ureq::Error::Timeout(_) => 504,
                _ => 502,
            };
            info!("agent: {who}: {url}: {e}");
            let head = Head::new(code).with(REASON_HEADER, e.to_string());
            let _ = conn.write_all(&head.to_bytes(false));
            return;
        }
    };
    let status = response.status().as_u16();
    Stats::add(&stats.agent_fetches, 1);
    let mut head = Head::new(status);
    for name in PASSED_BACK {
        if let Some(value) = response.headers().get(*name).and_then(|v| v.to_str().ok()) {
            head = head.with(name, value.to_owned());
        }
    }
    let has_body = !matches!(status, 204 | 304) && status >= 200;
    // A body of no stated length goes chunked, so that a cut is always visible.
    let chunked = has_body && head.field("content-length").is_none();
    if chunked {
        head = head.with("transfer-encoding", "chunked");
    }
    let content_length = head.field("content-length").map(str::to_owned);
    let writer = writer.filter(|w| {
        status == 200 && content_length.as_deref() == Some(&w.entry().size.to_string())
    });
    let mut body = Tee {
        body: response.into_body().into_reader(),
        writer,
    };
    let sent = conn
        .write_all(&head.to_bytes(false))
        .and_then(|_| match has_body {
            true => copy_body(&mut body, &mut conn, chunked),
            false => Ok(0),
        });
    match sent {
        Ok(sent) => {
            Stats::add(&stats.agent_mirror_bytes, sent);
            if matches!(status, 200 | 206) {
                record(From::Mirror, sent);
            }
            info!("agent: {who}: {url}: {status}, {sent} bytes")
        }
        Err(e) => info!("agent: {who}: {url}: {status}, cut off: {e}"),
    }
}

/// Answers a job the agent will not do, and counts it.
pub fn refuse(conn: &mut UnixStream, why: &str, stats: &Stats) {
    Stats::add(&stats.agent_refused, 1);
    let head = Head::new(400).with(REASON_HEADER, format!("refused: {why}"));
    let _ = conn.write_all(&head.to_bytes(false));
}

/// The client's request head, read as every request of the daemon is
/// ([`request::read_head_blocking`]): a GET of an origin-form path.
pub(crate) fn read_request(reader: &mut impl BufRead) -> Result<Request, String> {
    let head = request::read_head_blocking(reader, MAX_HEAD_BYTES).map_err(|e| e.to_string())?;
    if head.method != "GET" {
        return Err(format!(
            "not a GET request: {} {}",
            head.method, head.target
        ));
    }
    if head.target.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("bad path {:?}", head.target));
    }
    let header = |name: &str| head.header(name).map(str::to_owned);
    Ok(Request {
        path: head.target.clone(),
        range: header("range"),
        if_modified_since: header("if-modified-since"),
        user_agent: header("user-agent"),
        share: head
            .header(&SHARE_HEADER.to_ascii_lowercase())
            .and_then(Share::parse),
        head,
    })
}

/// Copies a body to the client; chunked framing ends only when the whole body arrived, so a
/// mirror that breaks off shows as a cut to the client too.
///
/// Each piece is written only after the next read, so the last one goes out after the mirror's
/// body ended: by then ureq has put the connection back into its pool, and the next
/// `pacserve-fetch`, which pacman starts the moment this one exits, finds it there.
fn copy_body(body: &mut dyn Read, conn: &mut UnixStream, chunked: bool) -> io::Result<u64> {
    let (mut held, mut next) = (vec![0u8; COPY_BUFFER], vec![0u8; COPY_BUFFER]);
    let mut held_len = 0;
    let mut sent = 0u64;
    loop {
        let n = match body.read(&mut next) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if held_len > 0 {
            write_piece(conn, &held[..held_len], chunked)?;
            sent += held_len as u64;
        }
        if n == 0 {
            break;
        }
        std::mem::swap(&mut held, &mut next);
        held_len = n;
    }
    if chunked {
        conn.write_all(&response::chunk(&[]))?;
    }
    Ok(sent)
}

fn write_piece(conn: &mut UnixStream, piece: &[u8], chunked: bool) -> io::Result<()> {
    match chunked {
        true => conn.write_all(&response::chunk(piece)),
        false => conn.write_all(piece),
    }
}

/// Answers from a prefetched copy as the mirror would, by the daemon's one decision of what a
/// GET of a file answers ([`answer::decide`]): whole, a range, 304 or 416.
fn answer_from_staged(
    conn: &mut UnixStream,
    staged: Staged,
    request: &http::request::Request,
) -> io::Result<u64> {
    let Staged {
        mut reader,
        size,
        mtime,
    } = staged;
    let resource = Resource {
        len: size,
        modified: mtime,
    };
    let answer = answer::decide(resource, Conditions::of(request));
    conn.write_all(&answer.head.to_bytes(false))?;
    let Some(span) = answer.body else {
        return Ok(0);
    };
    reader.skip_to(span.offset);
    copy_body(&mut reader.take(span.len), conn, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_strictly() {
        let head =
            "GET /core/a.pkg HTTP/1.1\r\nHost: m\r\nrange: bytes=5-\r\nUser-Agent: p\r\n\r\n";
        let request = read_request(&mut head.as_bytes()).unwrap();
        assert_eq!(request.path, "/core/a.pkg");
        assert_eq!(request.range.as_deref(), Some("bytes=5-"));
        assert_eq!(request.user_agent.as_deref(), Some("p"));
        for bad in [
            "POST / HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            "GET / HTTP/1.1\r\n",
        ] {
            assert!(read_request(&mut bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
