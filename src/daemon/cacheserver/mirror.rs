//! The mirror's bytes that keep pacman's transfer alive while a LAN copy arrives: the file's
//! own first bytes (from pacman's offset), taken from the repository's `Server` lines in
//! pacman's order, a small block at a time.
//!
//! They are the bytes pacman would have got from that mirror anyway, so handing them over
//! breaks no rule; whether they are the sync database's file is only known once the verified
//! LAN copy is there, and [`super::stream`] checks them against it before anything else goes
//! out. A block is asked with a Range and taken only from a 206 whose Content-Range names
//! exactly that offset and the sync database's size (or a 200 of that size, from offset 0); a
//! block is [`BLOCK`] bytes, at most one request per block, each within [`BLOCK_TIME`], so a
//! dead or slow mirror costs seconds, and the memory held is one block per answer.

use std::io::Read;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use ureq::Agent;

/// Bytes fetched per request: at [`super::stream`]'s pace (64 bytes every 2 s) a minute of
/// keeping pacman's transfer alive, so a LAN fetch of a few hundred MB takes one block.
pub const BLOCK: u64 = 2048;
/// A block must arrive within this, over all mirrors tried, so that the first bytes still reach
/// pacman well before its 10 s limit.
pub const BLOCK_TIME: Duration = Duration::from_secs(4);
/// Mirrors tried per block, in pacman's order.
const MAX_MIRRORS: usize = 3;

/// The daemon's HTTP client for mirrors' blocks: the system's trust store and proxy, redirects
/// followed as pacman follows them.
pub fn agent() -> Agent {
    let config = Agent::config_builder()
        .tls_config(crate::tls::system_trust())
        .http_status_as_error(false)
        .max_redirects(10)
        .accept_encoding("identity")
        .proxy(ureq::Proxy::try_from_env())
        .user_agent(concat!("pacserved/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::new_with_config(config)
}

/// The file's bytes from one offset on, as the mirrors have them, fetched block by block as
/// [`MirrorBytes::take`] needs them.
pub struct MirrorBytes {
    agent: Agent,
    /// The file on each of its repository's servers, in pacman's order.
    urls: Vec<String>,
    /// The whole file's size (the sync database's).
    size: u64,
    /// The offset of the next block to ask for.
    next: u64,
    /// Nothing at or past this offset is ever asked: the answer's last byte comes from the
    /// verified copy only.
    end: u64,
    block: Vec<u8>,
    taken: usize,
    in_flight: Option<JoinHandle<Result<Vec<u8>, String>>>,
    /// Body bytes received from mirrors so far.
    pub fetched: u64,
}

impl MirrorBytes {
    /// The bytes of a file of `size` from `offset` up to (not including) `end`, from `urls`.
    pub fn new(agent: Agent, urls: Vec<String>, size: u64, (offset, end): (u64, u64)) -> Self {
        MirrorBytes {
            agent,
            urls,
            size,
            next: offset,
            end,
            block: Vec::new(),
            taken: 0,
            in_flight: None,
            fetched: 0,
        }
    }

    /// The next 1 to `n` bytes; Err when no mirror gives them (or there are none left).
    /// Cancel-safe: a block asked for stays asked, and the next call takes it.
    pub async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if self.taken >= self.block.len() {
            if self.in_flight.is_none() {
                self.in_flight = Some(self.ask()?);
            }
            let Some(in_flight) = self.in_flight.as_mut() else {
                return Err("no block asked".to_owned());
            };
            let block = in_flight.await;
            self.in_flight = None;
            let block = block.map_err(|e| format!("the mirror's request failed: {e}"))??;
            self.next += block.len() as u64;
            self.fetched += block.len() as u64;
            (self.block, self.taken) = (block, 0);
        }
        let n = n.min(self.block.len() - self.taken);
        let bytes = self.block[self.taken..self.taken + n].to_vec();
        self.taken += n;
        Ok(bytes)
    }

    /// Starts fetching the next block.
    fn ask(&self) -> Result<JoinHandle<Result<Vec<u8>, String>>, String> {
        let len = BLOCK.min(self.end.saturating_sub(self.next));
        if len == 0 {
            return Err("no more bytes may come from the mirror".to_owned());
        }
        if self.urls.is_empty() {
            return Err("the repository names no http(s) or file server".to_owned());
        }
        let (agent, urls) = (self.agent.clone(), self.urls.clone());
        let (offset, size) = (self.next, self.size);
        Ok(tokio::task::spawn_blocking(move || {
            block(&agent, &urls, (offset, len), size)
        }))
    }
}

/// `len` bytes at `offset` of a file of `size`, from the first of `urls` that gives them.
fn block(
    agent: &Agent,
    urls: &[String],
    (offset, len): (u64, u64),
    size: u64,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + BLOCK_TIME;
    let mut failures = Vec::new();
    for url in urls.iter().take(MAX_MIRRORS) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let got = match url.strip_prefix("file://") {
            Some(path) => from_file(path, offset, len, size),
            None => from_http(agent, url, (offset, len), size, left),
        };
        match got {
            Ok(bytes) => return Ok(bytes),
            Err(why) => failures.push(format!("{url}: {why}")),
        }
    }
    match failures.is_empty() {
        true => Err(format!(
            "no mirror answered within {} s",
            BLOCK_TIME.as_secs()
        )),
        false => Err(failures.join("; ")),
    }
}

