//! Where a machine's package bytes came from, as the local agent protocol carries it
//! ([`crate::protocol::agent`], jobs `REPORT`, `SUMMARY` and `TOTALS`), and in words for people.
//!
//! A `pacserve-fetch` that pacman started reports what it kept from LAN peers and from the
//! mirror directly, and which peers sent a file that failed verification ([`Record`]); pacserved
//! adds what its agent and its `/cache/` endpoint moved itself, and answers with one
//! transaction's [`Tally`] (printed after the transaction: "pacserve: 412 MiB of 430 MiB from
//! the LAN (3 hosts), 18 MiB from the mirror") or the [`Totals`] since it started keeping them.
//! Every line is ASCII words separated by one space; hosts are labelled as pacserved's status
//! page shows them (an IPv4 address, an IPv6 /64), never by a full IPv6 address.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Most lines in one `REPORT`: a run keeps bytes from a few peers and the mirror at most.
pub const MAX_REPORT_LINES: usize = 16;
/// Most lines in an answer to `SUMMARY` or `TOTALS`, for the reader's bound.
pub const MAX_ANSWER_LINES: usize = 512;
/// The label of LAN bytes whose host is not recorded (what `/cache/` served: the Include way).
pub const UNKNOWN_HOST: &str = "-";
/// The line ending an answer.
pub const END: &str = "END";

/// One line of a `REPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Bytes of the file this run kept from a LAN peer, the daemon with this id (a dual-stack
    /// host answers from two addresses: the id tells it is one host).
    Peer { ip: IpAddr, id: [u8; 8], bytes: u64 },
    /// Bytes this run kept from the mirror, fetched without the agent.
    Mirror { bytes: u64 },
    /// A peer whose file failed verification (size and SHA-256, or its signature).
    Bad { ip: IpAddr },
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Peer { ip, id, bytes } => {
                writeln!(f, "peer {bytes} {ip} {}", crate::protocol::id_hex(id))
            }
            Record::Mirror { bytes } => writeln!(f, "mirror {bytes}"),
            Record::Bad { ip } => writeln!(f, "bad {ip}"),
        }
    }
}

impl Record {
    pub fn parse(line: &str) -> Result<Record, String> {
        let bad = || format!("bad report line {line:?}");
        let words: Vec<&str> = line.split(' ').collect();
        let ip = |word: &str| word.parse::<IpAddr>().map_err(|_| bad());
        let bytes = |word: &str| word.parse::<u64>().map_err(|_| bad());
        match words[..] {
            ["peer", n, addr, id] => Ok(Record::Peer {
                ip: ip(addr)?,
                id: crate::protocol::parse_id_hex(id).ok_or_else(bad)?,
                bytes: bytes(n)?,
            }),
            ["mirror", n] => Ok(Record::Mirror { bytes: bytes(n)? }),
            ["bad", addr] => Ok(Record::Bad { ip: ip(addr)? }),
            _ => Err(bad()),
        }
    }
}

/// Where some package bytes came from: one transaction's, or all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Bytes from each LAN host, by label ([`UNKNOWN_HOST`] when not recorded).
    pub lan: BTreeMap<String, u64>,
    /// Bytes from the mirror through pacserve: the agent, or pacserve-fetch directly.
    pub mirror: u64,
    /// Bytes pacman fetched from its mirrors itself after `/cache/` answered 404 (the Include
    /// way), counted by the sync database's sizes.
    pub pacman: u64,
}

impl Tally {
    pub fn add_lan(&mut self, label: String, bytes: u64) {
        let entry = self.lan.entry(label).or_default();
        *entry = entry.saturating_add(bytes);
    }

    /// Adds `other`'s bytes to these.
    pub fn absorb(&mut self, other: &Tally) {
        for (label, bytes) in &other.lan {
            self.add_lan(label.clone(), *bytes);
        }
        self.mirror = self.mirror.saturating_add(other.mirror);
        self.pacman = self.pacman.saturating_add(other.pacman);
    }

