//! The one error type of the download path.
//!
//! Every message is a single line naming the URL or file involved, because it is what a user
//! sees between pacman's own lines. The variants are split by *whose* fault it is: a source
//! error ([`Error::is_source_failure`]) means "try the next peer or mirror", while an output
//! error means the local disk refused and no other source will help.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::transfer::body::Cut;
use crate::client::transfer::limits::Limits;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The output path cannot name a file pacman would download.
    BadOutput { path: PathBuf, reason: &'static str },
    /// The URL is malformed or uses a scheme we do not speak.
    BadUrl { url: String, reason: String },
    /// The server answered with a status that does not deliver the file.
    Status { url: String, code: u16 },
    /// The local pacserved's agent answered a request itself (its `X-Pacserve-Agent` says why):
    /// nothing was prefetched, it will not fetch this for this user, or it could not reach the
    /// mirror. Not the mirror's answer, and never shown as if it were.
    Agent { url: String, code: u16, why: String },
    /// The host name did not resolve.
    HostNotFound { url: String },
    /// Connecting or receiving took longer than allowed.
    Timeout {
        url: String,
        phase: &'static str,
        limit: Duration,
    },
    /// Any other failure to talk to the server (refused, reset, TLS, redirect loop…).
    Network { url: String, detail: String },
    /// The server answered, but in a way that would corrupt the output if we wrote it.
    BadResponse { url: String, detail: String },
    /// The complete file does not match the sync database; it was discarded.
    BadFile { url: String, why: String },
    /// The body ended before the length the server announced.
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    /// The body went on past the most bytes the file can have (see [`crate::client::transfer::body`]);
    /// what it wrote was discarded.
    Overlong { url: String, limit: u64 },
    /// The body arrived slower than the floor a LAN peer must keep (see
    /// [`crate::client::transfer::body`]).
    TooSlow {
        url: String,
        got: u64,
        floor: u64,
        window: Duration,
    },
    /// Another pacserve-fetch is writing the same output (see [`crate::client::output::lock`]).
    Locked { path: PathBuf, waited: Duration },
    /// The directory the output goes in does not exist; named, since pacman's `%o` does not
    /// show which part of the path is missing.
    NoDirectory { path: PathBuf, dir: PathBuf },
    /// Reading a `file://` source failed.
    ReadSource { path: PathBuf, source: io::Error },
    /// Writing the output failed (disk full, permission denied, …).
    WriteOutput {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// SIGINT or SIGTERM arrived; what was written stays for a later resume.
    Interrupted,
    /// `--peers-only`: no LAN peer delivered a copy the sync database vouches for.
    NoPeer { name: String },
}

impl Error {
    /// The server says the file does not exist (404 or 410).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Status {
                code: 404 | 410,
                ..
            }
        )
    }

    /// True when another source might succeed where this one failed.
    pub fn is_source_failure(&self) -> bool {
        !matches!(
            self,
            Error::BadOutput { .. }
                | Error::WriteOutput { .. }
                | Error::Interrupted
                | Error::Locked { .. }
                | Error::NoDirectory { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadOutput { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::BadUrl { url, reason } => write!(f, "{url}: bad URL: {reason}"),
            Error::Status { url, code } => {
                let reason = status_reason(*code);
                write!(f, "{url}: server answered {code} {reason}")
            }
            Error::Agent { url, code, why } => {
                let reason = status_reason(*code);
                write!(
                    f,
                    "pacserved's agent (not the mirror) answered {code} {reason} for {url}: {why}"
                )
            }
            Error::HostNotFound { url } => write!(f, "{url}: host not found"),
            Error::Timeout { url, phase, limit } if limit.is_zero() => {
                write!(f, "{url}: timed out {phase}")
            }
            Error::Timeout { url, phase, limit } => {
                write!(f, "{url}: timed out {phase} ({} s)", limit.as_secs_f64())
            }
            Error::Network { url, detail } => write!(f, "{url}: {detail}"),
            Error::BadResponse { url, detail } => write!(f, "{url}: {detail}"),
            Error::BadFile { url, why } => {
                write!(f, "{url}: wrong file ({why}); discarded")
            }
            Error::Truncated {
                url,
                received,
                expected,
            } => write!(
                f,
                "{url}: connection closed after {received} of {expected} bytes"
            ),
            Error::Overlong { url, limit } => write!(
                f,
                "{url}: sent more than the {limit} bytes the file can have; discarded"
            ),
            Error::TooSlow {
                url,
                got,
                floor,
                window,
            } => write!(
                f,
                "{url}: too slow ({got} bytes in {} s, the floor is {} KiB/s)",
                window.as_secs_f64(),
                floor / 1024
            ),
            Error::Locked { path, waited } => write!(
                f,
                "{} is being written by another pacserve-fetch (waited {} s); not touching it",
                path.display(),
                waited.as_secs_f64()
            ),
            Error::NoDirectory { path, dir } => write!(
                f,
                "cannot create {}: directory {} does not exist",
                path.display(),
                dir.display()
            ),
            Error::ReadSource { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), io_reason(source))
            }
            Error::WriteOutput {
                path,
                action,
                source,
            } => write!(
                f,
                "cannot {action} {}: {}",
                path.display(),
                io_reason(source)
            ),
            Error::Interrupted => write!(f, "interrupted; the partial file is kept for resuming"),
            Error::NoPeer { name } => {
                write!(f, "{name}: no LAN peer had a verified copy (--peers-only)")
            }
        }
    }
}

