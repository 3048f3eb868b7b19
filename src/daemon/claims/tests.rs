//! The claims' memory: versions, no-shows, heard claims, offers, and making way.

use super::*;
use crate::protocol;
use std::collections::HashSet;

fn claims(id: u8) -> Claims {
    Claims::new(
        [id; 8],
        protocol::PORT,
        (protocol::GROUP_V4, protocol::GROUP_V6),
        Vec::new(),
        Arc::new(Allowlist::default()),
        Link::new(Some(1000), 0, Vec::new()),
    )
}

#[test]
fn a_daemon_once_heard_in_version_4_stays_ranked() {
    let c = claims(5);
    c.speaks([1; 8], 4);
    assert_eq!(
        c.newest([1; 8], 2),
        4,
        "a lost version 4 datagram changes nothing"
    );
    assert_eq!(c.newest([2; 8], 2), 2);
    assert_eq!(c.newest([2; 8], 5), 5);
}

fn rival(id: [u8; 8]) -> choose::Rival {
    choose::Rival {
        id,
        version: 5,
        link: 1000,
    }
}

#[test]
fn a_host_that_let_us_wait_is_not_deferred_to_under_any_id() {
    let name = "a-1-1-any.pkg.tar.zst";
    let from: IpAddr = "10.0.0.9".parse().unwrap();
    let c = claims(0);
    // Every other id outranks or undercuts id 0 somewhere; find one that wins this file.
    let better = (1..=255u8)
        .map(|b| [b; 8])
        .find(|id| choose::defers(name, rival([0; 8]), &[rival(*id)], true))
        .unwrap();
    let claimant = |id| Claimant {
        id,
        version: 5,
        link: 1000,
        from,
    };
    assert!(c.defers(name, &[claimant(better)]));
    c.no_show(&[claimant(better)]);
    let another = (1..=255u8)
        .map(|b| [b; 8])
        .find(|id| *id != better && choose::defers(name, rival([0; 8]), &[rival(*id)], true))
        .unwrap();
    assert!(
        !c.defers(name, &[claimant(another)]),
        "a new id from the same host"
    );
    let elsewhere = Claimant {
        from: "10.0.0.10".parse().unwrap(),
        ..claimant(another)
    };
    assert!(c.defers(name, &[elsewhere]), "another host is deferred to");
    c.showed_up(&[claimant(better)]);
    assert!(
        c.defers(name, &[claimant(another)]),
        "forgiven once it started"
    );
}

#[test]
fn heard_claims_keep_the_newest_version_per_claimant() {
    let from: IpAddr = "10.0.0.1".parse().unwrap();
    // Oldest first, as a version 5 daemon claims, or newest first (the older copies late):
    // one claimant, its newest version and the link that version told.
    for versions in [[2, 4, 5], [5, 4, 2]] {
        let c = claims(5);
        for v in versions {
            let link = if v == 5 { 100 } else { 0 };
            c.heard_claim("a-1-1-any.pkg.tar.zst", [1; 8], (v, link), from);
        }
        c.heard_claim("a-1-1-any.pkg.tar.zst", [5; 8], (4, 0), from);
        let heard: Vec<([u8; 8], u8, u16)> = c
            .heard_claims("a-1-1-any.pkg.tar.zst")
            .iter()
            .map(|c| (c.id, c.version, c.link))
            .collect();
        assert_eq!(heard, vec![([1; 8], 5, 100)], "{versions:?}");
    }
}

/// Claims that ask on loopback only, at a port nobody serves: nothing leaves this host.
fn quiet_claims(id: u8) -> Claims {
    linked_claims(id, 1000)
}

fn linked_claims(id: u8, link: u16) -> Claims {
    Claims::new(
        [id; 8],
        47_900 + u16::from(id),
        (protocol::GROUP_V4, protocol::GROUP_V6),
        vec!["lo".to_owned()],
        Arc::new(Allowlist::default()),
        Link::new(Some(link), 0, Vec::new()),
    )
}