    pub fn lan_bytes(&self) -> u64 {
        self.lan.values().fold(0, |sum, b| sum.saturating_add(*b))
    }

    pub fn mirror_bytes(&self) -> u64 {
        self.mirror.saturating_add(self.pacman)
    }

    /// LAN hosts whose bytes are recorded by host.
    pub fn hosts(&self) -> usize {
        self.lan.keys().filter(|l| *l != UNKNOWN_HOST).count()
    }

    pub fn is_empty(&self) -> bool {
        self.lan_bytes() == 0 && self.mirror_bytes() == 0
    }

    /// The line printed after a transaction; None when it moved no package byte.
    pub fn sentence(&self) -> Option<String> {
        let (lan, mirror) = (self.lan_bytes(), self.mirror_bytes());
        let total = lan.saturating_add(mirror);
        if total == 0 {
            return None;
        }
        let hosts = match self.hosts() {
            0 => String::new(),
            1 => " (1 host)".to_owned(),
            n => format!(" ({n} hosts)"),
        };
        let by_pacman = match (self.pacman, self.mirror) {
            (0, _) => String::new(),
            (_, 0) => " (by pacman itself)".to_owned(),
            (pacman, _) => format!(" ({} of it by pacman itself)", size(pacman)),
        };
        Some(format!(
            "pacserve: {} of {} from the LAN{hosts}, {} from the mirror{by_pacman}",
            size(lan),
            size(total),
            size(mirror)
        ))
    }

    /// The tally as answer lines (without [`END`]).
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for (label, bytes) in &self.lan {
            let _ = writeln!(out, "lan {label} {bytes}");
        }
        let _ = writeln!(out, "mirror {}", self.mirror);
        let _ = writeln!(out, "pacman {}", self.pacman);
        out
    }

    /// Reads one answer line into the tally; false when the line is not a tally's.
    pub fn read_line(&mut self, line: &str) -> bool {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["lan", label, n] if label.len() <= 64 => match n.parse() {
                Ok(n) => {
                    self.add_lan(label.to_owned(), n);
                    true
                }
                Err(_) => false,
            },
            ["mirror", n] => n.parse().map(|n| self.mirror = n).is_ok(),
            ["pacman", n] => n.parse().map(|n| self.pacman = n).is_ok(),
            _ => false,
        }
    }
}

/// Everything since pacserved started keeping totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Seconds since the epoch when the totals began.
    pub since: u64,
    /// This machine's package bytes by source.
    pub tally: Tally,
    /// Bytes this machine served to LAN peers.
    pub served: u64,
}

impl Totals {
    /// The totals as answer lines, ended by [`END`].
    pub fn lines(&self) -> String {
        format!(
            "since {}\nserved {}\n{}{END}\n",
            self.since,
            self.served,
            self.tally.lines()
        )
    }

    /// Reads answer lines (up to [`END`]); None when one is not a totals line.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Totals> {
        let mut totals = Totals::default();
        for line in lines {
            if line == END {
                return Some(totals);
            }
            let read = match line.split_once(' ') {
                Some(("since", n)) => n.parse().map(|n| totals.since = n).is_ok(),
                Some(("served", n)) => n.parse().map(|n| totals.served = n).is_ok(),
                _ => totals.tally.read_line(line),
            };
            if !read {
                return None;
            }
        }
        None
    }

    /// For `pacsrv --totals`.
    pub fn render(&self) -> String {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(self.since);
        let (lan, mirror) = (self.tally.lan_bytes(), self.tally.mirror_bytes());
        let total = lan.saturating_add(mirror);
        let mut out = format!(
            "pacserve totals since {} (this host's package downloads)\n",
            httpdate::fmt_http_date(since)
        );
        let share = match total {
            0 => String::new(),
            _ => format!(
                " ({:.0} % of {}; the uplink was spared this much)",
                lan as f64 * 100.0 / total as f64,
                size(total)
            ),
        };
        let _ = writeln!(out, "  {:<40}{:>10}{share}", "from the LAN", size(lan));
        let mut hosts: Vec<_> = self.tally.lan.iter().collect();
        hosts.sort_by_key(|(label, bytes)| (std::cmp::Reverse(**bytes), *label));
        for (label, bytes) in hosts {
            let label = match label.as_str() {
                UNKNOWN_HOST => "through /cache/ (host not recorded)",
                label => label,
            };
            let _ = writeln!(out, "    {label:<38}{:>10}", size(*bytes));
        }
        let _ = writeln!(out, "  {:<40}{:>10}", "from the mirror", size(mirror));
        let _ = writeln!(
            out,
            "  {:<40}{:>10}",
            "served to LAN peers",
            size(self.served)
        );
        out
    }
}

