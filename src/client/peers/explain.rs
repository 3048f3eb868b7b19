//! Why peers were or were not asked, in words, for `-v` and `--list-peers`.
//!
//! A user trying pacserve-fetch by hand sees the mirror serve a file a peer holds and cannot
//! tell why: the file is not a package, no sync database lists it, there is no interface to ask
//! on, or only this machine's own daemon answered. Each of those is a deliberate rule, so each
//! gets a sentence naming the rule and the option that changes it. Kept apart from
//! [`crate::client::fetch`] so the download's decision reads without the prose.

use std::path::Path;

use crate::client::peers::discovery::{Asked, Discovery};
use crate::pacman::name::FileKind;

/// Why no peer is asked for `name` before anything is sent; None when peers will be asked.
pub fn not_asking(
    name: &str,
    kind: FileKind,
    listed: bool,
    unverified_peers: bool,
    discovery: Option<&Discovery>,
    dbpath: &Path,
) -> Option<String> {
    if !kind.shareable() {
        return Some(format!(
            "{name} is not a package or a package signature: asking no peers (databases and \
             other files always come from the mirror)"
        ));
    }
    if !listed && !unverified_peers {
        return Some(format!(
            "{name} is not listed in any sync database in {}: asking no peers (only files the \
             local sync databases vouch for are taken from peers; --unverified-peers takes \
             others too)",
            dbpath.join("sync").display()
        ));
    }
    discovery.is_none().then(|| {
        "peers are switched off (--no-peers, or use-peers = false in the configuration)".to_owned()
    })
}

/// Why asking found nobody, when it did; None when some daemon answered.
pub fn nobody_answered(asked: &Asked, discovery: &Discovery) -> Option<String> {
    if !asked.answers.is_empty() {
        return None;
    }
    if asked.sent == 0 {
        return Some(nobody_to_ask(discovery));
    }
    if asked.quiet && asked.own_skipped == 0 {
        // Asked QUIET: silence is the answer of daemons without the file, and `-v` says so.
        return None;
    }
    Some(match asked.own_skipped {
        0 => "no daemon answered".to_owned(),
        _ => "only this host's own daemon answered, and it is skipped: pacman has already looked \
              in this host's cache (--include-self uses it anyway)"
            .to_owned(),
    })
}

/// No query could go out at all.
pub fn nobody_to_ask(discovery: &Discovery) -> String {
    let networks: Vec<String> = discovery.networks.iter().map(|n| n.to_string()).collect();
    match (discovery.multicast, discovery.interfaces.is_empty()) {
        (false, _) => "nobody to ask: multicast is off and no --peer is given".to_owned(),
        (true, _) if !networks.is_empty() => format!(
            "no usable interface on the networks chosen ({}): asking no peer on this network \
             (--network, networks = in the configuration)",
            networks.join(", ")
        ),
        (true, true) => "no usable interface: none is up, multicast-capable and not loopback \
                         (name one with --interface, or a peer with --peer)"
            .to_owned(),
        (true, false) => format!(
            "no usable interface: {} is not up (or has no address to send from)",
            discovery.interfaces.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_names_its_rule() {
        let d = Discovery::default();
        let db = Path::new("/var/lib/pacman");
        let pkg = FileKind::Package;
        let why =
            |kind, listed, unverified, disc| not_asking("f", kind, listed, unverified, disc, db);
        assert!(
            why(FileKind::Database, true, true, Some(&d))
                .unwrap()
                .contains("not a package")
        );
        let unlisted = why(pkg, false, false, Some(&d)).unwrap();
        assert!(unlisted.contains("/var/lib/pacman/sync"), "{unlisted}");
        assert_eq!(why(pkg, false, true, Some(&d)), None);
        assert!(why(pkg, true, false, None).unwrap().contains("--no-peers"));
        assert_eq!(why(pkg, true, false, Some(&d)), None);

        let nobody = Asked::default();
        assert!(
            nobody_answered(&nobody, &d)
                .unwrap()
                .contains("no usable interface")
        );
        let home = Discovery {
            networks: vec!["192.168.1.0/24".parse().unwrap()],
            ..Discovery::default()
        };
        assert!(
            nobody_to_ask(&home).contains("on the networks chosen (192.168.1.0/24)"),
            "{}",
            nobody_to_ask(&home)
        );
        let own = Asked {
            sent: 2,
            own_skipped: 1,
            ..Asked::default()
        };
        assert!(nobody_answered(&own, &d).unwrap().contains("own daemon"));
        let quiet = Asked {
            sent: 1,
            quiet: true,
            ..Asked::default()
        };
        assert_eq!(nobody_answered(&quiet, &d), None, "silence was asked for");
    }
}
