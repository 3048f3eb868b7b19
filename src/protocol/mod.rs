//! The peer discovery protocol, versions 1 to 5: who on the LAN has this file, or is fetching
//! it right now?
//!
//! (The other wire format, between `pacserve-fetch` and the `pacserved` on the same machine,
//! is the local download [`agent`] protocol.)
//!
//! # Transport
//! A client sends one UDP **query** to port 15678 of the IPv4 group `239.255.15.78` (TTL 1) and
//! the IPv6 link-local group `ff02::15:678` (hop limit 1), on every up, multicast-capable,
//! non-loopback interface, and by unicast to each configured static peer. Every daemon that
//! receives it sends at most one **answer** by unicast to the query's source address and port
//! (see One answer per query). Nothing is ever announced unasked.
//!
//! # Datagrams
//! All integers are big-endian. Both kinds start with the same 6-byte header:
//!
//! | offset | size | field                                          |
//! |--------|------|------------------------------------------------|
//! | 0      | 4    | magic `PSRV`                                   |
//! | 4      | 1    | protocol version (1 to 5)                      |
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
//! | 16+N+A | 1    | version ≥ 2: flags; bit 0 = CLAIM, v3+ also bit 1 = QUIET; others zero |
//! | 17+N+A | 8    | version ≥ 2: claimant's daemon id (zero unless CLAIM)   |
//! | 25+N+A | 2    | version ≥ 5: LINK, the sender's link speed in Mbit/s (0 = unknown) |
//! | …      | …    | zero padding up to at least [`MIN_QUERY_LEN`] bytes     |
//!
//! A version 1 answer is exactly [`ANSWER_LEN`] bytes, a version 2 answer [`ANSWER_V2_LEN`], a
//! version 3 or 4 answer [`ANSWER_V3_LEN`], a version 5 answer [`ANSWER_V5_LEN`]:
//!
//! | offset | size | field                                                 |
//! |--------|------|-------------------------------------------------------|
//! | 6      | 8    | the query's nonce                                     |
//! | 14     | 1    | state: 0 = MISS, 1 = HAVE; v2 also 2 = GROWING, 3 = CLAIMING |
//! | 15     | 8    | daemon id, random and stable for the daemon's life    |
//! | 23     | 2    | HTTP port serving `/pkg/<file name>` (0 on MISS, CLAIMING) |
//! | 25     | 8    | file size in bytes (0 on MISS, CLAIMING)              |
//! | 33     | 8    | file mtime, seconds since the epoch (0 if unknown)    |
//! | 41     | 8    | version ≥ 2: bytes landed so far (= size on HAVE)     |
//! | 49     | 1    | version ≥ 3: flags; bit 0 = SIG, others zero          |
//! | 50     | 2    | version ≥ 3: uploads: how busy the daemon's upload link is |
//! | 52     | 2    | version ≥ 5: LINK, the daemon's link speed in Mbit/s (0 = unknown) |
//!
//! **GROWING** ("in progress, N of S bytes"): the daemon is downloading the file from a mirror
//! (or from another daemon) right now. `GET /pkg/<file>` answers with the full length S and
//! streams the bytes as they land, holding the last byte back until the daemon has verified the
//! whole file (size and SHA-256 from the sync database); a failed or stalled download ends the
//! body early, and the follower goes on to its next source at its own offset. The follower
//! verifies the whole file at the end, as after any peer.
//!
//! **CLAIMING**: the daemon is about to fetch the file from a mirror and is settling with the
//! other daemons who does. A daemon that is about to go to a mirror for a file nobody has sends
//! a v2 query with the CLAIM flag and its own id, and waits a short bounded window for answers.
//! It leaves the mirror to others (and follows them) if anyone answers HAVE or GROWING, or if
//! another claim for the same file (answered CLAIMING, or heard as a CLAIM query) carries a
//! lower daemon id. Clients treat CLAIMING as MISS. A lone daemon, which has heard no other
//! daemon or client lately, does not claim at all, so a LAN of one pays nothing.
//!
//! **Version 3** adds what a client needs to choose well among several sources:
//! - **SIG** (answer flag): `<file>.sig` is in the daemon's cache too, served at the same port;
//!   a client that takes the package from this daemon takes its detached signature with it, with
//!   no second query.
//! - **uploads** (answer): how busy the daemon's upload link is: the other hosts it is sending
//!   files to right now (whole or growing) or offered a copy within the last second (they may
//!   be about to read it), not counting the asker; a client prefers the least busy source.
//!   (Earlier daemons counted the files being sent and every offer; either way, fewer is less
//!   busy.)
//! - **QUIET** (query flag): answer only HAVE, GROWING or CLAIMING, never MISS; for large LANs,
//!   where two hundred MISS answers to every query cost more than they tell (see Large LANs).
//!
//! **Version 4** changes only how claims are settled, so that the hosts of a LAN upgrading
//! together lead different files instead of one host leading every file and feeding everyone
//! (a star around its upload link). Its datagrams are laid out as version 3's. A version 4
//! daemon sends each CLAIM twice with one nonce, in version 2 (for older daemons) and in version
//! 4, and answers a version 4 query in version 4. When every other claimant it hears for a file
//! (answered CLAIMING in version 4, or heard as a version 4 CLAIM query) speaks version 4, the
//! file goes to the claimant with the highest **rank**: the first 8 bytes of SHA-256(file name
//! ‖ daemon id), big-endian (rendezvous hashing: each file to a different host, the same host
//! on every host's reckoning, with nothing exchanged but the claims). An older claimant leads by
//! the older rule (the lowest daemon id) when its id is the lowest of all claimants, and then
//! everyone defers to it; otherwise the rank settles the file among the version 4 claimants, and
//! the older ones, deferring to a lower id, follow whichever copy starts. So two version 4
//! daemons agree whether or not each heard an older claim in time. A claimant deferred to that does not start within the
//! defer limit is not deferred to again for a while (a host claiming every file and fetching
//! none costs one wait, not one per file). A daemon following a copy prefers, among the copies at
//! least half as far along as the furthest, the one whose daemon is the least busy. (How the
//! claims of a transaction's first files stay open a moment, how a daemon that leads a download
//! already makes way for another, and how followers settling at once form a tree change no
//! datagram: see [`crate::daemon::claims`].)
//!
//! **Version 5** adds **LINK**, the sender's link speed in Mbit/s (0 when unknown), so that a
//! host on a link much slower than its neighbours' (a Wi-Fi laptop beside gigabit desktops)
//! neither leads the LAN's mirror downloads nor relays them to faster hosts: the files it leads
//! reach the desktops at Wi-Fi speed, and pacman installs in order. Its datagrams are version
//! 4's with LINK appended. A version 5 daemon tells its link in its CLAIM queries and in every
//! answer to a version 5 query, MISS included; how it knows the link is
//! [`crate::daemon::link`]. A link is **clearly slower** than another when it is known and at
//! most a [`SLOWER_BY`]th of it ([`clearly_slower`]). When every claimant a daemon hears for a
//! file speaks version 5, a claimant whose link is clearly slower than the fastest among them
//! (this daemon included) ranks below every other, then the rank decides as in version 4; while
//! a daemon that speaks version 4 and no newer has been heard lately (10 minutes), every daemon
//! settles every file by rank alone, as that daemon does (deciding per file, by whether its
//! claim was heard in time, would let two daemons settle one file by different rules); older
//! claimants as before. A daemon following a copy leaves those on links clearly
//! slower than another copy's. A version 5 daemon sends each CLAIM in versions 2, 4 and 5 with
//! one nonce, oldest first as version 4 daemons do, so that each daemon answers every copy it
//! understands, the last in its newest version (see One answer per query; on a link that queues
//! or drops datagrams the earlier answers are spares), and a plain question (claiming nothing)
//! in versions 5 and 3.
//!
//! Clients keep asking in version 3 (and 1): versions 4 and 5 tell them nothing they use, and
//! older daemons would not answer them.
//!
//! # Rules
//! - **No amplification**: an answer is never larger than the query that caused it. Queries
//!   shorter than [`MIN_QUERY_LEN`] (which exceeds [`ANSWER_V2_LEN`]) are dropped, so a spoofed
//!   source cannot make a daemon send more than it received.
//! - Anything malformed — wrong magic, unknown version or kind, bad lengths, a name that is not a
//!   plain package file name — is dropped and counted by the daemon, never answered.
//! - MISS is answered so a client that knows how many daemons are alive can stop waiting as soon
//!   as all of them have spoken, instead of paying its whole wait on every file no peer has.
//!
//! # One answer per query
//! A client sends its query in its own version and, for older daemons, in version 1, with one
//! nonce, its own first (see Versions). A daemon answers a query once per nonce *and* source
//! (address and port), in the newest version it received: it remembers the last 256 queries it
//! handled (nonce, source, version; per address family), drops a copy whose nonce and source it
//! handled already in that version or a newer one, and counts it (`queries_repeated`). A copy in a
//! newer version than the one handled is answered as before (it says more; the client keeps the
//! newer answer), as are the CLAIMs of version 4 and 5 daemons, which go out in version 2 first.
//! So a version
//! 3 client gets one answer per daemon, not two, and the version 1 copy of a QUIET query does not
//! bring back the MISS the QUIET copy asked not to hear: a QUIET query for a file that is not here
//! is handled by saying nothing (counted as `quiet_unanswered`). The source is part of the key
//! because every host of the LAN sees a multicast query's nonce: one that sends it from its own
//! address silences nobody. The memory is a fixed ring: a flood of distinct nonces costs no memory,
//! and at worst lets an older copy through, answered as daemons always did. No datagram changes:
//! daemons before this rule answer every copy, and clients keep a daemon's newest answer either
//! way.
//!
//! # Large LANs
//! Where a client remembers at least 32 daemons from recent runs, it asks QUIET: holders answer,
//! the others stay silent, so a query costs the LAN one answer per holder instead of one or two per
//! daemon, and a miss no longer waits for the slowest of two hundred MISS answers. Without MISS
//! answers it cannot stop when every daemon it knows has spoken; it stops after a holder answered
//! and the others had as long again (as always), or else after twice the 90th percentile of the
//! answers' round trips in its last loud (non-QUIET) query, at least 2 ms and at most its whole
//! wait (waits and round trips count from when the last query went out). It asks loud again every
//! 30 seconds, so that the daemons, their versions and their round trips stay known. A QUIET query
//! also leaves out what nobody needed in that loud query: the version 1 copy when every daemon
//! answered in version 3 or later (the Versions rule below sends it until every daemon is upgraded;
//! as far as the client can tell, they are), and one address family when every daemon answered over
//! the other (IPv4 first); on a LAN of one version and dual-stack hosts a QUIET query is one
//! datagram per interface, where a loud one is four. Daemons too old for version 3 never see QUIET:
//! while one answers, the version 1 copy goes along, and they answer it, with MISS too. One that
//! appears between two loud queries, or a host reachable over the left-out family alone, is heard
//! from at the next loud query.
//!
//! # Versions
//! The version byte is checked before anything else. A daemon drops a query of a version it does
//! not know but counts it by version and logs the sender once, so a mixed LAN is visible in the
//! daemon's log and status page rather than silently split (Pacserve's failure). A later version
//! must keep the 6-byte header and the port; its clients send a v1 query alongside their own
//! until every daemon is upgraded, and its daemons keep answering v1 queries with v1 answers.
//!
//! How 1 and 2 coexist: a v2 client sends a v2 query and a v1 query with the same nonce, the v2
//! one first. A v1 daemon answers the v1 query only; a v2 daemon answers each in its own
//! version (one that answers once per query, above, the first copy only), and the client keeps
//! a daemon's v2 answer over its v1 one. A v2 daemon answers a v1 query with HAVE or MISS
//! only (GROWING and CLAIMING cannot be said in v1, so they become MISS), and a v1 client never
//! sees anything it does not know. A v2 client understands v1 answers as they always were.

