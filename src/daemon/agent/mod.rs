//! The download agent: this machine's `pacserve-fetch` processes hand their mirror requests to
//! the daemon, which keeps mirror connections warm across them and fetches a transaction's next
//! files ahead ([`prefetch`]).
//!
//! Listens on an abstract Unix socket ([`crate::protocol::agent`] has the protocol and why the
//! socket is abstract). A name taken by someone else is a fatal start-up error: clients trust
//! only a listener run by root or pacserved's user, so a squatter gets nothing but it must not
//! go unnoticed. One thread per connection, bounded in total and per calling uid, so one user
//! cannot starve another's downloads. Each caller's uid and pid (SO_PEERCRED) go into the log
//! line of its job, and decide what the agent will do for it ([`policy`]): every local user may
//! connect, but the agent never does for one what that user could not do alone. It never
//! opens, reads or writes a file of the caller's ([`relay`] writes only to the socket). The
//! agent needs nothing from the sandbox but `AF_UNIX` and its state directory for staging.

pub mod policy;
pub mod prefetch;
pub mod relay;
pub mod share;
pub mod staged;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::daemon::agent::policy::{Judged, Policy};
use crate::daemon::agent::prefetch::Prefetch;
use crate::daemon::ledger::Ledger;
use crate::daemon::stats::Stats;
use crate::pacman::process::Transaction;
use crate::protocol::agent::{self, Job, Planned};
use crate::protocol::report::{self, Record};
use crate::{info, warn};

/// Jobs at once, for everyone together and for one uid.
const MAX_JOBS: usize = 64;
const MAX_JOBS_PER_UID: usize = 16;
/// The most bytes one plan may take on the wire: a full Arch upgrade's plan is about 200 KiB.
const MAX_PLAN_BYTES: usize = 4 << 20;
/// How long the accept loop rests after an error (out of file descriptors, say) before it
/// accepts again, so that an error that persists cannot spin a core.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What every job shares: the mirror client, prefetch, the rules, and the record of where
/// this machine's downloads came from.
pub struct Agent {
    pub upstream: ureq::Agent,
    pub prefetch: Arc<Prefetch>,
    pub policy: Policy,
    pub ledger: Arc<Ledger>,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub pid: i32,
    /// The start time of process `pid` when the connection was accepted, when that process was
    /// still the one that connected (its uid that of the connection): None otherwise. A pid
    /// can be reused while a connection stays open, so anything the agent learns about the
    /// caller from `/proc/<pid>` counts only while this still matches ([`policy`]).
    pub start: Option<u64>,
}

/// The whole request (its first line, headers or plan) must arrive within this long, so no
/// connection holds a job, or waits for its pid to be reused, for longer.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Binds `@name` and serves jobs on background threads until the process ends. A name that is
/// taken is an error naming it, for the daemon to stop on.
pub fn spawn(
    name: &str,
    prefetch: Prefetch,
    policy: Policy,
    ledger: Arc<Ledger>,
) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => io::Error::new(
                e.kind(),
                format!(
                    "the agent socket @{name} is taken by another process (`ss -xlp | grep \
                     {name}` shows which): another pacserved, or a local user squatting it; \
                     stop it, or start with --no-agent"
                ),
            ),
            _ => io::Error::new(e.kind(), format!("agent socket @{name}: {e}")),
        })?;
    let agent = Arc::new(Agent {
        upstream: relay::upstream_agent(prefetch.window + 1, policy.guard()),
        prefetch: Arc::new(prefetch),
        policy,
        ledger,
    });
    let running: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    info!(
        "download agent on @{name}, prefetching {}",
        agent.prefetch.describe()
    );
    std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!("agent: cannot accept a connection: {e}");
                        std::thread::sleep(ACCEPT_BACKOFF);
                        continue;
                    }
                };
                let Some(caller) = caller(&conn) else {
                    continue;
                };
                if !admit(&running, caller.uid) {
                    warn!("agent: too many jobs for uid {}; refusing one", caller.uid);
                    continue;
                }
                let (agent, counts) = (agent.clone(), running.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("agent-job".into())
                        .spawn(move || {
                            serve(conn, caller, &agent);
                            release(&counts, caller.uid);
                        });
                if spawned.is_err() {
                    warn!("agent: cannot start a thread for uid {}", caller.uid);
                    release(&running, caller.uid);
                }
            }
        })?;
    Ok(())
}

