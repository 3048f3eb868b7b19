//! How a failure to talk to a server becomes one of our [`Error`] variants: ureq's own errors,
//! I/O errors (which ureq's body reader uses to carry its own), and the cuts of
//! [`crate::client::bodylimit`]. Kept apart from [`crate::client::transfer`] so that the
//! transfer reads as the HTTP contract and this as the wording of its failures.

use std::io;
use std::time::Duration;

use crate::client::bodylimit::Cut;
use crate::client::error::{Error, io_reason};
use crate::client::limits::Limits;

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
