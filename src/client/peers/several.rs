//! A big file from several peers at once, as one download sees it: the peers become the
//! sources of [`pieces`], the mirror the source of last resort, and once a copy has verified,
//! the peers whose pieces differ from it are named, blamed in the run's report and avoided.
//! (How the pieces are shared out and put in order is [`pieces`]' business.)

use crate::client::error::Error;
use crate::client::output::Output;
use crate::client::output::credits::{Credit, Credits};
use crate::client::peers::budget::Candidate;
use crate::client::peers::memory;
use crate::client::terminal::progress::{Progress, Source};
use crate::client::transfer::{self, limits::Limits, pieces};
use crate::protocol::peerhttp;

/// A big file (its name and size) from several `sources` at once ([`pieces`]); `fallback` is the
/// mirror's URL and limits, for pieces no peer could send.
pub fn fetch(
    (name, size): (&str, u64),
    sources: &[Candidate],
    fallback: Option<(&str, Limits)>,
    user_agent: &str,
    out: &mut Output,
    limits: Limits,
    progress: &mut Progress,
) -> Result<pieces::Split, Error> {
    let sources: Vec<pieces::Source> = sources
        .iter()
        .map(|peer| pieces::Source {
            url: peerhttp::url(peer.http, name),
            agent: transfer::peer_agent(limits, user_agent, peer.http),
            credit: Credit::Peer(peer.http.ip(), peer.daemon_id),
            limits,
        })
        .collect();
    let http = |url: &&str| {
        url.split_once("://")
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
    };
    let fallback = fallback
        .filter(|(url, _)| http(url))
        .map(|(url, limits)| pieces::Source {
            url: url.to_owned(),
            agent: transfer::mirror_agent(limits, user_agent),
            credit: Credit::Mirror,
            limits,
        });
    progress.source(name, Source::Peer);
    progress.note(|| {
        let urls: Vec<&str> = sources.iter().map(|s| s.url.as_str()).collect();
        format!(
            "{name}: from {} peers at once: {}",
            urls.len(),
            urls.join(", ")
        )
    });
    progress.start(name, "LAN peers", Some(size), out.len());
    let result = pieces::fetch(&sources, fallback.as_ref(), out, size, limits, progress);
    progress.finish();
    result
}

/// After a file from several sources was wrong, the file that then verified says which pieces
/// were wrong: their senders are named, blamed in the report and avoided like any peer that
/// sent a bad file.
pub fn name_liars(
    split: Option<&(Vec<pieces::Record>, &[Candidate])>,
    out: &Output,
    credits: &mut Credits,
    memory: &mut memory::Memory,
    progress: &Progress,
) {
    let Some((records, sources)) = split.filter(|(records, _)| !records.is_empty()) else {
        return;
    };
    let wrong = match pieces::disagreeing(records, out.path()) {
        Ok(wrong) => wrong,
        Err(e) => {
            progress.warn(|| {
                format!(
                    "{}: cannot read it back to find who sent wrong bytes: {e}",
                    out.path().display()
                )
            });
            return;
        }
    };
    let mut named: Vec<(Candidate, usize, u64)> = Vec::new();
    for record in wrong {
        let Some(peer) = sources.get(record.source) else {
            continue;
        };
        match named.iter_mut().find(|(p, _, _)| p == peer) {
            Some((_, pieces, _)) => *pieces += 1,
            None => named.push((*peer, 1, record.start)),
        }
    }
    for (peer, pieces, first) in &named {
        progress.warn(|| {
            format!(
                "{}: sent wrong bytes ({pieces} pieces, the first at byte {first}); avoiding it",
                peer.http
            )
        });
        credits.blame(peer.http.ip());
        memory.failed(peer.blame(), memory::now_secs());
    }
    if !named.is_empty() {
        memory::store(memory);
    }
}