fn caller(conn: &UnixStream) -> Option<Caller> {
    let cred = getsockopt(conn, PeerCredentials).ok()?;
    let pid = u32::try_from(cred.pid()).ok();
    let start = pid
        .filter(|&pid| policy::process_uid(pid) == Some(cred.uid()))
        .and_then(|pid| Transaction::of_process(pid).map(|t| t.start));
    Some(Caller {
        uid: cred.uid(),
        pid: cred.pid(),
        start,
    })
}

fn admit(running: &Mutex<HashMap<u32, usize>>, uid: u32) -> bool {
    let Ok(mut running) = running.lock() else {
        return false;
    };
    let total: usize = running.values().sum();
    let mine = running.entry(uid).or_default();
    if total >= MAX_JOBS || *mine >= MAX_JOBS_PER_UID {
        return false;
    }
    *mine += 1;
    true
}

fn release(running: &Mutex<HashMap<u32, usize>>, uid: u32) {
    if let Ok(mut running) = running.lock()
        && let Some(n) = running.get_mut(&uid)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            running.remove(&uid);
        }
    }
}

/// One connection: its first line says what it wants.
fn serve(conn: UnixStream, caller: Caller, agent: &Agent) {
    // A client that stops reading or writing must not hold its thread for ever.
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(60)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(Deadline {
        stream: read_half,
        until: std::time::Instant::now() + REQUEST_DEADLINE,
    });
    let line = match read_line(&mut reader) {
        Ok(line) => line,
        // A client that only looked whether a daemon listens, and hung up.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
        Err(e) => {
            warn!("agent: uid {} pid {}: {e}", caller.uid, caller.pid);
            return;
        }
    };
    let mut conn = conn;
    let judged = agent.policy.judge(caller);
    let job = Job::parse(&line).and_then(|job| match &job {
        Job::Knows(txn) | Job::Plan(txn) if judged.standing.txn() != Some(*txn) => Err(format!(
            "pacman {txn} is not a pacman run by root that started the caller"
        )),
        _ => Ok(job),
    });
    match job {
        Ok(Job::Fetch {
            origin,
            connect_ms,
            stall_ms,
            staged_only,
        }) => {
            let limits = relay::Limits::from_millis(connect_ms, stall_ms);
            let job = relay::Job {
                origin: &origin,
                limits,
                staged_only,
            };
            relay::relay(reader, conn, (caller, &judged), job, agent);
        }
        Ok(Job::Knows(txn)) => {
            let answer = if agent.prefetch.knows(txn) {
                "YES\n"
            } else {
                "NO\n"
            };
            let _ = conn.write_all(answer.as_bytes());
        }
        Ok(Job::Plan(txn)) => {
            let answer =
                read_plan(&mut reader).and_then(|plan| plan_for(agent, &judged, caller, plan));
            match answer {
                Ok(()) => {
                    let _ = conn.write_all(b"OK\n");
                }
                Err(e) => {
                    Stats::add(&agent.prefetch.sharing.stats.agent_refused, 1);
                    warn!(
                        "agent: uid {} pid {}: refused the plan of pacman {txn}: {e}",
                        caller.uid, caller.pid
                    );
                    let _ = conn.write_all(format!("ERR {e}\n").as_bytes());
                }
            }
        }
        Ok(Job::Report) => {
            let taken = (judged.standing.owner())
                .ok_or_else(|| "not the downloader of a pacman run by root".to_owned())
                .and_then(|owner| {
                    let records = read_body(&mut reader, report::MAX_REPORT_LINES, Record::parse)?;
                    agent.ledger.report(owner, &records);
                    Ok(())
                });
            answer(
                &mut conn,
                caller,
                "report",
                taken.map(|()| "OK\n".to_owned()),
            );
        }
        Ok(Job::Summary(asked)) => {
            let txn = match asked {
                Some(txn) if caller.uid == 0 => Ok(txn),
                Some(_) => Err("only root may take a named transaction's summary".to_owned()),
                None => (judged.standing.owner())
                    .ok_or_else(|| "not run by a pacman run by root".to_owned()),
            };
            let tally = txn.map(|txn| agent.ledger.take_summary(txn));
            let lines = tally.map(|tally| format!("{}{}\n", tally.lines(), report::END));
            answer(&mut conn, caller, "summary", lines);
        }
        Ok(Job::Totals) => {
            let _ = conn.write_all(agent.ledger.totals().lines().as_bytes());
        }
        Err(why) => {
            warn!(
                "agent: uid {} pid {}: refused: {why}",
                caller.uid, caller.pid
            );
            relay::refuse(&mut conn, &why, &agent.prefetch.sharing.stats);
        }
    }
}

