//! Who leads a claimed file, and which copy a follower takes: the two decisions of
//! [`crate::daemon::claims`], kept apart as plain functions of what was heard, so that the rules
//! every host must compute alike read (and are tested) in one place.

use std::net::SocketAddr;

use crate::protocol;

/// A copy this few bytes behind the furthest is as good to follow: at the start of a download
/// every copy is near zero, and following the newest follower chains hosts instead of starring
/// them around the first.
const NEAR_ENOUGH: u64 = 4 << 20;

/// Whether this daemon (`me`) should leave `name` to another of `claimants` (id, speaks
/// version 4): to an older claimant whose id is the lowest of all, since by the older rule it
/// leads; else to a version 4 claimant of higher [`protocol::claim_rank`] for this file (ids
/// breaking a tie). Other older claimants defer to a lower id by their own rule and follow
/// whichever copy starts. (Two version 4 daemons, one of which heard an older claim in time and
/// one not, so agree on the leader unless that older claimant leads anyway.)
pub fn defers(name: &str, me: [u8; 8], claimants: &[([u8; 8], bool)]) -> bool {
    let lowest = claimants.iter().map(|(id, _)| *id).chain([me]).min();
    let older_leads = claimants
        .iter()
        .any(|&(id, ranked)| !ranked && id != me && Some(id) == lowest);
    if older_leads {
        return true;
    }
    let mine = (protocol::claim_rank(name, &me), me);
    claimants
        .iter()
        .filter(|&&(id, ranked)| ranked && id != me)
        .map(|(id, _)| (protocol::claim_rank(name, id), *id))
        .any(|theirs| theirs > mine)
}

/// A copy of the file another daemon offered (HAVE: `landed` is `u64::MAX`).
#[derive(Debug, Clone, Copy)]
pub struct Copy {
    pub http: SocketAddr,
    pub daemon_id: [u8; 8],
    pub landed: u64,
    pub uploads: u16,
    /// The fastest its daemon delivered a copy to this one lately (bytes per second; 0:
    /// unknown).
    pub delivered: u64,
}

/// The copy to follow: of those at least half as far along as the furthest or within
/// [`NEAR_ENOUGH`] of it (so a whole file beats any still arriving), and not from a daemon that
/// delivered to this one under two thirds as fast as another of them did (a host on a slow
/// link, which would hold this one and whoever follows it back), the one whose daemon sends to
/// the fewest other hosts, then the furthest, then the first to answer.
pub fn least_busy(copies: &[Copy]) -> Option<Copy> {
    let furthest = copies.iter().map(|c| c.landed).max()?;
    let along: Vec<&Copy> = copies
        .iter()
        .filter(|c| c.landed >= furthest / 2 + furthest % 2 || furthest - c.landed <= NEAR_ENOUGH)
        .collect();
    let fastest = along.iter().map(|c| c.delivered).max().unwrap_or(0);
    along
        .into_iter()
        .filter(|c| c.delivered == 0 || c.delivered.saturating_mul(3) >= fastest.saturating_mul(2))
        .min_by_key(|c| (c.uploads, std::cmp::Reverse(c.landed)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_host_agrees_on_one_leader_per_file_and_leaders_spread() {
        let ids: Vec<u8> = (1..=8).collect();
        let mut leaders = HashSet::new();
        for file in 0..15 {
            let name = format!("tg{file}-1.0-1-any.pkg.tar.zst");
            // All eight claim in version 4: exactly one of them does not defer.
            let leading: Vec<u8> = ids
                .iter()
                .filter(|&&me| {
                    let others: Vec<([u8; 8], bool)> = ids
                        .iter()
                        .filter(|&&o| o != me)
                        .map(|&o| ([o; 8], true))
                        .collect();
                    !defers(&name, [me; 8], &others)
                })
                .copied()
                .collect();
            assert_eq!(leading.len(), 1, "{name}: {leading:?}");
            leaders.insert(leading[0]);
        }
        assert!(leaders.len() >= 4, "15 files led by only {leaders:?}");
    }

    #[test]
    fn an_older_claimant_leads_only_with_the_lowest_id_of_all() {
        let name = "a-1-1-any.pkg.tar.zst";
        // Daemon 1 speaks an older version and has the lowest id: it leads by its own rule, so
        // version 4 daemons 2 and 3 defer to it.
        for me in [2u8, 3] {
            let others: Vec<([u8; 8], bool)> = (1..=3u8)
                .filter(|&o| o != me)
                .map(|o| ([o; 8], o != 1))
                .collect();
            assert!(defers(name, [me; 8], &others), "daemon {me}");
        }
        // The older daemon's id is not the lowest: rank settles it between the version 4
        // daemons, whether or not each heard the older claim in time (the bug: one used rank,
        // the other the lowest-id rule, and both led).
        let (a, b, older) = ([9u8; 8], [1u8; 8], [5u8; 8]);
        let rank_a = (protocol::claim_rank(name, &a), a);
        let rank_b = (protocol::claim_rank(name, &b), b);
        let (high, low) = if rank_a > rank_b { (a, b) } else { (b, a) };
        for heard_older in [false, true] {
            let with = |other: [u8; 8]| {
                let mut c = vec![(other, true)];
                if heard_older {
                    c.push((older, false));
                }
                c
            };
            assert!(
                !defers(name, high, &with(low)),
                "heard older: {heard_older}"
            );
            assert!(defers(name, low, &with(high)), "heard older: {heard_older}");
        }
    }

    #[test]
    fn a_follower_takes_the_least_busy_copy_far_enough_along() {
        let copy = |port: u16, landed: u64, uploads: u16| Copy {
            http: SocketAddr::from(([10, 0, 0, 1], port)),
            daemon_id: [port as u8; 8],
            landed,
            uploads,
            delivered: 0,
        };
        let port = |copies: &[Copy]| least_busy(copies).map(|c| c.http.port());
        // The leader feeds six; a follower half as far along feeds none: it gets the next.
        assert_eq!(port(&[copy(1, 1000, 6), copy(2, 500, 0)]), Some(2));
        // Not one that has barely begun while the leader is far along.
        let far = 100 << 20;
        assert_eq!(port(&[copy(1, far, 6), copy(2, far / 2 - 1, 0)]), Some(1));
        // At the start every copy is near: the newest, idle follower is followed.
        assert_eq!(port(&[copy(1, 300_000, 1), copy(2, 0, 0)]), Some(2));
        // A whole file beats any still arriving; among whole files, the least busy.
        assert_eq!(
            port(&[copy(1, 10, 0), copy(2, u64::MAX, 3), copy(3, u64::MAX, 1)]),
            Some(3)
        );
        // Equally busy: the furthest, then the first to answer.
        assert_eq!(
            port(&[copy(1, 600, 1), copy(2, 900, 1), copy(3, 900, 1)]),
            Some(2)
        );
        assert_eq!(port(&[]), None);
        // A daemon that delivered clearly slower than another is left while that one offers
        // the file, however busy; one not heard from yet counts as fast enough.
        let rated = |port, uploads, delivered| Copy {
            delivered,
            ..copy(port, 100, uploads)
        };
        assert_eq!(port(&[rated(1, 0, 40), rated(2, 3, 80)]), Some(2));
        assert_eq!(port(&[rated(1, 0, 60), rated(2, 3, 80)]), Some(1));
        assert_eq!(
            port(&[rated(1, 2, 0), rated(2, 1, 40), rated(3, 3, 80)]),
            Some(1)
        );
        assert_eq!(port(&[rated(1, 0, 0), rated(2, 3, 80)]), Some(1));
    }
}