use std::fmt;

use crate::pacman::name;

pub mod agent;
pub mod asker;
pub mod budget;
pub mod netif;
pub mod onlink;
pub mod peerhttp;
pub mod report;
mod wire;

pub const MAGIC: [u8; 4] = *b"PSRV";
/// The newest version this build speaks; it understands every version in [`VERSIONS`].
pub const VERSION: u8 = 5;
pub const VERSIONS: [u8; 5] = [1, 2, 3, 4, 5];
/// The version clients ask in (with version 1 beside it): version 4 adds only claims.
pub const ASK_VERSION: u8 = 3;
/// The first version whose claims are settled by rank ([`claim_rank`]).
pub const RANKED_CLAIMS: u8 = 4;
/// The first version whose datagrams carry the sender's link speed ([`clearly_slower`]).
pub const LINKED: u8 = 5;
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
/// Every version 1 answer is exactly this many bytes.
pub const ANSWER_LEN: usize = 41;
/// Every version 2 answer is exactly this many bytes.
pub const ANSWER_V2_LEN: usize = 49;
/// Every version 3 or 4 answer is exactly this many bytes.
pub const ANSWER_V3_LEN: usize = 52;
/// Every version 5 answer is exactly this many bytes.
pub const ANSWER_V5_LEN: usize = 54;
/// The largest valid query: header, nonce, 255-byte name, 32-byte arch, length bytes, v2 flags
/// and claimant, v5 link.
pub const MAX_QUERY_LEN: usize = 6 + 8 + 1 + 255 + 1 + 32 + 1 + 8 + 2;
const MAX_ARCH_LEN: usize = 32;

