//! `pacserved`: share this machine's pacman cache with LAN peers. Options only; the daemon is
//! `pacserve_fetch::daemon`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pacserve_fetch::{daemon, pacmanconf, protocol};

/// Answer LAN peers' queries for files in the pacman cache and serve them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "pacserved", version, about, long_about = None)]
struct Args {
    /// Cache directory to share (repeatable). Default: CacheDir from pacman.conf, else
    /// /var/cache/pacman/pkg.
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dirs: Vec<PathBuf>,
    /// pacman's configuration, read for CacheDir.
    #[arg(long, value_name = "FILE", default_value = "/etc/pacman.conf")]
    pacman_conf: PathBuf,
    /// TCP port for HTTP (0 picks a free port and logs it).
    #[arg(long, value_name = "PORT", default_value_t = protocol::PORT)]
    http_port: u16,
    /// UDP port for discovery queries.
    #[arg(long, value_name = "PORT", default_value_t = protocol::PORT)]
    udp_port: u16,
    /// Listen for queries only on this interface (repeatable). Default: every up,
    /// multicast-capable, non-loopback interface, including ones that appear later.
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// IPv4 multicast group.
    #[arg(long, value_name = "ADDR", default_value_t = protocol::GROUP_V4)]
    group_v4: Ipv4Addr,
    /// IPv6 multicast group.
    #[arg(long, value_name = "ADDR", default_value_t = protocol::GROUP_V6)]
    group_v6: Ipv6Addr,
    /// Where the daemon's id is kept across restarts.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/pacserved")]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cache_dirs = if args.cache_dirs.is_empty() {
        pacmanconf::cache_dirs(&args.pacman_conf)
    } else {
        args.cache_dirs
    };
    let config = daemon::Config {
        cache_dirs,
        http_port: args.http_port,
        udp_port: args.udp_port,
        group_v4: args.group_v4,
        group_v6: args.group_v6,
        interfaces: args.interfaces,
        state_dir: args.state_dir,
    };
    match daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            pacserve_fetch::warn!("{e}");
            ExitCode::FAILURE
        }
    }
}
