//! The transaction's download plan, for the daemon's prefetch: exactly the files pacman will
//! request next, never a guess.
//!
//! pacman knows its plan but tells an XferCommand only one file at a time. Its parent process
//! is the pacman running the transaction (see [`crate::pacman::invocation`]), and that pacman
//! prints the URLs it would download with `-p --print-format %l` — with no lock and no root
//! (print operations run with NOLOCK). So on the first package of a transaction the daemon does
//! not know yet, the client runs the same pacman with the same options and targets, minus
//! `-y`/`--refresh` (the databases were refreshed already; a print run must never download
//! them) and any print options of its own, then keeps only files that pacman will really fetch
//! and that the mirror must supply:
//! - not already in a cache directory (pacman skips those; `-p` lists them anyway),
//! - listed in a sync database with size and SHA-256 (the daemon verifies against them),
//! - held by no LAN peer (those come from the LAN; fetching them from the mirror would waste the
//!   internet link), asked in parallel with the usual discovery.
//!
//! Interactive answers that differ from pacman's defaults (deselecting group members,
//! declining a replacement) are not visible to `-p`; the daemon fetches at most its window of
//! files ahead, and only after pacman requested a planned file, which bounds what such a
//! difference can cost.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::mirror::transport;
use crate::client::peers::discovery::{self, Discovery};
use crate::client::peers::memory;
use crate::client::signature;
use crate::client::terminal::progress::Progress;
use crate::pacman::gpg::MAX_SIGNATURE;

use crate::pacman::invocation::{Invocation, LONG_WITH_VALUE};
use crate::pacman::name::{self, FileKind};
use crate::pacman::process::Transaction;
use crate::pacman::syncdb;
use crate::protocol::Holding;
use crate::protocol::agent::{Job, Planned};

/// The longest the print run may take; a slower one is killed and nothing is planned.
const PRINT_LIMIT: Duration = Duration::from_secs(30);
/// LAN queries in flight at once while filtering the plan. Each batch costs one discovery wait
/// on the first file's critical path, so a typical upgrade's plan goes out in one batch; the
/// responder's per-source burst allowance (200) is not exceeded.
const PARALLEL_QUERIES: usize = 64;

/// Sends the invoking pacman's plan to the daemon at `socket`, once per transaction. Best
/// effort: any failure just means no prefetch.
pub fn offer(socket: &str, discovery: Option<&Discovery>, progress: &Progress) {
    let Some(invocation) = Invocation::of_parent().filter(|i| i.operation == Some('S')) else {
        return;
    };
    let Some(txn) = Transaction::of_process(std::os::unix::process::parent_id()) else {
        return;
    };
    if transport::ask(socket, &Job::Knows(txn), "").as_deref() != Some("YES") {
        let started = Instant::now();
        // pacman chdir()s into the download directory before starting us; relative paths on
        // its command line (`--config p/pacman.conf`) mean its caller's directory, PWD.
        let here = std::env::current_dir().ok();
        let pwd = parent_pwd(txn.pid);
        if let Some(pwd) = &pwd {
            let _ = std::env::set_current_dir(pwd);
        }
        let plan = make(&invocation, discovery);
        if let Some(here) = here.filter(|_| pwd.is_some()) {
            let _ = std::env::set_current_dir(here);
        }
        let body: String = plan.iter().map(|p| p.to_string()).collect::<String>() + "\n";
        let answer = transport::ask(socket, &Job::Plan(txn), &body);
        progress.note(|| {
            format!(
                "sent pacserved a plan of {} files ({:.0} ms): {}",
                plan.len(),
                started.elapsed().as_secs_f64() * 1e3,
                answer.unwrap_or_else(|| "no answer".into())
            )
        });
    }
}

/// The directory pacman was started in, from its environment's PWD.
fn parent_pwd(pid: u32) -> Option<std::path::PathBuf> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let pwd = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"PWD="))?;
    let dir = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(pwd));
    (dir.is_absolute() && dir.is_dir()).then_some(dir)
}

/// The files this transaction will fetch from the mirror, in pacman's order.
fn make(invocation: &Invocation, discovery: Option<&Discovery>) -> Vec<Planned> {
    // The invoking pacman's own paths: its --config, --dbpath, --cachedir.
    let paths = invocation.paths();
    let (cachedirs, dbpath) = (&paths.cachedirs, &paths.dbpath);
    let wanted: Vec<(String, String)> = print_urls(invocation)
        .into_iter()
        .filter_map(|url| {
            let name = url.rsplit('/').next()?.to_owned();
            let fetched = FileKind::of(&name) == FileKind::Package
                && !cachedirs.iter().any(|dir| dir.join(&name).exists());
            fetched.then_some((url, name))
        })
        .collect();
    // One pass over the sync databases for the whole plan, not one per file.
    let names: Vec<&str> = wanted.iter().map(|(_, name)| name.as_str()).collect();
    let listed = syncdb::lookup_all(dbpath, &names);
    let candidates: Vec<Planned> = wanted
        .iter()
        .filter_map(|(url, name)| {
            let entry = listed.get(name)?;
            Some(Planned {
                url: url.clone(),
                size: entry.csize?,
                sha256: Some(entry.sha256?),
            })
        })
        .collect();
    let from_mirror = match discovery {
        Some(discovery) => without_lan_copies(candidates, discovery),
        None => candidates,
    };
    with_signatures(from_mirror, &listed, &paths.config)
}

