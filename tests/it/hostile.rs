//! The hostile peer (hostile_peer.py) run inside a test host: it answers every query HAVE and
//! then misbehaves as its mode says.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::netns::Host;
use crate::util::tempdir;

const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/hostile_peer.py");

pub struct Hostile {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Hostile {
    pub fn start(host: &Host, mode: &str, real_file: &std::path::Path, own_ip: &str) -> Hostile {
        Hostile::start_with(host, mode, real_file, own_ip, &[])
    }

    /// As [`Hostile::start`], with the `HOSTILE_*` settings hostile_peer.py documents.
    pub fn start_with(
        host: &Host,
        mode: &str,
        real_file: &std::path::Path,
        own_ip: &str,
        env: &[(&str, String)],
    ) -> Hostile {
        let dir = tempdir();
        let log = dir.path().join("hostile.log");
        let mut child = host
            .command("python3")
            .arg(HOSTILE)
            .arg(mode)
            .arg(real_file)
            .arg(&log)
            .arg(own_ip)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start hostile peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready");
        Hostile {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
