//! The daemon's log: one line per event on stderr, which systemd sends to the journal.
//!
//! Under systemd (`JOURNAL_STREAM` is set) each line starts with a syslog priority such as
//! `<4>`, which journald turns into the entry's priority and strips; on a terminal the lines
//! start with `pacserved: ` instead. No timestamps: journald adds its own.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
}

fn under_journald() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some())
}

/// Writes one log line; use the [`info!`](crate::info), [`warn!`](crate::warn) macros.
pub fn write(level: Level, message: fmt::Arguments) {
    let mut stderr = std::io::stderr().lock();
    let _ = if under_journald() {
        writeln!(stderr, "<{}>{message}", level as u8)
    } else {
        let tag = match level {
            Level::Error => "error: ",
            Level::Warning => "warning: ",
            Level::Info => "",
        };
        writeln!(stderr, "pacserved: {tag}{message}")
    };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::daemon::journal::write($crate::daemon::journal::Level::Info, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::daemon::journal::write($crate::daemon::journal::Level::Warning, format_args!($($arg)*)) };
}
