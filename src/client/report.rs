//! The run's part in the line printed after a pacman transaction ("pacserve: 412 MiB of 430 MiB
//! from the LAN (3 hosts), 18 MiB from the mirror"), and reading that line and the totals back.
//!
//! pacman 7 runs pacserve-fetch as its download user, sandboxed: it can write its download
//! directory and little else, and a file it could write another local user could forge. So a
//! run that pacman started tells the local pacserved what it kept from LAN peers and from the
//! mirror directly, and which peers sent a bad file (`REPORT` on the agent socket): the daemon
//! sees from the socket's credentials and `/proc` whose downloader the caller is, takes records
//! only from the downloaders of a pacman run by root, and keeps them bounded, under that
//! pacman's transaction. What the agent fetched for the run it has recorded itself. After the
//! transaction the shipped hook (or pacsrv) takes the transaction's tally ([`summary`]); anyone
//! may read the totals ([`totals`]). Without a daemon nothing is recorded, and nothing printed.

use crate::client::mirror::transport;
use crate::client::output::credits::Credits;
use crate::client::terminal::progress::Progress;
use crate::pacman::process::{Transaction, is_pacman};
use crate::protocol::agent::Job;
use crate::protocol::report::{MAX_ANSWER_LINES, Record, Tally, Totals};

/// Tells the daemon at `socket` what this run kept, when pacman started it and there is
/// something to tell. Best effort: the download is done either way.
pub fn send(socket: &str, credits: &Credits, progress: &Progress) {
    let records = credits.records();
    if records.is_empty() || !is_pacman(std::os::unix::process::parent_id()) {
        return;
    }
    let body: String = records.iter().map(Record::to_string).collect::<String>() + "\n";
    let answer = transport::ask(socket, &Job::Report, &body);
    progress.note(|| {
        format!(
            "told pacserved for the transaction's summary: {}: {}",
            body.trim_end().replace('\n', ", "),
            answer.unwrap_or_else(|| "no answer".to_owned())
        )
    });
}

/// The tally of `txn` (None: the caller's parent pacman's, for a pacman hook), taken from the
/// daemon at `socket`.
pub fn summary(socket: &str, txn: Option<Transaction>) -> Result<Tally, String> {
    let lines = answer(socket, &Job::Summary(txn))?;
    let mut tally = Tally::default();
    for line in &lines {
        if !tally.read_line(line) {
            return Err(format!("pacserved answered {line:?}"));
        }
    }
    Ok(tally)
}

/// The daemon's totals.
pub fn totals(socket: &str) -> Result<Totals, String> {
    let lines = answer(socket, &Job::Totals)?;
    let end = [crate::protocol::report::END];
    Totals::parse(lines.iter().map(String::as_str).chain(end))
        .ok_or_else(|| format!("pacserved answered {lines:?}"))
}

/// The answer's lines before `END`; an `ERR` line, no answer or no `END` is the error.
fn answer(socket: &str, job: &Job) -> Result<Vec<String>, String> {
    let mut lines = transport::ask_lines(socket, job, "", MAX_ANSWER_LINES)
        .map_err(|e| format!("no pacserved on @{socket}: {e}"))?;
    if let Some(err) = lines.first().and_then(|l| l.strip_prefix("ERR ")) {
        return Err(format!("pacserved refused: {err}"));
    }
    match lines.pop().as_deref() {
        Some(crate::protocol::report::END) => Ok(lines),
        _ => Err(format!("pacserved's answer ended early: {lines:?}")),
    }
}