/// A local repository (`Server = file:///…`), as pacman reads it.
fn from_file(path: &str, offset: u64, len: u64, size: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let found = file.metadata().map_err(|e| e.to_string())?.len();
    if found != size {
        return Err(format!("{found} bytes, the sync database says {size}"));
    }
    let mut bytes = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn from_http(
    agent: &Agent,
    url: &str,
    (offset, len): (u64, u64),
    size: u64,
    within: Duration,
) -> Result<Vec<u8>, String> {
    let last = offset + len - 1;
    let response = agent
        .get(url)
        .header("Range", format!("bytes={offset}-{last}"))
        .config()
        .timeout_global(Some(within))
        .build()
        .call()
        .map_err(|e| e.to_string())?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err("the mirror encoded the file".to_owned());
    }
    let status = response.status().as_u16();
    let body_len = match status {
        206 => {
            let range = header("content-range").unwrap_or_default();
            let expected = format!("bytes {offset}-{}/{size}", last.min(size - 1));
            if range != expected {
                return Err(format!("Content-Range {range:?}, expected {expected:?}"));
            }
            len
        }
        // A server that ignores ranges: only its first bytes are ours to take.
        200 if offset == 0 && header("content-length") == Some(size.to_string()) => len,
        _ => return Err(format!("answered {status}")),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(body_len).unwrap_or(0));
    response
        .into_body()
        .into_reader()
        .take(body_len)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    match bytes.len() as u64 == body_len {
        true => Ok(bytes),
        false => Err(format!("{} of {body_len} bytes", bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A one-shot server on loopback answering with `head` and `body`; returns its URL and
    /// what it was asked (the request head), once asked.
    fn server(head: &str, body: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/repo/a-1-1-any.pkg.tar.zst",
            listener.local_addr().unwrap()
        );
        let head = head.to_owned();
        let asked = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, asked)
    }

    fn ask(head: &str, body: Vec<u8>, offset: u64) -> (Result<Vec<u8>, String>, String) {
        let (url, asked) = server(head, body);
        let got = block(&agent(), &[url], (offset, 4), 10);
        (got, asked.join().unwrap())
    }

    #[test]
    fn a_block_is_taken_only_from_an_answer_that_names_exactly_it() {
        let (got, asked) = ask(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-5/10\r\nContent-Length: 4\r\n\r\n",
            b"cdef".to_vec(),
            2,
        );
        assert_eq!(got.unwrap(), b"cdef");
        assert!(
            asked.to_ascii_lowercase().contains("range: bytes=2-5\r\n"),
            "{asked}"
        );
        // Another offset, another size (the mirror has another file), or a 200 from the
        // middle: not the bytes asked for.
        for (head, offset) in [
            (
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\nContent-Length: 4\r\n\r\n",
                2,
            ),
            (
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-5/11\r\nContent-Length: 4\r\n\r\n",
                2,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 2),
            ("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n", 0),
            (
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n",
                0,
            ),
        ] {
            let (got, _) = ask(head, b"abcdefghij".to_vec(), offset);
            assert!(got.is_err(), "{head:?} at {offset}: {got:?}");
        }
        // A server that ignores ranges gives the file's first bytes, of the right size.
        let (got, _) = ask(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            b"abcdefghij".to_vec(),
            0,
        );
        assert_eq!(got.unwrap(), b"abcd");
        // Short: the connection ends before the block does.
        let (got, _) = ask(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\nConnection: close\r\n\r\n",
            b"ab".to_vec(),
            0,
        );
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn a_local_repository_is_read_where_pacman_reads_it_and_only_at_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1-1-any.pkg.tar.zst");
        std::fs::write(&path, b"abcdefghij").unwrap();
        let url = format!("file://{}", path.display());
        assert_eq!(
            block(&agent(), std::slice::from_ref(&url), (3, 4), 10).unwrap(),
            b"defg"
        );
        assert!(block(&agent(), &[url], (3, 4), 11).is_err());
    }

    #[tokio::test]
    async fn blocks_come_one_at_a_time_and_never_reach_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1-1-any.pkg.tar.zst");
        let file: Vec<u8> = (0..=255u8).cycle().take(BLOCK as usize * 2 + 10).collect();
        std::fs::write(&path, &file).unwrap();
        let size = file.len() as u64;
        let urls = vec![format!("file://{}", path.display())];
        // From offset 5 to the end, the last byte excluded.
        let mut bytes = MirrorBytes::new(agent(), urls, size, (5, size - 1));
        let mut got = Vec::new();
        for _ in 0..size {
            match bytes.take(1000).await {
                Ok(chunk) => got.extend(chunk),
                Err(_) => break,
            }
        }
        assert_eq!(got, file[5..file.len() - 1]);
        assert_eq!(bytes.fetched, size - 6);
    }
}
