//! `pacsrv [pacman arguments]`: pacman once through pacserve-fetch. Options and help only; the
//! work is `pacserve_fetch::pacman::pacsrv`.

use std::io::Write;
use std::process::{Command, ExitCode};

use pacserve_fetch::client::report;
use pacserve_fetch::pacman::invocation::Invocation;
use pacserve_fetch::pacman::process::Transaction;
use pacserve_fetch::pacman::{include, pacsrv};
use pacserve_fetch::protocol::agent::DEFAULT_SOCKET;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pacsrv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// pacsrv's own help; `pacsrv --help` prints it, then pacman's.
const HELP: &str = "\
pacsrv: run pacman once with pacserve-fetch as its XferCommand, without editing pacman.conf.

Usage: pacsrv [pacman arguments]           e.g. pacsrv -Syu
       pacsrv --include-conf [--in-place] [FILE]
       pacsrv --clean-download-dirs [--config FILE]
       pacsrv --summary | --totals

  --include-conf   print FILE (default /etc/pacman.conf) with `Include = /etc/pacman.d/pacserve`
                   at the top of each repository section (the CacheServer way; never twice)
  --in-place       write the result back to FILE instead of printing it
  --clean-download-dirs [--config FILE]
                   remove the empty download-* directories pacman 7 left behind (run as root,
                   by the shipped pacman hook after every transaction)
  --summary        print where the running transaction's packages came from (run by the
                   shipped pacman hook; pacsrv itself prints it after pacman exits)
  --totals         print where this host's packages came from since pacserved began counting:
                   the LAN (per peer) and the mirror, and what it served to peers

See pacsrv(1). pacman's own help follows.
";

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("--help" | "-h") if args.len() == 1 => {
            println!("{HELP}");
            std::io::stdout().flush().ok();
            let status = Command::new(pacsrv::pacman_program())
                .arg("--help")
                .status();
            return Ok(match status {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            });
        }
        Some("--clean-download-dirs") => {
            // pacman's own options name the directories: --config, -b, --cachedir, --root.
            let paths = Invocation::parse(&args[1..]).paths();
            for dir in pacsrv::remove_empty_download_dirs(&paths) {
                println!("removed {}", dir.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some("--summary") if args.len() == 1 => {
            print_summary(None);
            return Ok(ExitCode::SUCCESS);
        }
        Some("--totals") if args.len() == 1 => {
            let totals = report::totals(DEFAULT_SOCKET).map_err(anyhow::Error::msg)?;
            print!("{}", totals.render());
            return Ok(ExitCode::SUCCESS);
        }
        Some("--include-conf") => {
            return match include::include_conf_command(&args[1..]) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("pacsrv: {e}");
                    Ok(ExitCode::from(2))
                }
            };
        }
        _ => {}
    }
    let ran = pacsrv::run_once(args).map_err(anyhow::Error::msg)?;
    // Only root may take a named transaction's summary; a user's pacman downloaded nothing.
    if let Some(txn) = ran.txn.filter(|_| nix::unistd::geteuid().is_root()) {
        print_summary(Some(txn));
    }
    Ok(ExitCode::from(ran.status))
}

/// The line saying where a transaction's packages came from, when it downloaded any and the
/// local pacserved still has its tally (the shipped hook may have printed it already). No
/// daemon, no line: a hook must not fail a transaction over a summary.
fn print_summary(txn: Option<Transaction>) {
    match report::summary(DEFAULT_SOCKET, txn) {
        Ok(tally) => {
            if let Some(line) = tally.sentence() {
                println!("{line}");
            }
        }
        Err(e) if e.starts_with("pacserved refused") => eprintln!("pacsrv: {e}"),
        Err(_) => {}
    }
}
