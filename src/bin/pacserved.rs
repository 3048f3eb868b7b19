//! `pacserved`: share this machine's pacman cache with LAN peers. Options only; the daemon is
//! `pacserve_fetch::daemon`.

use std::process::ExitCode;

use clap::Parser;
use pacserve_fetch::cli;
use pacserve_fetch::daemon;
use pacserve_fetch::daemon::args::DaemonArgs;
use pacserve_fetch::daemon::journal;

fn main() -> ExitCode {
    let args = DaemonArgs::parse();
    if let Some(shell) = args.completions {
        cli::print_completions::<DaemonArgs>(shell);
        return ExitCode::SUCCESS;
    }
    let result = args
        .daemon_config()
        .map_err(|e| e.to_string())
        .and_then(|config| daemon::run(config).map_err(|e| e.to_string()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Fatal: the daemon does not run. Labelled an error, for the terminal and journald.
            journal::write(journal::Level::Error, format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}
