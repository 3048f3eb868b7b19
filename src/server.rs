//! The daemon's HTTP side: serve cache files to peers, and a status page for humans.
//!
//! Routes: `GET`/`HEAD /pkg/<file>` (the path pacredir's peers use) and `/` (status). Range,
//! If-Modified-Since, Last-Modified and HEAD are tower-http's `ServeFile`, a maintained and
//! widely used implementation, rather than ours. Which files may be served is decided by
//! [`Cache::find`] alone, the same gate the responder uses. The runtime is async so that
//! many slow clients cost memory, not threads, and cannot starve the others.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::cache::Cache;
use crate::info;
use crate::stats::Stats;

#[derive(Debug, Clone)]
pub struct App {
    pub cache: Arc<Cache>,
    pub stats: Arc<Stats>,
    pub daemon_id: String,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/pkg/{name}", get(package))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(app)
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
    let Some(found) = app.cache.find(&name) else {
        Stats::add(&app.stats.not_found, 1);
        return StatusCode::NOT_FOUND.into_response();
    };
    let method = request.method().clone();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = match ServeFile::new(&found.path).oneshot(request).await {
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
