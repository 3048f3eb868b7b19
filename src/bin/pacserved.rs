//! `pacserved`: share this machine's pacman cache with LAN peers. Options only; the daemon is
//! `pacserve_fetch::daemon`.

use std::process::ExitCode;

use clap::Parser;
use pacserve_fetch::cli;
use pacserve_fetch::daemon;
use pacserve_fetch::daemon::args::DaemonArgs;

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
            pacserve_fetch::warn!("{e}");
            ExitCode::FAILURE
        }
    }
}
