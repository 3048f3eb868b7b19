//! Moving one file's bytes from a URL into the output, resuming where that is safe.
//!
//! This is the HTTP contract of the XferCommand (see `man pacserve-fetch`): a resumable file is
//! requested with `Range: bytes=<len>-` and a 206 is accepted only if its Content-Range starts at
//! exactly that length; a 200 means the server ignored the range and we start over; a 416 either
//! means the file is already complete or that our partial is not a prefix of it. A database is
//! requested with If-Modified-Since when pacman still has the current copy, and a 304 produces the
//! output from that copy without a body byte crossing the wire. Package bytes are never decoded
//! (`Accept-Encoding: identity`), because offsets must count raw bytes.
//!
//! `file://` URLs (local repositories) follow the same rules in [`crate::client::transfer::file`];
//! [`crate::client::fetch`] picks between the two.

pub mod body;
pub mod file;
pub mod limits;
pub mod pieces;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use std::net::SocketAddr;

use crate::protocol::peerhttp::FixedAddress;
use ureq::unversioned::transport::DefaultConnector;
use ureq::{Agent, ResponseExt};

use crate::client::error::Error;
use crate::client::error::{ureq_error, wire_error};
use crate::client::output::Output;
use crate::client::terminal::progress::Progress;
use crate::client::transfer::body::Guarded;
use crate::client::transfer::limits::Limits;

/// Bytes moved per read and write. Large enough that a 1 GB/s stream costs a few thousand
/// system calls a second; small enough to keep the client's memory in single-digit megabytes.
const COPY_BUFFER: usize = 512 * 1024;

/// How the file should be requested; decided by the caller from the file's kind.
#[derive(Debug, Clone, Default)]
pub struct Want {
    /// Keep bytes already in the output and ask only for the rest.
    pub resume: bool,
    /// The current copy of a database and its mtime, for If-Modified-Since.
    pub unchanged_copy: Option<(PathBuf, SystemTime)>,
    /// The file's size per the sync database: a source announcing another size is refused
    /// before a byte is written, and a body running past it is cut off.
    pub size: Option<u64>,
    /// Without `size`, the most bytes the file may have (what a peer announced): a longer body is
    /// cut off.
    pub ceiling: Option<u64>,
    /// Refuse a 200 to a Range request instead of starting over: a peer always serves ranges, so
    /// ignoring ours means it is broken, and starting over would wipe bytes we trust.
    pub only_resume: bool,
    /// `X-Pacserve-Share` for the local agent (see [`crate::protocol::agent`]); never sent
    /// elsewhere.
    pub share: Option<String>,
    /// The request goes to the local pacserved's agent: an answer carrying `X-Pacserve-Agent`
    /// is the agent's own ([`Error::Agent`]), not the mirror's. Elsewhere the header means
    /// nothing (a peer or mirror cannot speak for the agent).
    pub via_agent: bool,
}

/// What a successful transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Body bytes were written; `from` is the offset they started at (0 unless resumed).
    Body { from: u64, received: u64 },
    /// The server said the current database copy is still current; it was copied to the output.
    NotModified,
    /// The output already held the whole file.
    AlreadyComplete,
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivered::Body { from: 0, received } => write!(f, "{received} bytes"),
            Delivered::Body { from, received } => {
                write!(f, "{received} bytes, resumed at byte {from}")
            }
            Delivered::NotModified => write!(f, "not modified, current copy kept"),
            Delivered::AlreadyComplete => write!(f, "already complete"),
        }
    }
}

/// The HTTP client for mirrors: honours the proxy variables, resolves names normally.
pub fn mirror_agent(limits: Limits, user_agent: &str) -> Agent {
    config(limits, user_agent, ureq::Proxy::try_from_env(), 10).into()
}

