//! The peer discovery protocol, version 1: who on the LAN has this file?
//!
//! (The other wire format, between `pacserve-fetch` and the `pacserved` on the same machine,
//! is the local download [`agent`] protocol.)
//!
//! # Transport
//! A client sends one UDP **query** to port 15678 of the IPv4 group `239.255.15.78` (TTL 1) and
//! the IPv6 link-local group `ff02::15:678` (hop limit 1), on every up, multicast-capable,
//! non-loopback interface, and by unicast to each configured static peer. Every daemon that
//! receives it sends one **answer** by unicast to the query's source address and port. Nothing
//! is ever announced unasked.
//!
//! # Datagrams
//! All integers are big-endian. Both kinds start with the same 6-byte header:
//!
//! | offset | size | field                                          |
//! |--------|------|------------------------------------------------|
//! | 0      | 4    | magic `PSRV`                                   |
//! | 4      | 1    | protocol version (1)                           |
//! | 5      | 1    | kind: 1 = query, 2 = answer                    |
//!
//! A query continues:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 6      | 8    | nonce, random per query                                 |
//! | 14     | 1    | length N of the file name (1–255)                       |
//! | 15     | N    | file name, UTF-8, a single path component               |
//! | 15+N   | 1    | length A of the architecture (0 = any), at most 32      |
//! | 16+N   | A    | architecture, e.g. `x86_64`                             |
//! | …      | …    | zero padding up to at least [`MIN_QUERY_LEN`] bytes     |
//!
//! An answer is exactly [`ANSWER_LEN`] bytes:
//!
//! | offset | size | field                                                 |
//! |--------|------|-------------------------------------------------------|
//! | 6      | 8    | the query's nonce                                     |
//! | 14     | 1    | 1 = HAVE, 0 = MISS                                    |
//! | 15     | 8    | daemon id, random and stable for the daemon's life    |
//! | 23     | 2    | HTTP port serving `/pkg/<file name>` (0 on MISS)      |
//! | 25     | 8    | file size in bytes (0 on MISS)                        |
//! | 33     | 8    | file mtime, seconds since the epoch (0 on MISS)       |
//!
//! # Rules
//! - **No amplification**: an answer is never larger than the query that caused it. Queries
//!   shorter than [`MIN_QUERY_LEN`] (which exceeds [`ANSWER_LEN`]) are dropped, so a spoofed
//!   source cannot make a daemon send more than it received.
//! - Anything malformed — wrong magic, unknown version or kind, bad lengths, a name that is not a
//!   plain package file name — is dropped and counted by the daemon, never answered.
//! - MISS is answered so a client that knows how many daemons are alive can stop waiting as soon
//!   as all of them have spoken, instead of paying its whole wait on every file no peer has.
//!
//! # Versions
//! The version byte is checked before anything else. A daemon drops a query of a version it does
//! not know but counts it by version and logs the sender once, so a mixed LAN is visible in the
//! daemon's log and status page rather than silently split (Pacserve's failure). A later version
//! must keep the 6-byte header and the port; its clients send a v1 query alongside their own
//! until every daemon is upgraded, and its daemons keep answering v1 queries with v1 answers.

use std::fmt;

use crate::pacman::name;

pub mod agent;
pub mod netif;

pub const MAGIC: [u8; 4] = *b"PSRV";
pub const VERSION: u8 = 1;
const KIND_QUERY: u8 = 1;
const KIND_ANSWER: u8 = 2;

/// The UDP port queries go to (and the daemon's default HTTP port).
pub const PORT: u16 = 15678;
/// IPv4 group: administratively scoped (239.255/16), reached with TTL 1 only.
pub const GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 15, 78);
/// IPv6 group: link-local scope (ff02::/16).
pub const GROUP_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x15, 0x678);

/// Every query is padded to at least this many bytes.
pub const MIN_QUERY_LEN: usize = 64;
/// Every answer is exactly this many bytes.
pub const ANSWER_LEN: usize = 41;
/// The largest valid query: header, nonce, 255-byte name, 32-byte arch, length bytes.
pub const MAX_QUERY_LEN: usize = 6 + 8 + 1 + 255 + 1 + 32;
const MAX_ARCH_LEN: usize = 32;

const _: () = assert!(ANSWER_LEN <= MIN_QUERY_LEN);

/// A question: does anyone have `file_name`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub nonce: [u8; 8],
    pub file_name: String,
    /// Empty for any architecture.
    pub arch: String,
}

/// What a daemon knows about a file, or that it does not have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Have {
        http_port: u16,
        size: u64,
        mtime: u64,
    },
    Miss,
}

/// One daemon's answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub nonce: [u8; 8],
    pub daemon_id: [u8; 8],
    pub holding: Holding,
}

/// Why a datagram was dropped; the daemon counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    TooShort,
    TooLong,
    BadMagic,
    UnknownVersion(u8),
    WrongKind,
    BadLength,
    BadName,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::TooShort => write!(f, "too short"),
            Reject::TooLong => write!(f, "too long"),
            Reject::BadMagic => write!(f, "not a pacserve datagram"),
            Reject::UnknownVersion(v) => {
                write!(f, "protocol version {v} (this is version {VERSION})")
            }
            Reject::WrongKind => write!(f, "unexpected kind"),
            Reject::BadLength => write!(f, "inconsistent lengths"),
            Reject::BadName => write!(f, "not a shareable file name"),
        }
    }
}

