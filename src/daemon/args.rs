//! pacserved's command line, and how it combines with `/etc/pacserve/pacserved.conf` into the
//! daemon's [`Config`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::Shell;
use crate::config::{self, ConfigError, DaemonFileConfig};
use crate::daemon::Config;
use crate::daemon::allow::Allowlist;
use crate::daemon::upcap;
use crate::pacman;
use crate::protocol;
use crate::protocol::netif;

/// Files fetched ahead per transaction: pacman's own default of ParallelDownloads.
const DEFAULT_PREFETCH: usize = 5;

/// Answer LAN peers' queries for files in the pacman cache and serve them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "pacserved", version, about, long_about = None)]
pub struct DaemonArgs {
    /// Cache directory to share (repeatable). Default: CacheDir from pacman.conf, else
    /// /var/cache/pacman/pkg.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// pacman's configuration, read for CacheDir and DBPath.
    #[arg(long, value_name = "FILE", default_value = "/etc/pacman.conf")]
    pub pacman_conf: PathBuf,
    /// pacman's database directory, whose sync databases vouch for what the /cache/ endpoint
    /// serves. Default: DBPath from pacman.conf, else /var/lib/pacman.
    #[arg(long, value_name = "DIR")]
    pub dbpath: Option<PathBuf>,
    /// The pacserve-fetch the /cache/ endpoint runs [default: the one next to pacserved].
    #[arg(long, value_name = "FILE")]
    pub fetch_program: Option<PathBuf>,
    /// TCP port for HTTP (0 picks a free port and logs it) [default: 15678].
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// UDP port for discovery queries [default: 15678].
    #[arg(long, value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// Listen for queries only on this interface (repeatable). Default: every up,
    /// multicast-capable, non-loopback interface, including ones that appear later.
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// IPv4 multicast group.
    #[arg(long, value_name = "ADDR", default_value_t = protocol::GROUP_V4, value_parser = parse_group_v4)]
    pub group_v4: Ipv4Addr,
    /// IPv6 multicast group.
    #[arg(long, value_name = "ADDR", default_value_t = protocol::GROUP_V6, value_parser = parse_group_v6)]
    pub group_v6: Ipv6Addr,
    /// Announce the HTTP service over mDNS as _pacserve._tcp, as pacredir's peers do.
    #[arg(long)]
    pub mdns: bool,
    /// Answer and serve only this network, ADDR/PREFIX or ADDR (repeatable); replaces the
    /// default of loopback, link-local and private ranges.
    #[arg(long = "allow", value_name = "NETWORK")]
    pub allow: Vec<String>,
    /// Do not be the download agent of this machine's pacserve-fetch.
    #[arg(long)]
    pub no_agent: bool,
    /// The agent's abstract Unix socket name [default: pacserved/agent].
    #[arg(long, value_name = "NAME")]
    pub agent_socket: Option<String>,
    /// Files of a pacman transaction the agent fetches at once ahead of pacman (up to 256 MiB
    /// ahead); 0 turns prefetch off
    /// [default: 5].
    #[arg(long, value_name = "N")]
    pub prefetch: Option<usize>,
    /// Bytes per second all LAN peers together may download from this machine, with K, M or G
    /// (e.g. 10M); 0 means no limit [default: 0].
    #[arg(long, value_name = "RATE", value_parser = upcap::parse_rate)]
    pub upload_limit: Option<u64>,
    /// This host's link speed in Mbit/s, which other daemons weigh when choosing who fetches
    /// from the mirror and who relays; auto reads it from the kernel (a wireless interface
    /// counts as 100) [default: auto].
    #[arg(long, value_name = "MBIT", value_parser = parse_link_speed)]
    pub link_speed: Option<LinkSpeed>,
    /// Where the daemon's id and the agent's staged files are kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/pacserved")]
    pub state_dir: PathBuf,
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = config::DAEMON_PATH)]
    pub config: PathBuf,
    /// Print a shell completion script and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
}

