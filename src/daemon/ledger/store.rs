//! The ledger's file in the state directory, `<state>/ledger`: the totals and the hourly
//! history, so that neither starts over when pacserved restarts.
//!
//! Plain text, the totals as the agent protocol words them ([`Totals::lines`]) after a version
//! line, then one `hour <hour> <served> <lan> <mirror>` line per hour. Only pacserved writes it
//! (the state directory is its own); it is still read as untrusted: at most [`MAX_BYTES`], and
//! a file that does not parse is set aside and the totals start over, rather than the daemon
//! refusing to start.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::daemon::ledger::history::{History, Hour};
use crate::protocol::report::Totals;
use crate::warn;

const MAGIC: &str = "pacserved-ledger 1";
/// Far above what the bounded totals and a week of hours take.
const MAX_BYTES: u64 = 256 * 1024;

/// What the file holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    pub totals: Totals,
    pub history: History,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("ledger")
}

/// The file's contents; None when it does not exist or cannot be read as a ledger.
pub fn load(path: &Path) -> Option<Kept> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_BYTES).read_to_string(&mut text).ok()?;
    let kept = parse(&text);
    if kept.is_none() {
        warn!(
            "{} is not a ledger pacserved can read; the totals start over",
            path.display()
        );
    }
    kept
}

fn parse(text: &str) -> Option<Kept> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let totals = Totals::parse(lines.by_ref())?;
    let mut history = History::default();
    for line in lines {
        let words: Vec<u64> = line
            .strip_prefix("hour ")?
            .split(' ')
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        let [hour, served, lan, mirror] = words[..] else {
            return None;
        };
        history.add(hour, |h| {
            *h = Hour {
                hour,
                served,
                lan,
                mirror,
            }
        });
    }
    Some(Kept { totals, history })
}

fn render(kept: &Kept) -> String {
    let mut text = format!("{MAGIC}\n{}", kept.totals.lines());
    for h in kept.history.buckets() {
        text.push_str(&format!(
            "hour {} {} {} {}\n",
            h.hour, h.served, h.lan, h.mirror
        ));
    }
    text
}

/// Writes the file atomically; a failure is logged once per call, and the totals live on in
/// memory.
pub fn save(path: &Path, kept: &Kept) {
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, render(kept)).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        warn!("cannot keep the totals in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_back_what_was_written_and_junk_is_refused() {
        let mut kept = Kept::default();
        kept.totals.since = 1_700_000_000;
        kept.totals.served = 5;
        kept.totals.tally.add_lan("10.0.0.2".into(), 7);
        kept.history.add(470_000, |h| h.served = 3);
        kept.history.add(470_002, |h| h.lan = 4);
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        save(&file, &kept);
        assert_eq!(load(&file), Some(kept));
        for junk in [
            "",
            "pacserved-ledger 2\nEND\n",
            "pacserved-ledger 1\nsince 1\n",
            "pacserved-ledger 1\nEND\nhour 1 2 3\n",
        ] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
        assert_eq!(load(&dir.path().join("none")), None);
    }
}
