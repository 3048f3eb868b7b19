//! `pacserve-fetch '%o' '%u'`: pacman's XferCommand, and by hand a way to see the LAN's peers.
//! Argument parsing and printing only; the work is `pacserve_fetch::client::fetch::fetch`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use pacserve_fetch::cli;
use pacserve_fetch::client::Error;
use pacserve_fetch::client::args::FetchArgs;
use pacserve_fetch::client::checks;
use pacserve_fetch::client::fetch;
use pacserve_fetch::client::peers::discovery;
use pacserve_fetch::client::peers::explain;
use pacserve_fetch::client::terminal::interrupt;
use pacserve_fetch::client::terminal::progress::{Progress, Verbosity};
use pacserve_fetch::pacman::name::{self, FileKind};

/// A name no daemon holds, so every live daemon answers MISS: `--list-peers` asks for it.
/// Internal: the listing never shows it.
const PROBE_NAME: &str = "pacserve-probe-0-0-any.pkg.tar.zst";

fn main() -> ExitCode {
    let args = FetchArgs::parse();
    let result = match (&args.who_has, args.list_peers, args.completions) {
        (_, _, Some(shell)) => {
            cli::print_completions::<FetchArgs>(shell);
            Ok(ExitCode::SUCCESS)
        }
        (Some(name), _, _) if !name::is_shareable_name(name) => Ok(bad_arguments(format!(
            "--who-has {name:?}: not a package or signature file name (at most 255 bytes, \
             e.g. foo-1.0-1-x86_64.pkg.tar.zst)"
        ))),
        (Some(name), _, _) => who_has(&args, Some(name)),
        (None, true, _) => who_has(&args, None),
        (None, false, _) => download(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pacserve-fetch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn download(args: &FetchArgs) -> anyhow::Result<ExitCode> {
    let (Some(output), Some(url)) = (&args.output, &args.url) else {
        return Ok(bad_arguments("OUTPUT and URL are required"));
    };
    if let Err(e) = checks::url(url) {
        return Ok(bad_arguments(e));
    }
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(e) => return Ok(bad_arguments(e)),
    };
    interrupt::exit_on_signal(format!(
        "interrupted; {} kept for resuming",
        output.display()
    ))
    .context("cannot handle signals")?;
    let mut progress = Progress::new(args.verbosity());
    match fetch::fetch(&settings, output, url, &mut progress) {
        Ok(report) => {
            progress.note(|| format!("{}: {}", report.source, report.delivered));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            progress.abandon();
            // With `SigLevel = Optional` most signatures do not exist; pacman's own downloader
            // says nothing about them, so neither do we unless asked to explain.
            let kind = name::requested_name(output, url).map(FileKind::of);
            let missing_signature = e.is_not_found()
                && matches!(
                    kind,
                    Some(FileKind::PackageSignature | FileKind::DatabaseSignature)
                );
            if !missing_signature || args.verbosity() == Verbosity::Verbose {
                eprintln!("pacserve-fetch: {e}");
            }
            Ok(match e {
                Error::Interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            })
        }
    }
}

/// Exit status 2, as documented for bad arguments and configuration: the value is named.
fn bad_arguments(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("pacserve-fetch: {e}");
    ExitCode::from(2)
}

/// `--who-has NAME`, or with no name `--list-peers`. Exit status 1 when no daemon answered at
/// all (nobody to ask, or nobody listening), so a script can tell "no LAN" from a LAN whose
/// daemons lack the file; whether anyone has it is in the listing.
fn who_has(args: &FetchArgs, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(e) => return Ok(bad_arguments(e)),
    };
    let mut discovery = settings.discovery.unwrap_or_default();
    // By hand, show this host's daemon too (marked), rather than hide it.
    discovery.include_self = true;
    let started = Instant::now();
    // The full wait: a listing should show everyone, not stop at the daemons seen last time.
    let asked = discovery::ask_detailed(
        &discovery,
        name.unwrap_or(PROBE_NAME),
        "",
        &Default::default(),
    )
    .context("asking peers")?;
    let listing = match name {
        Some(name) => discovery::render_answers(&asked.answers, name, started.elapsed()),
        None => discovery::render_peers(&asked.answers, started.elapsed()),
    };
    print!("{listing}");
    if args.verbosity() == Verbosity::Verbose {
        for why in &asked.skipped {
            eprintln!("pacserve-fetch: {why}");
        }
    }
    if asked.sent == 0 {
        eprintln!("pacserve-fetch: {}", explain::nobody_to_ask(&discovery));
    }
    Ok(match asked.answers.is_empty() {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    })
}
