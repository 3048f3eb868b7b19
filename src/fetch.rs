//! One download, start to finish: the job pacman gives `pacserve-fetch '%o' '%u'`.
//!
//! [`fetch`] reads top to bottom as the decision it makes: what is this file → which sources may
//! serve it → transfer from the first that works → report. Every source failure is survivable
//! (the next source gets the same output, already holding whatever the last one wrote); a local
//! failure such as a full disk ends the job at once, since no other source can fix it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;
use crate::name::{self, FileKind};
use crate::output::Output;
use crate::progress::Progress;
use crate::transfer::{self, Delivered, Limits, Want};

/// Everything that shapes a download besides its two arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// Sent to mirrors; pacman exports `HTTP_USER_AGENT` for us to pass on.
    pub user_agent: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            limits: Limits::default(),
            user_agent: concat!("pacserve-fetch/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// What happened, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The URL the file came from.
    pub source: String,
    pub delivered: Delivered,
}

/// Downloads `url` into `output` the way pacman's XferCommand contract requires.
pub fn fetch(settings: &Settings, output: &Path, url: &str, progress: &mut Progress) -> Result<Report, Error> {
    // Decide: what the file is fixes whether we resume and whether a copy may stand in.
    let name = name::target_name(output).ok_or_else(|| Error::BadOutput {
        path: output.to_owned(),
        reason: "does not name a file",
    })?;
    let kind = FileKind::of(name);
    let mut out = Output::inspect(output)?;
    let want = Want {
        resume: kind.resumable(),
        unchanged_copy: current_database(kind, output, name),
    };
    if !want.resume && !out.is_empty() {
        progress.note(|| format!("{name}: not resumable, discarding {} bytes", out.len()));
    }

    // Transfer: the mirror pacman named.
    let agent = transfer::agent(settings.limits, &settings.user_agent, true);
    let delivered = transfer::fetch_url(&agent, url, &mut out, &want, settings.limits, progress)?;
    Ok(Report {
        source: url.to_owned(),
        delivered,
    })
}

/// The copy of a database pacman is about to replace: next to `%o`, or one directory up when
/// pacman 7 downloads into a temporary `download-XXXXXX` directory. Its mtime is what the mirror
/// compares with If-Modified-Since.
fn current_database(kind: FileKind, output: &Path, name: &str) -> Option<(PathBuf, SystemTime)> {
    if kind != FileKind::Database {
        return None;
    }
    let dir = output.parent()?;
    let beside = dir.join(name);
    let above = dir.parent().map(|up| up.join(name));
    [Some(beside), above]
        .into_iter()
        .flatten()
        .filter(|candidate| !same_file(candidate, output))
        .find_map(|candidate| {
            let meta = fs::metadata(&candidate).ok().filter(|m| m.is_file())?;
            Some((candidate, meta.modified().ok()?))
        })
}

/// Run by hand as `pacserve-fetch core.db URL`, the "current copy" would be the output itself;
/// copying a file onto itself would empty it.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => a == b,
    }
}
