//! Which LAN peers one download tries: ask ([`discovery`]), record what the LAN said in the
//! [`memory`] of recent runs, and keep the answers that can be the file ([`budget::choose`]),
//! saying in `-v` what was heard and why the wait ended.

use crate::client::peers::budget::{self, Candidate};
use crate::client::peers::discovery::{self, Discovery, Expectation, PeerAnswer};
use crate::client::peers::explain;
use crate::client::peers::memory;
use crate::client::terminal::progress::Progress;
use crate::pacman::gpg::MAX_SIGNATURE;

/// What size an answer must announce to be the file.
#[derive(Clone, Copy)]
pub enum Fits {
    /// The sync database's size, when it gives one.
    Size(Option<u64>),
    /// A signature: at most what pacman takes.
    Signature,
}

/// The peers to try for `name` (see [`budget::choose`]), at most `most`, keeping only sizes
/// that can be the file ([`Fits`]; `have` is what the output holds already). The answers and
/// what the memory learned from them are recorded. A discovery failure is not fatal: the mirror
/// remains.
pub fn peers_with(
    discovery: &Discovery,
    name: &str,
    have: u64,
    wanted: Fits,
    most: usize,
    memory: &mut memory::Memory,
    progress: &Progress,
) -> Vec<Candidate> {
    let now = memory::now_secs();
    let expect = Expectation {
        size: match wanted {
            Fits::Size(size) => size,
            Fits::Signature => None,
        },
        ..memory.expectation(now)
    };
    let (answers, ended) = match discovery::ask_detailed(discovery, name, "", &expect) {
        Ok(asked) => {
            memory.update(&expect, &asked.answers, asked.ended, now);
            memory::store(memory);
            for why in &asked.skipped {
                progress.note(|| why.clone());
            }
            if let Some(why) = explain::nobody_answered(&asked, discovery) {
                progress.note(|| why);
            }
            (asked.answers, asked.ended)
        }
        Err(e) => {
            progress.note(|| format!("asking peers failed ({e}); using the mirror"));
            return Vec::new();
        }
    };
    progress.note(|| {
        let why = discovery::why_ended(ended, &expect, discovery.wait);
        describe_answers(&answers, &why)
    });
    let fits = |size: u64| match wanted {
        Fits::Size(Some(expected)) => size == expected,
        Fits::Size(None) => size > 0 && size >= have,
        Fits::Signature => size > 0 && size <= MAX_SIGNATURE as u64,
    };
    let avoided = |c: &Candidate| memory.avoided(&c.blame(), now);
    budget::choose(&answers, most, fits, avoided, |a, why| {
        progress.note(|| format!("{}: {why}", a.from))
    })
}

fn describe_answers(answers: &[PeerAnswer], why: &str) -> String {
    let first = answers.first().map(|a| a.rtt);
    let answers = discovery::per_daemon(answers);
    let haves = answers.iter().filter(|a| a.http_addr().is_some()).count();
    let first = first.map(|rtt| format!(", first after {:.2} ms", rtt.as_secs_f64() * 1e3));
    format!(
        "{} peers answered, {haves} have it{}; {why}",
        answers.len(),
        first.unwrap_or_default(),
    )
}
