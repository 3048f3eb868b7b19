//! pacserved's own HTTP/1.1 (issue 20) against a hostile LAN host and a local user, rootless on
//! loopback: smuggled bodies, malformed heads, slow and oversized heads, floods of connections
//! that never read, Range and conditional corners, HEAD against GET, path tricks, and the agent's
//! socket speaking the same HTTP. Every answer is checked byte for byte as a client would frame
//! it: Content-Length equals the body, Content-Range agrees with it, no body where none may be.
//!
//! The attacker is a Python script run inside the daemon's namespace; every loop it runs is
//! bounded in count and time.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::netns::Host;
use crate::util::{proc_kb, random_bytes, run, tempdir};

const BIG: &str = "big-1-1-any.pkg.tar.zst";
const SMALL: &str = "a-1-1-any.pkg.tar.zst";
const SIG: &str = "a-1-1-any.pkg.tar.zst.sig";
const EMPTY: &str = "empty-1-1-any.pkg.tar.zst";
/// The small package's bytes: 100 of them, so that ranges are easy to read.
const SMALL_BODY: &[u8] = b"0123456789012345678901234567890123456789012345678901234567890123456789\
                            012345678901234567890123456789";

/// Sends the hex-encoded bytes of argv[2] to 127.0.0.1:argv[1] (in pieces of argv[4] bytes,
/// 2 ms apart, when given), then reads until the server closes or argv[3] seconds pass with
/// nothing. Writes what it read to stdout and how the connection ended to stderr: `eof` (the
/// server closed), `open` (still open after the wait) or `reset`.
const RAW: &str = r#"
import socket, sys, time
port, data, wait = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), float(sys.argv[3])
piece = int(sys.argv[4]) if len(sys.argv) > 4 else 0
s = socket.create_connection(('127.0.0.1', port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if piece:
    for i in range(0, len(data), piece):
        s.sendall(data[i:i + piece])
        time.sleep(0.002)
else:
    s.sendall(data)
s.settimeout(wait)
got, end = b'', 'eof'
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
except socket.timeout:
    end = 'open'
except OSError:
    end = 'reset'
sys.stdout.buffer.write(got)
sys.stderr.write(end)
"#;

/// A daemon on loopback sharing a 4 MB package, a 100-byte one, a signature, an empty package,
/// and a symlink to a file outside the cache under a package's name.
fn loopback_daemon() -> Option<(Host, Daemon, tempfile::TempDir)> {
    if !crate::util::require_tools(&["python3"]) {
        return None;
    }
    let host = Host::loopback()?;
    let cache = tempdir();
    fs::write(cache.path().join(BIG), random_bytes(4_000_000, 20)).unwrap();
    fs::write(cache.path().join(SMALL), SMALL_BODY).unwrap();
    fs::write(cache.path().join(SIG), b"sig").unwrap();
    fs::write(cache.path().join(EMPTY), b"").unwrap();
    let outside = cache.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret-1-1-any.pkg.tar.zst"), b"secret").unwrap();
    std::os::unix::fs::symlink(
        outside.join("secret-1-1-any.pkg.tar.zst"),
        cache.path().join("evil-1-1-any.pkg.tar.zst"),
    )
    .unwrap();
    let daemon = Daemon::start(
        &host,
        cache.path(),
        &["--http-port", "0", "--interface", "lo"],
    );
    Some((host, daemon, cache))
}

/// How a connection ended, as the attacker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Open,
    Reset,
}

/// Sends `request` raw and returns what came back, and how the connection ended; `wait` is how
/// long the client waits for more after the last byte (a bound on a wait, not a timing).
fn exchange(host: &Host, port: u16, request: &[u8], wait: f64, piece: usize) -> (Vec<u8>, End) {
    let hex: String = request.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = host.command("python3");
    cmd.args(["-c", RAW, &port.to_string(), &hex, &wait.to_string()]);
    if piece > 0 {
        cmd.arg(piece.to_string());
    }
    let out = run(&mut cmd);
    let end = match String::from_utf8_lossy(&out.stderr).trim() {
        "eof" => End::Closed,
        "open" => End::Open,
        "reset" => End::Reset,
        other => panic!("the attacker script failed: {other}"),
    };
    (out.stdout, end)
}

/// One response as a client frames it.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    /// Field names lower-cased, values trimmed, `date` left out (it changes between two).
    fields: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Splits `bytes` into responses, framed as RFC 9112 says: no body for a HEAD (`heads[i]`), a
/// 304 or a 1xx, else exactly Content-Length bytes. Panics on anything a client could not frame
/// (a missing or repeated length, a chunked body, a field twice, a body cut short).
fn responses(mut bytes: &[u8], heads: &[bool]) -> Vec<Response> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head end in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).expect("a head in ASCII");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut fields = BTreeMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
            let name = name.to_ascii_lowercase();
            assert_eq!(
                name.trim(),
                name,
                "no whitespace around a field name: {line:?}"
            );
            if name == "date" {
                continue;
            }
            let old = fields.insert(name.clone(), value.trim().to_owned());
            assert!(old.is_none(), "{name} twice in {head}");
        }
        assert!(
            !fields.contains_key("transfer-encoding"),
            "files and statuses are never chunked: {head}"
        );
        let no_body =
            heads.get(out.len()).copied().unwrap_or(false) || status == 304 || status < 200;
        let len: usize = match fields.get("content-length") {
            Some(n) => n.parse().unwrap_or_else(|_| panic!("length {n:?}")),
            None if status == 304 => 0,
            None => panic!("every answer is framed: {head}"),
        };
        let body_len = if no_body { 0 } else { len };
        let rest = &bytes[end + 4..];
        assert!(
            rest.len() >= body_len,
            "body cut short: {} of {body_len} bytes after {head}",
            rest.len()
        );
        out.push(Response {
            status,
            fields,
            body: rest[..body_len].to_vec(),
        });
        bytes = &rest[body_len..];
    }
    out
}