#[test]
fn a_daemon_whose_neighbours_fetch_other_files_never_makes_way() {
    let c = quiet_claims(5);
    c.heard_claim(
        "other-1-1-any.pkg.tar.zst",
        [1; 8],
        (4, 0),
        "10.0.0.1".parse().unwrap(),
    );
    let (turn, copy) = c.make_way("a-1-1-any.pkg.tar.zst", 3);
    assert_eq!(copy, None);
    assert_eq!(c.lock().settling, 1, "its turn is held");
    drop(turn);
    assert_eq!(c.lock().settling, 0);
}

#[test]
fn the_hosts_are_together_once_another_claims_a_file_this_daemon_settled() {
    let c = quiet_claims(5);
    let from: IpAddr = "10.0.0.1".parse().unwrap();
    c.settles("a-1-1-any.pkg.tar.zst");
    assert!(c.lock().together.is_none());
    c.heard_claim("b-1-1-any.pkg.tar.zst", [1; 8], (4, 0), from);
    assert!(c.lock().together.is_none(), "another file");
    c.heard_claim("a-1-1-any.pkg.tar.zst", [1; 8], (4, 0), from);
    assert!(c.lock().together.is_some());
}

/// Making way for a claimant that never starts: the wait ends (no copy to follow) and that host
/// is not waited for again for a while, under any id.
#[test]
fn a_claimant_made_way_for_that_never_starts_is_not_waited_for_again() {
    let c = quiet_claims(6);
    let from: IpAddr = "10.0.0.2".parse().unwrap();
    c.settles("a-1-1-any.pkg.tar.zst");
    c.heard_claim("a-1-1-any.pkg.tar.zst", [1; 8], (4, 0), from);
    c.heard_claim("b-1-1-any.pkg.tar.zst", [2; 8], (4, 0), from);
    let (turn, copy) = c.make_way("b-1-1-any.pkg.tar.zst", 1);
    assert_eq!(copy, None);
    drop(turn);
    let claimant = Claimant {
        id: [3; 8],
        version: 5,
        link: 0,
        from,
    };
    assert!(c.believed(&[claimant]).is_empty(), "a no-show");
}

/// A daemon on a Wi-Fi link (100) among gigabit daemons makes way although it leads nothing:
/// here for a gigabit claimant that never starts, so the wait ends in a no-show. On a link as
/// fast as the others' it does not wait at all, and the claimant is still believed.
#[test]
fn a_daemon_on_a_clearly_slower_link_makes_way_leading_nothing() {
    let from: IpAddr = "10.0.0.3".parse().unwrap();
    let claimant = Claimant {
        id: [4; 8],
        version: 5,
        link: 1000,
        from,
    };
    for (link, waits) in [(100, true), (1000, false), (400, false)] {
        let c = linked_claims(7, link);
        c.settles("a-1-1-any.pkg.tar.zst");
        c.heard_claim("a-1-1-any.pkg.tar.zst", [4; 8], (5, 1000), from);
        c.heard_claim("b-1-1-any.pkg.tar.zst", [4; 8], (5, 1000), from);
        assert_eq!(c.outpaced(Among::Claiming), waits, "link {link}");
        let (turn, copy) = c.make_way("b-1-1-any.pkg.tar.zst", 0);
        assert_eq!(copy, None);
        drop(turn);
        assert_eq!(c.believed(&[claimant]).is_empty(), waits, "link {link}");
    }
}

#[test]
fn an_offer_counts_its_host_once_whatever_the_copies_of_its_query() {
    let c = claims(5);
    let (v4, v6): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "fe80::1".parse().unwrap());
    c.offered([1; 8], v4);
    c.offered([1; 8], v6);
    assert_eq!(c.promised(), vec![v4], "one query, one offer");
    c.offered([2; 8], v4);
    let hosts: HashSet<IpAddr> = c.promised().into_iter().collect();
    assert_eq!(hosts.len(), 1);
}

