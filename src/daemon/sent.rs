//! What a response really delivered: `bytes served` counts the body bytes handed to the
//! connection, not the length the headers announced, and the log says when they differ.
//!
//! A response body is wrapped in [`Counted`], which logs the request as it starts (so a
//! transfer under way is visible, with the length it is to send, in the format log readers and
//! `contrib/try-lan.sh` know) and counts the data frames
//! hyper takes from it. When hyper drops it (the body is done, or the connection died or was
//! cut off) the count is added to the counters, and a transfer that ended short gets a second
//! line saying how far it got. A file counts as served only when its whole body was taken. hyper
//! takes a frame before the kernel has sent it, so the count can exceed what the client
//! received by what one connection buffers (one file chunk), never by the whole file. The
//! wrapper also holds the response's [`Chunk`], so a big chunk is rationed for exactly as long
//! as its body lives. Files the kernel sends ([`crate::daemon::sendfile`]) are logged and
//! counted by the same two functions, [`started`] and [`ended`], with the bytes sendfile took.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Method, StatusCode};
use http_body::{Frame, SizeHint};

use crate::daemon::chunks::Chunk;
use crate::daemon::stats::Stats;
use crate::info;

/// What the log line says about a request, besides the byte count.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub name: String,
    pub client: std::net::IpAddr,
    pub status: StatusCode,
    /// The Range header, if any, as sent.
    pub range: Option<String>,
    /// Content-Length of the response.
    pub announced: u64,
}

pub struct Counted {
    inner: Body,
    sent: u64,
    request: Request,
    stats: Arc<Stats>,
    /// The response's share of the read budget, returned when the body is done.
    _chunk: Chunk,
}

impl Counted {
    pub fn wrap(inner: Body, request: Request, stats: Arc<Stats>, chunk: Chunk) -> Body {
        started(&request);
        Stats::add(&stats.uploading, 1);
        Body::new(Counted {
            inner,
            sent: 0,
            request,
            stats,
            _chunk: chunk,
        })
    }
}

/// Logs a response as it starts, with the length it is to send.
pub fn started(request: &Request) {
    info!(
        "{} /pkg/{} from {}: {} {} bytes{}",
        request.method,
        request.name,
        request.client,
        request.status.as_u16(),
        request.announced,
        request
            .range
            .as_ref()
            .map(|range| format!(" ({range})"))
            .unwrap_or_default()
    );
}

/// Counts what a finished (or cut) response delivered, and logs a transfer that ended short.
pub fn ended(request: &Request, sent: u64, stats: &Stats) {
    if request.method != Method::GET {
        return;
    }
    Stats::add(&stats.bytes_served, sent);
    if sent >= request.announced {
        if request.status.is_success() {
            Stats::add(&stats.files_served, 1);
        }
    } else {
        // Worded so that it does not read as another request for the file.
        info!(
            "{} to {}: sent {} of {} bytes, the connection ended early",
            request.name, request.client, sent, request.announced
        );
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats
            .uploading
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        ended(&self.request, self.sent, &self.stats);
    }
}
