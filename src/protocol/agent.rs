//! The local agent protocol, version 1: how `pacserve-fetch` hands a mirror download to the
//! `pacserved` on the same machine.
//!
//! Why a local daemon at all: pacman runs one `pacserve-fetch` process per file, one after
//! another, so a standalone download pays a TCP (and TLS) handshake and TCP slow start for every
//! file. The daemon lives across those processes and keeps its connections to mirrors warm, and
//! it can fetch the transaction's next files while pacman still asks for the current one.
//!
//! # Socket
//! An abstract Unix stream socket, by default `@pacserved/agent` ([`DEFAULT_SOCKET`]). Abstract
//! names belong to the network namespace, not the file system, so every host of a namespace LAN
//! (and every container) reaches its own daemon. They also belong to whoever binds them first, so
//! a client trusts the listener only when it runs as root, as [`DAEMON_USER`], or as the client's
//! own user (SO_PEERCRED). Any local user may connect; what the daemon will do for whom is
//! `crate::daemon::agent::policy`.
//!
//! # One connection, one job
//! The client writes one line (ASCII, at most [`MAX_LINE`] bytes, ending in `\n`):
//!
//! - `PSRV-AGENT 1 FETCH <origin> <connect-ms> <stall-ms>`: `<origin>` is `http://host[:port]`
//!   or `https://host[:port]`. One HTTP/1.1 `GET` request in origin form follows (only `Range`,
//!   `If-Modified-Since` and `User-Agent` are passed on). The daemon makes that request to the
//!   origin, TLS included, and answers with one HTTP/1.1 response and closes: the origin's status
//!   and its `Content-Length`, `Content-Range`, `Content-Encoding`, `Last-Modified`, `Location`
//!   headers, then the body unchanged (chunked when the origin sent no length, so a cut is always
//!   visible). Redirects are answered, not followed, so the client sees them. A job the daemon
//!   refuses gets `400`, an origin it cannot reach `502`, an origin that times out `504`; each
//!   with an `X-Pacserve-Agent` header saying why; a job it will not do for this caller (what
//!   pacman would not fetch, for a user other than root and pacman's own downloader) gets
//!   [`NOT_FOR_YOU`], and the client fetches it alone. A request for a package the client can
//!   vouch for may carry `X-Pacserve-Share: <file name> <size> <sha256 hex>` (from the sync
//!   database): the daemon then shares the download with the LAN while it arrives, and may
//!   answer from another daemon's download of the same file instead of the origin (same status
//!   and length as the origin's 200; see `pacserved(8)`, DOWNLOADS IN PROGRESS). Daemons that
//!   predate it ignore the header.
//! - `PSRV-AGENT 1 STAGED <origin> <connect-ms> <stall-ms>`: as `FETCH`, but answered only from
//!   a file the daemon prefetched for the caller's pacman transaction (while it still arrives,
//!   the last byte held back until it is verified); otherwise `404` with `X-Pacserve-Agent: not
//!   staged`, and nothing is fetched. A client asks this before it asks the LAN: a prefetched
//!   copy is already on this machine. Daemons that predate it answer `400`, which means the same.
//! - `PSRV-AGENT 1 KNOWS <txn>`: the daemon answers `YES\n` when it holds a download plan for
//!   that pacman transaction, else `NO\n`.
//! - `PSRV-AGENT 1 PLAN <txn>`: lines `<url> <size> <sha256 hex>` follow, in the order pacman
//!   will request them, ended by an empty line (at most [`MAX_PLAN`] lines); a package's
//!   signature is `<package url>.sig <most bytes> -`. The daemon answers `OK\n`. (Daemons that
//!   predate signature lines refuse such a plan: no prefetch until they are restarted.) `<txn>` is `<pid>-<start time>` of the invoking pacman ([`Transaction`]), so a
//!   reused pid is a new transaction.
//! - `PSRV-AGENT 1 REPORT`: lines of [`crate::protocol::report::Record`] follow (at most
//!   [`crate::protocol::report::MAX_REPORT_LINES`]), ended by an empty line: what a run kept from LAN peers and
//!   from the mirror directly, and peers whose file failed verification. Taken only from the
//!   downloader of a pacman run by root, for that pacman's transaction; answered `OK\n`.
//! - `PSRV-AGENT 1 SUMMARY [<txn>]`: where the package bytes of a transaction came from, taken
//!   (a second `SUMMARY` finds nothing): without `<txn>`, the transaction of the caller's parent
//!   pacman run by root (a pacman hook); with it, for root only (pacsrv, after its pacman
//!   exited). Answered with [`crate::protocol::report::Tally`] lines and `END`.
//! - `PSRV-AGENT 1 TOTALS`: [`crate::protocol::report::Totals`] lines and `END`, to anyone.
//!
//! The client never sends `%o`'s path or descriptor: it writes every byte itself and checks the
//! finished file as it does standalone, so a confused or hostile daemon can make a download fail
//! but never make pacman accept a wrong file.

use std::fmt;

use crate::pacman::name::is_shareable_name;
pub use crate::pacman::process::Transaction;

