//! `pacsrv [pacman arguments]`: pacman once through pacserve-fetch (see `pacserve_fetch::pacman::pacsrv`).

use std::io::Write;
use std::process::{Command, ExitCode};

use anyhow::Context;
use pacserve_fetch::pacman::invocation::Invocation;
use pacserve_fetch::pacman::{download_user, include, pacsrv};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::os::unix::fs::PermissionsExt;

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

  --include-conf   print FILE (default /etc/pacman.conf) with `Include = /etc/pacman.d/pacserve`
                   at the top of each repository section (the CacheServer way; never twice)
  --in-place       write the result back to FILE instead of printing it
  --clean-download-dirs [--config FILE]
                   remove the empty download-* directories pacman 7 left behind (run as root,
                   by the shipped pacman hook after every transaction)

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
    let paths = Invocation::parse(&args).paths();
    let (config, pacman_args) = pacsrv::take_config_arg(args);
    let config = config.unwrap_or_else(|| pacsrv::DEFAULT_PACMAN_CONF.into());
    let original = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let program = pacsrv::fetch_program();
    let user = download_user::configured(&original);
    let blocked = user
        .as_deref()
        .and_then(|user| Some((user, download_user::cannot_execute(&program, user)?)));
    if let Some((user, why)) = blocked {
        anyhow::bail!(
            "pacman runs its XferCommand as DownloadUser {user}, which cannot execute {}: \
             {why}.\nInstall pacserve-fetch (/usr/bin), or make that path searchable \
             (chmod o+x on each directory), or run the installed pacsrv.",
            program.display()
        );
    }
    let patched = pacsrv::with_xfer_command(&original, &pacsrv::xfer_command(&program));

    let mut copy = tempfile::Builder::new()
        .prefix("pacsrv-")
        .suffix(".conf")
        .tempfile()
        .context("cannot create the temporary pacman.conf")?;
    copy.write_all(patched.as_bytes())
        .context("cannot write the temporary pacman.conf")?;
    // pacman 7's download user reads it too (pacserve-fetch finds DBPath and CacheDir there).
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o644))
        .context("cannot make the temporary pacman.conf readable")?;

    // The terminal's Ctrl-C reaches pacman directly; SIGTERM and SIGHUP sent to us are passed on.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot handle signals")?;
    let mut child = Command::new(pacsrv::pacman_program())
        .arg("--config")
        .arg(copy.path())
        .args(&pacman_args)
        .spawn()
        .context("cannot run pacman")?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            let forward = nix::sys::signal::Signal::try_from(signal)
                .ok()
                .filter(|_| signal != SIGINT);
            if let Some(sig) = forward {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    });
    let status = child.wait().context("waiting for pacman")?;
    handle.close();
    let _ = forwarder.join();
    drop(copy);
    for dir in pacsrv::remove_empty_download_dirs(&paths) {
        eprintln!(
            "pacsrv: removed pacman's empty download directory {}",
            dir.display()
        );
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
