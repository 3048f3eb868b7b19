//! What the user sees while a file downloads.
//!
//! pacman draws no progress for an XferCommand, so we draw a pacman-like line ourselves — but
//! only when stderr is a terminal: in a log, a CI job or a pipe the bar would be noise. stdout
//! is never touched, because pacman's own output shares it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How chatty to be, from `-q` / `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// A progress line on a terminal, errors otherwise.
    Normal,
    /// Also one line per decision (source chosen, resume offset, status), terminal or not.
    Verbose,
}

/// The progress line of one download, or nothing when there is no terminal to draw on.
#[derive(Debug)]
pub struct Progress {
    verbosity: Verbosity,
    draw: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Draws only if stderr is a terminal and the user did not ask for quiet.
    pub fn new(verbosity: Verbosity) -> Progress {
        let draw = verbosity > Verbosity::Quiet && std::io::stderr().is_terminal();
        Progress {
            verbosity,
            draw,
            bar: None,
        }
    }

    /// Never draws; for library callers and tests.
    pub fn hidden() -> Progress {
        Progress {
            verbosity: Verbosity::Quiet,
            draw: false,
            bar: None,
        }
    }

    /// A transfer of `name` from `host` begins with `done` of `total` bytes already present.
    pub fn start(&mut self, name: &str, host: &str, total: Option<u64>, done: u64) {
        self.finish();
        if !self.draw {
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        // The name may be cut to fit the terminal; the source host never is.
        let template = match total {
            Some(_) => {
                "{wide_msg} {prefix} {bytes:>9} {binary_bytes_per_sec:>11} {eta:>3} [{bar:12}] {percent:>3}%"
            }
            None => "{wide_msg} {prefix} {bytes:>9} {binary_bytes_per_sec:>11} {spinner}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("#-"));
        }
        bar.set_message(name.to_owned());
        bar.set_prefix(format!("from {host}"));
        bar.set_position(done);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    /// `n` more bytes arrived.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Leaves the final state of the line on screen.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    /// A line for `-v` only.
    pub fn note(&self, message: impl FnOnce() -> String) {
        self.say(Verbosity::Verbose, message);
    }

    /// A line worth seeing without `-v` (a peer failed, say); silent with `-q`.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        self.say(Verbosity::Normal, message);
    }

    /// Prints above the bar, so the two do not garble each other.
    fn say(&self, at_least: Verbosity, message: impl FnOnce() -> String) {
        if self.verbosity < at_least {
            return;
        }
        let line = format!("pacserve-fetch: {}", message());
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes an unfinished bar (before an error line is printed).
    pub fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}
