//! `GET /pkg/<file>` of a cache file or of a file arriving right now, sent by the kernel with
//! sendfile(2).
//!
//! Through hyper every byte of a file is read into user space and written out again, a copy
//! and two system calls per chunk per client; with 32 clients on one file that cost the daemon
//! about three times nginx's CPU per gigabyte. Here the kernel moves the bytes from the page
//! cache to the socket, as nginx does with `sendfile on`.
//!
//! Nothing about *what* is answered changes. [`serve`] asks tower-http's `ServeFile` (with our
//! If-Range fix, [`ranges::serve_file`]) for the answer to the same request as a HEAD, and sends
//! it only when that answer is a 200 or 206 with a body; every other case (304, 412, 416, an
//! empty file, a file nowhere here) is left to hyper, which answers it as before. A file
//! arriving right now is answered as [`growing::response`] answers it (its [`growing::extent`]
//! and [`growing::framing`]), sending what has landed as it lands ([`Follow::landed`]), the
//! last byte only once the file is verified.
//!
//! Every limit stays: the connection already holds its slot and passed the allowlist, the head
//! was read under the header timeout and size limit, and a client that accepts no byte for the
//! send timeout is dropped. No user-space buffer is held per client, so a client that stops
//! reading pins nothing but kernel socket memory.
//!
//! Like nginx without aio, a read of a file that is not in the page cache blocks the worker
//! thread for the time of the disk read; each call sends at most [`MAX_PER_CALL`] bytes (nginx's
//! `sendfile_max_chunk`) and gives the runtime's other tasks their turn between calls, so one
//! fast client cannot hold a worker for long.

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::daemon::cache::Cache;
use crate::daemon::chunks;
use crate::daemon::deadline::timed_out;
use crate::daemon::growing::{self, Entry, Follow, Growing};
use crate::daemon::http1::Head;
use crate::daemon::ranges;
use crate::daemon::sent;
use crate::daemon::stats::{Stats, Upload};

/// Most bytes one sendfile call may move.
const MAX_PER_CALL: usize = 2 << 20;

/// How the request was dealt with.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered in full; the next request may follow on the connection.
    KeepAlive,
    /// Answered (or cut off); the connection must be closed.
    Close,
    /// Not for this path: hyper answers it, nothing has been written.
    NotMine,
}

/// What the kernel path serves from, and its send timeout.
pub struct Files<'a> {
    pub cache: &'a Cache,
    pub growing: &'a Growing,
    pub stats: &'a Stats,
    pub send_timeout: Duration,
}

/// Answers `head` if it is a GET of a cache file whose answer has a body, or of a file
/// arriving right now.
pub async fn serve(
    stream: &mut TcpStream,
    head: &Head,
    client: IpAddr,
    files: &Files<'_>,
) -> Served {
    if head.method != "GET" {
        return Served::NotMine;
    }
    // Percent-encoded or otherwise unusual targets are rare; hyper's router decodes them.
    let Some(name) = head.target.strip_prefix("/pkg/") else {
        return Served::NotMine;
    };
    if name.is_empty() || name.contains(['%', '?', '#', '/']) {
        return Served::NotMine;
    }
    let range = ranges::range_header(&head.headers);
    let Some(found) = files.cache.find(name) else {
        return match files.growing.find(name) {
            Some(entry) => follow(stream, head, name, client, entry, range, files).await,
            None => Served::NotMine,
        };
    };
    if found.size == 0 {
        return Served::NotMine;
    }
    let mut probe = Request::new(Body::empty());
    *probe.method_mut() = Method::HEAD;
    *probe.headers_mut() = head.headers.clone();
    let answer = ranges::serve_file(&found.path, probe, chunks::SMALL).await;
    let Some(extent) = extent(answer.status(), answer.headers()) else {
        return Served::NotMine;
    };
    // The file the answer describes, checked by its size: a file replaced between the two
    // looks is left to hyper, which looks again.
    let Ok(file) = File::open(&found.path) else {
        return Served::NotMine;
    };
    if file.metadata().map(|m| m.len()).ok() != Some(extent.total) {
        return Served::NotMine;
    }
    let status = answer.status();
    let out = response_head(status, answer.headers(), head.keep_alive);

    files.stats.heard(client);
    let request = sent::Request {
        method: Method::GET,
        name: name.to_owned(),
        client,
        status,
        range,
        announced: extent.len,
    };
    sent::started(&request);
    let _upload = Upload::start(files.stats);
    let timeout = files.send_timeout;
    cork(stream, true);
    let (sent_bytes, outcome) = match write_head(stream, &out, timeout).await {
        Ok(()) => send_range(stream, &file, extent.offset, extent.len, timeout).await,
        Err(e) => (0, Err(e)),
    };
    cork(stream, false);
    sent::ended(&request, sent_bytes, files.stats);
    ended(outcome, head.keep_alive, files.stats)
}

