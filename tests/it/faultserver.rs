//! A scripted HTTP/1.1 server for the cases a correct server like nginx never produces: it
//! ignores Range, lies in Content-Range, closes mid-body, stalls, encodes the body, redirects.
//! Each server handles a bounded number of connections and stops when dropped or after a minute.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Always 200 with the whole file.
    IgnoreRange,
    /// Honour Range, but claim the answer starts `skew` bytes later than asked.
    LieInContentRange { skew: u64 },
    /// Honour Range, announce the full length, but close after `after` body bytes.
    CloseAfter { after: usize },
    /// Send headers and `after` body bytes, then nothing until the client leaves.
    StallAfter { after: usize },
    /// Accept the connection and never answer.
    Silent,
    /// Answer with this status and a short body.
    Status(u16),
    /// Claim `Content-Encoding: gzip`.
    Gzip,
    /// 302 to this URL.
    RedirectTo(String),
    /// Serve the file honouring Range (as a good server, for proxy tests).
    Good,
}

pub struct FaultServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultServer {
    pub fn start(content: Vec<u8>, behaviour: Behaviour) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || serve(listener, &content, &behaviour, &stop, &requests))
        };
        FaultServer {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const MAX_CONNECTIONS: usize = 16;
const LIFETIME: Duration = Duration::from_secs(60);

fn serve(
    listener: TcpListener,
    content: &[u8],
    behaviour: &Behaviour,
    stop: &AtomicBool,
    requests: &Mutex<Vec<String>>,
) {
    let deadline = Instant::now() + LIFETIME;
    let mut served = 0;
    while served < MAX_CONNECTIONS && Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                served += 1;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(mut head) = read_head(&stream) else {
                    continue;
                };
                if let Ok(mut r) = requests.lock() {
                    r.push(head.clone());
                }
                // As a proxy: accept the tunnel, then answer the request that comes through it.
                if head.starts_with("CONNECT ") {
                    let _ = (&stream).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                    let Some(inner) = read_head(&stream) else {
                        continue;
                    };
                    head = inner;
                }
                answer(stream, &head, content, behaviour, stop);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn read_head(mut stream: &TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn range_start(head: &str) -> Option<u64> {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(str::to_owned)
        })
        .and_then(|r| r.trim().trim_end_matches('-').parse().ok())
}

fn answer(
    mut stream: TcpStream,
    head: &str,
    content: &[u8],
    behaviour: &Behaviour,
    stop: &AtomicBool,
) {
    let len = content.len() as u64;
    let start = range_start(head).filter(|&s| s <= len).unwrap_or(0);
    let honour_range = |extra: &str| -> (String, &[u8]) {
        let body = &content[start as usize..];
        let head = if range_start(head).is_some() {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\n{extra}",
                len.saturating_sub(1),
                body.len()
            )
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{extra}")
        };
        (head, body)
    };
    let (head, body, limit): (String, &[u8], Option<usize>) = match behaviour {
        Behaviour::IgnoreRange => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            content,
            None,
        ),
        Behaviour::LieInContentRange { skew } => {
            let body = &content[start as usize..];
            (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{len}\r\nContent-Length: {}\r\n",
                    start + skew,
                    len - 1,
                    body.len()
                ),
                body,
                None,
            )
        }
        Behaviour::CloseAfter { after } => {
            let (h, b) = honour_range("");
            (h, b, Some(*after))
        }
        Behaviour::StallAfter { after } => {
            let (h, b) = honour_range("");
            let _ = stream.write_all(format!("{h}Connection: close\r\n\r\n").as_bytes());
            let _ = stream.write_all(&b[..(*after).min(b.len())]);
            // Hold the connection open, sending nothing, until the client gives up or we stop.
            let deadline = Instant::now() + LIFETIME;
            let mut sink = [0u8; 64];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                match stream.read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
            return;
        }
        Behaviour::Silent => {
            let deadline = Instant::now() + LIFETIME;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        Behaviour::Status(code) => (
            format!("HTTP/1.1 {code} Scripted\r\nContent-Length: 8\r\n"),
            b"scripted".as_slice(),
            None,
        ),
        Behaviour::Gzip => {
            let (h, b) = honour_range("Content-Encoding: gzip\r\n");
            (h, b, None)
        }
        Behaviour::RedirectTo(url) => (
            format!("HTTP/1.1 302 Found\r\nLocation: {url}\r\nContent-Length: 0\r\n"),
            b"".as_slice(),
            None,
        ),
        Behaviour::Good => {
            let (h, b) = honour_range("");
            (h, b, None)
        }
    };
    let _ = stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
    let body = &body[..limit.unwrap_or(body.len()).min(body.len())];
    let _ = stream.write_all(body);
    let _ = stream.flush();
}
