//! pacserve-fetch's command line, and how it combines with `/etc/pacserve/pacserve-fetch.conf`
//! and the invoking pacman into the [`Settings`] of one download.
//!
//! Precedence, highest first: pacserve-fetch's own options; its configuration file; what the
//! invoking pacman was told (its `--config`, `-b`, `--cachedir`, `--root`, `--sysroot`, `-yy`,
//! read from its command line by [`Invocation::of_parent`]); `/etc/pacman.conf`; pacman's
//! defaults. `--pacman-conf` names pacman's configuration outright and so replaces the
//! invocation's `--config`; `--dbpath` replaces any DBPath.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::cli::{Shell, parse_seconds};
use crate::client::checks;
use crate::client::fetch::Settings;
use crate::client::peers::discovery::Discovery;
use crate::client::terminal::progress::Verbosity;
use crate::client::transfer::limits::Limits;
use crate::config::{self, ConfigError, FileConfig};
use crate::pacman::invocation::{self, Invocation, Paths};
use crate::protocol::netif;

/// Download one file for pacman from a LAN peer or the mirror, resuming a partial file.
#[derive(Debug, Parser)]
#[command(name = "pacserve-fetch", version, about, long_about = None)]
pub struct FetchArgs {
    /// File to write: pacman's %o (…/name.part). Nothing else is written.
    #[arg(required_unless_present_any = ["who_has", "list_peers", "completions"])]
    pub output: Option<PathBuf>,
    /// URL to fetch: pacman's %u (http://, https:// or file://).
    #[arg(required_unless_present_any = ["who_has", "list_peers", "completions"])]
    pub url: Option<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Explain each step on stderr.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Give up connecting to a server after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub connect_timeout: Duration,
    /// Give up on a server that sends nothing for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub stall_timeout: Duration,
    /// Move on from a LAN peer that sends nothing for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_seconds)]
    pub peer_stall_timeout: Duration,
    /// Also ask this peer directly, HOST or HOST:PORT (repeatable); for networks multicast does
    /// not reach, such as VPNs.
    #[arg(long = "peer", value_name = "HOST[:PORT]")]
    pub peers: Vec<String>,
    /// Do not ask LAN peers; use the mirror only.
    #[arg(long)]
    pub no_peers: bool,
    /// Never use the mirror: only a LAN peer's copy that the sync database vouches for, else
    /// fail (what pacserved's CacheServer endpoint asks).
    #[arg(long, conflicts_with = "no_peers")]
    pub peers_only: bool,
    /// Ask only the static peers, sending no multicast.
    #[arg(long)]
    pub no_multicast: bool,
    /// Send queries only on this interface (repeatable). Default: every up, multicast-capable,
    /// non-loopback interface.
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// Send queries only on interfaces with an address in this network, ADDR/PREFIX
    /// (repeatable): peers are asked at home, and not on a café's Wi-Fi. Default: any network.
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Wait at most this long for peers to answer [default: 100].
    #[arg(long, value_name = "MS")]
    pub peer_wait: Option<u64>,
    /// UDP port the daemons listen on [default: 15678].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Also use daemons on this machine (normally skipped: pacman already checked its cache).
    #[arg(long)]
    pub include_self: bool,
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = config::FETCH_PATH)]
    pub config: PathBuf,
    /// pacman's configuration, read for DBPath [default: the invoking pacman's --config, else
    /// /etc/pacman.conf].
    #[arg(long, value_name = "FILE")]
    pub pacman_conf: Option<PathBuf>,
    /// pacman's database directory, whose sync databases vouch for what peers send
    /// [default: the invoking pacman's DBPath, else pacman.conf's, else /var/lib/pacman].
    #[arg(long, value_name = "DIR")]
    pub dbpath: Option<PathBuf>,
    /// Also take files no sync database lists (pacman -U URL) from peers, unverified.
    #[arg(long)]
    pub unverified_peers: bool,
    /// Download from the mirror directly even when the local pacserved offers its agent.
    #[arg(long)]
    pub no_agent: bool,
    /// The local pacserved's agent socket, an abstract Unix socket name [default: pacserved/agent].
    #[arg(long, value_name = "NAME")]
    pub agent_socket: Option<String>,
    /// Instead of downloading: list the daemons that answer for FILE, with round-trip times.
    #[arg(long, value_name = "FILE", conflicts_with = "list_peers")]
    pub who_has: Option<String>,
    /// Instead of downloading: list every daemon that answers at all.
    #[arg(long)]
    pub list_peers: bool,
    /// Print a shell completion script and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
}