/// A byte count for people: `512 B`, `3.4 MiB`, `412 MiB`, `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match value < 10.0 {
        true => format!("{value:.1} {}", UNITS[unit]),
        false => format!("{value:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_junk_is_refused() {
        for record in [
            Record::Peer {
                ip: "10.0.0.2".parse().unwrap(),
                id: [7; 8],
                bytes: 42,
            },
            Record::Mirror { bytes: 7 },
            Record::Bad {
                ip: "fd00::1".parse().unwrap(),
            },
        ] {
            assert_eq!(Record::parse(record.to_string().trim_end()), Ok(record));
        }
        for junk in [
            "peer 1",
            "peer 1 10.0.0.1",
            "peer x 10.0.0.1 0707070707070707",
            "peer 1 10.0.0.1 07",
            "mirror -1",
            "bad host",
            "lan a 1",
            "",
        ] {
            assert!(Record::parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_summary_says_what_came_from_where() {
        let mut tally = Tally::default();
        assert_eq!(tally.sentence(), None, "nothing downloaded, nothing said");
        tally.add_lan("10.0.0.2".into(), 300 << 20);
        tally.add_lan("fd00:1::/64".into(), 100 << 20);
        tally.add_lan("10.0.0.3".into(), 12 << 20);
        tally.mirror = 18 << 20;
        assert_eq!(
            tally.sentence().unwrap(),
            "pacserve: 412 MiB of 430 MiB from the LAN (3 hosts), 18 MiB from the mirror"
        );
        let mut include = Tally::default();
        include.add_lan(UNKNOWN_HOST.into(), 5 << 20);
        include.pacman = 1536;
        assert_eq!(
            include.sentence().unwrap(),
            "pacserve: 5.0 MiB of 5.0 MiB from the LAN, 1.5 KiB from the mirror (by pacman itself)"
        );
        include.mirror = 1024;
        assert!(
            include
                .sentence()
                .unwrap()
                .ends_with(", 2.5 KiB from the mirror (1.5 KiB of it by pacman itself)"),
        );
    }

    #[test]
    fn totals_read_back_what_they_write() {
        let mut tally = Tally::default();
        tally.add_lan("10.0.0.2".into(), 5);
        tally.add_lan(UNKNOWN_HOST.into(), 6);
        tally.mirror = 7;
        tally.pacman = 8;
        let totals = Totals {
            since: 1_700_000_000,
            tally,
            served: 9,
        };
        let lines = totals.lines();
        assert_eq!(Totals::parse(lines.lines()), Some(totals.clone()));
        assert_eq!(Totals::parse(["since 1"]), None, "no END");
        assert_eq!(Totals::parse(["since x", END]), None);
        let text = totals.render();
        assert!(text.contains("from the LAN  "), "{text}");
        assert!(text.contains("  11 B (42 % of 26 B;"), "{text}");
        assert!(text.contains("through /cache/"), "{text}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(412 << 20), "412 MiB");
        assert_eq!(size(u64::MAX), "16384 PiB");
    }
}
