//! The daemon's HTTP side: serve cache files to peers, and a status page for humans.
//!
//! Routes: `GET`/`HEAD /pkg/<file>` (the path pacredir's peers use), `/cache/<file>` (this
//! machine's pacman's CacheServer, [`cacheserver`]) and `/` (status). Range,
//! If-Modified-Since, Last-Modified and HEAD are tower-http's `ServeFile`, a maintained and
//! widely used implementation, rather than ours. Which files may be served is decided by
//! [`Cache::find`] alone, the same gate the responder uses; who may ask, by the [`Allowlist`].
//! Each request head is read first by [`http1`]: a GET of a cache file whose answer has a body,
//! or of a file arriving right now, is sent by the kernel ([`sendfile`], the answer still decided
//! by ServeFile or [`growing`]), everything else goes to hyper and the router.
//!
//! The accept loop is ours rather than `axum::serve` so that every connection is bounded, in this
//! order: a source outside the allowlist is closed on arrival, before it can hold anything; the
//! rest take a [`Slot`] (bounded in total and per source, shared fairly when full); headers must
//! arrive within a deadline (which also ends idle keep-alive connections) and be small; a
//! client that stops reading is dropped after [`SEND_TIMEOUT`] ([`SendDeadline`], or the same
//! deadline in [`sendfile`]); and hyper buffers at most one file chunk per connection, whose
//! size is rationed by [`ChunkBudget`]. The runtime is async so that slow clients cost memory,
//! not threads, and that memory is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::daemon::allow::Allowlist;
use crate::daemon::cache::Cache;
use crate::daemon::cacheserver::{self, CacheServer};
use crate::daemon::chunks::{Chunk, ChunkBudget};
use crate::daemon::deadline::SendDeadline;
use crate::daemon::growing::{self, Growing};
use crate::daemon::http1::{self, Read, Rewind};
use crate::daemon::ranges;
use crate::daemon::sendfile::{self, Served};
use crate::daemon::sent::{self, Counted};
use crate::daemon::slots::{Slot, Slots};
use crate::daemon::stats::Stats;

/// Connections served at once; when all are taken, a source holding fewer connections than the
/// heaviest one takes one of its slots ([`Slots`]), others are closed on arrival.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one source address may hold at once.
pub const MAX_PER_SOURCE: usize = 64;
/// A request's headers must arrive within this time, and an idle connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose client accepts no byte for this long is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's own write buffer beyond the chunk it is sending: the least it accepts, so that a
/// stalled connection holds one chunk, not the ≈400 KiB of chunks of the default.
const HYPER_BUFFER: usize = MAX_HEADER_BYTES;
/// Larger request headers are refused (431): ours are a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long the accept loop rests after an error before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct App {
    pub cache: Arc<Cache>,
    /// Files arriving right now, served while they grow.
    pub growing: Arc<Growing>,
    pub stats: Arc<Stats>,
    pub allow: Arc<Allowlist>,
    pub daemon_id: String,
    /// The `/cache/` endpoint; None answers it with 404.
    pub cache_server: Option<CacheServer>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/pkg/{name}", get(package))
        .route("/cache/{name}", get(cache))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(app)
}

/// Accepts connections until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) {
    let (allow, stats) = (app.allow.clone(), app.stats.clone());
    let shared = Shared {
        router: router(app.clone()),
        app,
        chunks: ChunkBudget::default(),
    };
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_SOURCE);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors or memory: accepting again at once would spin.
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let source = client.ip().to_canonical();
        if !allow.permits(source) {
            // Dropped here: closed before it is read or holds a slot.
            Stats::add(&stats.refused, 1);
            continue;
        }
        let Some(slot) = slots.take(source) else {
            Stats::add(&stats.no_slot, 1);
            continue;
        };
        tokio::spawn(connection(stream, client, slot, shared.clone()));
    }
}

/// What every connection task shares.
#[derive(Clone)]
struct Shared {
    router: Router,
    /// What the kernel path serves from (the router holds its own copy).
    app: App,
    chunks: ChunkBudget,
}

/// Serves one connection until it ends, times out, or its slot is taken by a lighter source.
async fn connection(stream: tokio::net::TcpStream, client: SocketAddr, slot: Slot, shared: Shared) {
    let stats = shared.app.stats.clone();
    tokio::select! {
        () = requests(stream, client, shared) => {}
        () = slot.evicted() => Stats::add(&stats.evicted, 1),
    }
}

/// Answers the connection's requests: GETs of cache files by the kernel ([`sendfile`]) for as
/// long as they come, then everything else through hyper, which is handed the connection
/// with the bytes already read ([`Rewind`]).
async fn requests(mut stream: tokio::net::TcpStream, client: SocketAddr, shared: Shared) {
    let mut buf = Vec::new();
    let source = client.ip().to_canonical();
    let files = sendfile::Files {
        cache: &shared.app.cache,
        growing: &shared.app.growing,
        stats: &shared.app.stats,
        send_timeout: SEND_TIMEOUT,
    };
    loop {
        let head =
            match http1::read_head(&mut stream, &mut buf, HEADER_TIMEOUT, MAX_HEADER_BYTES).await {
                Read::Head(head) => head,
                Read::ForHyper => break,
                Read::Gone => return,
            };
        match sendfile::serve(&mut stream, &head, source, &files).await {
            Served::KeepAlive => {
                buf.drain(..head.len);
            }
            Served::Close => return,
            Served::NotMine => break,
        }
    }
    hyper_connection(Rewind::new(buf, stream), client, shared).await;
}

async fn hyper_connection(
    stream: Rewind<tokio::net::TcpStream>,
    client: SocketAddr,
    shared: Shared,
) {
    let Shared {
        router,
        app,
        chunks,
    } = shared;
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(client));
            request.extensions_mut().insert(chunks.clone());
            router.clone().oneshot(request.map(Body::new))
        });
    let io = TokioIo::new(SendDeadline::new(stream, SEND_TIMEOUT));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(HYPER_BUFFER)
        .serve_connection(io, service);
    if conn.await.is_err_and(|e| is_send_timeout(&e)) {
        Stats::add(&app.stats.stalled_clients, 1);
    }
}

fn is_send_timeout(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

async fn status(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        app.stats.render(&app.daemon_id, app.cache.dirs().len()),
    )
}

async fn cache(
    State(app): State<App>,
    Path(name): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    cacheserver::handle(app.cache_server.clone(), &app.cache, name, client, request).await
}

async fn package(
    State(app): State<App>,
    Path(name): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let client = client.ip().to_canonical();
    app.stats.heard(client);
    let method = request.method().clone();
    let range = ranges::range_header(request.headers());
    let Some(found) = app.cache.find(&name) else {
        if let Some(entry) = app.growing.find(&name) {
            growing::count_follower(&app.stats, method.as_str(), &name, client);
            return growing::response(entry, &method, range.as_deref());
        }
        Stats::add(&app.stats.not_found, 1);
        return StatusCode::NOT_FOUND.into_response();
    };
    // Taken before the file is opened, held by the body until it is done.
    let chunk = request
        .extensions()
        .get::<ChunkBudget>()
        .map_or_else(Chunk::small, ChunkBudget::take);
    let response = if found.size == 0 && range.is_some() {
        ranges::empty_file_range()
    } else {
        ranges::serve_file(&found.path, request, chunk.bytes).await
    };
    let announced = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let status = response.status();
    let (parts, body) = response.into_parts();
    let request = sent::Request {
        method,
        name,
        client,
        status,
        range,
        announced,
    };
    Response::from_parts(
        parts,
        Counted::wrap(body, request, app.stats.clone(), chunk),
    )
}
