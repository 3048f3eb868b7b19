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

/// Where the next transfer's bytes come from, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Peer,
    Mirror,
}

/// The progress line of one download, or nothing when there is no terminal to draw on.
#[derive(Debug)]
pub struct Progress {
    verbosity: Verbosity,
    draw: bool,
    bar: Option<ProgressBar>,
    /// The file's name and source kind, as the download decided them (see [`Progress::source`]).
    source: Option<(String, Source)>,
}

impl Progress {
    /// Draws only if stderr is a terminal and the user did not ask for quiet.
    pub fn new(verbosity: Verbosity) -> Progress {
        let draw = verbosity > Verbosity::Quiet && std::io::stderr().is_terminal();
        Progress {
            verbosity,
            draw,
            bar: None,
            source: None,
        }
    }

    /// Never draws; for library callers and tests.
    pub fn hidden() -> Progress {
        Progress {
            verbosity: Verbosity::Quiet,
            draw: false,
            bar: None,
            source: None,
        }
    }

    /// The next transfers are of `name` from a peer or the mirror; the line says which.
    pub fn source(&mut self, name: &str, source: Source) {
        self.source = Some((name.to_owned(), source));
    }

    /// A transfer of `name` from `host` begins with `done` of `total` bytes already present.
    pub fn start(&mut self, name: &str, host: &str, total: Option<u64>, done: u64) {
        self.finish();
        if !self.draw {
            return;
        }
        let (name, kind) = match &self.source {
            Some((name, Source::Peer)) => (name.as_str(), "peer"),
            Some((name, Source::Mirror)) => (name.as_str(), "mirror"),
            None => (name, "from"),
        };
        let columns = console::Term::stderr()
            .size_checked()
            .map_or(80, |(_, columns)| usize::from(columns));
        let line = layout(columns, name, kind, host, total.is_some());
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(&line.template) {
            bar.set_style(style.progress_chars("#-"));
        }
        bar.set_message(line.name);
        bar.set_prefix(line.source);
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

/// One progress line laid out for a terminal width.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    template: String,
    name: String,
    source: String,
}

/// The richest line that fits `columns - 1` (writing the last column makes some terminals wrap):
/// every field but the name has a fixed width, so the name gets what is left, cut with an
/// ellipsis. Narrow terminals drop the bar, then the rate, then the host (keeping "peer" or
/// "mirror"); the total size stays whenever it is known. From 30 columns on nothing wraps.
fn layout(columns: usize, name: &str, kind: &str, host: &str, sized: bool) -> Line {
    // (template after "{msg} {prefix}", its width, whether the host is shown)
    let rest: &[(&str, usize, bool)] = if sized {
        &[
            (
                " {bytes:>11}/{total_bytes:<11} {binary_bytes_per_sec:>13} [{bar:12}] {percent:>3}%",
                59,
                true,
            ),
            (
                " {bytes:>11}/{total_bytes:<11} {binary_bytes_per_sec:>13} {percent:>3}%",
                44,
                true,
            ),
            (" {percent:>3}% of {total_bytes:<11}", 20, true),
            (" {percent:>3}% of {total_bytes:<11}", 20, false),
        ]
    } else {
        &[
            (
                " {bytes:>11} {binary_bytes_per_sec:>13} {spinner}",
                29,
                true,
            ),
            (" {bytes:>11} {spinner}", 14, true),
            (" {bytes:>11}", 12, false),
        ]
    };
    let usable = columns.saturating_sub(1);
    let source_of = |with_host: bool| match with_host {
        true => format!("{kind} {}", ellipsize(host, 24)),
        false => kind.to_owned(),
    };
    // Wanted: the whole name, or at least 16 columns of it, before dropping a field.
    let wanted = name.chars().count().min(16);
    let fits = |(_, width, with_host): &&(&str, usize, bool)| {
        usable.saturating_sub(source_of(*with_host).chars().count() + 1 + width) >= wanted
    };
    let chosen = rest.iter().find(fits).unwrap_or(&rest[rest.len() - 1]);
    let (fields, width, with_host) = *chosen;
    let source = source_of(with_host);
    let room = usable
        .saturating_sub(source.chars().count() + 1 + width)
        .max(1);
    let name = ellipsize(name, room);
    Line {
        template: format!("{{msg:{}}} {{prefix}}{fields}", name.chars().count()),
        name,
        source,
    }
}

/// `text` cut to `max` characters, the last one an ellipsis when anything was cut.
fn ellipsize(text: &str, max: usize) -> String {
    match text.chars().count() <= max {
        true => text.to_owned(),
        false => {
            let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "linux-firmware-nvidia-20251111-1-any.pkg.tar.zst";

    /// The widest the fixed fields can render: sizes such as "1023.99 MiB", "1023.99 MiB/s".
    fn widest(line: &Line) -> usize {
        let t = &line.template;
        let fields = t
            .replace(
                &format!("{{msg:{}}}", line.name.chars().count()),
                &line.name,
            )
            .replace("{prefix}", &line.source)
            .replace("{bytes:>11}", "1023.99 MiB")
            .replace("{total_bytes:<11}", "1023.99 MiB")
            .replace("{binary_bytes_per_sec:>13}", "1023.99 MiB/s")
            .replace("[{bar:12}]", "[############]")
            .replace("{percent:>3}", "100")
            .replace("{spinner}", "-");
        fields.chars().count()
    }

    #[test]
    fn the_line_never_reaches_the_last_column_and_names_its_source() {
        for columns in [30, 40, 49, 50, 60, 80, 120, 200] {
            for sized in [true, false] {
                let line = layout(columns, NAME, "peer", "192.168.100.200", sized);
                assert!(
                    widest(&line) < columns,
                    "{columns}: {line:?} is {}",
                    widest(&line)
                );
                assert!(line.source.starts_with("peer"), "{line:?}");
                if sized {
                    assert!(line.template.contains("{total_bytes"), "{line:?}");
                }
            }
        }
        let wide = layout(200, NAME, "mirror", "mirror.example", true);
        assert_eq!(wide.name, NAME);
        assert_eq!(wide.source, "mirror mirror.example");
        let narrow = layout(40, NAME, "mirror", "mirror.example", true);
        assert!(
            narrow.name.ends_with('…') && narrow.name.starts_with("linux-"),
            "{narrow:?}"
        );
    }
}
