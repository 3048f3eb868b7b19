//! Prefetch: fetch a pacman transaction's next files while pacman still asks for the current
//! one, so its next `pacserve-fetch` finds the file ready (pacman ignores `ParallelDownloads`
//! for an XferCommand; this puts the parallelism back).
//!
//! No guessing: the client sends the transaction's exact plan, what `pacman -Sp` prints for the
//! invoking pacman's own targets and options, minus files already cached and files a LAN peer
//! has ([`crate::protocol::agent`] `PLAN`). Nothing is fetched until pacman itself requests a
//! planned file; from then on the files after pacman's position are fetched
//! [`Prefetch::window`] at a time, as pacman's own `ParallelDownloads` would, each whole into
//! the daemon's staging directory as `<txn>-<n>.part`: when one ends the next starts, without
//! waiting for pacman to ask, up to [`LOOKAHEAD_BYTES`] ahead of it. (Starting only as pacman
//! asked left the link idle while pacman took each staged file in turn: with 15 small files
//! and 8 hosts on two cores, half a second between batches.)
//!
//! A staged file is trusted only in memory and only once its size and SHA-256 match the sync
//! database's (sent in the plan); the staging directory is emptied at start, so nothing a crash
//! or Ctrl-C leaves behind is ever handed out. Only the downloaders of the transaction's own
//! pacman (its child processes) may plan it or take its files. When pacman asks for a staged
//! file, it is streamed to that request ([`crate::daemon::agent::staged`]: while still arriving
//! if need be, the last byte held back until verified) and deleted. Plans whose pacman has
//! exited, or idle longer than [`STALE_AFTER`], are dropped with their files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use ureq::Agent;

use crate::daemon::agent::share::{Floor, PEER_STALL, Sharing, peer_client};
use crate::daemon::agent::staged::{STALL_LIMIT, Staged, StagedReader, Staging};
use crate::daemon::claims::Verdict;
use crate::daemon::growing::Writer;
use crate::daemon::stats::Stats;
use crate::pacman::name::is_shareable_name;
use crate::protocol::agent::{Planned, Share, Transaction};
use crate::protocol::budget;
use crate::protocol::peerhttp;
use crate::{info, warn};

/// Bytes of one transaction fetched ahead of pacman's position (running or staged): enough to
/// keep the link busy while pacman works through what has landed, without staging a whole
/// upgrade next to the cache. A single larger file is still fetched when nothing else is ahead.
pub const LOOKAHEAD_BYTES: u64 = 256 << 20;
/// A plan nobody asked anything of for this long is dropped with its files.
pub const STALE_AFTER: Duration = Duration::from_secs(600);
/// Plans held at once, in all and per planning uid (root's pacman, or pacman 7's download
/// user): pacman's database lock allows one transaction per DBPath, so a few cover every real
/// use, and no planner can crowd the others out.
pub const MAX_PLANS: usize = 8;
pub const MAX_PLANS_PER_UID: usize = 4;
/// Prefetches running at once over all transactions: each is a thread and a mirror connection.
pub const MAX_RUNNING: usize = 16;
/// The most one transaction may stage at once is [`Prefetch::max_bytes`] divided by this, so
/// that as many transactions always fit (a single file larger than the lookahead included).
const SHARES_OF_BYTES: u64 = 4;
/// Time limits of a prefetch: what a standalone download would get.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

pub struct Prefetch {
    /// Files of a transaction fetched at once ahead of pacman; 0 turns prefetch off.
    pub window: usize,
    /// Most bytes staged and in flight at once, over all transactions.
    pub max_bytes: u64,
    dir: Option<PathBuf>,
    plans: Mutex<HashMap<Transaction, Plan>>,
    /// Prefetch threads running now, in all: a file handed to pacman while it still arrives
    /// leaves its plan, but its thread runs on, and counts here until it ends.
    threads: Arc<AtomicUsize>,
    /// Share fetched files with the LAN while they arrive (prefetched and relayed alike).
    pub sharing: Sharing,
}

struct Plan {
    /// Who planned it.
    uid: u32,
    files: Vec<Planned>,
    /// The planned index after pacman's latest request.
    next: usize,
    started: HashMap<usize, Arc<Staging>>,
    user_agent: Option<String>,
    touched: Instant,
}

