//! What a response really delivered: the log line and `bytes served` count the body bytes
//! handed to the connection, not the length the headers announced.
//!
//! A response body is wrapped in [`Counted`], which counts the data frames hyper takes from it
//! and, when hyper drops it (the body is done, or the connection died or was cut off), writes
//! the log line and adds to the counters. A file counts as served only when its whole body was
//! taken. hyper takes a frame before the kernel has sent it, so the count can exceed what the
//! client received by what one connection buffers (one file chunk), never by the whole file.
//! The wrapper also holds the response's [`Chunk`], so a big chunk is rationed for exactly as
//! long as its body lives.

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
        Body::new(Counted {
            inner,
            sent: 0,
            request,
            stats,
            _chunk: chunk,
        })
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
        let r = &self.request;
        let complete = self.sent >= r.announced;
        if r.method == Method::GET {
            Stats::add(&self.stats.bytes_served, self.sent);
            if r.status.is_success() && complete {
                Stats::add(&self.stats.files_served, 1);
            }
        }
        let cut = if complete || r.method != Method::GET {
            String::new()
        } else {
            format!(" of {} (connection ended early)", r.announced)
        };
        info!(
            "{} /pkg/{} from {}: {} {} bytes{cut}{}",
            r.method,
            r.name,
            r.client,
            r.status.as_u16(),
            self.sent,
            r.range
                .as_ref()
                .map(|range| format!(" ({range})"))
                .unwrap_or_default()
        );
    }
}
