//! pacserved's HTTP corners (issue 10, item 11), rootless on loopback: what the log and the
//! status page count for a client that stops reading, If-Range, ranges of empty files, odd
//! names, and what the status page must not reveal.

use std::fs;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::netns::Host;
use crate::util::{random_bytes, run, tempdir};

const BIG: &str = "big-1-1-any.pkg.tar.zst";

/// Loopback (rootless): a daemon sharing a package, its signature, an odd name and an empty
/// file, and a curl inside its namespace.
fn loopback_daemon() -> Option<(Host, Daemon, tempfile::TempDir)> {
    // curl and python3 are the clients of every test here.
    if !crate::util::require_tools(&["curl", "python3"]) {
        return None;
    }
    let host = Host::loopback()?;
    let cache = tempdir();
    fs::write(cache.path().join(BIG), random_bytes(32_000_000, 83)).unwrap();
    fs::write(cache.path().join("a-1-1-any.pkg.tar.zst.sig"), b"sig").unwrap();
    fs::write(cache.path().join("a-1-1-any.pkg.tar.zst.sig2"), b"odd").unwrap();
    fs::write(cache.path().join("empty-1-1-any.pkg.tar.zst"), b"").unwrap();
    let daemon = Daemon::start(
        &host,
        cache.path(),
        &["--http-port", "0", "--interface", "lo"],
    );
    Some((host, daemon, cache))
}

fn curl(host: &Host, args: &[&str]) -> String {
    let out = run(host
        .command("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http_corners_if_range_empty_ranges_odd_names_and_the_status_page() {
    let Some((host, daemon, cache)) = loopback_daemon() else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", daemon.http_port);
    let pkg = format!("{base}/pkg/{BIG}");

    assert!(
        curl(&host, &[&format!("{base}/pkg/a-1-1-any.pkg.tar.zst.sig")])
            .starts_with("HTTP/1.1 200")
    );
    let odd = curl(&host, &[&format!("{base}/pkg/a-1-1-any.pkg.tar.zst.sig2")]);
    assert!(
        odd.starts_with("HTTP/1.1 404"),
        "only real signature names: {odd}"
    );

    let head = curl(&host, &["-I", &pkg]);
    let last_modified = head
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: "))
        .map(str::trim)
        .expect("Last-Modified")
        .to_owned();
    let matching = curl(
        &host,
        &[
            "-r",
            "0-99",
            "-H",
            &format!("If-Range: {last_modified}"),
            &pkg,
        ],
    );
    assert!(
        matching.starts_with("HTTP/1.1 206"),
        "validator matches: {matching}"
    );
    for stale in ["Wed, 01 Jan 2003 00:00:00 GMT", "\"not-the-etag\""] {
        let got = curl(
            &host,
            &["-r", "0-99", "-H", &format!("If-Range: {stale}"), &pkg],
        );
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "{stale}: whole file: {got}"
        );
        assert!(got.contains("content-length: 32000000"), "{got}");
    }

    let empty = curl(
        &host,
        &[
            "-r",
            "0-0",
            &format!("{base}/pkg/empty-1-1-any.pkg.tar.zst"),
        ],
    );
    assert!(empty.starts_with("HTTP/1.1 416"), "{empty}");
    assert!(empty.contains("content-range: bytes */0"), "{empty}");

    // A peer over IPv6 is shown by its /64, never its full address (EUI-64 holds the MAC).
    let v6 = format!("http://[::1]:{}", daemon.http_port);
    let sig = curl(
        &host,
        &["-g", &format!("{v6}/pkg/a-1-1-any.pkg.tar.zst.sig")],
    );
    assert!(sig.starts_with("HTTP/1.1 200"), "{sig}");
    let status = run(host.command("curl").args(["-s", "-g", &format!("{v6}/")]));
    let page = String::from_utf8_lossy(&status.stdout);
    let dir = cache.path().to_string_lossy();
    assert!(!page.contains(dir.as_ref()), "no cache path: {page}");
    assert!(page.contains("cache directories: 1"), "{page}");
    assert!(page.contains("  ::/64: 1 requests"), "{page}");
    assert!(!page.contains("::1"), "no full IPv6 address: {page}");
}

#[test]
fn bytes_served_counts_what_was_sent_not_what_was_announced() {
    let Some((host, daemon, _cache)) = loopback_daemon() else {
        return;
    };
    // A client that asks for 32 MB and reads nothing, until the daemon gives up on it.
    let script = format!(
        "import socket, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n\
         s.connect(('127.0.0.1', {})); s.send(b'GET /pkg/{BIG} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         time.sleep(25)\n",
        daemon.http_port
    );
    let mut reader = host
        .command("python3")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let needle = format!("{BIG} to 127.0.0.1: sent ");
    let deadline = Instant::now() + Duration::from_secs(25);
    let line = loop {
        if let Some(line) = daemon.log().into_iter().find(|l| l.contains(&needle)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled request was never logged as cut short"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.kill();
    let _ = reader.wait();
    let sent: u64 = line
        .split(": sent ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    let status = run(host
        .command("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/", daemon.http_port)]));
    let page = String::from_utf8_lossy(&status.stdout);
    eprintln!("STALLED CLIENT: {line}");
    assert!(sent < 32_000_000, "logged what was sent: {line}");
    assert!(page.contains(&format!("bytes served: {sent}\n")), "{page}");
    assert!(page.contains("files served: 0"), "{page}");
    assert!(
        page.contains("connections closed (client not reading): 1"),
        "{page}"
    );
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order_and_intact() {
    let Some((host, daemon, cache)) = loopback_daemon() else {
        return;
    };
    // Four requests in one write: two cache files the kernel sends, then the status page and a
    // range, answered in order on the same connection from the bytes already read.
    let script = format!(
        "import socket, sys\n\
         s = socket.create_connection(('127.0.0.1', {}))\n\
         r = lambda path, extra=b'': b'GET ' + path + b' HTTP/1.1\\r\\nHost: x\\r\\n' + extra + b'\\r\\n'\n\
         s.sendall(r(b'/pkg/{BIG}', b'Range: bytes=0-9\\r\\n') + r(b'/pkg/a-1-1-any.pkg.tar.zst.sig')\n\
                   + r(b'/') + r(b'/pkg/{BIG}', b'Range: bytes=10-19\\r\\nConnection: close\\r\\n'))\n\
         s.settimeout(20)\n\
         got = b''\n\
         while True:\n\
         \x20   d = s.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   got += d\n\
         sys.stdout.buffer.write(got)\n",
        daemon.http_port
    );
    let out = run(host.command("python3").args(["-c", &script]));
    let content = fs::read(cache.path().join(BIG)).unwrap();
    let mut rest = &out.stdout[..];
    let mut answers = Vec::new();
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("a response head in {:?}", String::from_utf8_lossy(rest)));
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("a length in {head}"));
        let body = &rest[end + 4..end + 4 + len];
        answers.push((
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_vec(),
        ));
        rest = &rest[end + 4 + len..];
    }
    let statuses: Vec<&str> = answers.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 206 Partial Content",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 206 Partial Content"
        ]
    );
    assert_eq!(answers[0].1, content[..10]);
    assert_eq!(answers[1].1, b"sig");
    assert!(String::from_utf8_lossy(&answers[2].1).starts_with("pacserved "));
    assert_eq!(answers[3].1, content[10..20]);
}

