//! One HTTP/1.1 request head: read off a connection and parsed.
//!
//! The parser is httparse's; this module decides what its result means for the daemon: only
//! GET and HEAD are served, a request with a body is answered and its connection closed (no
//! route takes a body, so reading one would only let it be taken for the next request), a
//! head larger than the limit is refused (431) and anything malformed is a 400. The path is
//! percent-decoded once, here, so that every route sees the same name the client meant.

use std::io::{self, BufRead};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Header lines a request may have.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, e.g. `/pkg/vim-2%3A9.1-1-x86_64.pkg.tar.zst`.
    pub target: String,
    /// The target's path, percent-decoded, without a query.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Bytes of the buffer this head took.
    pub len: usize,
    /// Another request may follow: HTTP/1.1 without `Connection: close`, and no body.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Why a head could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Malformed: 400.
    Bad,
    /// Larger than the limit: 431.
    TooLarge,
}

impl Refused {
    pub fn status(self) -> u16 {
        match self {
            Refused::Bad => 400,
            Refused::TooLarge => 431,
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Head(Request),
    Partial,
    Refused(Refused),
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    #[cfg(test)]
    tests::PARSES.with(|n| n.set(n.get() + 1));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(Refused::TooLarge),
        Err(_) => return Parsed::Refused(Refused::Bad),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Parsed::Refused(Refused::Bad);
    };
    let mut pairs = Vec::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Parsed::Refused(Refused::Bad);
        };
        pairs.push((h.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let Some(path) = decode_path(target) else {
        return Parsed::Refused(Refused::Bad);
    };
    let lengths: Vec<&str> = pairs
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let has_body = pairs
        .iter()
        .any(|(n, _)| n == "transfer-encoding" || n == "expect")
        || lengths.len() > 1
        || lengths.first().is_some_and(|v| *v != "0");
    let close = pairs
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    Parsed::Head(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path,
        headers: pairs,
        len,
        keep_alive: minor == 1 && !close && !has_body,
    })
}

/// The path of a request target, percent-decoded; None when it is not an origin-form path or
/// does not decode to UTF-8.
fn decode_path(target: &str) -> Option<String> {
    let path = target.split(['?', '#']).next()?;
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Exactly two hex digits (from_str_radix alone would take `%+0` for a NUL).
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What came in on a connection.
#[derive(Debug)]
pub enum Read {
    Head(Request),
    Refused(Refused),
    /// The client closed, or sent nothing complete within the time given.
    Gone,
}

/// Reads until `buf` holds a complete request head, `max_bytes` are buffered, or `timeout`
/// passes. `buf` may already hold bytes (a pipelined request); they are parsed first.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
    max_bytes: usize,
) -> Read {
    let deadline = Instant::now() + timeout;
    let mut new_line = !buf.is_empty();
    loop {
        if new_line {
            match parse(buf) {
                Parsed::Head(head) => return Read::Head(head),
                Parsed::Refused(why) => return Read::Refused(why),
                Parsed::Partial => {}
            }
        }
        if buf.len() >= max_bytes {
            return Read::Refused(Refused::TooLarge);
        }
        let room = max_bytes - buf.len();
        // Without spare capacity read_buf would read 64 bytes at a time.
        buf.reserve(room.min(4096));
        let before = buf.len();
        let mut limited = (&mut *stream).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Read::Gone,
            Ok(Ok(_)) => {}
        }
        new_line = ends_a_line(buf, before);
    }
}

/// Whether the bytes from `from` on complete a line. A head ends with a line, so parsing again
/// before one completes would only rescan what was parsed already: a client dripping a 16 KiB
/// head a byte at a time would otherwise cost 16 K parses of up to 16 KiB each (quadratic CPU).
/// A head has at most [`MAX_HEADERS`] + 2 lines before it is taken or refused, which bounds the
/// parses of one head.
fn ends_a_line(buf: &[u8], from: usize) -> bool {
    buf[from..].contains(&b'\n')
}

