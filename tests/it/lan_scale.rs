//! Large LANs (issue 21): one answer per query however many copies arrive, and QUIET queries
//! once a client knows many daemons, so that a LAN of hundreds of hosts does not answer every
//! query with hundreds of MISS datagrams. The datagram tests speak the wire format from a script
//! inside a private loopback namespace (rootless); the QUIET test builds a LAN of namespaces
//! (root) with more daemons than the client's threshold.

use std::fs;
use std::process::Command;

use crate::daemon::Daemon;
use crate::netns::{Family, Host, Lan};
use crate::nginx::Nginx;
use crate::util::{fetch_bin, lan_memory_dir, random_bytes, run, stderr, tempdir};

const HELD: &str = "held-1.0-1-any.pkg.tar.zst";

/// Queries in the wire format of `src/protocol/mod.rs`, answers collected per socket: the
/// script's helpers, then the case it runs.
const WIRE: &str = r#"
import os, socket, sys, time
PORT = int(sys.argv[1])
def query(version, nonce, name, quiet=False):
    b = b"PSRV" + bytes([version, 1]) + nonce + bytes([len(name)]) + name.encode() + b"\0"
    if version >= 2:
        b += bytes([2 if quiet else 0]) + bytes(8)
    return b + bytes(max(0, 64 - len(b)))
