//! SIGINT and SIGTERM: stop at once, keep the partial output, exit non-zero.
//!
//! pacman ignores SIGINT while its XferCommand runs, so the user's Ctrl-C reaches only us.
//! Everything we write goes straight to the file with no user-space buffer, so whatever has been
//! written when the signal arrives is a valid prefix; ending the process from the signal thread
//! is therefore both prompt (no waiting for a blocked read to time out) and safe for resuming.

use std::io::{IsTerminal, Write};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts a thread that, on SIGINT or SIGTERM, prints `message` and exits with 128 + signal.
pub fn exit_on_signal(message: String) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let mut stderr = std::io::stderr().lock();
                // Leave the progress line intact on a terminal rather than writing over it.
                let newline = if std::io::stderr().is_terminal() {
                    "\n"
                } else {
                    ""
                };
                let _ = writeln!(stderr, "{newline}pacserve-fetch: {message}");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}
