//! Who leads a claimed file, and which copy a follower takes: the two decisions of
//! [`crate::daemon::claims`], kept apart as plain functions of what was heard, so that the rules
//! every host must compute alike read (and are tested) in one place.

use std::net::SocketAddr;

use crate::protocol;

/// A copy this few bytes behind the furthest is as good to follow: at the start of a download
/// every copy is near zero, and following the newest follower chains hosts instead of starring
/// them around the first.
const NEAR_ENOUGH: u64 = 4 << 20;

/// A daemon settling a file, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rival {
    pub id: [u8; 8],
    /// The newest protocol version it speaks: how it settles claims.
    pub version: u8,
    /// Version 5: its link speed in Mbit/s (0: unknown).
    pub link: u16,
}

/// Whether this daemon (`me`) should leave `name` to another of `claimants` (one entry per
/// daemon): to an older claimant (before version 4) whose id is the lowest of all, since by the
/// older rule it leads; else to a version 4 or 5 claimant that ranks higher. When `by_link` (no
/// version 4 daemon heard lately on the LAN) and every such claimant speaks version 5, a
/// claimant whose link is [`protocol::clearly_slower`] than the fastest of them (and this
/// daemon) ranks below every other, so a Wi-Fi laptop does not fetch for gigabit desktops; then
/// [`protocol::claim_rank`] for this file, then ids break a tie. A version 4 daemon settles by
/// rank alone, and so then does everyone: the LAN-wide `by_link` keeps two newer daemons, one
/// of which heard its claim for this file in time and one not, on one rule. Other older
/// claimants defer to a lower id by their own rule and follow whichever copy starts. (Two newer
/// daemons, one of which heard an older claim in time and one not, so agree on the leader
/// unless that older claimant leads anyway.)
pub fn defers(name: &str, me: Rival, claimants: &[Rival], by_link: bool) -> bool {
    let lowest = claimants.iter().map(|c| c.id).chain([me.id]).min();
    let older_leads = claimants
        .iter()
        .any(|c| c.version < protocol::RANKED_CLAIMS && c.id != me.id && Some(c.id) == lowest);
    if older_leads {
        return true;
    }
    let ranked: Vec<&Rival> = claimants
        .iter()
        .filter(|c| c.version >= protocol::RANKED_CLAIMS && c.id != me.id)
        .collect();
    let linked = by_link && me.version >= protocol::LINKED;
    let fastest = match linked && ranked.iter().all(|c| c.version >= protocol::LINKED) {
        true => ranked.iter().map(|c| c.link).chain([me.link]).max(),
        false => None,
    };
    let key = |c: &Rival| {
        let slower = fastest.is_some_and(|fastest| protocol::clearly_slower(c.link, fastest));
        (!slower, protocol::claim_rank(name, &c.id), c.id)
    };
    let mine = key(&me);
    ranked.into_iter().any(|theirs| key(theirs) > mine)
}

/// A copy of the file another daemon offered (HAVE: `landed` is `u64::MAX`).
#[derive(Debug, Clone, Copy)]
pub struct Copy {
    pub http: SocketAddr,
    pub daemon_id: [u8; 8],
    pub landed: u64,
    pub uploads: u16,
    /// Version 5: its daemon's link speed in Mbit/s (0: unknown).
    pub link: u16,
    /// The fastest its daemon delivered a copy to this one lately (bytes per second; 0:
    /// unknown).
    pub delivered: u64,
}