/// [`read_head`] for a blocking reader (the agent's socket, whose read timeout bounds it).
pub fn read_head_blocking(reader: &mut impl BufRead, max_bytes: usize) -> io::Result<Request> {
    let mut buf = Vec::new();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Take at most what this head may be, and never more than its end: what follows is
        // not ours to read.
        let take = chunk.len().min(max_bytes + 1 - buf.len());
        buf.extend_from_slice(&chunk[..take]);
        let parsed = match ends_a_line(&buf, buf.len() - take) {
            true => parse(&buf),
            false => Parsed::Partial,
        };
        match parsed {
            Parsed::Head(head) => {
                let had = buf.len() - take;
                reader.consume(head.len - had);
                return Ok(head);
            }
            Parsed::Refused(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} request head", why.status()),
                ));
            }
            Parsed::Partial if buf.len() > max_bytes => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too large",
                ));
            }
            Parsed::Partial => reader.consume(take),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    thread_local! {
        /// Calls of [`parse`] on this thread.
        pub static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_head_dripped_a_byte_at_a_time_is_parsed_once_per_line() {
        let head = [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX: "[..],
            &[b'a'; 8000],
            b"\r\nY: b\r\n\r\n",
        ]
        .concat();
        let (mut client, mut server) = tokio::io::duplex(64);
        let drip = async {
            for byte in &head {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        let mut buf = Vec::new();
        PARSES.with(|n| n.set(0));
        let read =
            async { read_head(&mut server, &mut buf, Duration::from_secs(30), 16 * 1024).await };
        let ((), read) = tokio::join!(drip, read);
        assert!(
            matches!(read, Read::Head(ref h) if h.header("y") == Some("b")),
            "{read:?}"
        );
        let parses = PARSES.with(|n| n.get());
        assert!(parses <= 6, "{parses} parses of a 5-line head");
        // The blocking reader (the agent's), a byte per read.
        PARSES.with(|n| n.set(0));
        let mut reader = std::io::BufReader::with_capacity(1, &head[..]);
        let h = read_head_blocking(&mut reader, 16 * 1024).unwrap();
        assert_eq!(h.header("y"), Some("b"));
        let parses = PARSES.with(|n| n.get());
        assert!(parses <= 6, "{parses} parses of a 5-line head");
        // Malformed bytes are still refused at the end of their line, and a head that never
        // ends a line at the limit.
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"\x16\x03\x01 tls\r\n").await.unwrap();
        let read = read_head(&mut server, &mut Vec::new(), Duration::from_secs(5), 100).await;
        assert!(matches!(read, Read::Refused(Refused::Bad)), "{read:?}");
        client.write_all(&[b'a'; 200]).await.unwrap();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; 200]).await.unwrap();
        let read = read_head(&mut server, &mut Vec::new(), Duration::from_secs(5), 100).await;
        assert!(matches!(read, Read::Refused(Refused::TooLarge)), "{read:?}");
    }

    fn head(bytes: &[u8]) -> Request {
        match parse(bytes) {
            Parsed::Head(head) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_parsed_and_its_path_decoded() {
        let first = b"GET /pkg/vim-2%3A9.1-1-any.pkg.tar.zst?x HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n";
        let h = head(&[&first[..], b"GET /"].concat());
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/pkg/vim-2:9.1-1-any.pkg.tar.zst");
        assert_eq!(h.header("range"), Some("bytes=5-"));
        assert!(h.keep_alive);
        assert_eq!(h.len, first.len());
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies_close_the_connection_and_bad_heads_are_refused() {
        for with_body in [
            &b"POST /pkg/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET /pkg/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /pkg/a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /pkg/a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nGET /",
        ] {
            assert!(!head(with_body).keep_alive, "{with_body:?}");
        }
        assert!(head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
        for bad in [
            &b"\x16\x03\x01 not http at all\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET /a%zz HTTP/1.1\r\n\r\n",
            b"GET /a%ff%fe HTTP/1.1\r\n\r\n",
            b"GET /a%+0 HTTP/1.1\r\n\r\n",
            b"GET /a%-1 HTTP/1.1\r\n\r\n",
            b"GET /a%4 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Parsed::Refused(Refused::Bad), "{bad:?}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost:"), Parsed::Partial);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn heads_are_read_within_their_limits_and_pipelined_bytes_stay() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let Read::Head(first) = read_head(&mut server, &mut buf, Duration::from_secs(5), 999).await
        else {
            panic!("a head")
        };
        assert_eq!(first.path, "/a");
        buf.drain(..first.len);
        let mut nothing = tokio::io::empty();
        let Read::Head(second) =
            read_head(&mut nothing, &mut buf, Duration::from_secs(5), 999).await
        else {
            panic!("the pipelined head")
        };
        assert_eq!(second.path, "/b");
        // A head that never ends within the limit; one cut short.
        let long = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 300]].concat();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&long).await.unwrap();
        let mut buf = Vec::new();
        let read = read_head(&mut server, &mut buf, Duration::from_secs(5), 100).await;
        assert!(matches!(read, Read::Refused(Refused::TooLarge)), "{read:?}");
        assert_eq!(buf.len(), 100, "no more than the limit is read");
        drop(client);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let read = read_head(&mut server, &mut Vec::new(), Duration::from_secs(5), 100).await;
        assert!(matches!(read, Read::Gone));
    }

    #[test]
    fn a_blocking_reader_takes_the_head_and_leaves_the_rest() {
        let mut reader = std::io::BufReader::with_capacity(
            7,
            &b"GET /x HTTP/1.1\r\nRange: bytes=1-\r\n\r\nPLAN"[..],
        );
        let h = read_head_blocking(&mut reader, 4096).unwrap();
        assert_eq!(h.header("range"), Some("bytes=1-"));
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        assert_eq!(rest, "PLAN");
        let long = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 300]].concat();
        assert!(read_head_blocking(&mut &long[..], 100).is_err());
    }
}