/// The socket's abstract name (without the leading NUL).
pub const DEFAULT_SOCKET: &str = "pacserved/agent";
/// The system user the packaged pacserved runs as (`contrib/pacserved.sysusers`): with root and
/// the client's own user, the only listener a client trusts on the socket.
pub const DAEMON_USER: &str = "pacserved";
/// Longest request line, and longest plan line.
pub const MAX_LINE: usize = 4096;
/// Most files in one plan: far above any real upgrade, small enough to bound the daemon's memory.
pub const MAX_PLAN: usize = 20_000;
/// The status of a `FETCH` the agent will not do for this caller, who may do it themselves
/// (`421 Misdirected Request`): the client then goes to the origin directly, as it would with
/// no daemon at all. See [`crate::daemon::agent::policy`].
pub const NOT_FOR_YOU: u16 = 421;
/// The response header naming why the agent answered a job itself.
pub const REASON_HEADER: &str = "X-Pacserve-Agent";
/// The request header describing a shareable package: `<file name> <size> <sha256 hex>`.
pub const SHARE_HEADER: &str = "X-Pacserve-Share";
const MAGIC: &str = "PSRV-AGENT";
const VERSION: &str = "1";

/// A package described by the sync database, as `X-Pacserve-Share` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl Share {
    /// `<name> <size> <sha256 hex>`.
    pub fn parse(value: &str) -> Option<Share> {
        let mut words = value.split_ascii_whitespace();
        let (Some(name), Some(size), Some(hex), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return None;
        };
        if !is_shareable_name(name) {
            return None;
        }
        Some(Share {
            name: name.to_owned(),
            size: size.parse().ok()?,
            sha256: crate::hex::decode(hex)?,
        })
    }

    pub fn header_value(&self) -> String {
        let hex = crate::hex::encode(&self.sha256);
        format!("{} {} {hex}", self.name, self.size)
    }
}

/// The first line of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Fetch {
        origin: String,
        connect_ms: u64,
        stall_ms: u64,
        /// `STAGED`: answer only from a file prefetched for the caller's transaction.
        staged_only: bool,
    },
    Knows(Transaction),
    Plan(Transaction),
    Report,
    /// None: the caller's own pacman's.
    Summary(Option<Transaction>),
    Totals,
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Fetch {
                origin,
                connect_ms,
                stall_ms,
                staged_only,
            } => {
                let word = if *staged_only { "STAGED" } else { "FETCH" };
                writeln!(
                    f,
                    "{MAGIC} {VERSION} {word} {origin} {connect_ms} {stall_ms}"
                )
            }
            Job::Knows(txn) => writeln!(f, "{MAGIC} {VERSION} KNOWS {txn}"),
            Job::Plan(txn) => writeln!(f, "{MAGIC} {VERSION} PLAN {txn}"),
            Job::Report => writeln!(f, "{MAGIC} {VERSION} REPORT"),
            Job::Summary(None) => writeln!(f, "{MAGIC} {VERSION} SUMMARY"),
            Job::Summary(Some(txn)) => writeln!(f, "{MAGIC} {VERSION} SUMMARY {txn}"),
            Job::Totals => writeln!(f, "{MAGIC} {VERSION} TOTALS"),
        }
    }
}

impl Job {
    /// Parses a first line (without its `\n`); the error says why, for the log and the answer.
    pub fn parse(line: &str) -> Result<Job, String> {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            [
                MAGIC,
                VERSION,
                word @ ("FETCH" | "STAGED"),
                origin,
                connect,
                stall,
            ] => Ok(Job::Fetch {
                origin: check_origin(origin)?.to_owned(),
                connect_ms: number(connect)?,
                stall_ms: number(stall)?,
                staged_only: word == "STAGED",
            }),
            [MAGIC, VERSION, "KNOWS", txn] => Ok(Job::Knows(Transaction::parse(txn)?)),
            [MAGIC, VERSION, "PLAN", txn] => Ok(Job::Plan(Transaction::parse(txn)?)),
            [MAGIC, VERSION, "REPORT"] => Ok(Job::Report),
            [MAGIC, VERSION, "SUMMARY"] => Ok(Job::Summary(None)),
            [MAGIC, VERSION, "SUMMARY", txn] => Ok(Job::Summary(Some(Transaction::parse(txn)?))),
            [MAGIC, VERSION, "TOTALS"] => Ok(Job::Totals),
            [MAGIC, version, ..] if version != VERSION => Err(format!(
                "protocol version {version} (this daemon speaks {VERSION})"
            )),
            _ => Err("not an agent request".to_owned()),
        }
    }
}

fn number(word: &str) -> Result<u64, String> {
    word.parse().map_err(|_| format!("not a number: {word:?}"))
}

/// Accepts `http://authority` and `https://authority` only: no user info, path, or odd bytes.
pub fn check_origin(origin: &str) -> Result<&str, String> {
    let (scheme, authority) = origin
        .split_once("://")
        .ok_or_else(|| format!("not a URL origin: {origin:?}"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {scheme}:// refused (only http and https)"));
    }
    let fine = |b: u8| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b);
    if authority.is_empty() || !authority.bytes().all(fine) {
        return Err(format!("bad host in {origin:?}"));
    }
    Ok(origin)
}

