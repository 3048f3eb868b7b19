//! Who wrote which bytes of the output: what this run kept from LAN peers and from the mirror,
//! for the line printed after the transaction ([`crate::client::report`]).
//!
//! The output is only ever appended to and cut back ([`crate::client::output`]), so each
//! source's bytes are a span of it: a cut drops what lies past it (a bad peer's bytes, say),
//! and what is left when the download succeeds is what each source really gave. Bytes an
//! earlier run left in the output are nobody's: that run was counted, or failed and wasn't.

use std::net::IpAddr;

use crate::protocol::report::Record;

/// Where the bytes being written come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credit {
    /// A LAN peer, directly: its address and daemon id.
    Peer(IpAddr, [u8; 8]),
    /// The mirror, directly.
    Mirror,
    /// The local pacserved's agent: it records its own work, so the run does not report it.
    Agent,
    /// A `file://` repository, or a database copy: no network.
    Local,
}

/// More spans than a run makes (a few peers, then the mirror); past it, bytes go to the last.
const MAX_SPANS: usize = 64;
/// Peers blamed for a bad file in one run: one per peer tried, a few at most.
const MAX_BLAMED: usize = 16;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credits {
    current: Option<Credit>,
    /// `(source, start, end)` of the output's bytes, in the order written.
    spans: Vec<(Credit, u64, u64)>,
    /// Peers whose file failed verification.
    blamed: Vec<IpAddr>,
}

impl Credits {
    /// Bytes written from now on come from `credit`.
    pub fn set(&mut self, credit: Credit) {
        self.current = Some(credit);
    }

    /// `n` bytes were written at offset `at`.
    pub fn wrote(&mut self, at: u64, n: u64) {
        let Some(credit) = self.current else { return };
        let full = self.spans.len() >= MAX_SPANS;
        match self.spans.last_mut() {
            Some(last) if last.0 == credit && last.2 == at => last.2 += n,
            Some(last) if full => last.2 = at + n,
            _ => self.spans.push((credit, at, at + n)),
        }
    }

    /// The output was cut back to `len` bytes.
    pub fn cut(&mut self, len: u64) {
        self.spans.retain(|span| span.1 < len);
        for span in &mut self.spans {
            span.2 = span.2.min(len);
        }
    }

    /// `ip` sent a file that failed verification: reported once per run, however many ways it
    /// was caught (its pieces of a split download and then its whole copy).
    pub fn blame(&mut self, ip: IpAddr) {
        if self.blamed.len() < MAX_BLAMED && !self.blamed.contains(&ip) {
            self.blamed.push(ip);
        }
    }

    /// What to report: bytes kept per peer and from the mirror, and the peers blamed.
    pub fn records(&self) -> Vec<Record> {
        let mut peers: Vec<((IpAddr, [u8; 8]), u64)> = Vec::new();
        let mut mirror = 0;
        for &(credit, start, end) in &self.spans {
            let bytes = end.saturating_sub(start);
            match credit {
                Credit::Peer(ip, id) => match peers.iter_mut().find(|(p, _)| *p == (ip, id)) {
                    Some((_, sum)) => *sum += bytes,
                    None => peers.push(((ip, id), bytes)),
                },
                Credit::Mirror => mirror += bytes,
                Credit::Agent | Credit::Local => {}
            }
        }
        let peers = (peers.into_iter())
            .filter(|(_, bytes)| *bytes > 0)
            .map(|((ip, id), bytes)| Record::Peer { ip, id, bytes });
        let mirror = (mirror > 0).then_some(Record::Mirror { bytes: mirror });
        let blamed = self.blamed.iter().map(|&ip| Record::Bad { ip });
        peers.chain(mirror).chain(blamed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_cut_back_is_nobodys_and_the_rest_is_its_writers() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let mut credits = Credits::default();
        credits.wrote(0, 100);
        credits.set(Credit::Peer(a, [1; 8]));
        credits.wrote(100, 50);
        credits.wrote(150, 50);
        credits.cut(120);
        credits.blame(a);
        credits.set(Credit::Peer(b, [2; 8]));
        credits.wrote(120, 30);
        credits.set(Credit::Agent);
        credits.wrote(150, 10);
        credits.set(Credit::Mirror);
        credits.wrote(160, 40);
        assert_eq!(
            credits.records(),
            [
                Record::Peer {
                    ip: a,
                    id: [1; 8],
                    bytes: 20
                },
                Record::Peer {
                    ip: b,
                    id: [2; 8],
                    bytes: 30
                },
                Record::Mirror { bytes: 40 },
                Record::Bad { ip: a },
            ]
        );
        credits.cut(0);
        assert_eq!(credits.records(), [Record::Bad { ip: a }]);
        // Caught again in the same run (its pieces, then its whole copy): one file, one report.
        credits.blame(a);
        assert_eq!(credits.records(), [Record::Bad { ip: a }]);
    }
}