/// A plain GET (or another method) of `path` with `extra` header lines.
fn request(method: &str, path: &str, extra: &[&str]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for line in extra {
        r.push_str(line);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The daemon is alive (not a zombie), and logged no panic.
fn still_well(daemon: &mut Daemon) {
    let stat = fs::read_to_string(format!("/proc/{}/stat", daemon.pid())).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    assert!(
        matches!(state, Some("S" | "R" | "D")),
        "pacserved exited under attack ({state:?}): {:?}",
        daemon.log()
    );
    let panics: Vec<String> = daemon
        .log()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "{panics:?}");
}

/// A request body can never be taken for the next request: any sign of one (Content-Length
/// other than 0, Transfer-Encoding, Expect, two lengths) gets its answer and the connection
/// closed, so what the attacker smuggled after the head is never answered.
#[test]
fn smuggled_bodies_are_never_taken_for_requests() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let smuggled = request("GET", &format!("/pkg/{SIG}"), &[]);
    for carrier in [
        &["Content-Length: 5"][..],
        &["Transfer-Encoding: chunked"],
        &["Transfer-Encoding: chunked", "Content-Length: 0"],
        &["Content-Length: 0", "Content-Length: 0"],
        &["Content-Length: 0", "Content-Length: 5"],
        &["Content-Length: 00"],
        &["Content-Length: -1"],
        &["Content-Length: 0x0"],
        &["Expect: 100-continue"],
        &["Transfer-Encoding: identity"],
    ] {
        let mut bytes = request("GET", &format!("/pkg/{SMALL}"), carrier);
        // What a front end that disagreed about the body would take for a second request.
        bytes.extend_from_slice(b"0\r\n\r\n");
        bytes.extend_from_slice(&smuggled);
        let (got, end) = exchange(&host, port, &bytes, 5.0, 0);
        let answers = responses(&got, &[]);
        assert_eq!(
            answers.len(),
            1,
            "{carrier:?}: one answer only: {answers:?}"
        );
        assert_eq!(answers[0].status, 200, "{carrier:?}");
        assert_eq!(answers[0].body, SMALL_BODY, "{carrier:?}");
        assert_eq!(answers[0].field("connection"), Some("close"), "{carrier:?}");
        assert_eq!(end, End::Closed, "{carrier:?}");
    }
    // `Content-Length: 0` is no body: the connection stays usable.
    let mut bytes = request("GET", &format!("/pkg/{SIG}"), &["Content-Length: 0"]);
    bytes.extend_from_slice(&request(
        "GET",
        &format!("/pkg/{SIG}"),
        &["Connection: close"],
    ));
    let (got, _) = exchange(&host, port, &bytes, 5.0, 0);
    let answers = responses(&got, &[]);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|a| a.body == b"sig"));
    still_well(&mut daemon);
}

