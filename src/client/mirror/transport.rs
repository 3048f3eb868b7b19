//! A ureq transport that reaches a mirror through the local pacserved's agent socket.
//!
//! ureq believes it talks to the mirror: it writes an ordinary HTTP/1.1 request and parses an
//! ordinary response, so every rule of [`crate::client::transfer`] (checked ranges, 304s,
//! identity encoding, size checks) applies unchanged. The connector opens the abstract Unix
//! socket instead of a TCP connection and first writes the agent's `FETCH` (or `STAGED`) line
//! naming the origin; the daemon speaks TLS to the mirror, which is why this transport tells ureq it is
//! already "TLS" for an https URL.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

use crate::client::transfer::limits::Limits;
use crate::protocol::agent::{self, Job};

/// Connects to the agent socket `name`; the error when no daemon listens there, or when the
/// listener is not one this process may trust ([`trusted_listener`]).
pub fn connect(name: &str) -> io::Result<UnixStream> {
    let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    trusted_listener(&stream, name)?;
    Ok(stream)
}

/// An abstract name belongs to whoever binds it first, and any local user can bind it while
/// pacserved is down (an upgrade, a restart, a machine where it never runs). So the listener
/// is trusted only when it runs as root, as pacserved's own user ([`agent::DAEMON_USER`]), or as
/// this process's own user (who gains nothing by fooling themselves): the kernel records who
/// bound the socket, and SO_PEERCRED reports it.
fn trusted_listener(stream: &UnixStream, name: &str) -> io::Result<()> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    let uid = cred.uid();
    let daemon = nix::unistd::User::from_name(agent::DAEMON_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() || Some(uid) == daemon {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "@{name} is held by uid {uid} (pid {}), not by root or {}: not using it",
            cred.pid(),
            agent::DAEMON_USER
        ),
    ))
}

/// How long a short job (a plan, a report, a summary) may wait for the daemon's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// One short job on a fresh agent connection (`body` follows its line); the first line of the
/// answer.
pub fn ask(socket: &str, job: &Job, body: &str) -> Option<String> {
    ask_lines(socket, job, body, 1).ok()?.into_iter().next()
}

/// [`ask`], reading the answer's lines up to `END`, the connection's end, or `most` lines.
pub fn ask_lines(socket: &str, job: &Job, body: &str, most: usize) -> io::Result<Vec<String>> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    stream.write_all(format!("{job}{body}").as_bytes())?;
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines().take(most) {
        let line = line?;
        let end = line == crate::protocol::report::END;
        lines.push(line);
        if end {
            break;
        }
    }
    Ok(lines)
}

/// The connection made to find out whether a daemon listens, for the first request within
/// [`FIRST_FRESH`] (the daemon gives an idle connection 30 s); later ones connect anew.
pub type First = Arc<Mutex<Option<(UnixStream, Instant)>>>;
pub const FIRST_FRESH: Duration = Duration::from_secs(5);

/// Opens one agent connection per request.
pub struct AgentConnector {
    pub socket: String,
    pub limits: Limits,
    /// Shared by the `STAGED` and `FETCH` connectors of one run.
    pub first: First,
    /// Ask with `STAGED`: only a file the daemon prefetched will do.
    pub staged_only: bool,
}

impl fmt::Debug for AgentConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentConnector(@{})", self.socket)
    }
}

impl Connector<()> for AgentConnector {
    type Out = AgentTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<AgentTransport>, Error> {
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        let mut stream = match first {
            Some((stream, made)) if made.elapsed() < FIRST_FRESH => stream,
            _ => connect(&self.socket)?,
        };
        let scheme = details.uri.scheme_str().unwrap_or("http");
        let authority = details
            .uri
            .authority()
            .map(|a| a.as_str())
            .ok_or(Error::BadUri("no host".into()))?;
        let job = Job::Fetch {
            origin: format!("{scheme}://{authority}"),
            connect_ms: self.limits.connect.as_millis() as u64,
            stall_ms: self.limits.stall.as_millis() as u64,
            staged_only: self.staged_only,
        };
        stream.write_all(job.to_string().as_bytes())?;
        let config = details.config;
        Ok(Some(AgentTransport {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            tls: details.needs_tls(),
        }))
    }
}

/// The daemon resolves the mirror's name; the client must not spend a lookup on it.
#[derive(Debug)]
pub struct NoLookup;

impl Resolver for NoLookup {
    fn resolve(
        &self,
        _: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        Ok(self.empty())
    }
}

pub struct AgentTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
    tls: bool,
}

impl fmt::Debug for AgentTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentTransport")
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Transport for AgentTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))?;
        match self.stream.write_all(&self.buffers.output()[..amount]) {
            Err(e) if timed_out(&e) => Err(Error::Timeout(timeout.reason)),
            other => Ok(other?),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))?;
        let read = loop {
            match self.stream.read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let amount = match read {
            Err(e) if timed_out(&e) => return Err(Error::Timeout(timeout.reason)),
            other => other?,
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    /// Every answer ends with the connection (`Connection: close`), so none is reused.
    fn is_open(&mut self) -> bool {
        false
    }

    fn is_tls(&self) -> bool {
        self.tls
    }
}
