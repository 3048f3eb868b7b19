//! nginx from Debian as a real mirror: correct Range, If-Modified-Since and Last-Modified, and an
//! access log that shows exactly what crossed the wire for each request.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util;

/// One request as the access log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub status: u16,
    /// Body bytes nginx sent (headers excluded).
    pub body_bytes: u64,
    /// The Range header, "" when absent.
    pub range: String,
    pub if_modified_since: String,
    pub user_agent: String,
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Extra behaviour for a test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Requests without a Range header get 256 KiB fast, then 64 KiB/s: slow enough for a test to
    /// interrupt a download, while resumed (Range) requests run at full speed.
    pub throttle_fresh: bool,
}

impl Nginx {
    /// nginx serving `root` on 127.0.0.1, or None (after the policy in `util::require`) when
    /// nginx is not installed.
    pub fn start(root: &Path) -> Option<Nginx> {
        Nginx::start_with(root, Options::default())
    }

    pub fn start_with(root: &Path, options: Options) -> Option<Nginx> {
        let binary = util::find_tool("nginx");
        if !util::require(binary.is_some(), "nginx is not installed (apt-get install nginx-light)") {
            return None;
        }
        let binary = binary?;
        // Bind-then-release can race with another process taking the port; retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let dir = util::tempdir();
            fs::write(dir.path().join("nginx.conf"), config(dir.path(), root, port, options))
                .expect("write nginx.conf");
            fs::create_dir_all(dir.path().join("tmp")).expect("nginx tmp dir");
            let child = Command::new(&binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut server = Nginx { child, port, dir };
            if server.wait_ready() {
                return Some(server);
            }
        }
        panic!("nginx did not start on any of 5 ports");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// The access log so far, oldest first.
    pub fn log(&self) -> Vec<Logged> {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// Log entries for requests whose path ends with `name`.
    pub fn requests_for(&self, name: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.path.ends_with(name)).collect()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn config(dir: &Path, root: &Path, port: u16, options: Options) -> String {
    let d = dir.display();
    let throttle = if options.throttle_fresh {
        "limit_rate_after $fast_bytes; limit_rate $slow_rate;"
    } else {
        ""
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format t '$uri\t$status\t$body_bytes_sent\t$http_range\t$http_if_modified_since\t$http_user_agent';
    access_log {d}/access.log t;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    default_type application/octet-stream;
    map $http_range $fast_bytes {{ "" 256k; default 0; }}
    map $http_range $slow_rate {{ "" 64k; default 0; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ {throttle} }}
    }}
}}
"#,
        root = root.display()
    )
}

fn parse_line(line: &str) -> Option<Logged> {
    let mut f = line.split('\t');
    let dash = |s: &str| if s == "-" { String::new() } else { s.to_owned() };
    Some(Logged {
        path: f.next()?.to_owned(),
        status: f.next()?.parse().ok()?,
        body_bytes: f.next()?.parse().ok()?,
        range: dash(f.next()?),
        if_modified_since: dash(f.next()?),
        user_agent: dash(f.next()?),
    })
}