/// `/metrics` is valid OpenMetrics as Prometheus' own Python parser reads it, and its counters
/// follow what was served (issue 23).
#[test]
fn metrics_parse_as_openmetrics_and_count_what_was_served() {
    let Some((host, daemon, _cache)) = loopback_daemon() else {
        return;
    };
    // Debian's python3-prometheus-client, the parser of the Python Prometheus client.
    let parser = "/usr/bin/python3";
    let probe = run(std::process::Command::new(parser)
        .args(["-c", "import prometheus_client.openmetrics.parser"]));
    if !crate::util::require(
        probe.status.success(),
        "python3-prometheus-client is not installed",
    ) {
        return;
    }
    let base = format!("http://127.0.0.1:{}", daemon.http_port);
    assert!(
        curl(&host, &[&format!("{base}/pkg/a-1-1-any.pkg.tar.zst.sig")])
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        curl(&host, &[&format!("{base}/pkg/absent-1-1-any.pkg.tar.zst")])
            .starts_with("HTTP/1.1 404")
    );
    let head = curl(&host, &[&format!("{base}/metrics")]);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        for family in parse(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       print(family.type, s.name, float(s.value))\n";
    let text = run(host
        .command("curl")
        .args(["-s", &format!("{base}/metrics")]));
    let mut python = std::process::Command::new(parser)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(python.stdin.as_mut().unwrap(), &text.stdout).unwrap();
    let parsed = python.wait_with_output().unwrap();
    let samples = String::from_utf8_lossy(&parsed.stdout);
    assert!(
        parsed.status.success(),
        "not OpenMetrics: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    for expected in [
        "counter pacserved_files_served_total 1.0",
        "counter pacserved_served_bytes_total 3.0",
        "counter pacserved_not_found_total 1.0",
        "gauge pacserved_uploads 0.0",
        "counter pacserved_agent_fetches_total 0.0",
    ] {
        assert!(
            samples.lines().any(|l| l == expected),
            "{expected}:\n{samples}"
        );
    }
}
