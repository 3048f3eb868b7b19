//! The daemon's HTTP side: serve cache files to peers, this machine's pacman through `/cache/`,
//! and a status page for humans. A request's whole path is in this file, top to bottom.
//!
//! Routes (GET and HEAD; anything else is 405): `/pkg/<file>` (the path pacredir's peers use):
//! a cache file, or one still arriving ([`crate::daemon::growing`]); `/cache/<file>`
//! ([`cacheserver`], loopback only); `/metrics` (Prometheus, [`metrics`]); `/` (the status
//! page, HTML for a browser: [`statuspage`]). Which files may be served is
//! decided by [`Cache::find`] alone, the same gate the responder uses; who may ask, by the
//! [`Allowlist`]; what a GET or HEAD of a file answers, by [`answer::decide`] alone; bodies go
//! by the kernel ([`send`]).
//!
//! Every connection is bounded, in this order: a source outside the allowlist is closed on
//! arrival, before it can hold anything; the rest take a [`Slot`] (bounded in total and per
//! source, shared fairly when full); a request head must arrive within [`HEADER_TIMEOUT`]
//! (which also ends idle keep-alive connections) and be at most [`MAX_HEADER_BYTES`]; a client
//! that accepts no byte for [`SEND_TIMEOUT`] is dropped. Nothing is buffered per client but the
//! request head. The runtime is async so that slow clients cost memory, not threads.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::daemon::allow::Allowlist;
use crate::daemon::cache::Cache;
use crate::daemon::cacheserver::{self, CacheAnswer, CacheServer};
use crate::daemon::growing::{Follow, Growing};
use crate::daemon::http::answer::{self, Conditions, Resource, Span};
use crate::daemon::http::request::{self, Read, Request};
use crate::daemon::http::response::{self, Head};
use crate::daemon::http::send;
use crate::daemon::ledger::Ledger;
use crate::daemon::metrics;
use crate::daemon::sent;
use crate::daemon::slots::{Slot, Slots};
use crate::daemon::stats::{Held, Stats};
use crate::daemon::statuspage;
use crate::daemon::upcap::UploadCap;

/// Connections served at once; when all are taken, a source holding fewer connections than the
/// heaviest one takes one of its slots ([`Slots`]), others are closed on arrival.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one source address may hold at once.
pub const MAX_PER_SOURCE: usize = 64;
/// A request's head must arrive within this time, and an idle connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose client accepts no byte for this long is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger request heads are refused (431): ours are a few hundred bytes.
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
    /// Where this machine's downloads came from: what `/cache/` served, and the status page.
    pub ledger: Arc<Ledger>,
    /// What peers may take per second, all together (`--upload-limit`); None: no limit.
    pub upload_cap: Option<Arc<UploadCap>>,
}

impl App {
    fn cap(&self) -> Option<&UploadCap> {
        self.upload_cap.as_deref()
    }
}

/// Accepts connections until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) {
    let app = Arc::new(app);
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
        if !app.allow.permits(source) {
            // Dropped here: closed before it is read or holds a slot.
            Stats::add(&app.stats.refused, 1);
            continue;
        }
        let Some(slot) = slots.take(source) else {
            Stats::add(&app.stats.no_slot, 1);
            continue;
        };
        tokio::spawn(connection(stream, client, slot, app.clone()));
    }
}

/// Serves one connection until it ends, times out, or its slot is taken by a lighter source.
async fn connection(stream: TcpStream, client: SocketAddr, slot: Slot, app: Arc<App>) {
    tokio::select! {
        () = requests(stream, client, &app) => {}
        () = slot.evicted() => Stats::add(&app.stats.evicted, 1),
    }
}

/// Whether a connection stays open after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Answers the connection's requests, one after another, for as long as they come.
async fn requests(mut stream: TcpStream, client: SocketAddr, app: &App) {
    let mut buf = Vec::new();
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    loop {
        let request =
            match request::read_head(&mut stream, &mut buf, HEADER_TIMEOUT, MAX_HEADER_BYTES).await
            {
                Read::Head(request) => request,
                Read::Refused(why) => {
                    let _ = answer_with(&mut stream, Head::new(why.status()), &[], false).await;
                    return;
                }
                Read::Gone => return,
            };
        let next = route(&mut stream, &request, client, app).await;
        buf.drain(..request.len);
        if next == Next::Close {
            return;
        }
    }
}

/// The one routing decision.
async fn route(stream: &mut TcpStream, request: &Request, client: SocketAddr, app: &App) -> Next {
    let keep_alive = request.keep_alive;
    if request.method != "GET" && request.method != "HEAD" {
        let head = Head::new(405).with("allow", "GET, HEAD");
        return answer_with(stream, head, &[], false).await;
    }
    if let Some(name) = request.path.strip_prefix("/pkg/") {
        return package(stream, request, name, client.ip(), app).await;
    }
    if let Some(name) = request.path.strip_prefix("/cache/") {
        let server = app.cache_server.as_ref();
        let asked = (request, name);
        return match cacheserver::handle(server, &app.cache, asked, client, &app.stats).await {
            CacheAnswer::Body(body) => {
                let counted = (&*app.stats, &*app.ledger);
                body.send(stream, keep_alive, counted).await
            }
            CacheAnswer::Head(head) => answer_with(stream, head, &[], keep_alive).await,
            CacheAnswer::Signature(bytes) => {
                let head = Head::new(200)
                    .with("content-type", "application/pgp-signature")
                    .with("content-length", bytes.len().to_string());
                let body = if request.is_head() { &[][..] } else { &bytes };
                app.ledger.cache_served(name, body.len() as u64);
                answer_with(stream, head, body, keep_alive).await
            }
            CacheAnswer::Status(status) => {
                if status == 404 && !request.is_head() {
                    app.ledger.cache_missed(name);
                }
                answer_with(stream, Head::new(status), &[], keep_alive).await
            }
        };
    }
    if request.path == "/metrics" {
        let (head, body) = response::text(200, metrics::CONTENT_TYPE, &metrics::render(&app.stats));
        let body = if request.is_head() { &[][..] } else { &body };
        return answer_with(stream, head, body, keep_alive).await;
    }
    if request.path == "/" {
        let page = statuspage::Page {
            stats: &app.stats,
            ledger: &app.ledger,
            daemon_id: &app.daemon_id,
            cache_dirs: app.cache.dirs().len(),
        };
        let (head, body) = match statuspage::wants_html(request.header("accept")) {
            true => response::text(200, "text/html; charset=utf-8", &statuspage::html(&page)),
            false => response::text(200, "text/plain; charset=utf-8", &statuspage::text(&page)),
        };
        let body = if request.is_head() { &[][..] } else { &body };
        return answer_with(stream, head.with("vary", "Accept"), body, keep_alive).await;
    }
    answer_with(stream, Head::new(404), &[], keep_alive).await
}