#[test]
fn how_fast_a_source_delivered_is_remembered_from_whole_files_and_its_best_kept() {
    let c = claims(5);
    let source: IpAddr = "10.0.0.7".parse().unwrap();
    assert_eq!(c.delivered(source), 0, "unknown");
    c.succeeded(source, 100_000, Duration::from_millis(10));
    assert_eq!(c.delivered(source), 0, "too small to tell");
    c.succeeded(source, 4_000_000, Duration::from_secs(2));
    assert_eq!(c.delivered(source), 2_000_000);
    c.succeeded(source, 4_000_000, Duration::from_secs(4));
    assert_eq!(c.delivered(source), 2_000_000, "the best is kept");
    c.succeeded(source, 0, Duration::ZERO);
    assert_eq!(
        c.delivered(source),
        2_000_000,
        "a follow left for the mirror tells nothing"
    );
}

/// Waits to make way in which nobody claims the file (the other hosts are behind, or a LAN host
/// fakes an upgrade together) pause making way after a few, and a claim heard ends the count.
#[test]
fn making_way_pauses_after_waits_in_which_nobody_claimed() {
    let c = quiet_claims(8);
    // Together: another daemon claimed a file this one settled.
    c.settles("a-1-1-any.pkg.tar.zst");
    c.heard_claim(
        "a-1-1-any.pkg.tar.zst",
        [1; 8],
        (5, 1000),
        [10, 0, 0, 4].into(),
    );
    for n in 1..=3 {
        assert!(!c.pausing(), "after {} fruitless waits", n - 1);
        let (turn, copy) = c.make_way(&format!("f{n}-1-1-any.pkg.tar.zst"), 1);
        assert_eq!(copy, None);
        drop(turn);
    }
    assert!(c.pausing(), "three in a row: paused");
    c.fruitless(false);
    assert!(!c.pausing(), "a claim heard: making way again");
}

/// A faster daemon merely heard (an idle server's MISS) counts for a transaction's first claim
/// window, not for making way on every file; one that claims counts for both.
#[test]
fn only_a_faster_daemon_that_claims_makes_a_slower_one_make_way() {
    let c = linked_claims(9, 100);
    c.heard_link([1; 8], 1000, false);
    assert!(c.outpaced(Among::Heard));
    assert!(!c.outpaced(Among::Claiming), "it claimed nothing");
    c.heard_link([1; 8], 1000, true);
    assert!(c.outpaced(Among::Claiming));
    // A MISS later does not forget the claim.
    c.heard_link([1; 8], 1000, false);
    assert!(c.outpaced(Among::Claiming));
}

/// A claim heard only in its older copy (the version 5 one lost) from a daemon whose link is
/// known counts with that link, as on the hosts that got the version 5 copy.
#[test]
fn a_claim_heard_in_an_older_copy_keeps_the_link_its_daemon_told() {
    let c = claims(5);
    let from: IpAddr = "10.0.0.1".parse().unwrap();
    c.heard_link([1; 8], 100, false);
    c.speaks([1; 8], 5);
    c.heard_claim("a-1-1-any.pkg.tar.zst", [1; 8], (4, 0), from);
    let heard: Vec<(u8, u16)> = c
        .heard_claims("a-1-1-any.pkg.tar.zst")
        .iter()
        .map(|c| (c.version, c.link))
        .collect();
    assert_eq!(heard, vec![(5, 100)]);
}

/// A version 4 daemon heard anywhere lately puts every file on the rank alone, so that two
/// version 5 daemons never settle one file by different rules.
#[test]
fn a_version_4_daemon_heard_lately_turns_the_link_rule_off() {
    let c = claims(5);
    assert!(!c.version_4_heard());
    c.speaks([2; 8], 5);
    c.speaks([3; 8], 3);
    assert!(
        !c.version_4_heard(),
        "version 3 daemons settle by the lowest id"
    );
    c.speaks([4; 8], 4);
    assert!(c.version_4_heard());
    c.speaks([4; 8], 5);
    assert!(!c.version_4_heard(), "upgraded");
}