/// Heads httparse cannot take are a 400 and the end of the connection; other methods are 405
/// with Allow; neither is ever answered as a GET.
#[test]
fn malformed_heads_are_refused_and_other_methods_get_405() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let path = format!("/pkg/{SIG}");
    let bad: Vec<Vec<u8>> = vec![
        // obs-fold, a space before the colon, a header name with a space.
        format!("GET {path} HTTP/1.1\r\nX: a\r\n b\r\n\r\n").into(),
        format!("GET {path} HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello").into(),
        format!("GET {path} HTTP/1.1\r\nBad Name: 1\r\n\r\n").into(),
        // Bytes no field may hold: invalid UTF-8, NUL, a bare CR.
        [
            format!("GET {path} HTTP/1.1\r\nX: ").as_bytes(),
            b"\xff\xfe\r\n\r\n",
        ]
        .concat(),
        [
            format!("GET {path} HTTP/1.1\r\n").as_bytes(),
            b"\x00X: y\r\n\r\n",
        ]
        .concat(),
        format!("GET {path} HTTP/1.1\r\nX: y\rZ: w\r\n\r\n").into(),
        format!("GET {path} HTTP/1.1\r\r\n\r\n").into(),
        // Odd request lines: a tab, two spaces, another version, no origin-form path.
        format!("GET\t{path} HTTP/1.1\r\n\r\n").into(),
        format!("GET  {path}  HTTP/1.1\r\n\r\n").into(),
        format!("GET {path} HTTP/2.0\r\n\r\n").into(),
        format!("GET http://x{path} HTTP/1.1\r\n\r\n").into(),
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n".to_vec(),
        // TLS to a plain HTTP port.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        // Percent-escapes that are not two hex digits.
        b"GET /pkg/a%zz HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /pkg/a%4 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /pkg/a%ff HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /pkg/a-1-1-any.pkg.tar.zst.sig%+0 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /pkg/a%-1 HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for bytes in bad {
        let mut sent = bytes.clone();
        sent.extend_from_slice(&request("GET", &path, &[]));
        let (got, end) = exchange(&host, port, &sent, 5.0, 0);
        let answers = responses(&got, &[]);
        let what = String::from_utf8_lossy(&bytes);
        assert_eq!(answers.len(), 1, "{what:?}: {answers:?}");
        assert_eq!(answers[0].status, 400, "{what:?}");
        assert!(answers[0].body.is_empty(), "{what:?}");
        assert_eq!(end, End::Closed, "{what:?}");
    }
    // The asterisk form, which only OPTIONS may use and the daemon does not serve.
    let (got, end) = exchange(
        &host,
        port,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        5.0,
        0,
    );
    let answers = responses(&got, &[]);
    assert!(matches!(answers[0].status, 400 | 405), "{answers:?}");
    assert_eq!(end, End::Closed);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "get", "PATCH"] {
        let mut bytes = request(method, &path, &["Content-Length: 3"]);
        bytes.extend_from_slice(b"abc");
        let (got, end) = exchange(&host, port, &bytes, 5.0, 0);
        let answers = responses(&got, &[]);
        assert_eq!(answers.len(), 1, "{method}");
        assert_eq!(answers[0].status, 405, "{method}");
        assert_eq!(answers[0].field("allow"), Some("GET, HEAD"), "{method}");
        assert_eq!(end, End::Closed, "{method}");
    }
    still_well(&mut daemon);
}

/// Keep-alive as RFC 9112 has it: HTTP/1.1 stays open (bare-LF heads too), `Connection: close`
/// anywhere in the field closes after the answer, HTTP/1.0 closes even asking for keep-alive,
/// and a head sent a byte at a time is a head like any other.
#[test]
fn keep_alive_close_and_heads_in_tiny_pieces() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let path = format!("/pkg/{SIG}");
    let second = request("GET", "/", &[]);
    let cases: [(Vec<u8>, usize); 5] = [
        ([request("GET", &path, &[]), second.clone()].concat(), 2),
        (
            [
                format!("GET {path} HTTP/1.1\nHost: x\n\n").into_bytes(),
                second.clone(),
            ]
            .concat(),
            2,
        ),
        (
            [
                request("GET", &path, &["Connection: keep-alive, Close"]),
                second.clone(),
            ]
            .concat(),
            1,
        ),
        (
            [
                request(
                    "GET",
                    &path,
                    &["Connection: close", "Connection: keep-alive"],
                ),
                second.clone(),
            ]
            .concat(),
            1,
        ),
        (
            [
                format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").into_bytes(),
                second.clone(),
            ]
            .concat(),
            1,
        ),
    ];
    for (bytes, answered) in cases {
        let (got, end) = exchange(&host, port, &bytes, 3.0, 0);
        let answers = responses(&got, &[]);
        let what = String::from_utf8_lossy(&bytes);
        assert_eq!(answers.len(), answered, "{what:?}: {answers:?}");
        assert_eq!(answers[0].body, b"sig", "{what:?}");
        match answered {
            1 => {
                assert_eq!(end, End::Closed, "{what:?}");
                assert_eq!(answers[0].field("connection"), Some("close"));
            }
            _ => {
                assert_eq!(end, End::Open, "{what:?}: kept alive");
                assert_eq!(answers[0].field("connection"), None);
            }
        }
    }
    let bytes = request("GET", &path, &["Range: bytes=1-1", "Connection: close"]);
    let (got, _) = exchange(&host, port, &bytes, 5.0, 1);
    let answers = responses(&got, &[]);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 206);
    assert_eq!(answers[0].body, b"i");
    still_well(&mut daemon);
}

