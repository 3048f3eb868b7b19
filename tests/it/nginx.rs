//! nginx from Debian as a real mirror: correct Range, If-Modified-Since and Last-Modified, and an
//! access log that shows exactly what crossed the wire for each request.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Host;
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
    /// nginx's connection serial number: equal for requests on one kept-alive connection.
    pub connection: u64,
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    https: bool,
}

/// Extra behaviour for a test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Requests without a Range header get 256 KiB fast, then 64 KiB/s: slow enough for a test to
    /// interrupt a download, while resumed (Range) requests run at full speed.
    pub throttle_fresh: bool,
    /// Every request at 256 KiB/s, so a test can interrupt a download again and again.
    pub throttle_all: bool,
    /// nginx as a production server runs: a master with one worker per core, sendfile; the
    /// reference for benchmarks.
    pub production: bool,
    /// HTTPS with a certificate for 127.0.0.1 signed by a private CA made for this server
    /// ([`Nginx::ca_file`]), which no trust store knows.
    pub https: bool,
    /// With `https`, the certificate also names this address (a LAN host's).
    pub https_ip: Option<std::net::IpAddr>,
}

impl Nginx {
    /// nginx serving `root` on 127.0.0.1, or None (after the policy in `util::require`) when
    /// nginx is not installed.
    pub fn start(root: &Path) -> Option<Nginx> {
        Nginx::start_with(root, Options::default())
    }

    pub fn start_with(root: &Path, options: Options) -> Option<Nginx> {
        Nginx::start_in(None, root, options)
    }

    /// The usual mirror of the LAN tests: plain nginx on port 8080 of `host`.
    pub fn mirror_on(host: &Host, root: &Path) -> Option<Nginx> {
        Nginx::start_in(Some(host), root, Options::default())
    }

    /// nginx inside a test host's namespace, on port 8080 of every address it has; or on a free
    /// port of 127.0.0.1 in our own namespace when `host` is None.
    pub fn start_in(host: Option<&Host>, root: &Path, options: Options) -> Option<Nginx> {
        let binary = util::find_tool("nginx");
        if !util::require(
            binary.is_some(),
            "nginx is not installed (apt-get install nginx-light)",
        ) {
            return None;
        }
        let binary = binary?;
        let binary = binary.to_str()?;
        // Bind-then-release can race with another process taking the port; retry a few times.
        for _ in 0..5 {
            let (port, listen) = match host {
                Some(_) => (8080, "listen 8080; listen [::]:8080;".to_owned()),
                None => {
                    let port = free_port();
                    (port, format!("listen 127.0.0.1:{port};"))
                }
            };
            let dir = util::tempdir();
            fs::write(
                dir.path().join("nginx.conf"),
                config(dir.path(), root, &listen, options),
            )
            .expect("write nginx.conf");
            fs::create_dir_all(dir.path().join("tmp")).expect("nginx tmp dir");
            if options.https && !make_certificates(dir.path(), options.https_ip) {
                return None;
            }
            let mut command = match host {
                Some(host) => host.command(binary),
                None => Command::new(binary),
            };
            let child = command
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let https = options.https;
            let mut server = Nginx {
                child,
                port,
                dir,
                https,
            };
            if server.wait_ready() {
                return Some(server);
            }
        }
        panic!("nginx did not start on any of 5 ports");
    }

    /// nginx writes its pid file only after binding its ports, in any namespace.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.dir.path().join("nginx.pid").exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            if self.https { "https" } else { "http" },
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The access log so far, oldest first.
    pub fn log(&self) -> Vec<Logged> {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// Log entries for requests whose path ends with `name`.
    pub fn requests_for(&self, name: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.ends_with(name))
            .collect()
    }

    /// Body bytes nginx sent for requests whose path ends with `name`, over all of them.
    pub fn body_bytes(&self, name: &str) -> u64 {
        self.requests_for(name).iter().map(|l| l.body_bytes).sum()
    }

    /// The private CA that signed an HTTPS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The master's pid (with `production`, the workers are its children).
    #[allow(dead_code)] // used by benches/lan.rs
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    /// SIGTERM first, so that a master takes its workers down with it (SIGKILL would leave them
    /// running in a namespace nobody cleans up); SIGKILL after a bounded wait.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

fn config(dir: &Path, root: &Path, listen: &str, options: Options) -> String {
    let d = dir.display();
    // In a user namespace only root is mapped, so nginx's default `nobody` cannot own its temp
    // directories; as root in our own namespace nginx starts no workers, so this changes nothing.
    let user = if util::is_root() || !listen.contains("127.0.0.1") {
        "user root root;"
    } else {
        ""
    };
    let tls = match options.https {
        true => format!("ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;"),
        false => String::new(),
    };
    let listen = match options.https {
        true => listen.replace(';', " ssl;"),
        false => listen.to_owned(),
    };
    let throttle = match (options.throttle_fresh, options.throttle_all) {
        (true, _) => "limit_rate_after $fast_bytes; limit_rate $slow_rate;",
        (false, true) => "limit_rate 256k;",
        (false, false) => "",
    };
    format!(
        r#"daemon off;
master_process {master};
worker_processes {workers};
{user}
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format t '$uri\t$status\t$body_bytes_sent\t$http_range\t$http_if_modified_since\t$http_user_agent\t$connection';
    access_log {d}/access.log t;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    default_type application/octet-stream;
    sendfile {sendfile};
    tcp_nopush {sendfile};
    map $http_range $fast_bytes {{ "" 256k; default 0; }}
    map $http_range $slow_rate {{ "" 64k; default 0; }}
    server {{
        {listen}
        {tls}
        root {root};
        location / {{ {throttle} }}
    }}
}}
"#,
        root = root.display(),
        master = if options.production { "on" } else { "off" },
        workers = if options.production { "auto" } else { "1" },
        sendfile = if options.production { "on" } else { "off" },
    )
}

/// A CA and a server certificate for 127.0.0.1 (and `also`) signed by it, in `dir`; false
/// (after the policy in `util::require`) without openssl.
fn make_certificates(dir: &Path, also: Option<std::net::IpAddr>) -> bool {
    if !util::require_tools(&["openssl"]) {
        return false;
    }
    let san = match also {
        Some(ip) => format!("IP:127.0.0.1,IP:{ip}"),
        None => "IP:127.0.0.1".to_owned(),
    };
    let script = "set -e
        ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
        openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=pacserve-test-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
        openssl req $ec -keyout server.key -out server.csr -subj /CN=127.0.0.1
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' \"$SAN\" > ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 2 -extfile ext";
    let out = util::run(
        Command::new("sh")
            .args(["-c", script])
            .env("SAN", san)
            .current_dir(dir),
    );
    assert!(out.status.success(), "openssl failed");
    true
}

fn parse_line(line: &str) -> Option<Logged> {
    let mut f = line.split('\t');
    let dash = |s: &str| {
        if s == "-" {
            String::new()
        } else {
            s.to_owned()
        }
    };
    Some(Logged {
        path: f.next()?.to_owned(),
        status: f.next()?.parse().ok()?,
        body_bytes: f.next()?.parse().ok()?,
        range: dash(f.next()?),
        if_modified_since: dash(f.next()?),
        user_agent: dash(f.next()?),
        connection: f.next()?.parse().ok()?,
    })
}