impl Prefetch {
    /// `state_dir/staging`, emptied; prefetch is off when it cannot be made.
    pub fn new(window: usize, max_bytes: u64, state_dir: &Path, sharing: Sharing) -> Prefetch {
        let dir = state_dir.join("staging");
        let dir = (window > 0)
            .then(|| {
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).map(|_| dir)
            })
            .and_then(|made| match made {
                Ok(dir) => Some(dir),
                Err(e) => {
                    warn!("prefetch off: cannot make its staging directory: {e}");
                    None
                }
            });
        Prefetch {
            window: if dir.is_some() {
                window.min(MAX_RUNNING)
            } else {
                0
            },
            max_bytes,
            dir,
            plans: Mutex::default(),
            threads: Arc::default(),
            sharing,
        }
    }

    pub fn describe(&self) -> String {
        match &self.dir {
            Some(dir) => format!("{} files ahead into {}", self.window, dir.display()),
            None => "nothing (off)".to_owned(),
        }
    }

    /// Whether a plan for `txn` is held. A client asks before it works one out.
    pub fn knows(&self, txn: Transaction) -> bool {
        if self.window == 0 {
            // Off: say yes, so no client spends time planning for nothing.
            return true;
        }
        let mut plans = self.lock();
        drop_stale(&mut plans);
        plans.contains_key(&txn)
    }

    /// Holds `files` as the plan of `txn`, made by `uid`; refused past the bounds on plans.
    pub fn plan(&self, txn: Transaction, uid: u32, files: Vec<Planned>) -> Result<(), String> {
        if self.window == 0 {
            return Ok(());
        }
        let mut plans = self.lock();
        drop_stale(&mut plans);
        if plans.contains_key(&txn) {
            return Ok(());
        }
        let mine = plans.values().filter(|p| p.uid == uid).count();
        if plans.len() >= MAX_PLANS || mine >= MAX_PLANS_PER_UID {
            return Err(format!(
                "{} plans held ({mine} of uid {uid}); at most {MAX_PLANS}, {MAX_PLANS_PER_UID} per uid",
                plans.len()
            ));
        }
        plans.insert(
            txn,
            Plan {
                uid,
                files,
                next: 0,
                started: HashMap::new(),
                user_agent: None,
                touched: Instant::now(),
            },
        );
        Ok(())
    }

    /// A downloader of transaction `txn` (as [`super::policy`] judged its caller) requests
    /// `url`: start the files after it, and hand over its staged copy if there is one. None:
    /// fetch it from the mirror as usual. Only plans of the caller's own pacman count, so no
    /// other process can take a transaction's files.
    pub fn claim(
        self: &Arc<Self>,
        url: &str,
        txn: Option<Transaction>,
        user_agent: Option<&str>,
        upstream: &Agent,
    ) -> Option<Staged> {
        let txn = txn.filter(|_| self.window > 0)?;
        let mut plans = self.lock();
        let (staging, signature) = {
            let plan = plans.get_mut(&txn)?;
            let index = plan.next
                + plan.files[plan.next.min(plan.files.len())..]
                    .iter()
                    .position(|p| p.url == url)?;
            let signature = plan.files[index].sha256.is_none();
            plan.next = index + 1;
            plan.touched = Instant::now();
            if let Some(ua) = user_agent {
                plan.user_agent = Some(ua.to_owned());
            }
            (plan.started.remove(&index), signature)
        };
        self.start_window(&mut plans, txn, upstream);
        drop(plans);
        let staging = staging?;
        let file = File::open(&staging.path).ok();
        let mut state = staging.state.lock().ok()?;
        if signature {
            // A signature's size is known once it has arrived, moments after it started.
            let waited = staging
                .changed
                .wait_timeout_while(state, STALL_LIMIT, |s| s.outcome.is_none())
                .ok()?;
            state = waited.0;
        }
        state.claimed = true;
        let mtime = match &state.outcome {
            Some(Err(_)) => None?,
            Some(Ok(mtime)) => {
                let _ = fs::remove_file(&staging.path);
                *mtime
            }
            None => None,
        };
        drop(state);
        Some(Staged {
            size: staging.size(),
            mtime,
            reader: StagedReader::new(file?, staging),
        })
    }

    /// A fetch of `txn` ended: start the next ones, unless its pacman has gone meanwhile.
    fn refill(self: &Arc<Self>, txn: Transaction, up: &Agent) {
        let mut plans = self.lock();
        drop_stale(&mut plans);
        self.start_window(&mut plans, txn, up);
    }

    /// Starts files after pacman's position until [`Prefetch::window`] run at once, within the
    /// lookahead and the global byte bound.
    fn start_window(
        self: &Arc<Self>,
        plans: &mut HashMap<Transaction, Plan>,
        txn: Transaction,
        up: &Agent,
    ) {
        let Some(dir) = &self.dir else { return };
        let started = || plans.values().flat_map(|p| p.started.values());
        let mut in_use: u64 = started().map(|s| s.size()).sum();
        let Some(plan) = plans.get_mut(&txn) else {
            return;
        };
        let mut running = plan.started.values().filter(|s| s.running()).count();
        let mut ahead: u64 = plan.started.values().map(|s| s.size()).sum();
        let most_ahead = self.max_bytes / SHARES_OF_BYTES;
        for index in plan.next..plan.files.len() {
            if running >= self.window || self.threads.load(Ordering::Acquire) >= MAX_RUNNING {
                break;
            }
            let planned = &plan.files[index];
            if plan.started.contains_key(&index)
                || (ahead > 0 && ahead + planned.size > LOOKAHEAD_BYTES)
                || ahead + planned.size > most_ahead
                || in_use + planned.size > self.max_bytes
            {
                continue;
            }
            in_use += planned.size;
            ahead += planned.size;
            running += 1;
            let staging = Arc::new(Staging::new(
                dir.join(format!("{txn}-{index}.part")),
                planned.size,
            ));
            plan.started.insert(index, staging.clone());
            let (planned, ua, up) = (planned.clone(), plan.user_agent.clone(), up.clone());
            let this = self.clone();
            self.threads.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name("prefetch".into())
                .spawn(move || {
                    fetch(&up, &planned, ua.as_deref(), &staging, &this.sharing);
                    this.threads.fetch_sub(1, Ordering::AcqRel);
                    this.refill(txn, &up);
                });
            if let Err(e) = spawned {
                // Never to run: it must not hold a place in the window.
                warn!("prefetch: cannot start a thread: {e}");
                self.threads.fetch_sub(1, Ordering::AcqRel);
                plan.started.remove(&index);
                break;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Transaction, Plan>> {
        self.plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Drops plans whose pacman is gone or that sat idle too long; their unclaimed files go too (a
/// fetch still running deletes its own file when it ends, seeing nobody claimed it).
fn drop_stale(plans: &mut HashMap<Transaction, Plan>) {
    plans.retain(|txn, plan| {
        let keep = txn.alive() && plan.touched.elapsed() < STALE_AFTER;
        if !keep {
            info!("prefetch: dropping the plan of pacman {txn}");
            for staging in plan.started.values() {
                if let Ok(mut state) = staging.state.lock() {
                    state.claimed = true;
                    if state.outcome.is_some() {
                        let _ = fs::remove_file(&staging.path);
                    }
                }
            }
        }
        keep
    });
}

/// Fetches one planned file whole into its staging file and verifies it.
fn fetch(
    upstream: &Agent,
    planned: &Planned,
    user_agent: Option<&str>,
    staging: &Staging,
    sharing: &Sharing,
) {
    let get = |agent: &Agent, url: &str, writer, peer| {
        download(agent, url, planned, user_agent, staging, writer, peer)
    };
    // Shared with the LAN while it arrives; from the daemon already fetching it if one is. A
    // signature is not: no database describes it.
    let name = planned.url.rsplit('/').next().unwrap_or_default();
    let shared = planned
        .sha256
        .filter(|_| is_shareable_name(name))
        .and_then(|sha256| {
            sharing.begin(&Share {
                name: name.to_owned(),
                size: planned.size,
                sha256,
            })
        });
    let outcome = match shared {
        Some((writer, Verdict::Follow { http })) => {
            let peer = peer_client(http);
            let began = Instant::now();
            match get(&peer, &peerhttp::url(http, name), Some(writer), true) {
                Ok(mtime) => {
                    sharing
                        .claims
                        .succeeded(http.ip(), planned.size, began.elapsed());
                    Ok(mtime)
                }
                Err(e) => {
                    info!("prefetch: following {http} for {name}: {e}; using the mirror");
                    sharing.claims.failed(name, http.ip());
                    Stats::add(&sharing.stats.follow_failures, 1);
                    get(upstream, &planned.url, None, false)
                }
            }
        }
        Some((writer, Verdict::Lead)) => get(upstream, &planned.url, Some(writer), false),
        None => get(upstream, &planned.url, None, false),
    };
    if let Err(e) = &outcome {
        info!("prefetch: {}: {e}", planned.url);
    } else {
        let checked = match planned.sha256 {
            Some(_) => "verified",
            None => "a signature, for pacman to check",
        };
        info!(
            "prefetch: {}: {} bytes, {checked}",
            planned.url,
            staging.size()
        );
    }
    let mut state = staging
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.claimed || outcome.is_err() {
        let _ = fs::remove_file(&staging.path);
    }
    state.outcome = Some(outcome);
    staging.changed.notify_all();
}

/// Fetches `url` (the mirror's, or a peer's copy) into the staging file and `shared`.
fn download(
    upstream: &Agent,
    url: &str,
    planned: &Planned,
    user_agent: Option<&str>,
    staging: &Staging,
    mut shared: Option<Writer>,
    peer: bool,
) -> Result<Option<SystemTime>, String> {
    // A peer gets the relay's shorter stall limit, its speed floor and its deadline.
    let started = Instant::now();
    let stall = if peer { PEER_STALL } else { STALL_LIMIT };
    let mut config = upstream
        .get(url)
        .config()
        .timeout_resolve(Some(CONNECT_LIMIT))
        .timeout_connect(Some(CONNECT_LIMIT))
        .timeout_per_read(Some(stall))
        // A mirror may redirect (to a CDN, say); a peer serves its own file or nothing.
        .max_redirects(if peer { 0 } else { 10 });
    if peer {
        // The head within the peer budget, the whole file within its phase (the body's floor
        // alone would not see a peer that drips its headers).
        config = config
            .timeout_recv_response(Some(budget::HEADER_BUDGET))
            .timeout_global(Some(budget::phase(planned.size)));
    }
    let mut call = config.build();
    if let Some(ua) = user_agent {
        call = call.header("User-Agent", ua);
    }
    let response = call.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    if status != 200 {
        return Err(format!("mirror answered {status}"));
    }
    if header("Content-Encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err("mirror encoded the file".into());
    }
    let mtime = header("Last-Modified").and_then(|v| httpdate::parse_http_date(v).ok());
    let mut out = File::create(&staging.path).map_err(|e| e.to_string())?;
    if let Ok(mut state) = staging.state.lock() {
        // A second attempt (the mirror after a failed peer) starts the file over; a reader
        // that already sent bytes of the first must not go on with the second's.
        state.written = 0;
        state.attempt += 1;
    }
    let body = response.into_body().into_reader();
    let mut body: Box<dyn Read> = match peer {
        true => Box::new(Floor::new(body, started + budget::phase(planned.size))),
        false => Box::new(body),
    };
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        written += n as u64;
        if written > planned.size {
            return Err(format!("longer than the planned {} bytes", planned.size));
        }
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        hash.update(&buf[..n]);
        if let Some(writer) = shared.as_mut()
            && writer.write(&buf[..n]).is_err()
        {
            shared = None;
        }
        if let Ok(mut state) = staging.state.lock() {
            state.written = written;
        }
        staging.changed.notify_all();
    }
    match planned.sha256 {
        Some(sha256) => {
            if written != planned.size {
                return Err(format!("{written} bytes, planned {}", planned.size));
            }
            if let Some(writer) = shared {
                writer.finish();
            }
            if hash.finalize()[..] != sha256 {
                return Err("SHA-256 differs from the sync database's".into());
            }
        }
        // A signature: the mirror's, as pacman would have taken it; pacman checks it.
        None => staging
            .size
            .store(written, std::sync::atomic::Ordering::Release),
    }
    if let Some(mtime) = mtime {
        let _ = out.set_modified(mtime);
    }
    Ok(mtime)
}