/// Heads over 16 KiB or over 64 fields are 431 and close; just under is served.
#[test]
fn oversized_heads_are_431() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let long_name = format!("/pkg/{}-1-1-any.pkg.tar.zst", "a".repeat(20_000));
    let many: Vec<String> = (0..65).map(|i| format!("X{i}: y")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let long_value = format!("X: {}", "a".repeat(17_000));
    for bytes in [
        request("GET", &long_name, &[]),
        request("GET", "/", &many),
        request("GET", "/", &[&long_value]),
    ] {
        let (got, end) = exchange(&host, port, &bytes, 5.0, 0);
        let answers = responses(&got, &[]);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].status, 431);
        // The rest of the head is never read: closing over it may reset the connection, after
        // the answer (the attacker's loss only).
        assert_ne!(end, End::Open);
    }
    let fits = format!("X: {}", "a".repeat(15_000));
    let (got, _) = exchange(
        &host,
        port,
        &request("GET", &format!("/pkg/{SIG}"), &[&fits, "Connection: close"]),
        5.0,
        0,
    );
    assert_eq!(responses(&got, &[])[0].body, b"sig");
    // A name of the right shape but far too long for any file system: 404, not a 500.
    let name = format!("/pkg/{}-1-1-any.pkg.tar.zst", "a".repeat(4000));
    let (got, _) = exchange(&host, port, &request("GET", &name, &[]), 3.0, 0);
    assert_eq!(responses(&got, &[])[0].status, 404);
    still_well(&mut daemon);
}

/// The limits on slow clients: a head dripped a byte at a time is cut off once its 10 s are up,
/// however steadily it drips; an idle keep-alive connection is closed after 10 s.
#[test]
fn dripped_heads_and_idle_connections_are_closed() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let script = format!(
        "import socket, time, sys\n\
         a = socket.create_connection(('127.0.0.1', {port}))\n\
         b = socket.create_connection(('127.0.0.1', {port}))\n\
         b.sendall(b'GET /pkg/{SIG} HTTP/1.1\\r\\n\\r\\n')\n\
         a.sendall(b'GET / HTTP/1.1\\r\\nX: ')\n\
         a.setblocking(False)\n\
         start, closed = time.time(), None\n\
         for _ in range(60):\n\
         \x20   try:\n\
         \x20       a.send(b'x')\n\
         \x20       if a.recv(100) == b'': closed = time.time() - start; break\n\
         \x20   except BlockingIOError: pass\n\
         \x20   except OSError: closed = time.time() - start; break\n\
         \x20   time.sleep(0.5)\n\
         b.settimeout(20)\n\
         got = b''\n\
         while True:\n\
         \x20   d = b.recv(4096)\n\
         \x20   if not d: break\n\
         \x20   got += d\n\
         print(closed, time.time() - start, got.count(b'HTTP/1.1 200'))\n",
        port = daemon.http_port
    );
    let out = run(host.command("python3").args(["-c", &script]));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("SLOW CLIENTS: {text}");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{text} {}", crate::util::stderr(&out));
    // Generous bounds on waits (the limits are 10 s): the drip would go on for 30 s.
    let dripped: f64 = words[0].parse().expect("the dripped head was cut off");
    assert!(dripped < 20.0, "dripped head cut off after {dripped} s");
    let idle: f64 = words[1].parse().unwrap();
    assert!(idle < 25.0, "idle connection closed after {idle} s");
    assert_eq!(words[2], "1", "the keep-alive request was answered first");
    still_well(&mut daemon);
}