/// A file arriving right now ([`crate::daemon::growing`]): the full length announced, bytes
/// sent as they land, the last one once the file is verified. A range past the end is left
/// to hyper (416).
async fn follow(
    stream: &mut TcpStream,
    head: &Head,
    name: &str,
    client: IpAddr,
    entry: Arc<Entry>,
    range: Option<String>,
    files: &Files<'_>,
) -> Served {
    let size = entry.size;
    let Some((status, from)) = growing::extent(size, range.as_deref()) else {
        return Served::NotMine;
    };
    let Ok(mut follow) = Follow::open(entry, from) else {
        return Served::NotMine;
    };
    files.stats.heard(client);
    growing::count_follower(files.stats, "GET", name, client);
    let _upload = Upload::start(files.stats);
    let out = response_head(status, growing::framing(size, from), head.keep_alive);
    let timeout = files.send_timeout;
    let mut outcome = write_head(stream, &out, timeout).await;
    while outcome.is_ok() {
        let limit = match follow.landed().await {
            Ok(Some(limit)) => limit,
            Ok(None) => break,
            // Our download failed or stalled: the follower's body ends short (it goes on to
            // its next source); not a client that stopped reading.
            Err(e) => {
                outcome = Err(io::Error::other(format!("the download here ended: {e}")));
                break;
            }
        };
        let (pos, file) = (follow.pos(), follow.file());
        let (sent, result) = send_range(stream, file, pos, limit - pos, timeout).await;
        follow.advance(sent);
        outcome = result;
    }
    ended(outcome, head.keep_alive, files.stats)
}

