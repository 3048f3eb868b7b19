//! The mirror, reached through the local pacserved when one runs, else directly.
//!
//! pacman starts a new `pacserve-fetch` for every file, so on its own each file pays a fresh
//! TCP (and TLS) handshake and TCP slow start. The local daemon outlives those processes: it
//! keeps keep-alive connections to mirrors, and fetches the transaction's next files ahead ([`plan`]). [`Mirror`] hides the difference from [`crate::client::fetch`]: the request goes
//! over the agent socket ([`transport`]) when a daemon listens, and straight to the mirror when
//! none does, when a proxy is configured (the daemon would not use the caller's proxy), or when
//! the daemon fails mid-transfer — then the direct request resumes from what the output already
//! holds. Either way this process writes every byte of `%o` and checks the result; the daemon
//! never sees the file. The protocol is [`crate::protocol::agent`].

pub mod plan;
pub mod transport;

use std::cell::OnceCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ureq::Agent;

use crate::client::error::Error;
use crate::client::output::Output;
use crate::client::output::credits::Credit;
use crate::client::output::verify::Expected;
use crate::client::peers::discovery::Discovery;
use crate::client::terminal::progress::Progress;
use crate::client::transfer::limits::Limits;
use crate::client::transfer::{self, Delivered, Want};
use crate::pacman::name::FileKind;
use crate::protocol::agent::{self, Share};

/// Where the mirror's bytes come from for one run.
pub struct Mirror {
    limits: Limits,
    user_agent: String,
    /// Through the local daemon, when one answered on the agent socket.
    via_daemon: Option<Agent>,
    /// The same daemon, asked only for what it prefetched (`STAGED`).
    staged: Option<Agent>,
    /// That daemon's socket name.
    socket: Option<String>,
    /// Built on first use: loading the system's trust store costs a few milliseconds.
    direct: OnceCell<Agent>,
}