const _: () = assert!(
    ANSWER_LEN <= MIN_QUERY_LEN
        && ANSWER_V2_LEN <= MIN_QUERY_LEN
        && ANSWER_V3_LEN <= MIN_QUERY_LEN
        && ANSWER_V5_LEN <= MIN_QUERY_LEN
);

/// A question: does anyone have `file_name`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// 1 or 2; a daemon answers in the query's version.
    pub version: u8,
    pub nonce: [u8; 8],
    pub file_name: String,
    /// Empty for any architecture.
    pub arch: String,
    /// Version ≥ 2: the id of a daemon claiming the file's mirror download (see CLAIMING).
    pub claim: Option<[u8; 8]>,
    /// Version ≥ 3: answer only if the file is here or on its way (no MISS).
    pub quiet: bool,
    /// Version ≥ 5: the sender's link speed in Mbit/s, 0 if unknown (see LINK).
    pub link: u16,
}

/// What a daemon knows about a file, or that it does not have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Have {
        http_port: u16,
        size: u64,
        mtime: u64,
    },
    /// Version 2: being downloaded, `landed` of `size` bytes so far.
    Growing {
        http_port: u16,
        size: u64,
        landed: u64,
    },
    /// Version 2: about to be downloaded, if this daemon wins its claim.
    Claiming,
    Miss,
}