/// Range as RFC 9110 has it, for the 100-byte package: one range served with a matching
/// Content-Range; several, past the end, `-0` or of an empty file: 416 `bytes */N` and no body;
/// a unit the daemon does not know is ignored (a MUST of RFC 9110 14.2): the whole file.
#[test]
fn range_corners() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let path = format!("/pkg/{SMALL}");
    // (Range, status, the first and last byte a 206 sends)
    type Case<'a> = (&'a str, u16, Option<(u64, u64)>);
    let cases: &[Case] = &[
        ("bytes=0-9", 206, Some((0, 9))),
        ("bytes=90-", 206, Some((90, 99))),
        ("bytes=99-99", 206, Some((99, 99))),
        ("bytes=-5", 206, Some((95, 99))),
        ("bytes=-1000", 206, Some((0, 99))),
        ("bytes=0-99999999999999999999999", 206, Some((0, 99))),
        ("bytes=-18446744073709551615", 206, Some((0, 99))),
        ("BYTES=0-9", 206, Some((0, 9))),
        ("bytes=5-9 ", 206, Some((5, 9))),
        ("bytes=100-", 416, None),
        ("bytes=100-100", 416, None),
        ("bytes=18446744073709551615-", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=50-10", 416, None),
        ("bytes=0-1,5-6", 416, None),
        ("bytes=5-9, 5-9", 416, None),
        ("bytes=x-", 416, None),
        ("lines=1-2", 200, None),
        ("items=0-0", 200, None),
    ];
    for &(range, status, span) in cases {
        let bytes = request(
            "GET",
            &path,
            &[&format!("Range: {range}"), "Connection: close"],
        );
        let (got, end) = exchange(&host, port, &bytes, 5.0, 0);
        let answers = responses(&got, &[]);
        assert_eq!(answers.len(), 1, "{range}");
        let a = &answers[0];
        assert_eq!(a.status, status, "{range}: {a:?}");
        assert_eq!(end, End::Closed);
        match (status, span) {
            (206, Some((first, last))) => {
                assert_eq!(
                    a.field("content-range"),
                    Some(format!("bytes {first}-{last}/100").as_str()),
                    "{range}"
                );
                assert_eq!(
                    a.body,
                    &SMALL_BODY[first as usize..=last as usize],
                    "{range}"
                );
            }
            (416, _) => {
                assert_eq!(a.field("content-range"), Some("bytes */100"), "{range}");
                assert_eq!(a.field("content-length"), Some("0"), "{range}");
                assert!(a.body.is_empty());
            }
            _ => {
                assert_eq!(a.field("content-range"), None, "{range}");
                assert_eq!(a.body, SMALL_BODY, "{range}");
            }
        }
    }
    for range in ["bytes=0-0", "bytes=-1", "bytes=0-"] {
        let empty = request(
            "GET",
            &format!("/pkg/{EMPTY}"),
            &[&format!("Range: {range}")],
        );
        let (got, _) = exchange(&host, port, &empty, 3.0, 0);
        let a = &responses(&got, &[])[0];
        assert_eq!(a.status, 416, "{range} of an empty file");
        assert_eq!(a.field("content-range"), Some("bytes */0"));
    }
    still_well(&mut daemon);
}

/// If-Modified-Since, If-Unmodified-Since and If-Range: garbage dates are ignored; a 304 has no
/// body and no Content-Length but that of the file (RFC 9110 8.6: a 304 MUST NOT send another);
/// If-Range matches only the exact Last-Modified sent, never an ETag or a weak validator.
#[test]
fn conditional_headers() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let path = format!("/pkg/{SMALL}");
    let ask = |extra: &[&str], head: bool| {
        let mut extra = extra.to_vec();
        extra.push("Connection: close");
        let method = if head { "HEAD" } else { "GET" };
        let (got, end) = exchange(&host, port, &request(method, &path, &extra), 5.0, 0);
        let mut answers = responses(&got, &[head]);
        assert_eq!(answers.len(), 1, "{extra:?}: {answers:?}");
        assert_eq!(end, End::Closed, "{extra:?}");
        answers.remove(0)
    };
    let plain = ask(&[], false);
    let last = plain
        .field("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let future = "Wed, 01 Jan 2098 00:00:00 GMT";
    let past = "Wed, 01 Jan 2003 00:00:00 GMT";
    for head in [false, true] {
        for since in [future, last.as_str(), "Wed Jan  1 00:00:00 2098"] {
            let a = ask(&[&format!("If-Modified-Since: {since}")], head);
            assert_eq!(a.status, 304, "{since}");
            assert!(a.body.is_empty());
            assert_eq!(a.field("last-modified"), Some(last.as_str()));
            assert!(
                matches!(a.field("content-length"), None | Some("100")),
                "a 304 says nothing of its length but the file's (RFC 9110 8.6): {a:?}"
            );
        }
    }
    for garbage in [
        "garbage",
        "",
        "Wed, 31 Feb 2098 00:00:00 GMT",
        "Wed, 01 Jan 2098 00:00:00 PST",
        "99999999999999999999",
    ] {
        for field in ["If-Modified-Since", "If-Unmodified-Since"] {
            let a = ask(&[&format!("{field}: {garbage}")], false);
            assert_eq!(a.status, 200, "{field}: {garbage:?} is ignored");
            assert_eq!(a.body, SMALL_BODY);
        }
    }
    let a = ask(&[&format!("If-Unmodified-Since: {past}")], false);
    assert_eq!(a.status, 412);
    assert!(a.body.is_empty());
    let a = ask(&[&format!("If-Unmodified-Since: {future}")], false);
    assert_eq!(a.status, 200);
    // If-Range: the exact date gets the range; anything else the whole file.
    let a = ask(&["Range: bytes=0-9", &format!("If-Range: {last}")], false);
    assert_eq!((a.status, a.body.as_slice()), (206, &SMALL_BODY[..10]));
    for validator in [
        past,
        future,
        "\"etag\"",
        "W/\"etag\"",
        "*",
        "garbage",
        "",
        &format!("W/{last}"),
    ] {
        let a = ask(
            &["Range: bytes=0-9", &format!("If-Range: {validator}")],
            false,
        );
        assert_eq!(a.status, 200, "If-Range: {validator}");
        assert_eq!(a.body, SMALL_BODY, "If-Range: {validator}");
    }
    still_well(&mut daemon);
}

