//! `pacserve-fetch '%o' '%u'`: pacman's XferCommand. Argument parsing and error printing only;
//! the work is `pacserve_fetch::fetch::fetch`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser};
use pacserve_fetch::fetch::{self, Settings};
use pacserve_fetch::progress::{Progress, Verbosity};
use pacserve_fetch::transfer::Limits;
use pacserve_fetch::{interrupt, Error};

/// Download one file for pacman, resuming a partial one.
#[derive(Debug, Parser)]
#[command(name = "pacserve-fetch", version, about, long_about = None)]
struct Args {
    /// File to write: pacman's %o (…/name.part). Nothing else is written.
    output: PathBuf,
    /// URL to fetch: pacman's %u (http://, https:// or file://).
    url: String,
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let verbosity = match (args.quiet, args.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    let kept = format!("interrupted; {} kept for resuming", args.output.display());
    if let Err(e) = interrupt::exit_on_signal(kept) {
        eprintln!("pacserve-fetch: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let settings = Settings {
        limits: Limits {
            connect: args.connect_timeout,
            stall: args.stall_timeout,
        },
        user_agent: std::env::var("HTTP_USER_AGENT")
            .ok()
            .filter(|ua| !ua.is_empty())
            .unwrap_or_else(|| Settings::default().user_agent),
    };
    let mut progress = Progress::new(verbosity);
    match fetch::fetch(&settings, &args.output, &args.url, &mut progress) {
        Ok(report) => {
            progress.note(|| format!("{}: {}", report.source, report.delivered));
            ExitCode::SUCCESS
        }
        Err(e) => {
            progress.abandon();
            eprintln!("pacserve-fetch: {e}");
            match e {
                Error::Interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("expected a positive number of seconds, got {text:?}")),
    }
}
