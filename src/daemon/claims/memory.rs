//! What the claims remember of other hosts, and how long: the CLAIM queries heard and the files
//! this daemon settled, sources that failed a follow (and the files they failed), how fast
//! sources delivered, the copies this daemon just offered, claimants that let it wait for
//! nothing, and each daemon's protocol version and link speed. Every record is
//! bounded ([`super::MAX_RECORDED`] and friends) and forgotten after a while, so no LAN host
//! can make the daemon grow without bound, and a host that failed once is tried again later.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{
    Among, CLAIM_FRESH, Claimant, Claims, FILE_FAILURES, FILE_MEMORY, Heard1, MAX_OFFERS,
    MAX_RECORDED, OFFER_FRESH, RATE_MIN_BYTES, Told, way,
};
use crate::protocol::{self, budget};

impl Claims {
    /// The responder heard another daemon's CLAIM for `name`, in protocol `version`, from
    /// `from`, saying (version 5) its link is `link` Mbit/s.
    pub fn heard_claim(
        &self,
        name: &str,
        claimant: [u8; 8],
        (version, link): (u8, u16),
        from: IpAddr,
    ) {
        if claimant == self.daemon_id {
            return;
        }
        if version >= protocol::LINKED {
            self.heard_link(claimant, link, true);
        }
        let mut state = self.lock();
        state.last_other = Some(Instant::now());
        if state
            .settled
            .get(name)
            .is_some_and(|at| at.elapsed() < way::TOGETHER_FRESH)
        {
            state.together = Some(Instant::now());
        }
        state
            .heard
            .retain(|_, v| v.iter().any(|h| h.at.elapsed() < CLAIM_FRESH));
        if state.heard.len() >= MAX_RECORDED {
            return;
        }
        state.speaks(claimant, version);
        let claims = state.heard.entry(name.to_owned()).or_default();
        claims.retain(|h| h.at.elapsed() < CLAIM_FRESH);
        // A version 4 daemon claims in versions 2 and 4 at once: one claimant, the newer version.
        if let Some(known) = claims
            .iter_mut()
            .find(|h| h.id == claimant && h.from == from)
        {
            if version >= known.version {
                known.link = link;
            }
            known.version = known.version.max(version);
            known.at = Instant::now();
        } else if claims.len() < 16 {
            claims.push(Heard1 {
                id: claimant,
                version,
                link,
                from,
                at: Instant::now(),
            });
        }
    }

    /// The CLAIM queries heard for `name` lately.
    pub(super) fn heard_claims(&self, name: &str) -> Vec<Claimant> {
        let heard: Vec<Heard1> = self
            .lock()
            .heard
            .get(name)
            .into_iter()
            .flatten()
            .filter(|h| h.at.elapsed() < CLAIM_FRESH)
            .copied()
            .collect();
        heard
            .into_iter()
            .map(|h| Claimant {
                id: h.id,
                version: self.newest(h.id, h.version),
                link: self.told_link(h.id, h.version, h.link),
                from: h.from,
            })
            .collect()
    }

    /// This daemon settles `name` now: a claim for it heard lately or soon means the hosts fetch
    /// the same files.
    pub(super) fn settles(&self, name: &str) {
        let mut state = self.lock();
        if state.settled.len() >= MAX_RECORDED {
            state
                .settled
                .retain(|_, at| at.elapsed() < way::TOGETHER_FRESH);
        }
        if state.settled.len() < MAX_RECORDED {
            state.settled.insert(name.to_owned(), Instant::now());
        }
        state.last_settle = Some(Instant::now());
        let now = Instant::now();
        let heard_lately = state
            .heard
            .get(name)
            .is_some_and(|v| v.iter().any(|h| h.at.elapsed() < CLAIM_FRESH));
        if heard_lately {
            state.together = Some(now);
        }
    }

