//! The system configuration files (TOML): `/etc/pacserve/pacserve-fetch.conf` for the client
//! and `/etc/pacserve/pacserved.conf` for the daemon.
//!
//! It lives in /etc and must be world-readable because pacman 7 runs us as its unprivileged
//! download user, whose `$HOME` may still point at root's: nothing is read from the user's
//! home. Command-line options override it. A missing default file means "all defaults"; a file
//! that exists but cannot be read or parsed is an error naming the file and the problem, since
//! silently ignoring a peer list would be worse.
//!
//! ```toml
//! peers = ["10.8.0.2", "nas.lan:15678"]   # static peers, asked by unicast
//! use-peers = true                        # false: mirror only
//! multicast = true                        # false: static peers only
//! interfaces = []                         # empty: every up, multicast-capable interface
//! networks = ["192.168.1.0/24"]           # ask only on interfaces in these; empty: any
//! peer-wait-ms = 100                      # longest wait for answers
//! port = 15678                            # daemons' UDP port
//! unverified-peers = false                # files no sync database lists: mirror only
//! use-agent = true                        # false: never hand downloads to the local pacserved
//! agent-socket = "pacserved/agent"        # its abstract socket name
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const FETCH_PATH: &str = "/etc/pacserve/pacserve-fetch.conf";
pub const DAEMON_PATH: &str = "/etc/pacserve/pacserved.conf";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub peers: Option<Vec<String>>,
    pub use_peers: Option<bool>,
    pub multicast: Option<bool>,
    pub interfaces: Option<Vec<String>>,
    pub networks: Option<Vec<String>>,
    pub peer_wait_ms: Option<u64>,
    pub port: Option<u16>,
    pub unverified_peers: Option<bool>,
    pub use_agent: Option<bool>,
    pub agent_socket: Option<String>,
}

/// The daemon's file: the same keys as its long options.
///
/// ```toml
/// cache-dirs = ["/var/cache/pacman/pkg"]   # default: CacheDir from pacman.conf
/// http-port = 15678
/// udp-port = 15678
/// interfaces = []
/// mdns = false
/// allow = ["192.168.1.0/24"]              # default: loopback, link-local, private ranges
/// agent = true                            # false: no download agent for local pacserve-fetch
/// agent-socket = "pacserved/agent"        # its abstract socket name
/// prefetch = 5                            # files fetched ahead per pacman transaction; 0: off
/// upload-limit = "0"                      # bytes/s all peers together may take (K, M, G); 0: no limit
/// link-speed = "auto"                     # this host's link in Mbit/s, or auto: read from the kernel
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonFileConfig {
    pub cache_dirs: Option<Vec<PathBuf>>,
    pub http_port: Option<u16>,
    pub udp_port: Option<u16>,
    pub interfaces: Option<Vec<String>>,
    pub mdns: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub agent: Option<bool>,
    pub agent_socket: Option<String>,
    pub prefetch: Option<usize>,
    pub upload_limit: Option<String>,
    pub link_speed: Option<String>,
}

#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads `path`; when `required` is false a missing file gives the defaults.
pub fn load<T: Default + serde::de::DeserializeOwned>(
    path: &Path,
    required: bool,
) -> Result<T, ConfigError> {
    let error = |message: String| ConfigError {
        path: path.to_owned(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(T::default());
        }
        Err(e) => return Err(error(e.to_string())),
    };
    toml::from_str(&text).map_err(|e| {
        let place = e.span().map(|span| line_and_column(&text, span.start));
        error(match place {
            Some((line, column)) => format!("line {line}, column {column}: {}", e.message()),
            None => e.message().to_owned(),
        })
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`, as editors count.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_names_unknown_ones() {
        let c: FileConfig = toml::from_str("peers = [\"10.0.0.2\"]\npeer-wait-ms = 50\n").unwrap();
        assert_eq!(c.peers.as_deref(), Some(&["10.0.0.2".to_owned()][..]));
        assert_eq!(c.peer_wait_ms, Some(50));
        let err = toml::from_str::<FileConfig>("peer = 1").unwrap_err();
        assert!(
            err.message().contains("unknown field `peer`"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_bad_file_is_named_with_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacserved.conf");
        std::fs::write(&path, "# ok\nhttp-port = 15678\nudp-port = \"x\"\n").unwrap();
        let err = load::<DaemonFileConfig>(&path, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pacserved.conf: line 3, column 12: "), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_required_one_is_not() {
        let missing = Path::new("/nonexistent/pacserve-fetch.conf");
        assert_eq!(
            load::<FileConfig>(missing, false).unwrap(),
            FileConfig::default()
        );
        assert!(
            load::<FileConfig>(missing, true)
                .unwrap_err()
                .to_string()
                .starts_with("/nonexistent/")
        );
    }
}