impl Holding {
    /// The HTTP port and size of a file that can be fetched from the daemon now (whole or
    /// growing).
    pub fn fetchable(&self) -> Option<(u16, u64)> {
        match *self {
            Holding::Have {
                http_port, size, ..
            }
            | Holding::Growing {
                http_port, size, ..
            } => Some((http_port, size)),
            Holding::Claiming | Holding::Miss => None,
        }
    }
}

/// One daemon's answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The version it was encoded in (that of the query it answers).
    pub version: u8,
    pub nonce: [u8; 8],
    pub daemon_id: [u8; 8],
    pub holding: Holding,
    /// Version 3: what the daemon says besides the holding (zero in older versions).
    pub extra: Extra,
}

/// What a version 3 answer adds (and version 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra {
    /// `<file>.sig` is here too (SIG).
    pub sig: bool,
    /// How busy the daemon's upload link is: the other hosts it sends to now or just offered a
    /// copy (see the module doc).
    pub uploads: u16,
    /// Version ≥ 5: the daemon's link speed in Mbit/s, 0 if unknown (see LINK).
    pub link: u16,
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

/// A daemon's rank for a file in version 4 claims: the highest-ranked claimant leads.
pub fn claim_rank(file_name: &str, daemon_id: &[u8; 8]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(file_name.as_bytes());
    hash.update(daemon_id);
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// How many times slower a link must be than the fastest among the daemons settling a file to
/// count as clearly slower (version 5).
pub const SLOWER_BY: u32 = 4;

/// Whether a link of `link` Mbit/s is clearly slower than one of `fastest` (version 5): known,
/// and at most a [`SLOWER_BY`]th of it. A Wi-Fi laptop beside gigabit desktops is; a 1 Gbit/s
/// host beside a 2.5 Gbit/s one is not (it would make one host lead every file again).
pub fn clearly_slower(link: u16, fastest: u16) -> bool {
    link != 0 && u32::from(link) * SLOWER_BY <= u32::from(fastest)
}

/// Parses [`id_hex`]'s form back; None for anything else.
pub fn parse_id_hex(hex: &str) -> Option<[u8; 8]> {
    crate::hex::decode(hex)
}

/// Formats a daemon id for logs and the debug listing.
pub fn id_hex(id: &[u8; 8]) -> String {
    crate::hex::encode(id)
}

#[cfg(test)]
mod tests;