/// The copy to follow: of those at least half as far along as the furthest or within
/// [`NEAR_ENOUGH`] of it (so a whole file beats any still arriving), and not from a daemon on a
/// link [`protocol::clearly_slower`] than another of theirs, nor one that delivered to this one
/// under two thirds as fast as another of them did (a host on a slow link, which would hold
/// this one and whoever follows it back), the one whose daemon sends to the fewest other hosts,
/// then the furthest, then the first to answer.
pub fn least_busy(copies: &[Copy]) -> Option<Copy> {
    let furthest = copies.iter().map(|c| c.landed).max()?;
    let along: Vec<&Copy> = copies
        .iter()
        .filter(|c| c.landed >= furthest / 2 + furthest % 2 || furthest - c.landed <= NEAR_ENOUGH)
        .collect();
    // The link first, then the delivery rate among what is left: the copy that delivered
    // fastest of those is always kept, so copies offered always leave one to follow.
    let fastest_link = along.iter().map(|c| c.link).max().unwrap_or(0);
    let along: Vec<&Copy> = along
        .into_iter()
        .filter(|c| !protocol::clearly_slower(c.link, fastest_link))
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

    fn rival(id: [u8; 8], version: u8, link: u16) -> Rival {
        Rival { id, version, link }
    }

    /// The daemons of `all` (id, version, link) that lead `name`, each deciding on its own.
    fn leaders(name: &str, all: &[([u8; 8], u8, u16)]) -> Vec<[u8; 8]> {
        all.iter()
            .filter(|&&(me, version, link)| {
                let others: Vec<Rival> = all
                    .iter()
                    .filter(|o| o.0 != me)
                    .map(|&(id, v, l)| rival(id, v, l))
                    .collect();
                !defers(name, rival(me, version, link), &others, true)
            })
            .map(|c| c.0)
            .collect()
    }

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
                    let others: Vec<Rival> = ids
                        .iter()
                        .filter(|&&o| o != me)
                        .map(|&o| rival([o; 8], 4, 0))
                        .collect();
                    !defers(&name, rival([me; 8], 4, 0), &others, true)
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
            let others: Vec<Rival> = (1..=3u8)
                .filter(|&o| o != me)
                .map(|o| rival([o; 8], if o == 1 { 2 } else { 5 }, 1000))
                .collect();
            assert!(
                defers(name, rival([me; 8], 5, 1000), &others, true),
                "daemon {me}"
            );
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
                let mut c = vec![rival(other, 4, 0)];
                if heard_older {
                    c.push(rival(older, 2, 0));
                }
                c
            };
            assert!(
                !defers(name, rival(high, 4, 0), &with(low), true),
                "heard older: {heard_older}"
            );
            assert!(
                defers(name, rival(low, 4, 0), &with(high), true),
                "heard older: {heard_older}"
            );
        }
    }

    #[test]
    fn a_host_on_a_clearly_slower_link_leads_only_when_no_faster_one_claims() {
        // Four Wi-Fi laptops (100) and four gigabit desktops claim fifteen files together:
        // every file goes to a desktop, one per file, and the files spread over the desktops.
        let laptops = (1..=4u8).map(|i| ([i; 8], 5, 100));
        let desktops = (5..=8u8).map(|i| ([i; 8], 5, 1000));
        let all: Vec<([u8; 8], u8, u16)> = laptops.chain(desktops).collect();
        let mut led = HashSet::new();
        for file in 0..15 {
            let name = format!("tg{file}-1.0-1-any.pkg.tar.zst");
            let leading = leaders(&name, &all);
            assert_eq!(leading.len(), 1, "{name}: {leading:?}");
            assert!(leading[0][0] >= 5, "{name} led by laptop {}", leading[0][0]);
            led.insert(leading[0]);
        }
        assert!(led.len() >= 3, "15 files led by only {led:?}");
        // Not clearly slower: ranked as equals (a 1 Gbit/s host beside a 2.5 Gbit/s one, or a
        // link nobody knows). So some files go to each.
        for links in [[1000, 2500], [0, 1000], [100, 100]] {
            let two = [([1; 8], 5, links[0]), ([2; 8], 5, links[1])];
            let firsts: HashSet<[u8; 8]> = (0..15)
                .map(|f| leaders(&format!("tg{f}-1-1-any.pkg.tar.zst"), &two)[0])
                .collect();
            assert_eq!(firsts.len(), 2, "{links:?}");
        }
        // Alone with other laptops, a laptop leads by rank as before.
        let laptops: Vec<([u8; 8], u8, u16)> = (1..=4u8).map(|i| ([i; 8], 5, 100)).collect();
        assert_eq!(leaders("a-1-1-any.pkg.tar.zst", &laptops).len(), 1);
        // A version 4 claimant knows nothing of links: everyone settles by rank alone, as it
        // does, so exactly one leads whatever the links.
        for file in 0..15 {
            let name = format!("tg{file}-1.0-1-any.pkg.tar.zst");
            let mixed = [([1; 8], 5, 100), ([2; 8], 5, 1000), ([3; 8], 4, 0)];
            let by_rank = (1..=3u8)
                .map(|i| [i; 8])
                .max_by_key(|id| (protocol::claim_rank(&name, id), *id));
            assert_eq!(leaders(&name, &mixed), Vec::from_iter(by_rank), "{name}");
        }
        // And so it does for every file while a version 4 daemon is heard on the LAN at all
        // (`by_link` false), its claim for this file heard or not.
        let laptop_leads = (0..15)
            .map(|f| format!("tg{f}-1.0-1-any.pkg.tar.zst"))
            .find(|n| protocol::claim_rank(n, &[1; 8]) > protocol::claim_rank(n, &[2; 8]));
        let name = laptop_leads.expect("a file the laptop outranks the desktop on");
        let (laptop, desktop) = (rival([1; 8], 5, 100), rival([2; 8], 5, 1000));
        assert!(!defers(&name, laptop, &[desktop], false));
        assert!(defers(&name, desktop, &[laptop], false));
        assert!(defers(&name, laptop, &[desktop], true));
    }

    #[test]
    fn a_follower_takes_the_least_busy_copy_far_enough_along() {
        let copy = |port: u16, landed: u64, uploads: u16| Copy {
            http: SocketAddr::from(([10, 0, 0, 1], port)),
            daemon_id: [port as u8; 8],
            landed,
            uploads,
            link: 0,
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
        // A copy on a link clearly slower than another's is left, however idle; one merely
        // slower, or of no known speed, is not.
        let linked = |port, uploads, link| Copy {
            link,
            ..copy(port, 100, uploads)
        };
        assert_eq!(port(&[linked(1, 0, 100), linked(2, 5, 1000)]), Some(2));
        assert_eq!(port(&[linked(1, 0, 1000), linked(2, 5, 2500)]), Some(1));
        assert_eq!(port(&[linked(1, 0, 0), linked(2, 5, 1000)]), Some(1));
        assert_eq!(port(&[linked(1, 0, 100), linked(2, 1, 100)]), Some(1));
        // The fastest deliverer on a clearly slower link is left, and the rate is then
        // compared among the others: some copy is always taken.
        let both = |port, link, delivered| Copy {
            link,
            delivered,
            ..copy(port, 100, 0)
        };
        assert_eq!(port(&[both(1, 100, 80), both(2, 1000, 40)]), Some(2));
    }
}
