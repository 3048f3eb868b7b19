//! `pacserve-fetch '%o' '%u'`: pacman's XferCommand, and by hand a way to see the LAN's peers.
//! Argument parsing and printing only; the work is `pacserve_fetch::fetch::fetch`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgAction, Parser};
use pacserve_fetch::config::{self, FileConfig};
use pacserve_fetch::discovery::{self, Discovery};
use pacserve_fetch::fetch::{self, Settings};
use pacserve_fetch::progress::{Progress, Verbosity};
use pacserve_fetch::transfer::Limits;
use pacserve_fetch::{Error, interrupt};

/// Download one file for pacman from a LAN peer or the mirror, resuming a partial file.
#[derive(Debug, Parser)]
#[command(name = "pacserve-fetch", version, about, long_about = None)]
struct Args {
    /// File to write: pacman's %o (…/name.part). Nothing else is written.
    #[arg(required_unless_present_any = ["who_has", "list_peers"])]
    output: Option<PathBuf>,
    /// URL to fetch: pacman's %u (http://, https:// or file://).
    #[arg(required_unless_present_any = ["who_has", "list_peers"])]
    url: Option<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Explain each step on stderr.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Give up connecting to a server after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    connect_timeout: Duration,
    /// Give up on a server that sends nothing for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    stall_timeout: Duration,
    /// Also ask this peer directly, HOST or HOST:PORT (repeatable); for networks multicast does
    /// not reach, such as VPNs.
    #[arg(long = "peer", value_name = "HOST[:PORT]")]
    peers: Vec<String>,
    /// Do not ask LAN peers; use the mirror only.
    #[arg(long)]
    no_peers: bool,
    /// Ask only the static peers, sending no multicast.
    #[arg(long)]
    no_multicast: bool,
    /// Send queries only on this interface (repeatable). Default: every up, multicast-capable,
    /// non-loopback interface.
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// Wait at most this long for peers to answer [default: 100].
    #[arg(long, value_name = "MS")]
    peer_wait: Option<u64>,
    /// UDP port the daemons listen on [default: 15678].
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Also use daemons on this machine (normally skipped: pacman already checked its cache).
    #[arg(long)]
    include_self: bool,
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Instead of downloading: list the daemons that answer for FILE, with round-trip times.
    #[arg(long, value_name = "FILE", conflicts_with = "list_peers")]
    who_has: Option<String>,
    /// Instead of downloading: list every daemon that answers at all.
    #[arg(long)]
    list_peers: bool,
}

/// A name no daemon holds, so every live daemon answers MISS.
const PROBE_NAME: &str = "pacserve-probe-0-0-any.pkg.tar.zst";

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.who_has, args.list_peers) {
        (Some(name), _) => who_has(&args, name),
        (None, true) => who_has(&args, PROBE_NAME),
        (None, false) => download(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pacserve-fetch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn download(args: &Args) -> anyhow::Result<ExitCode> {
    let (Some(output), Some(url)) = (&args.output, &args.url) else {
        anyhow::bail!("OUTPUT and URL are required");
    };
    let verbosity = match (args.quiet, args.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    interrupt::exit_on_signal(format!(
        "interrupted; {} kept for resuming",
        output.display()
    ))
    .context("cannot handle signals")?;
    let settings = settings(args)?;
    let mut progress = Progress::new(verbosity);
    match fetch::fetch(&settings, output, url, &mut progress) {
        Ok(report) => {
            progress.note(|| format!("{}: {}", report.source, report.delivered));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            progress.abandon();
            eprintln!("pacserve-fetch: {e}");
            Ok(match e {
                Error::Interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            })
        }
    }
}

fn who_has(args: &Args, name: &str) -> anyhow::Result<ExitCode> {
    let mut discovery = settings(args)?.discovery.unwrap_or_default();
    // By hand, show this host's daemon too (marked), rather than hide it.
    discovery.include_self = true;
    let started = Instant::now();
    // The full wait: a listing should show everyone, not stop at the daemons seen last time.
    let answers =
        discovery::ask(&discovery, name, "", &Default::default()).context("asking peers")?;
    print!(
        "{}",
        discovery::render_answers(&answers, name, started.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

/// Defaults, then the configuration file, then the command line.
fn settings(args: &Args) -> anyhow::Result<Settings> {
    let required = args.config != std::path::Path::new(config::DEFAULT_PATH);
    let file: FileConfig = config::load(&args.config, required)?;
    let defaults = Discovery::default();
    let mut peers = file.peers.unwrap_or_default();
    peers.extend(args.peers.iter().cloned());
    let discovery = Discovery {
        port: args.port.or(file.port).unwrap_or(defaults.port),
        multicast: !args.no_multicast && file.multicast.unwrap_or(true),
        interfaces: if args.interfaces.is_empty() {
            file.interfaces.unwrap_or_default()
        } else {
            args.interfaces.clone()
        },
        static_peers: peers,
        wait: args
            .peer_wait
            .or(file.peer_wait_ms)
            .map_or(defaults.wait, Duration::from_millis),
        include_self: args.include_self,
        ..defaults
    };
    let use_peers = !args.no_peers && file.use_peers.unwrap_or(true);
    Ok(Settings {
        limits: Limits {
            connect: args.connect_timeout,
            stall: args.stall_timeout,
        },
        user_agent: std::env::var("HTTP_USER_AGENT")
            .ok()
            .filter(|ua| !ua.is_empty())
            .unwrap_or_else(|| Settings::default().user_agent),
        discovery: use_peers.then_some(discovery),
    })
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}