/// Writes a job's answer, or `ERR <why>` (logged and counted as a refusal).
fn answer(conn: &mut UnixStream, caller: Caller, what: &str, answer: Result<String, String>) {
    let text = answer.unwrap_or_else(|why| {
        warn!(
            "agent: uid {} pid {}: refused a {what}: {why}",
            caller.uid, caller.pid
        );
        format!("ERR {why}\n")
    });
    let _ = conn.write_all(text.as_bytes());
}

/// Keeps what the sync databases confirm of a transaction's plan, for prefetch.
fn plan_for(
    agent: &Agent,
    judged: &Judged,
    caller: Caller,
    plan: Vec<Planned>,
) -> Result<(), String> {
    let Some(txn) = judged.standing.txn() else {
        return Err("not a pacman transaction run by root".into());
    };
    let sent = plan.len();
    let plan = agent.policy.confirmed(judged, plan);
    info!(
        "agent: uid {} pid {}: plan of {} files for pacman {txn} ({} not in the sync databases \
         under {}: dropped)",
        caller.uid,
        caller.pid,
        plan.len(),
        sent - plan.len(),
        judged.dbpath.display()
    );
    let files = plan.len() as u64;
    agent.prefetch.plan(txn, caller.uid, plan)?;
    let stats = &agent.prefetch.sharing.stats;
    Stats::add(&stats.plans, 1);
    Stats::add(&stats.planned_files, files);
    Ok(())
}

/// The caller's side of a connection, readable until a deadline: each read waits at most what
/// is left of it, then fails as timed out.
pub(crate) struct Deadline {
    stream: UnixStream,
    until: std::time::Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .until
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the request took too long"))?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// One line, without its `\n`, at most [`agent::MAX_LINE`] bytes.
pub(crate) fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(agent::MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before a request",
        ));
    }
    if line.pop() != Some(b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line too long or cut off",
        ));
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request line is not UTF-8"))
}

fn read_plan(reader: &mut impl BufRead) -> Result<Vec<Planned>, String> {
    read_body(reader, agent::MAX_PLAN, Planned::parse)
}

/// The lines after a job's first, up to an empty line: at most `most` of them and
/// [`MAX_PLAN_BYTES`] in all, each read by `parse`.
fn read_body<T>(
    reader: &mut impl BufRead,
    most: usize,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut body = Vec::new();
    let mut bytes = 0;
    loop {
        let line = read_line(reader).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Ok(body);
        }
        bytes += line.len() + 1;
        if body.len() == most || bytes > MAX_PLAN_BYTES {
            return Err(format!("more than {most} lines or {MAX_PLAN_BYTES} bytes"));
        }
        body.push(parse(&line)?);
    }
}