    /// The copy of `name` followed from `source` failed (stalled, broke off, too slow, or not
    /// the file): `source` is not followed again for `name`, and for no file for a while.
    pub fn failed(&self, name: &str, source: IpAddr) {
        let mut state = self.lock();
        let now = Instant::now();
        state
            .failed_files
            .retain(|_, (_, at)| at.elapsed() < FILE_MEMORY);
        state.failed_sources.retain(|_, (_, until)| *until > now);
        if state.failed_files.len() < MAX_RECORDED {
            let (sources, _) = state
                .failed_files
                .entry(name.to_owned())
                .or_insert_with(|| (Vec::new(), now));
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        if state.failed_sources.len() < MAX_RECORDED || state.failed_sources.contains_key(&source) {
            let failures = state.failed_sources.get(&source).map_or(0, |(n, _)| *n) + 1;
            let until = now + budget::backoff(failures);
            state.failed_sources.insert(source, (failures, until));
        }
    }

    /// A copy followed from `source` was verified, `bytes` of it in `took`: its failures are
    /// forgiven, and how fast it delivered is remembered ([`Claims::delivered`]).
    pub fn succeeded(&self, source: IpAddr, bytes: u64, took: Duration) {
        let mut state = self.lock();
        state.failed_sources.remove(&source);
        if bytes < RATE_MIN_BYTES {
            return;
        }
        let rate = bytes.saturating_mul(1_000_000) / (took.as_micros().max(1) as u64).max(1);
        state.rates.retain(|_, (_, at)| at.elapsed() < FILE_MEMORY);
        let best = match state.rates.get(&source) {
            Some((known, _)) => (*known).max(rate),
            None => rate,
        };
        if state.rates.len() < MAX_RECORDED || state.rates.contains_key(&source) {
            state.rates.insert(source, (best, Instant::now()));
        }
    }

    /// The fastest `source` delivered a followed copy to this daemon lately, in bytes per
    /// second (0: unknown).
    pub(super) fn delivered(&self, source: IpAddr) -> u64 {
        self.lock()
            .rates
            .get(&source)
            .filter(|(_, at)| at.elapsed() < FILE_MEMORY)
            .map_or(0, |(rate, _)| *rate)
    }

    /// Whether an answer from `source` about `name` may be followed.
    pub(super) fn trusted_for(&self, name: &str, source: IpAddr) -> bool {
        let state = self.lock();
        let backed_off = state
            .failed_sources
            .get(&source)
            .is_some_and(|(_, until)| *until > Instant::now());
        let failed_here = state
            .failed_files
            .get(name)
            .is_some_and(|(sources, at)| at.elapsed() < FILE_MEMORY && sources.contains(&source));
        !backed_off && !failed_here
    }

    /// Whether enough sources failed for `name` that the mirror is the better bet.
    pub(super) fn given_up_on(&self, name: &str) -> bool {
        self.lock()
            .failed_files
            .get(name)
            .is_some_and(|(sources, at)| {
                at.elapsed() < FILE_MEMORY && sources.len() >= FILE_FAILURES
            })
    }

    /// The responder offered a copy, answering query `nonce` from `asker`, which may read it in
    /// a moment. The copies of one query (version 1 beside 3, IPv6 beside IPv4) are one offer,
    /// to the address it first came from.
    pub fn offered(&self, nonce: [u8; 8], asker: IpAddr) {
        let mut state = self.lock();
        while state
            .offers
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > OFFER_FRESH)
            || state.offers.len() >= MAX_OFFERS
        {
            state.offers.pop_front();
        }
        if state.offers.iter().all(|(_, n, _)| *n != nonce) {
            state
                .offers
                .push_back((Instant::now(), nonce, asker.to_canonical()));
        }
    }

    /// The hosts offered a copy within [`OFFER_FRESH`]: counted with those an answer reports
    /// as receiving, so that hosts settling in the same instant do not all pick the one copy
    /// whose uploads have not begun yet.
    pub fn promised(&self) -> Vec<IpAddr> {
        let state = self.lock();
        state
            .offers
            .iter()
            .filter(|(at, _, _)| at.elapsed() <= OFFER_FRESH)
            .map(|(_, _, asker)| *asker)
            .collect()
    }

    /// The claimants whose host has not lately let this daemon wait for nothing.
    pub(super) fn believed(&self, claimants: &[Claimant]) -> Vec<Claimant> {
        let now = Instant::now();
        let state = self.lock();
        claimants
            .iter()
            .filter(|c| {
                state
                    .no_shows
                    .get(&c.from)
                    .is_none_or(|(_, until)| *until <= now)
            })
            .copied()
            .collect()
    }