/// Each package followed by its `.sig` where pacman will ask for it: its repository checks
/// package signatures and the database does not carry this one (then pacman asks the mirror,
/// right after the package, and the daemon should have it ready too).
fn with_signatures(
    plan: Vec<Planned>,
    listed: &HashMap<String, syncdb::Entry>,
    conf: &Path,
) -> Vec<Planned> {
    let mut checked: HashMap<&str, bool> = HashMap::new();
    let mut out = Vec::with_capacity(plan.len() * 2);
    for planned in plan {
        let entry = planned
            .url
            .rsplit('/')
            .next()
            .and_then(|name| listed.get(name));
        let signature = entry.filter(|e| {
            e.signature.is_none()
                && *checked
                    .entry(e.repo.as_str())
                    .or_insert_with(|| signature::checked(conf, &e.repo))
        });
        let sig_url = format!("{}.sig", planned.url);
        out.push(planned);
        if signature.is_some() {
            out.push(Planned {
                url: sig_url,
                size: MAX_SIGNATURE as u64,
                sha256: None,
            });
        }
    }
    out
}

/// What `pacman -Sp --print-format %l` prints for the invoking pacman's options and targets.
fn print_urls(invocation: &Invocation) -> Vec<String> {
    let child = Command::new(&invocation.program)
        .args(print_args(&invocation.args))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Vec::new();
    };
    let Some(stdout) = child.stdout.take() else {
        return Vec::new();
    };
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + PRINT_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let urls = reader.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => urls,
        _ => Vec::new(),
    }
}

/// pacman's arguments for the print run: `-y`/`--refresh` and print options removed, then
/// `--print --print-format %l` added. Option values (`-b DIR`, `--config FILE`…) and
/// everything after `--` are copied unchanged.
pub fn print_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if bytes == b"--" {
            out.push(word.clone());
            out.extend(words.by_ref().cloned());
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let text = String::from_utf8_lossy(long);
            let (name, attached) = match text.split_once('=') {
                Some((name, _)) => (name.to_owned(), true),
                None => (text.to_string(), false),
            };
            let value = (LONG_WITH_VALUE.contains(&name.as_str()) && !attached)
                .then(|| words.next().cloned())
                .flatten();
            if !matches!(name.as_str(), "refresh" | "print" | "print-format") {
                out.push(word.clone());
                out.extend(value);
            }
        } else if let Some(shorts) = bytes.strip_prefix(b"-").filter(|s| !s.is_empty()) {
            let mut kept = vec![b'-'];
            let mut takes_next = false;
            for (i, &letter) in shorts.iter().enumerate() {
                if letter == b'b' || letter == b'r' {
                    kept.extend_from_slice(&shorts[i..]);
                    takes_next = i + 1 == shorts.len();
                    break;
                }
                if letter != b'y' && letter != b'p' {
                    kept.push(letter);
                }
            }
            if kept.len() > 1 {
                out.push(OsString::from(std::ffi::OsStr::from_bytes(&kept)));
            }
            if takes_next {
                out.extend(words.next().cloned());
            }
        } else {
            out.push(word.clone());
        }
    }
    out.extend(["--print", "--print-format", "%l"].map(OsString::from));
    out
}

/// Drops the files a LAN peer holds at the database's size: those will come from the LAN.
fn without_lan_copies(plan: Vec<Planned>, discovery: &Discovery) -> Vec<Planned> {
    let expect = memory::load().expectation(memory::now_secs());
    let mut kept = Vec::with_capacity(plan.len());
    for chunk in plan.chunks(PARALLEL_QUERIES) {
        let held: Vec<bool> = std::thread::scope(|scope| {
            let asks: Vec<_> = chunk
                .iter()
                .map(|planned| {
                    let expect = &expect;
                    scope.spawn(move || on_lan(discovery, planned, expect))
                })
                .collect();
            asks.into_iter().map(|a| a.join().unwrap_or(true)).collect()
        });
        kept.extend(
            chunk
                .iter()
                .zip(held)
                .filter(|(_, held)| !held)
                .map(|(p, _)| p.clone()),
        );
    }
    kept
}

/// Whether a peer says it has `planned`; true when asking fails (then do not prefetch it).
fn on_lan(discovery: &Discovery, planned: &Planned, expect: &discovery::Expectation) -> bool {
    let Some(name) = planned
        .url
        .rsplit('/')
        .next()
        .filter(|n| name::is_shareable_name(n))
    else {
        return true;
    };
    match discovery::ask(discovery, name, "", expect) {
        Ok(answers) => answers.iter().any(|a| {
            !a.is_self && matches!(a.holding, Holding::Have { size, .. } if size == planned.size)
        }),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_print_run_never_refreshes_and_keeps_every_other_option() {
        let cases = [
            ("-Syu", "-Su"),
            ("-Syyu --noconfirm", "-Su --noconfirm"),
            ("-S --refresh --sysupgrade", "-S --sysupgrade"),
            ("-Sy foo", "-S foo"),
            (
                "-Sy -b /tmp/dby --config /y/pacman.conf foo",
                "-S -b /tmp/dby --config /y/pacman.conf foo",
            ),
            ("-Syb/tmp/y foo", "-Sb/tmp/y foo"),
            ("-Sy -r /y foo", "-S -r /y foo"),
            ("--sync -y --print-format %n foo", "--sync foo"),
            ("-Sp --cachedir /c -y -- -y", "-S --cachedir /c -- -y"),
            ("-Sw --ignore yelp foo", "-Sw --ignore yelp foo"),
        ];
        for (given, expected) in cases {
            let mut want = words(expected);
            want.extend(words("--print --print-format %l"));
            assert_eq!(print_args(&words(given)), want, "{given}");
        }
    }
}
