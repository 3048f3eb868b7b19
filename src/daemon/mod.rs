//! `pacserved`: the daemon that answers the LAN's queries for the local pacman cache and serves
//! it over HTTP.
//!
//! Start at [`run`]: resolve the configuration, bind, start the responder threads
//! ([`responder`], UDP answers) and the HTTP server ([`server`], over the one HTTP
//! implementation in [`http`]), and stop cleanly on SIGTERM or SIGINT. Around them: which files
//! may be served ([`cache`]), who may ask ([`allow`], [`ratelimit`]), what one client may hold
//! ([`slots`]), counters for the status page ([`stats`], [`peers`], [`sent`]; the page itself,
//! text or HTML: [`statuspage`]), where this machine's downloads came from ([`ledger`]), logging
//! ([`journal`]) and the optional mDNS announcement ([`mdns`]). Separately, the local download
//! [`agent`] carries this machine's `pacserve-fetch` mirror downloads over warm connections and
//! prefetches; files downloading right now are shared ([`growing`], [`claims`]); the Include
//! line's `/cache/` is [`cacheserver`].
//!
//! May use: [`crate::protocol`], [`crate::pacman`], and the shared pieces at the crate root.
//! Never [`crate::client`].

pub mod agent;
pub mod allow;
pub mod answered;
pub mod args;
pub mod cache;
pub mod cacheserver;
pub mod claims;
pub mod growing;
pub mod http;
pub mod journal;
pub mod ledger;
pub mod link;
pub mod mdns;
pub mod metrics;
pub mod peers;
pub mod ratelimit;
pub mod responder;
pub mod sent;
pub mod server;
pub mod slots;
pub mod stats;
pub mod statuspage;
pub mod upcap;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::daemon::agent::policy::Policy;
use crate::daemon::agent::prefetch::Prefetch;
use crate::daemon::agent::share::Sharing;
use crate::daemon::allow::Allowlist;
use crate::daemon::cache::Cache;
use crate::daemon::cacheserver::CacheServer;
use crate::daemon::claims::Claims;
use crate::daemon::growing::Growing;
use crate::daemon::ledger::Ledger;
use crate::daemon::responder::Responder;
use crate::daemon::server::App;
use crate::daemon::stats::Stats;
use crate::daemon::upcap::UploadCap;
use crate::protocol::id_hex;
use crate::{info, warn};

/// Most bytes the agent stages ahead at once, over all transactions.
const PREFETCH_MAX_BYTES: u64 = 2 << 30;

/// Threads for blocking file reads (tokio's default is 512).
const MAX_BLOCKING_THREADS: usize = 32;