impl Query {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(MIN_QUERY_LEN.max(17 + self.file_name.len() + self.arch.len()));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(KIND_QUERY);
        out.extend_from_slice(&self.nonce);
        out.push(self.file_name.len() as u8);
        out.extend_from_slice(self.file_name.as_bytes());
        out.push(self.arch.len() as u8);
        out.extend_from_slice(self.arch.as_bytes());
        if out.len() < MIN_QUERY_LEN {
            out.resize(MIN_QUERY_LEN, 0);
        }
        out
    }

    /// Parses a query, applying every rule above (size floor, version, name gate).
    pub fn decode(datagram: &[u8]) -> Result<Query, Reject> {
        if datagram.len() < MIN_QUERY_LEN {
            return Err(Reject::TooShort);
        }
        if datagram.len() > MAX_QUERY_LEN.max(MIN_QUERY_LEN) {
            return Err(Reject::TooLong);
        }
        check_header(datagram, KIND_QUERY)?;
        let mut r = Reader {
            buf: datagram,
            at: 6,
        };
        let nonce = r.array::<8>().ok_or(Reject::BadLength)?;
        let name_len = r.byte().ok_or(Reject::BadLength)? as usize;
        let name = r.take(name_len).ok_or(Reject::BadLength)?;
        let arch_len = r.byte().ok_or(Reject::BadLength)? as usize;
        if arch_len > MAX_ARCH_LEN {
            return Err(Reject::BadLength);
        }
        let arch = r.take(arch_len).ok_or(Reject::BadLength)?;
        if r.rest().iter().any(|&b| b != 0) {
            return Err(Reject::BadLength);
        }
        let file_name = std::str::from_utf8(name).map_err(|_| Reject::BadName)?;
        if !name::is_shareable_name(file_name) {
            return Err(Reject::BadName);
        }
        let arch = std::str::from_utf8(arch).map_err(|_| Reject::BadName)?;
        if !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Reject::BadName);
        }
        Ok(Query {
            nonce,
            file_name: file_name.to_owned(),
            arch: arch.to_owned(),
        })
    }
}

impl Answer {
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let (have, port, size, mtime) = match self.holding {
            Holding::Have {
                http_port,
                size,
                mtime,
            } => (1, http_port, size, mtime),
            Holding::Miss => (0, 0, 0, 0),
        };
        let mut out = [0u8; ANSWER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = KIND_ANSWER;
        out[6..14].copy_from_slice(&self.nonce);
        out[14] = have;
        out[15..23].copy_from_slice(&self.daemon_id);
        out[23..25].copy_from_slice(&port.to_be_bytes());
        out[25..33].copy_from_slice(&size.to_be_bytes());
        out[33..41].copy_from_slice(&mtime.to_be_bytes());
        out
    }

    pub fn decode(datagram: &[u8]) -> Result<Answer, Reject> {
        match datagram.len() {
            n if n < ANSWER_LEN => return Err(Reject::TooShort),
            n if n > ANSWER_LEN => return Err(Reject::TooLong),
            _ => {}
        }
        check_header(datagram, KIND_ANSWER)?;
        let mut r = Reader {
            buf: datagram,
            at: 6,
        };
        let nonce = r.array::<8>().ok_or(Reject::BadLength)?;
        let have = r.byte().ok_or(Reject::BadLength)?;
        let daemon_id = r.array::<8>().ok_or(Reject::BadLength)?;
        let http_port = u16::from_be_bytes(r.array::<2>().ok_or(Reject::BadLength)?);
        let size = u64::from_be_bytes(r.array::<8>().ok_or(Reject::BadLength)?);
        let mtime = u64::from_be_bytes(r.array::<8>().ok_or(Reject::BadLength)?);
        let holding = match have {
            1 if http_port != 0 => Holding::Have {
                http_port,
                size,
                mtime,
            },
            0 => Holding::Miss,
            _ => return Err(Reject::BadLength),
        };
        Ok(Answer {
            nonce,
            daemon_id,
            holding,
        })
    }
}

fn check_header(datagram: &[u8], kind: u8) -> Result<(), Reject> {
    if datagram[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if datagram[4] != VERSION {
        return Err(Reject::UnknownVersion(datagram[4]));
    }
    if datagram[5] != kind {
        return Err(Reject::WrongKind);
    }
    Ok(())
}

/// A bounds-checked cursor: every read returns None instead of panicking past the end.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.at..).unwrap_or(&[])
    }
}

/// Parses [`id_hex`]'s form back; None for anything else.
pub fn parse_id_hex(hex: &str) -> Option<[u8; 8]> {
    if hex.len() != 16 {
        return None;
    }
    let mut id = [0u8; 8];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// Formats a daemon id for logs and the debug listing.
pub fn id_hex(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