/// The HTTP client for one LAN peer. It connects to exactly `addr` whatever the URL's host
/// says — which keeps an IPv6 link-local peer's scope id, something a URL cannot carry — and
/// never through a proxy, since a proxy outside the LAN cannot reach the peer; nor does it follow
/// redirects, which would let a peer send our GETs anywhere.
pub fn peer_agent(limits: Limits, user_agent: &str, addr: SocketAddr) -> Agent {
    Agent::with_parts(
        config(limits, user_agent, None, 0),
        DefaultConnector::new(),
        FixedAddress(addr),
    )
}

/// The one HTTP configuration of the client, for mirrors, peers and the local agent alike.
pub(crate) fn config(
    limits: Limits,
    user_agent: &str,
    proxy: Option<ureq::Proxy>,
    redirects: u32,
) -> ureq::config::Config {
    let until_deadline = limits
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    Agent::config_builder()
        .tls_config(crate::tls::system_trust())
        .http_status_as_error(false)
        .timeout_resolve(Some(limits.connect))
        .timeout_connect(Some(limits.connect))
        .timeout_per_read(Some(limits.stall))
        .timeout_recv_response(limits.headers)
        .timeout_global(until_deadline)
        .user_agent(user_agent)
        .accept_encoding("identity")
        .input_buffer_size(COPY_BUFFER)
        .proxy(proxy)
        .max_redirects(redirects)
        .build()
}

/// Fetches `url` into `out` as `want` says, drawing progress for `name`.
pub fn fetch_url(
    agent: &Agent,
    url: &str,
    out: &mut Output,
    want: &Want,
    limits: Limits,
    progress: &mut Progress,
) -> Result<Delivered, Error> {
    let (scheme, _) = url.split_once("://").ok_or_else(|| Error::BadUrl {
        url: url.to_owned(),
        reason: "no scheme (expected http://, https:// or file://)".into(),
    })?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => from_http(agent, url, out, want, limits, progress),
        other => Err(Error::BadUrl {
            url: url.to_owned(),
            reason: format!("unsupported scheme {other}:// (expected http, https or file)"),
        }),
    }
}