def sock(addr="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    return s
def answers(s, nonce, wait=0.4):
    got, end = [], time.time() + wait
    while True:
        left = end - time.time()
        if left <= 0:
            return got
        s.settimeout(left)
        try:
            d, _ = s.recvfrom(512)
        except socket.timeout:
            return got
        if d[6:14] == nonce:
            got.append(d)
def show(label, got):
    # label: how many answers, each as version/state/length
    print(label, len(got), " ".join("v%d/%d/%d" % (d[4], d[14], len(d)) for d in got))
def send(s, *datagrams):
    for d in datagrams:
        s.sendto(d, ("127.0.0.1", PORT))
"#;

/// One daemon on `lo` in a private namespace, holding [`HELD`], at UDP `port`.
fn lone_daemon() -> Option<(Host, Daemon, tempfile::TempDir, u16)> {
    if !crate::util::require_tools(&["python3", "curl"]) {
        return None;
    }
    let host = Host::loopback()?;
    let cache = tempdir();
    fs::write(cache.path().join(HELD), random_bytes(1000, 5)).unwrap();
    let port = 15678;
    let daemon = Daemon::start(
        &host,
        cache.path(),
        &["--http-port", "0", "--interface", "lo", "--no-agent"],
    );
    Some((host, daemon, cache, port))
}

/// Runs `case` (Python, after [`WIRE`]) in `host`; its printed lines, `label` → rest.
fn wire(host: &Host, port: u16, case: &str) -> std::collections::BTreeMap<String, String> {
    let script = format!("{WIRE}\n{case}");
    let out = run(host
        .command("python3")
        .args(["-c", &script, &port.to_string()]));
    assert!(out.status.success(), "script failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(label, rest)| (label.to_owned(), rest.to_owned()))
        .collect()
}

fn counter(daemon: &Daemon, host: &Host, name: &str) -> f64 {
    let metrics = daemon.metrics(host);
    *metrics
        .get(&format!("pacserved_{name}_total"))
        .unwrap_or_else(|| panic!("no series {name}: {metrics:?}"))
}

/// A client's version 1 copy of a query the daemon answered in version 3 gets no second
/// answer; a version 1 query alone is answered, as is a newer copy after an older one.
#[test]
fn a_version_1_copy_after_a_version_3_query_is_not_answered_a_lone_one_is() {
    let Some((host, daemon, _cache, port)) = lone_daemon() else {
        return;
    };
    let got = wire(
        &host,
        port,
        r#"
for label, versions in [("newest-first", [3, 1]), ("v1-alone", [1]), ("oldest-first", [1, 3]),
                        ("v4-v3-v1", [4, 3, 1])]:
    s, nonce = sock(), os.urandom(8)
    send(s, *[query(v, nonce, "absent-1-1-any.pkg.tar.zst") for v in versions])
    show(label, answers(s, nonce))
"#,
    );
    assert_eq!(got["newest-first"], "1 v3/0/52", "{got:?}");
    assert_eq!(got["v1-alone"], "1 v1/0/41", "{got:?}");
    // Older first (reordered, or an older client's order): the newer copy says more.
    assert_eq!(got["oldest-first"], "2 v1/0/41 v3/0/52", "{got:?}");
    assert_eq!(got["v4-v3-v1"], "1 v4/0/52", "{got:?}");
    assert_eq!(counter(&daemon, &host, "queries_repeated"), 3.0);
}

/// A QUIET query for a file that is not here gets no answer, its version 1 copy included; one
/// for a file that is here gets exactly one, however often it is repeated, and never more bytes
/// than were sent (no amplifier).
#[test]
fn a_quiet_query_and_its_copies_get_one_answer_or_none() {
    let Some((host, daemon, _cache, port)) = lone_daemon() else {
        return;
    };
    let got = wire(
        &host,
        port,
        &format!(
            r#"
s, nonce = sock(), os.urandom(8)
send(s, query(3, nonce, "absent-1-1-any.pkg.tar.zst", quiet=True),
     query(1, nonce, "absent-1-1-any.pkg.tar.zst"))
show("quiet-miss", answers(s, nonce))
s, nonce = sock(), os.urandom(8)
copies = [query(3, nonce, "{HELD}", quiet=True)] * 50 + [query(1, nonce, "{HELD}")] * 50
send(s, *copies)
got = answers(s, nonce)
show("quiet-have", got)
print("bytes", sum(map(len, copies)), sum(map(len, got)))
"#
        ),
    );
    assert_eq!(got["quiet-miss"], "0 ", "{got:?}");
    assert_eq!(got["quiet-have"], "1 v3/1/52", "{got:?}");
    let (sent, answered) = got["bytes"].split_once(' ').unwrap();
    let (sent, answered): (u64, u64) = (sent.parse().unwrap(), answered.parse().unwrap());
    assert!(answered <= sent / 100, "{answered} bytes for {sent}");
    assert_eq!(counter(&daemon, &host, "answered_miss"), 0.0);
    assert_eq!(counter(&daemon, &host, "quiet_unanswered"), 1.0);
    assert_eq!(counter(&daemon, &host, "queries_repeated"), 100.0);
}

/// Another host repeating a client's nonce (every host sees a multicast query) silences
/// nobody: the daemon remembers nonces per source. A flood of distinct nonces from many
/// sources neither stops the daemon answering nor undoes the one answer per query after it.
#[test]
fn spoofed_nonces_silence_nobody_and_a_flood_of_nonces_changes_nothing() {
    let Some((host, daemon, _cache, port)) = lone_daemon() else {
        return;
    };
    let rss_before = crate::util::proc_kb(daemon.pid(), "VmRSS:");
    let got = wire(
        &host,
        port,
        r#"
nonce = os.urandom(8)
spoofer, client, sibling = sock("127.0.0.2"), sock(), sock()
# The spoofer sends the nonce first, in both versions, then the client asks with it.
send(spoofer, query(3, nonce, "absent-1-1-any.pkg.tar.zst"), query(1, nonce, "absent-1-1-any.pkg.tar.zst"))
time.sleep(0.05)
send(client, query(3, nonce, "absent-1-1-any.pkg.tar.zst"), query(1, nonce, "absent-1-1-any.pkg.tar.zst"))
# Another port of the same address is another source too.
send(sibling, query(3, nonce, "absent-1-1-any.pkg.tar.zst"))
show("spoofer", answers(spoofer, nonce, 0.1))
show("client", answers(client, nonce))
show("sibling", answers(sibling, nonce))
# 3000 distinct nonces from 60 sources (each within its rate limit's burst).
flood = [sock("127.0.0.%d" % (3 + i % 60)) for i in range(60)]
for i in range(3000):
    send(flood[i % 60], query(3, os.urandom(8), "absent-1-1-any.pkg.tar.zst"))
time.sleep(0.3)
s, nonce = sock(), os.urandom(8)
send(s, query(3, nonce, "absent-1-1-any.pkg.tar.zst"), query(1, nonce, "absent-1-1-any.pkg.tar.zst"))
show("after-flood", answers(s, nonce))
"#,
    );
    assert_eq!(got["spoofer"], "1 v3/0/52", "{got:?}");
    assert_eq!(
        got["client"], "1 v3/0/52",
        "the real client is answered: {got:?}"
    );
    assert_eq!(got["sibling"], "1 v3/0/52", "{got:?}");
    assert_eq!(got["after-flood"], "1 v3/0/52", "{got:?}");
    // The ring is fixed in size (the unit test counts it); the whole daemon stays put.
    let rss_after = crate::util::proc_kb(daemon.pid(), "VmRSS:");
    assert!(
        rss_after < rss_before + 4096,
        "RSS {rss_before} kB → {rss_after} kB after the flood"
    );
}

/// Hosts 2..=DAEMONS+1 run a daemon each; the last of them holds [`HELD`]. The client (host 1)
/// learns the LAN with one loud query, then asks QUIET: a miss draws no MISS answer from any
/// daemon (their counters say so, and `-v`), yet the one holder is found and sends the file.
#[test]
fn a_client_that_knows_many_daemons_asks_quiet_and_still_finds_the_one_holder() {
    // More than the client's threshold (32), with room for a daemon the first listing misses.
    const DAEMONS: usize = 36;
    let Some(lan) = Lan::new(DAEMONS + 2, Family::Dual) else {
        return;
    };
    let mirror_host = DAEMONS + 2;
    let caches: Vec<_> = (0..DAEMONS).map(|_| tempdir()).collect();
    let content = random_bytes(300_000, 7);
    fs::write(caches[DAEMONS - 1].path().join(HELD), &content).unwrap();
    let daemons: Vec<Daemon> = (caches.iter().enumerate())
        .map(|(i, c)| Daemon::start(lan.host(i + 2), c.path(), &[]))
        .collect();
    let mirror_root = tempdir();
    let miss = "nobody-1.0-1-any.pkg.tar.zst";
    fs::write(mirror_root.path().join(miss), random_bytes(5000, 8)).unwrap();
    fs::write(mirror_root.path().join(HELD), &content).unwrap();
    let Some(mirror) = Nginx::mirror_on(lan.host(mirror_host), mirror_root.path()) else {
        return;
    };
    lan.wait_for_daemons(DAEMONS);
    let dir = tempdir();
    let fetch = |step: &str, name: &str| -> String {
        let out = dir.path().join(step).join(format!("{name}.part"));
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let result = run(client(lan.host(1))
            .arg("-v")
            .arg(&out)
            .arg(format!("http://{}:8080/{name}", lan.url_host(mirror_host))));
        assert!(result.status.success(), "{step}: {}", stderr(&result));
        stderr(&result)
    };
    // Every daemon's counters added up: (MISS sent, QUIET left unanswered, copies dropped).
    let totals = || -> (f64, f64, f64) {
        let mut sum = (0.0, 0.0, 0.0);
        for (i, d) in daemons.iter().enumerate() {
            let m = d.metrics(lan.host(i + 2));
            let get = |name: &str| m.get(&format!("pacserved_{name}_total")).copied();
            sum.0 += get("answered_miss").expect("answered_miss");
            sum.1 += get("quiet_unanswered").unwrap_or(0.0);
            sum.2 += get("queries_repeated").unwrap_or(0.0);
        }
        sum
    };
    let d = DAEMONS as f64;

    // The first run knows nobody: loud, and each daemon says MISS once per address family
    // (not once per copy of the query).
    let before = totals();
    let loud = fetch("loud", miss);
    assert!(
        loud.contains(&format!("{DAEMONS} peers answered, 0 have it")) && !loud.contains("QUIET"),
        "{loud}"
    );
    let after_loud = totals();
    assert_eq!(
        after_loud.0 - before.0,
        2.0 * d,
        "MISS answers sent: {loud}"
    );
    assert_eq!(after_loud.2 - before.2, 2.0 * d, "version 1 copies dropped");

    // Now it knows them all: QUIET, over IPv4 alone (every daemon answered over it) and without
    // the version 1 copy (every daemon answered in version 3), and no daemon sends a MISS.
    let quiet = fetch("quiet", miss);
    assert!(
        quiet.contains("0 peers answered, 0 have it")
            && quiet.contains(&format!(
                "asked QUIET over IPv4 alone ({DAEMONS} daemons known"
            ))
            && quiet.contains("no holder answered within")
            && !quiet.contains("no daemon answered"),
        "{quiet}"
    );
    let after_quiet = totals();
    assert_eq!(after_quiet.0, after_loud.0, "no MISS was sent: {quiet}");
    assert_eq!(
        after_quiet.1 - after_loud.1,
        d,
        "each daemon heard the one QUIET query and kept quiet"
    );

    // The one holder still answers a QUIET query, and the file comes from it.
    let found = fetch("found", HELD);
    assert!(
        found.contains("1 peers answered, 1 have it")
            && found.contains("asked QUIET")
            && found.contains("a peer has it"),
        "{found}"
    );
    assert_eq!(daemons[DAEMONS - 1].served(HELD).len(), 1, "{found}");
    assert!(mirror.requests_for(HELD).is_empty(), "{found}");
    assert_eq!(totals().0, after_loud.0, "still no MISS: {found}");
    assert_eq!(
        fs::read(dir.path().join("found").join(format!("{HELD}.part"))).unwrap(),
        content
    );
}

fn client(host: &Host) -> Command {
    let mut cmd = host.command(fetch_bin());
    // Each test remembers its own LAN (the LAN memory lives under TMPDIR).
    cmd.env("TMPDIR", lan_memory_dir());
    cmd.args(["--config", "/dev/null", "--unverified-peers"]);
    cmd
}

/// A version 1 daemon (the scripted honest peer, holding [`HELD`]) among more new daemons than
/// the client's threshold: it cannot hear QUIET, so once the client has heard it answer in
/// version 1, its QUIET queries keep their version 1 copy; the old daemon answers that, the
/// file comes from it, and the new daemons still send no MISS.
#[test]
fn an_old_daemon_on_a_large_lan_still_gets_the_version_1_copy() {
    const DAEMONS: usize = 40;
    if !crate::util::require_tools(&["python3", "curl"]) {
        return;
    }
    let Some(lan) = Lan::new(DAEMONS + 3, Family::Dual) else {
        return;
    };
    let (old_host, mirror_host) = (DAEMONS + 2, DAEMONS + 3);
    let caches: Vec<_> = (0..DAEMONS).map(|_| tempdir()).collect();
    let daemons: Vec<Daemon> = (caches.iter().enumerate())
        .map(|(i, c)| Daemon::start(lan.host(i + 2), c.path(), &[]))
        .collect();
    let (real, mirror_root) = (tempdir(), tempdir());
    let content = random_bytes(300_000, 9);
    fs::write(real.path().join(HELD), &content).unwrap();
    fs::write(mirror_root.path().join(HELD), &content).unwrap();
    let old = crate::hostile::Hostile::start(
        lan.host(old_host),
        "honest",
        &real.path().join(HELD),
        &lan.ipv4(old_host),
    );
    let Some(mirror) = Nginx::mirror_on(lan.host(mirror_host), mirror_root.path()) else {
        return;
    };
    lan.wait_for_daemons(DAEMONS + 1);
    let misses = || -> f64 {
        (daemons.iter().enumerate())
            .map(|(i, d)| counter(d, lan.host(i + 2), "answered_miss"))
            .sum()
    };
    let dir = tempdir();
    let fetch = |step: &str| -> String {
        let out = dir.path().join(step).join(format!("{HELD}.part"));
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let result = run(client(lan.host(1))
            .arg("-v")
            .arg(&out)
            .arg(format!("http://{}:8080/{HELD}", lan.url_host(mirror_host))));
        assert!(result.status.success(), "{step}: {}", stderr(&result));
        assert_eq!(fs::read(&out).unwrap(), content, "{step}");
        stderr(&result)
    };
    let served = || old.log().matches(&format!("GET /pkg/{HELD}")).count();

    // Loud: every daemon answers, the old one HAVE in version 1, and sends the file.
    let loud = fetch("loud");
    assert!(
        !loud.contains("QUIET") && loud.contains("a peer has it"),
        "{loud}"
    );
    assert_eq!(served(), 1, "{loud}");
    let before = misses();

    // QUIET, with the version 1 copy: the old daemon is still found.
    let quiet = fetch("quiet");
    assert!(
        quiet.contains("asked QUIET")
            && quiet.contains("with a version 1 copy for older daemons")
            && quiet.contains("1 peers answered, 1 have it"),
        "{quiet}"
    );
    assert_eq!(served(), 2, "{quiet}");
    assert!(mirror.requests_for(HELD).is_empty(), "{quiet}");
    assert_eq!(
        misses(),
        before,
        "the new daemons dropped the copy: {quiet}"
    );
}
