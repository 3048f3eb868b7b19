//! Reading one HTTP/1.1 request head off a connection ourselves, and giving the bytes back.
//!
//! The server reads each request head before hyper does, so that a plain `GET /pkg/<file>` of a
//! cache file can be answered by the kernel ([`crate::daemon::sendfile`]) rather than through
//! hyper's body machinery. Anything else — another route, a body, HTTP/1.0, a head that does
//! not parse or is too large — is handed to hyper untouched: [`Rewind`] replays the bytes already
//! read, so hyper sees the connection exactly as the client sent it and keeps every answer it
//! gives today (400, 431, 304, 412, 416, the status page, `/cache/`). Parsing is httparse's, the
//! parser hyper itself uses; this module only decides what to do with its result.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Header lines a request may have before it is left to hyper (whose limit is 100).
const MAX_HEADERS: usize = 64;

/// A parsed request head that the fast path may serve.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The request target as sent, e.g. `/pkg/foo-1-1-any.pkg.tar.zst`.
    pub target: String,
    pub headers: HeaderMap,
    /// Bytes of the buffer this head took.
    pub len: usize,
    /// HTTP/1.1 without `Connection: close`: another request may follow.
    pub keep_alive: bool,
}

/// What came in on the connection.
#[derive(Debug)]
pub enum Read {
    /// A complete HTTP/1.1 head of a request without a body.
    Head(Head),
    /// Something only hyper should answer; the buffer holds everything read so far.
    ForHyper,
    /// The client closed, or sent nothing complete within the header timeout.
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
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Head(head) => return Read::Head(head),
                Parsed::ForHyper => return Read::ForHyper,
                Parsed::Partial if buf.len() >= max_bytes => return Read::ForHyper,
                Parsed::Partial => {}
            }
        }
        let room = max_bytes - buf.len();
        // Without spare capacity read_buf would read 64 bytes at a time.
        buf.reserve(room.min(4096));
        let mut limited = (&mut *stream).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Read::Gone,
            Ok(Ok(_)) => {}
        }
    }
}

enum Parsed {
    Head(Head),
    Partial,
    ForHyper,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::ForHyper,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::ForHyper;
    };
    let mut map = HeaderMap::new();
    for h in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::ForHyper;
        };
        map.append(name, value);
    }
    // A body, or a framing hyper must judge (several Content-Length values, one of them
    // perhaps not 0, would otherwise let the "body" be read as the next request).
    let lengths = map.get_all(header::CONTENT_LENGTH).iter().count();
    let has_body = map.contains_key(header::TRANSFER_ENCODING)
        || lengths > 1
        || map
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body || map.contains_key(header::EXPECT) || map.contains_key(header::UPGRADE) {
        return Parsed::ForHyper;
    }
    let close = map
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    Parsed::Head(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: map,
        len,
        keep_alive: !close,
    })
}

/// A stream that first yields `prefix`, then reads on from `inner`; writes go to `inner`.
pub struct Rewind<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.prefix.len() {
            let rest = &self.prefix[self.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read += n;
            if self.read == self.prefix.len() {
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_from(sent: &[u8], max: usize) -> (Read, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(sent).await.unwrap();
        drop(client);
        let mut buf = Vec::new();
        let mut read = read_head(&mut server, &mut buf, Duration::from_secs(5), max).await;
        // Whatever the first head left unread comes in now, as it would for hyper.
        if matches!(read, Read::ForHyper) {
            server.read_to_end(&mut buf).await.unwrap();
        }
        if let Read::Head(head) = &mut read {
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            buf.extend(rest);
            head.len = head.len.min(buf.len());
        }
        (read, buf)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_plain_get_is_ours_and_a_pipelined_one_stays_in_the_buffer() {
        let first = b"GET /pkg/a.pkg.tar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n";
        let both = [&first[..], b"GET / HTTP/1.1\r\n\r\n"].concat();
        let (read, buf) = read_from(&both, 16 * 1024).await;
        let Read::Head(head) = read else {
            panic!("not a head: {read:?}")
        };
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/pkg/a.pkg.tar.zst");
        assert_eq!(head.headers[header::RANGE], "bytes=5-");
        assert_eq!(head.len, first.len());
        assert!(head.keep_alive);
        assert_eq!(&buf[head.len..], b"GET / HTTP/1.1\r\n\r\n");
        // The next head is parsed from what is left, without reading.
        let mut rest = buf[head.len..].to_vec();
        let mut nothing = tokio::io::empty();
        let next = read_head(&mut nothing, &mut rest, Duration::from_secs(5), 999).await;
        assert!(
            matches!(next, Read::Head(Head { ref target, .. }) if target == "/"),
            "{next:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_hyper_must_answer_is_left_to_it() {
        for sent in [
            &b"GET /pkg/a HTTP/1.0\r\n\r\n"[..],
            b"POST /pkg/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /pkg/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /pkg/a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /pkg/a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nGET /",
            b"\x16\x03\x01 not http at all\r\n\r\n",
        ] {
            let (read, buf) = read_from(sent, 16 * 1024).await;
            assert!(matches!(read, Read::ForHyper), "{sent:?}: {read:?}");
            assert_eq!(buf, sent, "hyper gets every byte back");
        }
        // A head that never ends within the limit: hyper answers 431.
        let long = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 300]].concat();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&long).await.unwrap();
        let mut buf = Vec::new();
        let read = read_head(&mut server, &mut buf, Duration::from_secs(5), 100).await;
        assert!(matches!(read, Read::ForHyper), "{read:?}");
        assert_eq!(buf, long[..100], "no more than the limit is read");
        let (read, _) = read_from(b"GET /pkg/a HTTP/1.1\r\nConnection: close\r\n\r\n", 999).await;
        assert!(matches!(
            read,
            Read::Head(Head {
                keep_alive: false,
                ..
            })
        ));
        let (read, _) = read_from(b"GET /pkg/a HTTP/1.1\r\n", 999).await;
        assert!(matches!(read, Read::Gone), "{read:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rewind_replays_the_prefix_then_the_stream() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut rewound = Rewind::new(b"hello".to_vec(), server);
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
