//! One round on the wire: a claim (or a plain question) sent on this host's interfaces, and
//! the answers that count, gathered into the copies on offer and the other claimants. Answers
//! count only from the link asked, from inside the allowlist, from another host, and from a
//! source that has not failed this daemon for the file. How long a round listens is decided
//! here too ([`super::WINDOW`], [`super::LATE_WINDOW`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::choose::{Copy, least_busy};
use super::{Claimant, Claims, LATE_WINDOW, WINDOW};
use crate::protocol::asker::{Asker, Target};
use crate::protocol::budget;
use crate::protocol::netif::Interface;
use crate::protocol::{self, Answer, Holding, Query};

impl Claims {
    /// One round: send the CLAIM query on `here`'s interfaces, collect answers for up to
    /// [`WINDOW`]. Answers count only from the link asked, from inside the allowlist, from
    /// another host, and from a source that has not failed us for this file.
    pub(super) fn ask(&self, asker: &Asker, here: &Here, name: &str, versions: Versions) -> Heard {
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let link = self.link.mbit();
        let query = |version: u8, claim: bool| Query {
            version,
            nonce,
            file_name: name.to_owned(),
            arch: String::new(),
            claim: claim.then_some(self.daemon_id),
            quiet: false,
            link,
        };
        // Oldest first, as version 4 daemons send theirs: a daemon answers each copy newer than
        // the one it handled (see One answer per query), so a version 5 daemon answers three
        // times, the last in version 5. The spares matter on a link that queues or drops
        // datagrams: sent newest first, each daemon answered once, and a host 120 ms away on a
        // loaded machine led files the others led too (4 runs of 11; oldest first, none of 12).
        let queries = match versions {
            Versions::Every => vec![
                query(2, true),
                query(protocol::RANKED_CLAIMS, true),
                query(protocol::VERSION, true),
            ],
            Versions::Older => vec![query(2, true)],
            Versions::Newest(version) => vec![query(version, true)],
            Versions::Plain => vec![
                query(protocol::VERSION, false),
                query(protocol::ASK_VERSION, false),
            ],
        };
        let Ok(datagrams) = queries
            .iter()
            .map(Query::encode)
            .collect::<Result<Vec<_>, _>>()
        else {
            return Heard::default();
        };
        let target = Target {
            port: self.port,
            group_v4: self.group_v4,
            group_v6: self.group_v6,
            interfaces: here.interfaces,
            peers: &[],
        };
        let (_, links) = asker.send(&target, &datagrams);
        let outstanding = self.lock().known.clone();
        let mut answered = HashSet::new();
        let mut heard = Heard::default();
        let mut copies: Vec<Copy> = Vec::new();
        let started = Instant::now();
        let mut deadline = started + WINDOW;
        loop {
            let late = deadline > started + WINDOW;
            let all = !outstanding.is_empty() && outstanding.iter().all(|id| answered.contains(id));
            let half = !answered.is_empty() && answered.len() * 2 >= outstanding.len();
            if all || (late && half) {
                break;
            }
            if Instant::now() >= deadline {
                // Hardly any daemon answered in the window (none, or under a quarter of those
                // known): our own link is queueing (a busy Wi-Fi link holds datagrams behind
                // bulk data for hundreds of milliseconds), so the answers are late, not
                // missing, and settling without them would fetch from the mirror what another
                // host already fetches. Then wait for half of them, or the first one. (When
                // only some are late, their links are the slow ones, and they are not waited
                // for: they hear our claim late too.)
                let hardly = answered.len() * 4 < outstanding.len().max(1);
                if late || !hardly {
                    break;
                }
                deadline = started + LATE_WINDOW;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(datagrams) = asker.receive(left.max(Duration::from_millis(1))) else {
                break;
            };
            for (from, datagram) in datagrams {
                let Ok(answer) = Answer::decode(&datagram) else {
                    continue;
                };
                if answer.nonce != nonce
                    || answer.daemon_id == self.daemon_id
                    || !links.accepts(from)
                    || !self.allow.permits(from.ip())
                    || is_local(from.ip(), here.locals)
                {
                    continue;
                }
                answered.insert(answer.daemon_id);
                self.speaks(answer.daemon_id, answer.version);
                if answer.version >= protocol::LINKED {
                    let claiming = answer.holding == Holding::Claiming;
                    self.heard_link(answer.daemon_id, answer.extra.link, claiming);
                }
                let link = self.told_link(answer.daemon_id, answer.version, answer.extra.link);
                let (landed, http_port) = match answer.holding {
                    Holding::Have { http_port, .. } => (u64::MAX, http_port),
                    Holding::Growing {
                        http_port, landed, ..
                    } => (landed, http_port),
                    Holding::Claiming => {
                        let version = self.newest(answer.daemon_id, answer.version);
                        let same =
                            |c: &&mut Claimant| c.id == answer.daemon_id && c.from == from.ip();
                        match heard.claimants.iter_mut().find(same) {
                            Some(known) => {
                                known.link = known.link.max(link);
                                known.version = known.version.max(version);
                            }
                            None => heard.claimants.push(Claimant {
                                id: answer.daemon_id,
                                version,
                                link,
                                from: from.ip(),
                            }),
                        }
                        continue;
                    }
                    Holding::Miss => continue,
                };
                // A daemon that answered two copies (one before the rule of one answer per
                // query): its copy once, with what the newer answer says (only version 3 and
                // later count uploads, only version 5 tells the link).
                let same =
                    |c: &&mut Copy| c.daemon_id == answer.daemon_id && c.http.ip() == from.ip();
                if let Some(known) = copies.iter_mut().find(same) {
                    if answer.version >= 3 {
                        known.uploads = answer.extra.uploads;
                    }
                    known.link = known.link.max(link);
                    continue;
                }
                if http_port >= budget::MIN_HTTP_PORT && self.trusted_for(name, from.ip()) {
                    // The source as it answered: an IPv6 link-local one keeps its scope.
                    let mut http = from;
                    http.set_port(http_port);
                    copies.push(Copy {
                        http,
                        daemon_id: answer.daemon_id,
                        landed,
                        uploads: answer.extra.uploads,
                        link,
                        delivered: self.delivered(from.ip()),
                    });
                }
            }
        }
        heard.best = least_busy(&copies);
        heard.late = deadline > started + WINDOW;
        let mut state = self.lock();
        if !heard.claimants.is_empty() || copies.iter().any(|c| c.landed != u64::MAX) {
            state.together = Some(Instant::now());
        }
        if !answered.is_empty() {
            state.last_other = Some(Instant::now());
            state.known = answered;
        } else if deadline > started + WINDOW {
            // Nobody at all, even late: they left; the next claim waits the short window.
            state.known.clear();
        }
        heard
    }
}

/// Which queries one round sends: CLAIM in every version a daemon settles claims by (2 for
/// older daemons, 4 and 5), in version 2 only, or in one newer version; or a plain question,
/// as a client asks (in version 5 and, for older daemons, 3), that claims nothing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Versions {
    Every,
    Older,
    Newest(u8),
    Plain,
}

#[derive(Default)]
pub(super) struct Heard {
    pub(super) best: Option<Copy>,
    /// Daemons that answered CLAIMING.
    pub(super) claimants: Vec<Claimant>,
    /// The answers came late (this host's link queues datagrams): the other claimants may have
    /// settled without hearing this one in time.
    pub(super) late: bool,
}

/// This host as one settle sees it: where to ask, and its own addresses.
pub(super) struct Here<'a> {
    pub(super) interfaces: &'a [Interface],
    pub(super) locals: &'a [IpAddr],
}

/// Whether `ip` is one of this host's addresses (its own queries do not mean a shared LAN).
pub fn is_local(ip: IpAddr, locals: &[IpAddr]) -> bool {
    ip.is_loopback() || locals.contains(&ip.to_canonical())
}