/// In-flight downloads get this long to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub cache_dirs: Vec<PathBuf>,
    /// TCP port for HTTP; 0 picks a free one (it is logged).
    pub http_port: u16,
    /// UDP port queries arrive on.
    pub udp_port: u16,
    pub group_v4: Ipv4Addr,
    pub group_v6: Ipv6Addr,
    /// Interfaces to listen on; empty for every up, multicast-capable, non-loopback one.
    pub interfaces: Vec<String>,
    /// Announce the HTTP service over mDNS (`_pacserve._tcp`).
    pub mdns: bool,
    /// Who may query and download; others get no UDP answer and their connections are closed.
    pub allow: Allowlist,
    /// Where the daemon id is kept across restarts; unwritable means a new id each start.
    pub state_dir: PathBuf,
    /// The download agent's abstract socket name; None: no agent.
    pub agent_socket: Option<String>,
    /// Files fetched ahead per pacman transaction by the agent; 0: none.
    pub prefetch: usize,
    /// pacman's configuration: its servers are what the agent may fetch from.
    pub pacman_conf: PathBuf,
    /// pacman's DBPath, for the `/cache/` endpoint's verification and the agent's checks.
    pub dbpath: PathBuf,
    /// The pacserve-fetch the `/cache/` endpoint runs.
    pub fetch_program: PathBuf,
    /// Bytes per second all peers together may take; 0: no limit.
    pub upload_limit: u64,
    /// `link-speed`: this host's link in Mbit/s (0: unknown), else read from the kernel
    /// ([`link`]).
    pub link_speed: Option<u16>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config) -> io::Result<()> {
    let cache = Arc::new(Cache::new(&config.cache_dirs));
    for dir in cache.dirs() {
        if !dir.is_dir() {
            warn!("cache directory {} does not exist (yet)", dir.display());
        }
    }
    let daemon_id = load_or_create_id(&config.state_dir)?;
    let listener = bind_http(config.http_port)?;
    let http_port = listener.local_addr()?.port();
    let stats = Arc::new(Stats::default());
    let allow = Arc::new(config.allow.clone());
    let growing = Arc::new(Growing::new(&config.state_dir));
    let claims = Arc::new(Claims::new(
        daemon_id,
        config.udp_port,
        (config.group_v4, config.group_v6),
        config.interfaces.clone(),
        allow.clone(),
        link::Link::new(
            config.link_speed,
            config.upload_limit,
            config.interfaces.clone(),
        ),
    ));
    info!(
        "id {} serving {} on HTTP port {http_port}, discovery on UDP port {}",
        id_hex(&daemon_id),
        cache
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        config.udp_port
    );
    // What the other daemons are told of this host's link (see `link`), for a user wondering
    // why this host never leads the LAN's downloads.
    match claims.link.mbit() {
        0 => info!("link speed unknown: ranked as an equal of every other host"),
        mbit => info!(
            "link speed {mbit} Mbit/s{}",
            match config.link_speed {
                Some(_) => " (link-speed)",
                None => "",
            }
        ),
    }
    Responder {
        port: config.udp_port,
        group_v4: config.group_v4,
        group_v6: config.group_v6,
        interfaces: config.interfaces.clone(),
        daemon_id,
        http_port,
        cache: cache.clone(),
        stats: stats.clone(),
        allow: allow.clone(),
        growing: growing.clone(),
        claims: claims.clone(),
    }
    .spawn()
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen for queries on UDP port {}: {e}",
                config.udp_port
            ),
        )
    })?;

    // Held for the daemon's lifetime: dropping it would end the announcement.
    let _announcement = if config.mdns {
        match crate::daemon::mdns::announce(http_port, &config.interfaces) {
            Ok(mdns) => {
                info!(
                    "announcing {} on port {http_port} over mDNS",
                    crate::daemon::mdns::SERVICE_TYPE
                );
                Some(mdns)
            }
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    } else {
        None
    };
    let ledger = Arc::new(Ledger::open(
        &config.state_dir,
        config.dbpath.clone(),
        stats.clone(),
    ));
    ledger.spawn_saver()?;
    if let Some(name) = &config.agent_socket {
        // The relay and prefetch both share what they fetch.
        let sharing = Sharing {
            growing: growing.clone(),
            claims,
            stats: stats.clone(),
        };
        let prefetch = Prefetch::new(
            config.prefetch,
            PREFETCH_MAX_BYTES,
            &config.state_dir,
            sharing,
        );
        let policy = Policy::new(config.pacman_conf.clone(), config.dbpath.clone());
        // A taken name is fatal: clients would not trust a squatter, but the administrator
        // must hear of it now, not find a line in the log later.
        agent::spawn(name, prefetch, policy, ledger.clone())?;
    }
    let app = App {
        cache,
        growing,
        stats,
        allow,
        daemon_id: id_hex(&daemon_id),
        cache_server: Some(CacheServer::new(
            config.fetch_program.clone(),
            (config.dbpath.clone(), config.pacman_conf.clone()),
            &config.state_dir,
            config.udp_port,
            config.interfaces.clone(),
        )),
        ledger: ledger.clone(),
        upload_cap: UploadCap::new(config.upload_limit).map(Arc::new),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File reads of followers; bounded so the unit's TasksMax is never the limit.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server::serve(listener, app, async {
            shutdown_signal().await;
            info!("stopping");
            ledger.save();
            tokio::spawn(async {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                std::process::exit(0);
            });
        })
        .await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Dual-stack where IPv6 exists, IPv4 only where it does not.
fn bind_http(port: u16) -> io::Result<TcpListener> {
    let dual = || -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    };
    let v4 = || -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    };
    let socket = dual()
        .or_else(|_| v4())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind HTTP port {port}: {e}")))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The daemon id: kept in `<state_dir>/id` so peers and logs see the same daemon across
/// restarts; a fresh random one when that file cannot be read or written.
fn load_or_create_id(state_dir: &Path) -> io::Result<[u8; 8]> {
    let file = state_dir.join("id");
    if let Some(id) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| crate::protocol::parse_id_hex(t.trim()))
    {
        return Ok(id);
    }
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    if std::fs::create_dir_all(state_dir)
        .and_then(|_| std::fs::write(&file, id_hex(&id)))
        .is_err()
    {
        info!(
            "cannot keep the daemon id in {}; using a new one for this run",
            file.display()
        );
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_id_survives_a_restart_and_an_unwritable_state_dir_still_gives_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_id(dir.path()).unwrap();
        assert_eq!(load_or_create_id(dir.path()).unwrap(), first);
        let nowhere = Path::new("/proc/no-such-dir/pacserved");
        assert_ne!(load_or_create_id(nowhere).unwrap(), first);
    }
}