/// A HEAD answers exactly the head the GET would (bar the Date), and no body: checked on one
/// keep-alive connection, where a body sent after a HEAD would be read as the next answer.
#[test]
fn head_and_get_answer_the_same_head() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("/pkg/{SMALL}"), vec![]),
        (format!("/pkg/{SMALL}"), vec!["Range: bytes=3-7"]),
        (format!("/pkg/{SMALL}"), vec!["Range: bytes=500-"]),
        (format!("/pkg/{SIG}"), vec![]),
        (format!("/pkg/{EMPTY}"), vec![]),
        (format!("/pkg/{BIG}"), vec!["Range: bytes=-10"]),
        ("/pkg/absent-1-1-any.pkg.tar.zst".to_owned(), vec![]),
        ("/nowhere".to_owned(), vec![]),
        ("/metrics".to_owned(), vec![]),
    ];
    let mut bytes = Vec::new();
    let mut heads = Vec::new();
    for (path, extra) in &cases {
        for method in ["HEAD", "GET", "HEAD"] {
            bytes.extend_from_slice(&request(method, path, extra));
            heads.push(method == "HEAD");
        }
    }
    bytes.extend_from_slice(&request("GET", "/", &["Connection: close"]));
    heads.push(false);
    let (got, end) = exchange(&host, port, &bytes, 5.0, 0);
    let answers = responses(&got, &heads);
    assert_eq!(answers.len(), heads.len(), "{answers:?}");
    assert_eq!(end, End::Closed);
    for (i, (path, extra)) in cases.iter().enumerate() {
        let (head, get, head2) = (&answers[3 * i], &answers[3 * i + 1], &answers[3 * i + 2]);
        assert!(head.body.is_empty());
        assert_eq!(head.status, get.status, "{path} {extra:?}");
        if path != "/metrics" {
            // The metrics count the requests in between; their fields must still agree.
            assert_eq!(head.fields, get.fields, "{path} {extra:?}");
        }
        assert_eq!(
            head.fields.keys().collect::<Vec<_>>(),
            get.fields.keys().collect::<Vec<_>>()
        );
        assert_eq!(head2.status, get.status);
        let announced: usize = get.field("content-length").unwrap().parse().unwrap();
        assert_eq!(announced, get.body.len(), "{path} {extra:?}");
    }
    still_well(&mut daemon);
}

