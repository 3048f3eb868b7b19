//! Bodies on a TCP connection, sent by the kernel: a file's bytes with sendfile(2), as nginx
//! does with `sendfile on`, and a file still arriving as its bytes land.
//!
//! No user-space buffer is held per client, so a client that stops reading pins nothing but
//! kernel socket memory, and is dropped once it has accepted no byte for the send timeout. Like
//! nginx without aio, a read of a file that is not in the page cache blocks the worker for the
//! disk read; each call sends at most [`MAX_PER_CALL`] bytes (nginx's `sendfile_max_chunk`) and
//! gives the runtime's other tasks their turn between calls, so one fast client cannot hold a
//! worker. The head is corked with the start of the body (nginx's `tcp_nopush`), so a small file
//! (a signature) leaves in one segment instead of waiting for Nagle.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::daemon::growing::Follow;
use crate::daemon::http::answer::Span;
use crate::daemon::upcap::UploadCap;

/// Most bytes one sendfile call may move.
const MAX_PER_CALL: usize = 2 << 20;

/// The error of a client that accepted nothing for `timeout`.
pub fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client read nothing for {} s", timeout.as_secs()),
    )
}

/// Holds partial segments while on, so a head and the start of its body leave together;
/// turning it off sends what is left.
pub fn cork(stream: &TcpStream, on: bool) {
    let _ = socket2::SockRef::from(stream).set_tcp_cork(on);
}

/// Writes `bytes` (a head, a short body), failing once `timeout` passes with nothing accepted.
pub async fn write_all(stream: &mut TcpStream, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// Sends `span` of `file`, no faster than `cap` allows. Returns the bytes the kernel took, and
/// an error if it took fewer: the client accepted nothing for `timeout`, went away, or the file
/// shrank.
pub async fn file(
    stream: &TcpStream,
    file: &File,
    span: Span,
    (timeout, cap): (Duration, Option<&UploadCap>),
) -> (u64, io::Result<()>) {
    let mut sent = 0u64;
    let mut progress = Instant::now();
    while sent < span.len {
        // A reader as fast as we are never makes the socket block, and writable() alone would
        // then never yield: let the runtime's other tasks (accepts, timers) run.
        tokio::task::coop::consume_budget().await;
        match tokio::time::timeout_at(progress + timeout, stream.writable()).await {
            Err(_) => return (sent, Err(timed_out(timeout))),
            Ok(Err(e)) => return (sent, Err(e)),
            Ok(Ok(())) => {}
        }
        let mut want =
            usize::try_from(span.len - sent).map_or(MAX_PER_CALL, |n| n.min(MAX_PER_CALL));
        if let Some(cap) = cap {
            loop {
                match cap.grant(want as u64) {
                    Ok(granted) => break want = granted as usize,
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            }
            // Time spent waiting for the cap is ours, not the client's.
            progress = Instant::now();
        }
        let Ok(mut at) = i64::try_from(span.offset + sent) else {
            let e = io::Error::other("offset past what sendfile takes");
            return (sent, Err(e));
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
                if let Some(cap) = cap {
                    cap.unused((want - n) as u64);
                }
            }
            // Not writable after all (readiness is cleared), or a signal: wait again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if let Some(cap) = cap {
                    cap.unused(want as u64);
                }
            }
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}

/// Sends `span` of a file still arriving, as its bytes land ([`Follow::landed`]: the last byte
/// only once the whole file is verified). Returns the bytes sent; an error when the download
/// here failed or stalled (the follower goes on to its next source) or the client stopped.
pub async fn following(
    stream: &TcpStream,
    follow: &mut Follow,
    span: Span,
    (timeout, cap): (Duration, Option<&UploadCap>),
) -> (u64, io::Result<()>) {
    let end = span.offset + span.len;
    let mut sent = 0u64;
    while follow.pos() < end {
        let limit = match follow.landed().await {
            Ok(Some(limit)) => limit.min(end),
            Ok(None) => break,
            Err(e) => {
                let e = io::Error::other(format!("the download here ended: {e}"));
                return (sent, Err(e));
            }
        };
        let pos = follow.pos();
        let piece = Span {
            offset: pos,
            len: limit - pos,
        };
        let (n, result) = file(stream, follow.file(), piece, (timeout, cap)).await;
        follow.advance(n);
        sent += n;
        if result.is_err() {
            return (sent, result);
        }
    }
    (sent, Ok(()))
}
