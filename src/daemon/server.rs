//! The daemon's HTTP side: serve cache files to peers, and a status page for humans.
//!
//! Routes: `GET`/`HEAD /pkg/<file>` (the path pacredir's peers use) and `/` (status). Range,
//! If-Modified-Since, Last-Modified and HEAD are tower-http's `ServeFile`, a maintained and
//! widely used implementation, rather than ours. Which files may be served is decided by
//! [`Cache::find`] alone, the same gate the responder uses; who may ask, by the [`Allowlist`].
//!
//! The accept loop is ours rather than `axum::serve` so that every connection is bounded: a
//! header size limit, a deadline for headers (which also ends idle keep-alive connections), a
//! cap on connections in total and per source. The runtime is async so that slow clients cost
//! memory, not threads: hundreds of idle connections leave a real download at full speed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::daemon::allow::Allowlist;
use crate::daemon::cache::Cache;
use crate::daemon::growing::{self, Growing};
use crate::daemon::stats::Stats;
use crate::info;

/// Connections served at once; further ones are closed on arrival.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections one source address may hold at once.
pub const MAX_PER_SOURCE: usize = 64;
/// A request's headers must arrive within this time, and an idle connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a file per write to the socket: fewer, larger writes (tower-http's default
/// is 64 KiB) narrow the gap to sendfile-based servers.
const FILE_CHUNK: usize = 256 * 1024;
/// Larger request headers are refused (431): ours are a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct App {
    pub cache: Arc<Cache>,
    /// Files arriving right now, served while they grow.
    pub growing: Arc<Growing>,
    pub stats: Arc<Stats>,
    pub allow: Arc<Allowlist>,
    pub daemon_id: String,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/pkg/{name}", get(package))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(app.clone(), only_allowed))
        .with_state(app)
}

/// Accepts connections until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) {
    let router = router(app);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let Some(source) = SourceSlot::take(&per_source, client.ip().to_canonical()) else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(client));
                    router.clone().oneshot(request.map(Body::new))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop((slot, source));
        });
    }
}

/// One connection counted against its source address; released on drop.
struct SourceSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<SourceSlot> {
        let mut counts = table.lock().ok()?;
        let count = counts.entry(ip).or_insert(0);
        if *count >= MAX_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let Ok(mut counts) = self.table.lock() else {
            return;
        };
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn only_allowed(
    State(app): State<App>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if app.allow.permits(client.ip()) {
        next.run(request).await
    } else {
        Stats::add(&app.stats.refused, 1);
        StatusCode::FORBIDDEN.into_response()
    }
}

async fn status(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        app.stats.render(&app.daemon_id, app.cache.dirs()),
    )
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
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(found) = app.cache.find(&name) else {
        if let Some(entry) = app.growing.find(&name) {
            info!("{method} /pkg/{name} from {client}: following the download in progress");
            Stats::add(&app.stats.files_served, 1);
            return growing::response(entry, &method, range.as_deref());
        }
        Stats::add(&app.stats.not_found, 1);
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = ServeFile::new(&found.path).with_buf_chunk_size(FILE_CHUNK);
    let response = match file.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let status = response.status();
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if method == Method::GET && status.is_success() {
        Stats::add(&app.stats.files_served, 1);
        Stats::add(&app.stats.bytes_served, length);
    }
    info!(
        "{method} /pkg/{name} from {client}: {} {length} bytes{}",
        status.as_u16(),
        range.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    response
}