impl Mirror {
    /// Connects to the agent socket `socket` (None: standalone) when `url` is one it can carry.
    /// A listener that may not be trusted is warned about and left alone.
    pub fn new(
        socket: Option<&str>,
        (limits, user_agent): (Limits, &str),
        url: &str,
        progress: &Progress,
    ) -> Mirror {
        let http = ["http://", "https://"].iter().any(|s| {
            url.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        let proxied = ureq::Proxy::try_from_env().is_some();
        let stream = socket
            .filter(|_| http && !proxied)
            .and_then(|name| match transport::connect(name) {
                Ok(stream) => Some((name, stream)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    progress.warn(|| format!("local agent: {e}"));
                    None
                }
                Err(_) => None,
            });
        let agent = |name: &str, first: &transport::First, staged_only| {
            let connector = transport::AgentConnector {
                socket: name.to_owned(),
                limits,
                first: first.clone(),
                staged_only,
            };
            let config = transfer::config(limits, user_agent, None, 10);
            Agent::with_parts(config, connector, transport::NoLookup)
        };
        let (via_daemon, staged) = match stream {
            Some((name, stream)) => {
                let first = Arc::new(Mutex::new(Some((stream, Instant::now()))));
                (
                    Some(agent(name, &first, false)),
                    Some(agent(name, &first, true)),
                )
            }
            None => (None, None),
        };
        Mirror {
            socket: via_daemon.as_ref().and(socket).map(str::to_owned),
            limits,
            user_agent: user_agent.to_owned(),
            via_daemon,
            staged,
            direct: OnceCell::new(),
        }
    }

    /// The copy of `url` the daemon prefetched for this pacman transaction, if it has one:
    /// None when it has none (or no daemon runs), so the caller goes on to the LAN and the
    /// mirror; else how the transfer went.
    pub fn staged(
        &self,
        url: &str,
        out: &mut Output,
        want: &Want,
        progress: &mut Progress,
    ) -> Option<Result<Delivered, Error>> {
        let staged = self.staged.as_ref()?;
        progress.note(|| "asking pacserved for a copy it prefetched".to_owned());
        out.credit(Credit::Agent);
        let before = out.len();
        let want = Want {
            via_agent: true,
            ..want.clone()
        };
        match transfer::fetch_url(staged, url, out, &want, self.limits, progress) {
            // Not staged (404), or a daemon that predates STAGED (400, or it hung up on the
            // request): nothing arrived, nothing to report.
            Err(
                e @ Error::Agent {
                    code: 404 | 400, ..
                },
            ) => {
                progress.note(|| e.to_string());
                None
            }
            Err(e) if out.len() == before && daemon_failed(&e) => {
                progress.note(|| format!("pacserved has none ({e})"));
                None
            }
            done => Some(done),
        }
    }

    /// On a package's run, tells the daemon this pacman transaction's plan if it does not know
    /// it yet, so it can fetch the next files ahead; see [`plan`].
    pub fn offer_plan(&self, kind: FileKind, discovery: Option<&Discovery>, progress: &Progress) {
        if let Some(socket) = self.socket.as_deref().filter(|_| kind == FileKind::Package) {
            plan::offer(socket, discovery, progress);
        }
    }

    /// Fetches `url` into `out`; through the daemon first, directly if the daemon fails.
    pub fn fetch(
        &self,
        url: &str,
        out: &mut Output,
        want: &Want,
        progress: &mut Progress,
    ) -> Result<Delivered, Error> {
        if let Some(via) = &self.via_daemon {
            let socket = self.socket.as_deref().unwrap_or_default();
            progress.note(|| format!("handing the download to pacserved (@{socket})"));
            out.credit(Credit::Agent);
            let via_agent = Want {
                via_agent: true,
                ..want.clone()
            };
            match transfer::fetch_url(via, url, out, &via_agent, self.limits, progress) {
                // The agent does for a user only what pacman itself would fetch (pacserved(8),
                // SECURITY): anything else the user fetches alone, as without a daemon.
                Err(Error::Agent {
                    code: agent::NOT_FOR_YOU,
                    ..
                }) => {
                    progress.note(|| {
                        "pacserved refused to fetch this for this user; fetching it directly"
                            .to_owned()
                    });
                }
                Err(e @ Error::Agent { .. }) if daemon_failed(&e) => {
                    progress.warn(|| format!("{e}; asking the mirror directly"));
                }
                Err(e) if daemon_failed(&e) => {
                    progress.abandon();
                    progress.warn(|| format!("pacserved failed ({e}); continuing without it"));
                }
                done => return done,
            }
        }
        let direct = self
            .direct
            .get_or_init(|| transfer::mirror_agent(self.limits, &self.user_agent));
        out.credit(Credit::Mirror);
        let want = Want {
            share: None,
            via_agent: false,
            ..want.clone()
        };
        transfer::fetch_url(direct, url, out, &want, self.limits, progress)
    }
}

/// Failures where going to the mirror directly may succeed: the daemon went away or stalled
/// (the body broke off), or it could not reach the mirror (its own 502) — asked again
/// directly, the user gets the precise reason. Anything the mirror itself answered stands.
fn daemon_failed(e: &Error) -> bool {
    matches!(
        e,
        Error::Network { .. }
            | Error::Truncated { .. }
            | Error::Timeout { .. }
            | Error::Agent { code: 502, .. }
    )
}

/// The `X-Pacserve-Share` value for a package the sync database fully describes: the daemon
/// may then share the download with the LAN while it arrives (and follow another daemon's).
pub fn share_value(kind: FileKind, name: &str, expected: Option<&Expected>) -> Option<String> {
    let (size, sha256) = expected.and_then(|e| e.size.zip(e.sha256))?;
    let share = Share {
        name: name.to_owned(),
        size,
        sha256,
    };
    (kind == FileKind::Package).then(|| share.header_value())
}