/// One file of a plan: what pacman will request and what the sync database says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub url: String,
    /// A package's exact size; a signature's most (pacman's limit).
    pub size: u64,
    /// A package's SHA-256; None for a package's signature (`<package URL>.sig`), which no
    /// database describes and pacman checks itself.
    pub sha256: Option<[u8; 32]>,
}

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self
            .sha256
            .map_or_else(|| "-".to_owned(), |sha| crate::hex::encode(&sha));
        writeln!(f, "{} {} {hex}", self.url, self.size)
    }
}

impl Planned {
    pub fn parse(line: &str) -> Result<Planned, String> {
        let bad = || format!("bad plan line {line:?}");
        let mut words = line.split(' ');
        let (Some(url), Some(size), Some(hex), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let (origin, _) = split_url(url).ok_or_else(bad)?;
        check_origin(origin)?;
        let sha256 = match hex {
            "-" if url.ends_with(".sig") => None,
            _ => Some(crate::hex::decode(hex).ok_or_else(bad)?),
        };
        Ok(Planned {
            url: url.to_owned(),
            size: number(size)?,
            sha256,
        })
    }
}

/// `scheme://authority` and the rest (`/path?query`, or `/` when empty).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    match url[after_scheme..].find('/') {
        Some(i) => Some(url.split_at(after_scheme + i)),
        None => Some((url, "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_other_schemes_are_refused() {
        let jobs = [
            Job::Fetch {
                origin: "https://mirror.example:8443".into(),
                connect_ms: 10_000,
                stall_ms: 500,
                staged_only: false,
            },
            Job::Fetch {
                origin: "http://[::1]:80".into(),
                connect_ms: 1,
                stall_ms: 2,
                staged_only: true,
            },
            Job::Knows(Transaction { pid: 7, start: 99 }),
            Job::Plan(Transaction { pid: 1, start: 2 }),
            Job::Report,
            Job::Summary(None),
            Job::Summary(Some(Transaction { pid: 3, start: 4 })),
            Job::Totals,
        ];
        for job in jobs {
            let line = job.to_string();
            assert_eq!(Job::parse(line.trim_end()), Ok(job));
        }
        for refused in [
            "PSRV-AGENT 1 FETCH ftp://mirror 1 1",
            "PSRV-AGENT 1 FETCH file://mirror 1 1",
            "PSRV-AGENT 1 FETCH http://user@mirror 1 1",
            "PSRV-AGENT 1 FETCH http://mirror/path 1 1",
            "PSRV-AGENT 1 FETCH junk 1 1",
            "PSRV-AGENT 1 STAGED file://mirror 1 1",
            "PSRV-AGENT 2 KNOWS 1-2",
            "GET / HTTP/1.1",
        ] {
            assert!(Job::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn plan_lines_round_trip() {
        let planned = Planned {
            url: "http://[::1]:80/repo/a-1-1-any.pkg.tar.zst".into(),
            size: 1234,
            sha256: Some([0xab; 32]),
        };
        let line = planned.to_string();
        assert_eq!(Planned::parse(line.trim_end()), Ok(planned));
        let signature = Planned {
            url: "http://[::1]:80/repo/a-1-1-any.pkg.tar.zst.sig".into(),
            size: 16384,
            sha256: None,
        };
        let line = signature.to_string();
        assert_eq!(Planned::parse(line.trim_end()), Ok(signature));
        assert!(
            Planned::parse("http://h/a-1-1-any.pkg.tar.zst 1 -").is_err(),
            "only a signature may come without a hash"
        );
        assert!(Planned::parse("ftp://x/a 1 00").is_err());
        // 64 bytes, but not 64 hex digits: a multi-byte character is refused, never sliced.
        let odd = format!("0é{}", "0".repeat(61));
        assert_eq!(odd.len(), 64);
        assert!(Planned::parse(&format!("http://h/a 1 {odd}")).is_err());
        assert_eq!(
            split_url("https://h:1/a/b?c"),
            Some(("https://h:1", "/a/b?c"))
        );
        assert_eq!(split_url("https://h"), Some(("https://h", "/")));
    }

    #[test]
    fn the_share_header_is_read_strictly() {
        let share = Share {
            name: "a-1-1-any.pkg.tar.zst".into(),
            size: 42,
            sha256: [0xab; 32],
        };
        assert_eq!(Share::parse(&share.header_value()), Some(share));
        let hex = "ab".repeat(32);
        for bad in [
            format!("../a.pkg.tar.zst 42 {hex}"),
            format!("a-1-1-any.pkg.tar.zst x {hex}"),
            format!("a-1-1-any.pkg.tar.zst 42 {}", &hex[2..]),
            format!("a-1-1-any.pkg.tar.zst 42 {hex} more"),
            "a-1-1-any.pkg.tar.zst 42".to_owned(),
        ] {
            assert_eq!(Share::parse(&bad), None, "{bad}");
        }
    }
}