/// An HTTP/1.1 response head with `fields`, a Date, and `Connection: close` unless kept alive.
fn response_head(
    status: StatusCode,
    fields: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<[u8]>)>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let _ = write!(out, "HTTP/1.1 {status}\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_ref().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_ref());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "date: {}\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Holds partial segments while on, so the head and the start of the body leave together: a
/// small file (a signature) is not held back by Nagle until the client acknowledges the head
/// (nginx's `tcp_nopush`). Turning it off sends what is left.
fn cork(stream: &TcpStream, on: bool) {
    let _ = socket2::SockRef::from(stream).set_tcp_cork(on);
}

async fn write_head(stream: &mut TcpStream, head: &[u8], timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(timeout, stream.write_all(head)).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// What becomes of the connection after a response that ended with `outcome`.
fn ended(outcome: io::Result<()>, keep_alive: bool, stats: &Stats) -> Served {
    match outcome {
        Ok(()) if keep_alive => Served::KeepAlive,
        Ok(()) => Served::Close,
        Err(e) => {
            if e.kind() == io::ErrorKind::TimedOut {
                Stats::add(&stats.stalled_clients, 1);
            }
            Served::Close
        }
    }
}

/// The bytes of the file an answer sends.
#[derive(Debug, PartialEq, Eq)]
struct Extent {
    offset: u64,
    len: u64,
    /// The whole file's size, as the answer states it.
    total: u64,
}

/// What a 200 or 206 answer from ServeFile sends; None for any other answer.
fn extent(status: StatusCode, headers: &axum::http::HeaderMap) -> Option<Extent> {
    let number = |name| -> Option<u64> { headers.get(name)?.to_str().ok()?.parse().ok() };
    let len = number(header::CONTENT_LENGTH)?;
    match status {
        StatusCode::OK => Some(Extent {
            offset: 0,
            len,
            total: len,
        }),
        StatusCode::PARTIAL_CONTENT => {
            // `bytes first-last/total`, as ServeFile writes it.
            let range = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
            let (span, total) = range.strip_prefix("bytes ")?.split_once('/')?;
            let (first, last) = span.split_once('-')?;
            let (first, last, total) = (
                first.parse::<u64>().ok()?,
                last.parse::<u64>().ok()?,
                total.parse::<u64>().ok()?,
            );
            (last >= first && last < total && last - first + 1 == len).then_some(Extent {
                offset: first,
                len,
                total,
            })
        }
        _ => None,
    }
}

/// Sends `len` bytes of `file` from `offset`. Returns the bytes the kernel took, and an error
/// if it took fewer: the client accepted nothing for `timeout`, went away, or the file shrank.
async fn send_range(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    timeout: Duration,
) -> (u64, io::Result<()>) {
    let mut sent = 0u64;
    let mut progress = Instant::now();
    while sent < len {
        // A reader as fast as we are never makes the socket block, and writable() alone would
        // then never yield: let the runtime's other tasks (accepts, timers) run.
        tokio::task::coop::consume_budget().await;
        match tokio::time::timeout_at(progress + timeout, stream.writable()).await {
            Err(_) => return (sent, Err(timed_out(timeout))),
            Ok(Err(e)) => return (sent, Err(e)),
            Ok(Ok(())) => {}
        }
        let want = usize::try_from(len - sent).map_or(MAX_PER_CALL, |n| n.min(MAX_PER_CALL));
        let Ok(mut at) = i64::try_from(offset + sent) else {
            return (
                sent,
                Err(io::Error::other("offset past what sendfile takes")),
            );
        };
        let result = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut at), want)
                .map_err(io::Error::from)
        });
        match result {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank");
                return (sent, Err(e));
            }
            Ok(n) => {
                sent += n as u64;
                progress = Instant::now();
            }
            // Not writable after all (readiness is cleared), or a signal: wait again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ranges::tests::headers;
    use axum::http::HeaderMap;

    #[test]
    fn only_a_consistent_200_or_206_is_sent_by_the_kernel() {
        let whole = headers(&[(header::CONTENT_LENGTH, "100")]);
        assert_eq!(
            extent(StatusCode::OK, &whole),
            Some(Extent {
                offset: 0,
                len: 100,
                total: 100
            })
        );
        let part = |range: &str, len: &str| {
            let h = headers(&[
                (header::CONTENT_RANGE, range),
                (header::CONTENT_LENGTH, len),
            ]);
            extent(StatusCode::PARTIAL_CONTENT, &h)
        };
        assert_eq!(
            part("bytes 10-99/100", "90"),
            Some(Extent {
                offset: 10,
                len: 90,
                total: 100
            })
        );
        assert_eq!(part("bytes 10-99/100", "91"), None, "length disagrees");
        assert_eq!(part("bytes 10-100/100", "91"), None, "past the end");
        assert_eq!(part("bytes */100", "0"), None);
        assert_eq!(extent(StatusCode::NOT_MODIFIED, &whole), None);
        assert_eq!(extent(StatusCode::RANGE_NOT_SATISFIABLE, &whole), None);
        assert_eq!(extent(StatusCode::OK, &HeaderMap::new()), None);
    }
}