/// Only files in the cache named as packages are ever served: no escape by `..`, escapes,
/// doubled slashes, NUL, a symlink out of the cache, or names that are not packages; a query
/// is no part of the name.
#[test]
fn path_tricks_reach_nothing_outside_the_cache() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let port = daemon.http_port;
    let nothing = [
        "/pkg/../pkg/a-1-1-any.pkg.tar.zst.sig".to_owned(),
        "/pkg/..%2foutside%2fsecret-1-1-any.pkg.tar.zst".to_owned(),
        "/pkg/outside/secret-1-1-any.pkg.tar.zst".to_owned(),
        "/pkg/outside%2Fsecret-1-1-any.pkg.tar.zst".to_owned(),
        "/pkg/%2e%2e/outside/secret-1-1-any.pkg.tar.zst".to_owned(),
        "/pkg/evil-1-1-any.pkg.tar.zst".to_owned(),
        "/pkg//a-1-1-any.pkg.tar.zst.sig".to_owned(),
        "//pkg/a-1-1-any.pkg.tar.zst.sig".to_owned(),
        "/pkg/a-1-1-any.pkg.tar.zst.sig%00".to_owned(),
        "/pkg/a-1-1-any.pkg.tar.zst.sig%00.pkg.tar.zst".to_owned(),
        "/pkg/a-1-1-any.pkg.tar.zst.sig/".to_owned(),
        "/pkg/a-1-1-any.pkg.tar.zst.sig/.".to_owned(),
        "/pkg/.".to_owned(),
        "/pkg/".to_owned(),
        "/pkg".to_owned(),
        "/PKG/a-1-1-any.pkg.tar.zst.sig".to_owned(),
        "/pkg/%2fetc%2fpasswd".to_owned(),
        "/pkg/outside".to_owned(),
        "/cache/../pkg/a-1-1-any.pkg.tar.zst.sig".to_owned(),
        "/cache/..%2f..%2fetc%2fpasswd".to_owned(),
        format!("/pkg/{}", "%2e%2e%2f".repeat(20) + "etc/passwd"),
    ];
    for path in &nothing {
        let (got, _) = exchange(
            &host,
            port,
            &request("GET", path, &["Connection: close"]),
            3.0,
            0,
        );
        let answers = responses(&got, &[]);
        assert_eq!(answers.len(), 1, "{path}");
        assert_eq!(answers[0].status, 404, "{path}: {answers:?}");
        assert!(answers[0].body.is_empty(), "{path}");
    }
    for path in [
        format!("/pkg/{SIG}?x=/../../etc/passwd"),
        format!("/pkg/{SIG}#frag"),
        "/pkg/a-1-1-any.pkg.tar.zst%2esig".to_owned(),
        "/pkg/a%2d1-1-any.pkg.tar.zst.sig".to_owned(),
    ] {
        let (got, _) = exchange(
            &host,
            port,
            &request("GET", &path, &["Connection: close"]),
            3.0,
            0,
        );
        let answers = responses(&got, &[]);
        assert_eq!(answers[0].status, 200, "{path}");
        assert_eq!(answers[0].body, b"sig", "{path}");
    }
    still_well(&mut daemon);
}