impl DaemonArgs {
    /// Defaults, then the configuration file, then the command line.
    pub fn daemon_config(&self) -> Result<Config, ConfigError> {
        let required = self.config != Path::new(config::DAEMON_PATH);
        let file: DaemonFileConfig = config::load(&self.config, required)?;
        let cache_dirs = match (&self.cache_dirs[..], file.cache_dirs) {
            ([], Some(dirs)) if !dirs.is_empty() => dirs,
            ([], _) => pacman::conf::cache_dirs(&self.pacman_conf),
            (dirs, _) => dirs.to_vec(),
        };
        for dir in &cache_dirs {
            if dir.exists() && !dir.is_dir() {
                return Err(ConfigError {
                    path: dir.clone(),
                    message:
                        "not a directory (--cache-dir names the directory holding the packages)"
                            .into(),
                });
            }
        }
        let (interfaces, named_in) = match self.interfaces.is_empty() {
            true => (file.interfaces.unwrap_or_default(), self.config.clone()),
            false => (self.interfaces.clone(), "--interface".into()),
        };
        if let Some(name) = interfaces.iter().find(|n| !netif::exists(n)) {
            return Err(ConfigError {
                path: named_in,
                message: format!("{name}: no such network interface"),
            });
        }
        Ok(Config {
            cache_dirs,
            http_port: self.http_port.or(file.http_port).unwrap_or(protocol::PORT),
            udp_port: self.udp_port.or(file.udp_port).unwrap_or(protocol::PORT),
            group_v4: self.group_v4,
            group_v6: self.group_v6,
            interfaces,
            mdns: self.mdns || file.mdns.unwrap_or(false),
            allow: match (&self.allow[..], file.allow) {
                ([], None) => Allowlist::default(),
                ([], Some(list)) => Allowlist::parse(&list).map_err(|message| ConfigError {
                    path: self.config.clone(),
                    message,
                })?,
                (list, _) => Allowlist::parse(list).map_err(|message| ConfigError {
                    path: "--allow".into(),
                    message,
                })?,
            },
            state_dir: self.state_dir.clone(),
            agent_socket: (!self.no_agent && file.agent.unwrap_or(true)).then(|| {
                (self.agent_socket.clone().or(file.agent_socket))
                    .unwrap_or_else(|| protocol::agent::DEFAULT_SOCKET.to_owned())
            }),
            prefetch: self.prefetch.or(file.prefetch).unwrap_or(DEFAULT_PREFETCH),
            pacman_conf: self.pacman_conf.clone(),
            dbpath: (self.dbpath.clone()).unwrap_or_else(|| {
                pacman::invocation::Paths::default_for(&self.pacman_conf).dbpath
            }),
            fetch_program: (self.fetch_program.clone())
                .unwrap_or_else(pacman::pacsrv::fetch_program),
            upload_limit: match (self.upload_limit, file.upload_limit) {
                (Some(rate), _) => rate,
                (None, Some(value)) => {
                    upcap::parse_rate(&value).map_err(|message| ConfigError {
                        path: self.config.clone(),
                        message: format!("upload-limit: {message}"),
                    })?
                }
                (None, None) => 0,
            },
            link_speed: match (self.link_speed, file.link_speed) {
                (Some(LinkSpeed(speed)), _) => speed,
                (None, Some(value)) => {
                    parse_link_speed(&value)
                        .map_err(|message| ConfigError {
                            path: self.config.clone(),
                            message: format!("link-speed: {message}"),
                        })?
                        .0
                }
                (None, None) => None,
            },
        })
    }
}

/// `--link-speed`: Mbit/s, or `auto` (None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpeed(pub Option<u16>);

fn parse_link_speed(value: &str) -> Result<LinkSpeed, String> {
    match value.trim() {
        "auto" => Ok(LinkSpeed(None)),
        number => number
            .parse::<u16>()
            .map(|m| LinkSpeed(Some(m)))
            .map_err(|_| format!("{value}: expected Mbit/s (0 to 65535, e.g. 1000) or auto")),
    }
}

/// `--group-v4`: a group the responder can join; anything else would never see a query.
fn parse_group_v4(value: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = value.parse().map_err(|e| format!("{value}: {e}"))?;
    match addr.is_multicast() {
        true => Ok(addr),
        false => Err(format!("{value} is not a multicast address (224.0.0.0/4)")),
    }
}

/// `--group-v6`, as [`parse_group_v4`].
fn parse_group_v6(value: &str) -> Result<Ipv6Addr, String> {
    let addr: Ipv6Addr = value.parse().map_err(|e| format!("{value}: {e}"))?;
    match addr.is_multicast() {
        true => Ok(addr),
        false => Err(format!("{value} is not a multicast address (ff00::/8)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbpath_comes_from_pacman_conf_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pacman.conf");
        std::fs::write(&conf, "[options]\nDBPath = /from/conf/\n").unwrap();
        let config = |extra: &[&str]| {
            let mut argv = vec!["pacserved", "--config", "/dev/null", "--pacman-conf"];
            argv.push(conf.to_str().unwrap());
            argv.extend(extra);
            DaemonArgs::parse_from(argv).daemon_config().unwrap()
        };
        assert_eq!(config(&[]).dbpath, Path::new("/from/conf/"));
        assert_eq!(config(&["--dbpath", "/mine"]).dbpath, Path::new("/mine"));
        let program = config(&[]).fetch_program;
        assert_eq!(program.file_name().unwrap(), "pacserve-fetch");
        let given = config(&["--fetch-program", "/x/fetch"]).fetch_program;
        assert_eq!(given, Path::new("/x/fetch"));
    }
}
