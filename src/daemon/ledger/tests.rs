use super::*;

fn ledger(dir: &Path) -> Ledger {
    Ledger::open(dir, dir.join("db"), Arc::new(Stats::default()))
}

/// `<db>/sync/core.db`, a plain tar listing `name` at `size` bytes.
fn write_db(db: &Path, name: &str, size: usize) {
    let desc = format!("%FILENAME%\n{name}\n\n%NAME%\na\n\n%CSIZE%\n{size}\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(desc.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "a-1-1/desc", desc.as_bytes())
        .unwrap();
    std::fs::create_dir_all(db.join("sync")).unwrap();
    std::fs::write(db.join("sync/core.db"), tar.into_inner().unwrap()).unwrap();
}

fn txn(pid: u32, start: u64) -> Transaction {
    Transaction { pid, start }
}

#[test]
fn a_summary_is_taken_once_and_the_totals_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let (mine, other) = (txn(10, 1), txn(11, 2));
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    ledger.report(
        mine,
        &[
            Record::Peer {
                ip: peer,
                id: [1; 8],
                bytes: 200,
            },
            Record::Peer {
                ip: "fe80::1".parse().unwrap(),
                id: [1; 8],
                bytes: 100,
            },
            Record::Mirror { bytes: 50 },
            Record::Bad { ip: peer },
        ],
    );
    ledger.record(Some(mine), From::Mirror, 20);
    ledger.record(Some(other), From::Lan(Some("fd00::1".parse().unwrap())), 7);
    ledger.record(None, From::Mirror, 1);
    let tally = ledger.take_summary(mine);
    assert_eq!(
        tally.lan.get("10.0.0.2"),
        Some(&300),
        "one host, both its addresses"
    );
    assert_eq!(tally.hosts(), 1);
    assert_eq!((tally.mirror, tally.pacman), (70, 0));
    assert!(ledger.take_summary(mine).is_empty(), "taken once");
    let totals = ledger.totals();
    assert_eq!(
        totals.tally.lan.get("fd00::/64"),
        Some(&7),
        "IPv6 by its /64"
    );
    assert_eq!((totals.tally.lan_bytes(), totals.tally.mirror), (307, 71));
    assert_eq!(ledger.stats.received_bytes.load(Relaxed), 307);
    assert_eq!(ledger.stats.client_mirror_bytes.load(Relaxed), 50);
    assert_eq!(
        ledger.stats.verification_failures.snapshot(),
        [("10.0.0.2".to_owned(), 1)]
    );

    // A restart reads the totals back; the summary was saved when it was taken.
    ledger.save();
    assert_eq!(self::ledger(dir.path()).totals().tally, totals.tally);
}

#[test]
fn cache_answers_belong_to_the_transaction_running_when_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let name = "a-1-1-any.pkg.tar.zst";
    let content = b"x".repeat(1234);
    write_db(&db, name, content.len());
    let ledger = ledger(dir.path());
    ledger.cache_served("earlier-1-1-any.pkg.tar.zst", 5);
    let now = now_ticks().unwrap();
    // Ticks count hundredths of a second: a transaction starting a tick after the first event.
    std::thread::sleep(Duration::from_millis(30));
    ledger.cache_served("b-1-1-any.pkg.tar.zst", 100);
    ledger.cache_missed(name);
    ledger.cache_missed("core.db");
    let tally = ledger.take_summary(txn(1, now + 1));
    assert_eq!(tally.lan.get(UNKNOWN_HOST), Some(&100), "not the earlier 5");
    assert_eq!(tally.pacman, 1234, "by the sync database's size");
    assert_eq!(ledger.totals().tally.pacman, 1234);
    assert_eq!(ledger.totals().tally.lan.get(UNKNOWN_HOST), Some(&105));
}

#[test]
fn tallies_and_hosts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    for pid in 0..(MAX_TRANSACTIONS as u32 + 5) {
        ledger.record(Some(txn(pid, 1)), From::Mirror, 1);
    }
    assert_eq!(ledger.lock().txns.len(), MAX_TRANSACTIONS);
    assert!(ledger.take_summary(txn(0, 1)).is_empty(), "the oldest went");
    for i in 0..(MAX_HOSTS as u32 + 10) {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        ledger.record(Some(txn(99, 1)), From::Lan(Some(ip)), 1);
    }
    let tally = ledger.take_summary(txn(99, 1));
    assert_eq!(tally.lan.len(), MAX_HOSTS);
    assert_eq!(tally.lan.get(OTHER_LABEL), Some(&11));
    assert_eq!(ledger.totals().tally.lan.len(), MAX_HOSTS);
}