impl std::error::Error for Error {}

/// `io::Error`'s Display appends "(os error 28)"; users want the words only.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn status_reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

// How a failure to talk to a server becomes one of the variants above: ureq's own errors, I/O
// errors (which ureq's body reader uses to carry its own), and the cuts of
// `crate::client::transfer::body`.

/// Maps a ureq failure to our variants. The limits are only used to word timeouts.
pub fn ureq_error(url: &str, err: &ureq::Error, limits: Limits) -> Error {
    use ureq::Timeout as T;
    let url = url.to_owned();
    match err {
        ureq::Error::HostNotFound => Error::HostNotFound { url },
        ureq::Error::Timeout(T::Connect | T::Resolve) => Error::Timeout {
            url,
            phase: "connecting",
            limit: limits.connect,
        },
        ureq::Error::Timeout(T::RecvResponse) => Error::Timeout {
            url,
            phase: "waiting for the response headers",
            limit: limits.headers.unwrap_or_default(),
        },
        ureq::Error::Timeout(T::Global) => Error::Timeout {
            url,
            phase: "at the end of the time given to peers",
            limit: Duration::ZERO,
        },
        ureq::Error::Timeout(_) | ureq::Error::BodyStalled => Error::Timeout {
            url,
            phase: "waiting for data",
            limit: limits.stall,
        },
        ureq::Error::BadUri(reason) => Error::BadUrl {
            url,
            reason: reason.clone(),
        },
        ureq::Error::Http(e) => Error::BadUrl {
            url,
            reason: e.to_string(),
        },
        ureq::Error::Io(e) => wire_error(url, e, limits),
        other => Error::Network {
            url,
            detail: other.to_string(),
        },
    }
}

/// An I/O error while talking to a server. ureq's body reader wraps its own errors in
/// io::Error, so those are unwrapped first to keep timeouts recognisable.
pub fn wire_error(url: String, e: &io::Error, limits: Limits) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        return ureq_error(&url, inner, limits);
    }
    match Cut::of(e) {
        Some(Cut::Overlong { limit }) => return Error::Overlong { url, limit },
        Some(Cut::TooSlow { got, floor }) => {
            return Error::TooSlow {
                url,
                got,
                floor: floor.bytes_per_sec,
                window: floor.window,
            };
        }
        None => {}
    }
    let detail = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed before the body ended".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            return Error::Timeout {
                url,
                phase: "waiting for data",
                limit: limits.stall,
            };
        }
        _ if e.to_string().contains("lookup address") => {
            return Error::HostNotFound { url };
        }
        _ => io_reason(e),
    };
    Error::Network { url, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let e = Error::Status {
            url: "http://m/x.pkg.tar.zst".into(),
            code: 404,
        };
        assert_eq!(
            e.to_string(),
            "http://m/x.pkg.tar.zst: server answered 404 Not Found"
        );
        let e = Error::WriteOutput {
            path: "/c/x.part".into(),
            action: "write",
            source: io::Error::from_raw_os_error(28),
        };
        assert_eq!(
            e.to_string(),
            "cannot write /c/x.part: No space left on device"
        );
        assert!(!e.is_source_failure());
        let e = Error::Agent {
            url: "http://m/x.pkg.tar.zst".into(),
            code: 404,
            why: "not staged".into(),
        };
        assert_eq!(
            e.to_string(),
            "pacserved's agent (not the mirror) answered 404 Not Found for http://m/x.pkg.tar.zst: \
             not staged"
        );
        assert!(!e.is_not_found(), "the agent's 404 is not the mirror's");
        let e = Error::HostNotFound {
            url: "http://nowhere/".into(),
        };
        assert!(e.is_source_failure());
    }
}