impl FetchArgs {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            _ => Verbosity::Verbose,
        }
    }

    /// Defaults, then the invoking pacman, then the configuration file, then the command line.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.settings_for(Invocation::of_parent().as_ref())
    }

    /// pacman's paths for this download: `--pacman-conf` (or the invoking pacman's own
    /// resolution, or /etc/pacman.conf), with `--dbpath` over any DBPath.
    pub fn pacman_paths(&self, invocation: Option<&Invocation>) -> Paths {
        let mut paths = match (&self.pacman_conf, invocation) {
            (Some(conf), _) => Paths::default_for(conf),
            (None, Some(invocation)) => invocation.paths(),
            (None, None) => Paths::default_for(Path::new(invocation::DEFAULT_CONFIG)),
        };
        if let Some(dbpath) = &self.dbpath {
            paths.dbpath = dbpath.clone();
        }
        paths
    }

    /// [`FetchArgs::settings`] for a given invoking pacman (None: run by hand).
    pub fn settings_for(&self, invocation: Option<&Invocation>) -> Result<Settings, ConfigError> {
        let required = self.config != Path::new(config::FETCH_PATH);
        let file: FileConfig = config::load(&self.config, required)?;
        let defaults = Discovery::default();
        let port = self.port.or(file.port).unwrap_or(defaults.port);
        let named = |what: &str| {
            let path = PathBuf::from(what);
            move |message| ConfigError { path, message }
        };
        let in_file = |key: &str| {
            let path = self.config.clone();
            let key = key.to_owned();
            move |message| ConfigError {
                path,
                message: format!("{key}: {message}"),
            }
        };
        let mut peers = file.peers.unwrap_or_default();
        for peer in &peers {
            checks::peer(peer, port, false).map_err(in_file("peers"))?;
        }
        for peer in &self.peers {
            checks::peer(peer, port, true).map_err(named("--peer"))?;
        }
        peers.extend(self.peers.iter().cloned());
        checks::interfaces(&self.interfaces).map_err(named("--interface"))?;
        if let Some(names) = &file.interfaces {
            checks::interfaces(names).map_err(in_file("interfaces"))?;
        }
        let networks = match &self.networks[..] {
            [] => netif::parse_networks(&file.networks.unwrap_or_default())
                .map_err(in_file("networks"))?,
            given => netif::parse_networks(given).map_err(named("--network"))?,
        };
        let discovery = Discovery {
            port,
            networks,
            multicast: !self.no_multicast && file.multicast.unwrap_or(true),
            interfaces: if self.interfaces.is_empty() {
                file.interfaces.unwrap_or_default()
            } else {
                self.interfaces.clone()
            },
            static_peers: peers,
            wait: self
                .peer_wait
                .or(file.peer_wait_ms)
                .map_or(defaults.wait, Duration::from_millis),
            include_self: self.include_self,
            ..defaults
        };
        let use_peers = !self.no_peers && file.use_peers.unwrap_or(true);
        let paths = self.pacman_paths(invocation);
        Ok(Settings {
            limits: Limits {
                connect: self.connect_timeout,
                stall: self.stall_timeout,
                ..Limits::default()
            },
            peer_limits: Limits {
                connect: self.peer_stall_timeout.min(self.connect_timeout),
                stall: self.peer_stall_timeout,
                ..Limits::peer_default()
            },
            user_agent: std::env::var("HTTP_USER_AGENT")
                .ok()
                .filter(|ua| !ua.is_empty())
                .unwrap_or_else(|| Settings::default().user_agent),
            discovery: use_peers.then_some(discovery),
            dbpath: paths.dbpath,
            pacman_conf: paths.config,
            gpgdir: paths.gpgdir,
            forced_refresh: invocation.is_some_and(Invocation::forced_refresh),
            unverified_peers: self.unverified_peers || file.unverified_peers.unwrap_or(false),
            agent_socket: (!self.no_agent && file.use_agent.unwrap_or(true)).then(|| {
                (self.agent_socket.clone().or(file.agent_socket))
                    .unwrap_or_else(|| crate::protocol::agent::DEFAULT_SOCKET.to_owned())
            }),
            peers_only: self.peers_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn explicit_options_win_over_the_invoking_pacman() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pacman.conf");
        std::fs::write(&conf, "[options]\nDBPath = /from/conf\n").unwrap();
        let words = format!("-Syy --config {} -b /from/cli", conf.display());
        let words: Vec<OsString> = words.split(' ').map(OsString::from).collect();
        let pacman = Invocation::parse(&words);
        let args = |extra: &[&str]| {
            let mut argv = vec!["pacserve-fetch", "--config", "/dev/null"];
            argv.extend(extra);
            argv.extend(["/x/core.db.part", "http://m/core.db"]);
            FetchArgs::parse_from(argv)
        };

        let s = args(&[]).settings_for(Some(&pacman)).unwrap();
        assert_eq!(s.dbpath, Path::new("/from/cli"));
        assert!(s.forced_refresh);
        let conf_arg = conf.to_str().unwrap();
        let s = args(&["--pacman-conf", conf_arg])
            .settings_for(Some(&pacman))
            .unwrap();
        assert_eq!(
            s.dbpath,
            Path::new("/from/conf"),
            "--pacman-conf replaces --config and -b"
        );
        let s = args(&["--dbpath", "/mine"])
            .settings_for(Some(&pacman))
            .unwrap();
        assert_eq!(s.dbpath, Path::new("/mine"));
        let s = args(&["--dbpath", "/mine"]).settings_for(None).unwrap();
        assert!(!s.forced_refresh, "by hand nothing is forced");
    }
}