/// `/pkg/<name>`: the cache's copy, else the one arriving now, else 404.
async fn package(
    stream: &mut TcpStream,
    request: &Request,
    name: &str,
    client: IpAddr,
    app: &App,
) -> Next {
    app.stats.heard(client, None);
    let keep_alive = request.keep_alive;
    let conditions = Conditions::of(request);
    let opened = app.cache.find(name).and_then(|found| {
        let file = File::open(&found.path).ok()?;
        let meta = file.metadata().ok()?;
        Some((file, meta))
    });
    if let Some((file, meta)) = opened {
        let resource = Resource {
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        let answer = answer::decide(resource, conditions);
        let announced = answer.body.map_or(0, |span| span.len);
        let log = sent::Request {
            method: request.method.clone(),
            name: name.to_owned(),
            client,
            status: answer.head.status,
            range: conditions.range.map(str::to_owned),
            announced,
        };
        sent::started(&log);
        let _upload = Held::start(&app.stats.uploading);
        let _receiving = app.stats.receivers.start(client);
        let body = (!request.is_head()).then_some(answer.body).flatten();
        let (sent, next) = file_body(
            stream,
            answer.head,
            (&file, body),
            (keep_alive, &app.stats),
            app.cap(),
        )
        .await;
        sent::ended(&log, sent, &app.stats);
        return next;
    }
    let Some(entry) = app.growing.find(name) else {
        Stats::add(&app.stats.not_found, 1);
        return answer_with(stream, Head::new(404), &[], keep_alive).await;
    };
    let resource = Resource {
        len: entry.size,
        modified: None,
    };
    let answer = answer::decide(resource, conditions);
    let (Some(span), false) = (answer.body, request.is_head()) else {
        return answer_with(stream, answer.head, &[], keep_alive).await;
    };
    let Ok(mut follow) = Follow::open(entry, span.offset) else {
        return answer_with(stream, Head::new(404), &[], keep_alive).await;
    };
    crate::daemon::growing::count_follower(&app.stats, &request.method, name, client);
    let _upload = Held::start(&app.stats.uploading);
    let _receiving = app.stats.receivers.start(client);
    let _follower = Held::start(&app.stats.followers);
    send::cork(stream, true);
    let mut outcome =
        send::write_all(stream, &answer.head.to_bytes(keep_alive), SEND_TIMEOUT).await;
    if outcome.is_ok() {
        let sent;
        (sent, outcome) =
            send::following(stream, &mut follow, span, (SEND_TIMEOUT, app.cap())).await;
        Stats::add(&app.stats.bytes_served, sent);
    }
    send::cork(stream, false);
    ended(outcome, keep_alive, &app.stats)
}

/// A file answer: the head and, for a GET, the span of `file` the answer names, no faster than
/// `cap` allows; returns how many body bytes the kernel took.
pub(crate) async fn file_body(
    stream: &mut TcpStream,
    head: Head,
    (file, span): (&File, Option<Span>),
    (keep_alive, stats): (bool, &Stats),
    cap: Option<&UploadCap>,
) -> (u64, Next) {
    send::cork(stream, true);
    let mut sent = 0;
    let mut outcome = send::write_all(stream, &head.to_bytes(keep_alive), SEND_TIMEOUT).await;
    if let (Ok(()), Some(span)) = (&outcome, span) {
        (sent, outcome) = send::file(stream, file, span, (SEND_TIMEOUT, cap)).await;
    }
    send::cork(stream, false);
    (sent, ended(outcome, keep_alive, stats))
}

/// A short answer: `head` and its whole `body`.
pub(crate) async fn answer_with(
    stream: &mut TcpStream,
    head: Head,
    body: &[u8],
    keep_alive: bool,
) -> Next {
    let mut bytes = head.to_bytes(keep_alive);
    bytes.extend_from_slice(body);
    let outcome = send::write_all(stream, &bytes, SEND_TIMEOUT).await;
    Next::from(outcome.is_ok() && keep_alive)
}

/// What becomes of the connection after a response that ended with `outcome`; a client that
/// stopped reading is counted (a download here that failed or stalled is not the client's).
pub(crate) fn ended(outcome: std::io::Result<()>, keep_alive: bool, stats: &Stats) -> Next {
    if let Err(e) = &outcome
        && e.kind() == std::io::ErrorKind::TimedOut
    {
        Stats::add(&stats.stalled_clients, 1);
    }
    Next::from(outcome.is_ok() && keep_alive)
}

impl From<bool> for Next {
    fn from(keep_alive: bool) -> Next {
        match keep_alive {
            true => Next::KeepAlive,
            false => Next::Close,
        }
    }
}