    /// Nobody this daemon deferred to started: their hosts are not deferred to for a while,
    /// longer each time in a row ([`budget::backoff`]).
    pub(super) fn no_show(&self, claimants: &[Claimant]) {
        let mut state = self.lock();
        let now = Instant::now();
        // Remembered past the wait, so that a host failing again waits longer.
        state
            .no_shows
            .retain(|_, (_, until)| *until + budget::BACKOFF_MAX > now);
        for c in claimants {
            if state.no_shows.len() >= MAX_RECORDED && !state.no_shows.contains_key(&c.from) {
                break;
            }
            let times = state.no_shows.get(&c.from).map_or(0, |(n, _)| *n) + 1;
            state
                .no_shows
                .insert(c.from, (times, now + budget::backoff(times)));
        }
    }

    /// Someone this daemon deferred to started: their hosts' records are clean again.
    pub(super) fn showed_up(&self, claimants: &[Claimant]) {
        let mut state = self.lock();
        for c in claimants {
            state.no_shows.remove(&c.from);
        }
    }

    /// Daemon `id` was heard speaking `version`.
    pub(super) fn speaks(&self, id: [u8; 8], version: u8) {
        self.lock().speaks(id, version);
    }

    /// The newest version daemon `id`, heard now in `version`, spoke in this datagram or in
    /// any heard lately: how it settles claims.
    pub(super) fn newest(&self, id: [u8; 8], version: u8) -> u8 {
        let known = self
            .lock()
            .versions
            .get(&id)
            .filter(|(_, at)| at.elapsed() < FILE_MEMORY)
            .map_or(0, |(v, _)| *v);
        version.max(known)
    }

    /// Version 5 daemon `id` said its link is `link` Mbit/s, in a claim (`claiming`) or another
    /// datagram.
    pub(super) fn heard_link(&self, id: [u8; 8], link: u16, claiming: bool) {
        let mut state = self.lock();
        if state.links.len() >= MAX_RECORDED {
            state.links.retain(|_, l| l.at.elapsed() < FILE_MEMORY);
        }
        if state.links.len() < MAX_RECORDED || state.links.contains_key(&id) {
            let claimed = match claiming {
                true => Some(Instant::now()),
                false => state.links.get(&id).and_then(|l| l.claimed),
            };
            let at = Instant::now();
            state.links.insert(id, Told { link, at, claimed });
        }
    }

    /// The link daemon `id` told, heard in a datagram of `version` saying `link`: that link from
    /// version 5 on, else the one it told lately (0: unknown), so that a claim heard only in an
    /// older copy, its version 5 copy lost, counts as it does on the hosts that got that copy.
    pub(super) fn told_link(&self, id: [u8; 8], version: u8, link: u16) -> u16 {
        if version >= protocol::LINKED {
            return link;
        }
        self.lock()
            .links
            .get(&id)
            .filter(|l| l.at.elapsed() < FILE_MEMORY)
            .map_or(0, |l| l.link)
    }

    /// Whether this host's link is clearly slower than another daemon's
    /// ([`protocol::clearly_slower`]): one heard lately at all ([`Among::Heard`]: a
    /// transaction's first claims stay open a little longer), or one that claimed a file
    /// lately ([`Among::Claiming`]: the host makes way, [`super::way`]). Not any daemon for the
    /// second, since every file costs the wait: an idle 10 Gbit/s server, or one datagram
    /// telling a fast link, would make every gigabit desktop wait for claims that never come.
    pub(super) fn outpaced(&self, among: Among) -> bool {
        let fastest = self
            .lock()
            .links
            .values()
            .filter(|l| match among {
                Among::Heard => l.at.elapsed() < FILE_MEMORY,
                Among::Claiming => l
                    .claimed
                    .is_some_and(|at| at.elapsed() < super::way::TOGETHER_FRESH),
            })
            .map(|l| l.link)
            .max()
            .unwrap_or(0);
        protocol::clearly_slower(self.link.mbit(), fastest)
    }

    /// Whether a daemon speaking version 4 and no newer was heard lately: it settles claims by
    /// rank alone, so every daemon does, on every file (deciding per file, by whether its claim
    /// was heard in time, would let two daemons apply different rules to one file).
    pub(super) fn version_4_heard(&self) -> bool {
        self.lock().versions.values().any(|(v, at)| {
            (protocol::RANKED_CLAIMS..protocol::LINKED).contains(v) && at.elapsed() < FILE_MEMORY
        })
    }
}