fn from_http(
    agent: &Agent,
    url: &str,
    out: &mut Output,
    want: &Want,
    limits: Limits,
    progress: &mut Progress,
) -> Result<Delivered, Error> {
    let offset = if want.resume { out.len() } else { 0 };
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    if let Some((_, mtime)) = &want.unchanged_copy {
        request = request.header("If-Modified-Since", httpdate::fmt_http_date(*mtime));
    }
    if let Some(share) = want.share.as_deref().filter(|_| offset == 0) {
        request = request.header(crate::protocol::agent::SHARE_HEADER, share);
    }
    progress.note(|| match offset {
        0 => format!("GET {url}"),
        _ => format!("GET {url} from byte {offset}"),
    });
    let response = request.call().map_err(|e| ureq_error(url, &e, limits))?;
    let status = response.status().as_u16();
    let headers = response.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let agents_own = want
        .via_agent
        .then(|| header(crate::protocol::agent::REASON_HEADER))
        .flatten();
    if let Some(why) = agents_own {
        // Said by the caller ([`crate::client::mirror`]), in the words of what it asked.
        return Err(Error::Agent {
            url: url.into(),
            code: status,
            why: why.to_owned(),
        });
    }
    progress.note(|| format!("{url}: {}", response.status()));

    let start = match status {
        304 => {
            if let Some((current, _)) = &want.unchanged_copy {
                out.copy_from(current)?;
                return Ok(Delivered::NotModified);
            }
            return Err(Error::Status {
                url: url.into(),
                code: status,
            });
        }
        416 if offset > 0 => {
            let total = header("Content-Range").and_then(parse_unsatisfied_range);
            if total == Some(offset) {
                out.finish(None)?;
                return Ok(Delivered::AlreadyComplete);
            }
            if want.only_resume {
                return Err(Error::BadResponse {
                    url: url.into(),
                    detail: format!("cannot serve bytes from {offset} of this file"),
                });
            }
            // Our partial is longer than the file, or the server will not say: it cannot be a
            // prefix we trust, so fetch the whole file.
            progress.note(|| format!("{url}: partial file does not fit, starting over"));
            let fresh = Want {
                resume: false,
                ..want.clone()
            };
            return from_http(agent, url, out, &fresh, limits, progress);
        }
        200 if offset > 0 && want.only_resume => {
            return Err(Error::BadResponse {
                url: url.into(),
                detail: format!("ignored our range (bytes={offset}-) and sent the whole file"),
            });
        }
        200 => 0,
        206 if offset > 0 => {
            let range = header("Content-Range").and_then(parse_content_range);
            match range {
                Some(range) if range.start == offset => offset,
                _ => {
                    return Err(Error::BadResponse {
                        url: url.into(),
                        detail: format!(
                            "asked for bytes from {offset}, server answered Content-Range {}",
                            header("Content-Range").unwrap_or("(none)")
                        ),
                    });
                }
            }
        }
        _ => {
            return Err(Error::Status {
                url: url.into(),
                code: status,
            });
        }
    };
    if let Some(encoding) =
        header("Content-Encoding").filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(Error::BadResponse {
            url: url.into(),
            detail: format!("server encoded the file ({encoding}) although we asked for identity"),
        });
    }
    let body_len = header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    let total = body_len.map(|len| start + len);
    if let Some((announced, expected)) = total.zip(want.size).filter(|(a, e)| a != e) {
        return Err(Error::BadResponse {
            url: url.into(),
            detail: format!("announces {announced} bytes, the sync database says {expected}"),
        });
    }
    let most = want.size.or(want.ceiling);
    if let Some((announced, most)) = total.zip(most).filter(|(a, m)| a > m) {
        return Err(Error::BadResponse {
            url: url.into(),
            detail: format!("announces {announced} bytes, more than the {most} it offered"),
        });
    }
    let mtime = header("Last-Modified").and_then(|v| httpdate::parse_http_date(v).ok());
    let host = response.get_uri().host().unwrap_or("?").to_owned();

    out.begin_at(start)?;
    progress.start(name_of(out.path()), &host, total, start);
    let ceiling = most.map(|m| m.saturating_sub(start));
    let mut body = Guarded::new(
        response.into_body().into_reader(),
        ceiling,
        limits.low_speed,
    );
    let pumped = pump(&mut body, out, progress, |e| {
        wire_error(url.to_owned(), &e, limits)
    });
    if let Err(Error::Overlong { .. }) = pumped {
        // A body longer than the file is not the file: none of it is kept.
        out.truncate(start)?;
    }
    let received = pumped?;
    progress.finish();
    if let Some(expected) = body_len.filter(|&len| len != received) {
        return Err(Error::Truncated {
            url: url.into(),
            received,
            expected,
        });
    }
    out.finish(mtime)?;
    Ok(Delivered::Body {
        from: start,
        received,
    })
}

/// Copies a body into the output until EOF; returns how many bytes arrived.
pub(crate) fn pump(
    body: &mut dyn Read,
    out: &mut Output,
    progress: &Progress,
    on_read_error: impl Fn(io::Error) -> Error,
) -> Result<u64, Error> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(received),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(on_read_error(e)),
        };
        out.append(&buf[..n])?;
        received += n as u64;
        progress.advance(n as u64);
    }
}

/// A 206's `Content-Range: bytes <start>-<end>/<total or *>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    (start <= end && total.is_none_or(|t| end < t)).then_some(ContentRange { start, end, total })
}

/// A 416's `Content-Range: bytes */<total>`.
pub fn parse_unsatisfied_range(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

pub(crate) fn name_of(path: &Path) -> &str {
    crate::pacman::name::target_name(path).unwrap_or("file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed_strictly() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some(ContentRange {
                start: 5,
                end: 9,
                total: None
            })
        );
        assert_eq!(parse_content_range("bytes 10-5/20"), None);
        assert_eq!(parse_content_range("bytes 0-20/20"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
        assert_eq!(parse_unsatisfied_range("bytes */1234"), Some(1234));
        assert_eq!(parse_unsatisfied_range("bytes 0-1/2"), None);
    }
}