/// Floods that cost the daemon nothing lasting: 64 connections per source and no more; clients
/// that pipeline hundreds of requests and never read, and clients that ask for a file and never
/// read, all dropped once they accept nothing for 10 s; RSS and threads bounded meanwhile.
#[test]
fn floods_of_non_reading_clients_stay_bounded() {
    let Some((host, mut daemon, _cache)) = loopback_daemon() else {
        return;
    };
    let pid = daemon.pid();
    let threads_before = proc_kb(pid, "Threads:");
    // Four sources (127.0.0.2-5) open 64 connections each, then 8 more from 127.0.0.2.
    let script = format!(
        "import socket, sys, time\n\
         pipelined = b'GET /pkg/{SIG} HTTP/1.1\\r\\n\\r\\n' * 300\n\
         big = b'GET /pkg/{BIG} HTTP/1.1\\r\\n\\r\\n' * 2\n\
         socks = []\n\
         for src in range(2, 6):\n\
         \x20   for i in range(64):\n\
         \x20       s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n\
         \x20       s.settimeout(3); s.bind(('127.0.0.%d' % src, 0)); s.connect(('127.0.0.1', {port}))\n\
         \x20       s.sendall(pipelined if i % 2 else big); socks.append(s)\n\
         extra = []\n\
         for i in range(8):\n\
         \x20   s = socket.socket(); s.settimeout(3); s.bind(('127.0.0.2', 0)); s.connect(('127.0.0.1', {port}))\n\
         \x20   extra.append(s)\n\
         time.sleep(1)\n\
         refused = 0\n\
         for s in extra:\n\
         \x20   try:\n\
         \x20       refused += s.recv(1) == b''\n\
         \x20   except OSError:\n\
         \x20       refused += 1\n\
         print('refused', refused, flush=True)\n\
         time.sleep(30)\n",
        port = daemon.http_port
    );
    let mut flood = host
        .command("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_rss = 0;
    let mut peak_threads = 0;
    let mut peak_fds = 0;
    let start = Instant::now();
    let mut drained_at = None;
    // Sample for up to 30 s (the flood's own life): the daemon must have closed every
    // connection well before, 10 s after each stopped accepting bytes.
    while start.elapsed() < Duration::from_secs(30) {
        peak_rss = peak_rss.max(proc_kb(pid, "VmRSS:"));
        peak_threads = peak_threads.max(proc_kb(pid, "Threads:"));
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        peak_fds = peak_fds.max(fds);
        if start.elapsed() > Duration::from_secs(3) && fds < 40 {
            drained_at = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut out = String::new();
    use std::io::Read;
    let _ = flood.kill();
    let _ = flood.stdout.take().unwrap().read_to_string(&mut out);
    let _ = flood.wait();
    eprintln!(
        "FLOOD: {out} peak RSS {peak_rss} kB, threads {threads_before}->{peak_threads}, \
         fds {peak_fds}, drained after {drained_at:?}"
    );
    assert!(
        out.contains("refused 8"),
        "the 65th connection of a source is closed: {out}"
    );
    assert!(
        peak_fds > 256,
        "the flood was served: {peak_fds} descriptors"
    );
    assert!(drained_at.is_some(), "connections still open after 30 s");
    assert!(peak_rss < 48 * 1024, "RSS {peak_rss} kB");
    assert!(
        peak_threads <= threads_before + 4,
        "slow clients cost memory, not threads: {threads_before} -> {peak_threads}"
    );
    // Still serving.
    let (got, _) = exchange(
        &host,
        daemon.http_port,
        &request("GET", &format!("/pkg/{SIG}"), &["Connection: close"]),
        5.0,
        0,
    );
    assert_eq!(responses(&got, &[])[0].body, b"sig");
    still_well(&mut daemon);
}

/// The agent's socket reads its GET with the same parser, and refuses what it cannot take:
/// bad first lines, other methods, oversized or malformed heads, bodies; a second request on
/// the connection is never answered; and root's own request for a loopback or link-local
/// origin no pacman.conf names is refused when the name is resolved, however it is spelled.
#[test]
fn the_agent_socket_refuses_what_the_port_refuses_and_loopback_origins() {
    let Some((host, mut daemon, cache)) = loopback_daemon() else {
        return;
    };
    let _ = cache;
    let port = daemon.http_port;
    let script = r#"
import socket, sys
def ask(data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('\0pacserved/agent'); s.settimeout(10); s.sendall(data)
    got = b''
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
    except OSError as e:
        got += b'<error>'
    return got
for arg in sys.argv[1:]:
    got = ask(bytes.fromhex(arg))
    sys.stdout.write(got.split(b'\r\n\r\n')[0].replace(b'\r\n', b' | ').decode('utf-8', 'replace') + '\n')
    sys.stdout.write('TAIL %d\n' % len(got.split(b'\r\n\r\n', 1)[-1]))
"#;
    let fetch = |origin: &str| format!("PSRV-AGENT 1 FETCH {origin} 2000 2000\n");
    let get = format!("GET /pkg/{SIG} HTTP/1.1\r\nHost: x\r\n\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello\n".to_vec(), "400"),
        (b"PSRV-AGENT 1 FETCH\n".to_vec(), "400"),
        (
            format!("{} \n", fetch("http://x").trim_end()).into_bytes(),
            "400",
        ),
        (fetch("ftp://x").into_bytes(), "400"),
        (fetch("http://user@x").into_bytes(), "400"),
        (fetch("http://x/path").into_bytes(), "400"),
        (
            [
                fetch("http://x"),
                "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".into(),
            ]
            .concat()
            .into_bytes(),
            "400",
        ),
        (
            [fetch("http://x"), "GET http://y/ HTTP/1.1\r\n\r\n".into()]
                .concat()
                .into_bytes(),
            "400",
        ),
        (
            [
                fetch("http://x"),
                "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n".into(),
            ]
            .concat()
            .into_bytes(),
            "400",
        ),
        (
            [
                fetch("http://x"),
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(17_000)),
            ]
            .concat()
            .into_bytes(),
            "400",
        ),
    ];
    let mut cases = cases;
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://127.1:{port}"),
        format!("http://0x7f000001:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://localhost:{port}"),
        format!("http://0.0.0.0:{port}"),
        format!("http://[::1]:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        format!("http://[0:0:0:0:0:0:0:1]:{port}"),
        format!("http://[::]:{port}"),
        "http://169.254.169.254:80".to_owned(),
    ] {
        // Two requests: the second must never be answered.
        cases.push((
            [fetch(&origin), get.clone(), get.clone()]
                .concat()
                .into_bytes(),
            "502",
        ));
    }
    let args: Vec<String> = cases
        .iter()
        .map(|(b, _)| b.iter().map(|x| format!("{x:02x}")).collect())
        .collect();
    let out = run(host.command("python3").arg("-c").arg(script).args(&args));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2 * cases.len(),
        "{text} {}",
        crate::util::stderr(&out)
    );
    for (i, (sent, status)) in cases.iter().enumerate() {
        let (head, tail) = (lines[2 * i], lines[2 * i + 1]);
        let what = String::from_utf8_lossy(&sent[..sent.len().min(120)]);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what:?}: {head}"
        );
        assert!(head.contains("connection: close"), "{what:?}: {head}");
        assert_eq!(tail, "TAIL 0", "{what:?}: nothing after the refusal");
        if *status == "502" {
            assert!(
                head.contains("refused"),
                "{what:?}: the guard refused it: {head}"
            );
        }
    }
    assert!(
        !daemon
            .log()
            .iter()
            .any(|l| l.contains(&format!("GET /pkg/{SIG} from"))),
        "the agent never reached the daemon's own port"
    );
    still_well(&mut daemon);
}
