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
/// version 4): when every claimant speaks version 4, to one of higher
/// [`protocol::claim_rank`] for this file (ids breaking a tie); else to a lower id, the rule of
/// older daemons, which they compute too.
pub fn defers(name: &str, me: [u8; 8], claimants: &[([u8; 8], bool)]) -> bool {
    let others = claimants.iter().filter(|(id, _)| *id != me);
    if claimants.iter().all(|&(_, ranked)| ranked) {
        let mine = (protocol::claim_rank(name, &me), me);
        others
            .map(|(id, _)| (protocol::claim_rank(name, id), *id))
            .any(|theirs| theirs > mine)
    } else {
        others.into_iter().any(|(id, _)| *id < me)
    }
}

/// A copy of the file another daemon offered (HAVE: `landed` is `u64::MAX`).
#[derive(Debug, Clone, Copy)]
pub struct Copy {
    pub http: SocketAddr,
    pub daemon_id: [u8; 8],
    pub landed: u64,
    pub uploads: u16,
}

/// The copy to follow: of those at least half as far along as the furthest or within
/// [`NEAR_ENOUGH`] of it (so a whole file beats any still arriving), the one sending the fewest
/// uploads, then the furthest, then the first to answer.
pub fn least_busy(copies: &[Copy]) -> Option<SocketAddr> {
    let furthest = copies.iter().map(|c| c.landed).max()?;
    copies
        .iter()
        .filter(|c| c.landed >= furthest / 2 + furthest % 2 || furthest - c.landed <= NEAR_ENOUGH)
        .min_by_key(|c| (c.uploads, std::cmp::Reverse(c.landed)))
        .map(|c| c.http)
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
    fn one_older_claimant_brings_back_the_lowest_id_rule() {
        // Daemons 1 and 3 speak version 4, daemon 2 an older one (which defers to the lowest id
        // by its own code): 1 leads, 3 defers, whatever the ranks say.
        let name = "a-1-1-any.pkg.tar.zst";
        for me in [1u8, 3] {
            let others: Vec<([u8; 8], bool)> = (1..=3u8)
                .filter(|&o| o != me)
                .map(|o| ([o; 8], o != 2))
                .collect();
            assert_eq!(defers(name, [me; 8], &others), me != 1, "daemon {me}");
        }
    }

    #[test]
    fn a_follower_takes_the_least_busy_copy_far_enough_along() {
        let copy = |port: u16, landed: u64, uploads: u16| Copy {
            http: SocketAddr::from(([10, 0, 0, 1], port)),
            daemon_id: [port as u8; 8],
            landed,
            uploads,
        };
        let port = |copies: &[Copy]| least_busy(copies).map(|a| a.port());
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
    }
}
