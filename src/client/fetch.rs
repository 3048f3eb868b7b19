//! One download, start to finish: the job pacman gives `pacserve-fetch '%o' '%u'`.
//!
//! [`fetch`] reads top to bottom as the decision it makes: lock the output → what is this file →
//! ask the LAN who has it → try a few of those peers in the order they answered, within the
//! time the LAN is given → the mirror → report. Every source failure is survivable (the next
//! source gets the same output, already holding whatever the last one wrote, and resumes after
//! it); a local failure such as a full disk ends the job at once, since no other source can fix
//! it. Bytes a peer wrote are resumed on only while something will check them: the sync
//! database at the end, and never the mirror for a file no database lists. A run that fails
//! cuts the output back to the last byte it can vouch for.

use std::path::{Path, PathBuf};

use crate::client::error::Error;
use crate::client::mirror;
use crate::client::output::Output;
use crate::client::output::adopt::{self, Adopted};
use crate::client::output::credits::{Credit, Credits};
use crate::client::output::dbcopy;
use crate::client::output::lock::OutputLock;
use crate::client::output::verify::{self, Expected};
use crate::client::peers::budget::{self, Candidate, PeerPhase};
use crate::client::peers::discovery::Discovery;
use crate::client::peers::explain;
use crate::client::peers::memory;
use crate::client::peers::{candidates, several};
use crate::client::report;
use crate::client::signature;
use crate::client::terminal::progress::{Progress, Source};
use crate::client::transfer::file;
use crate::client::transfer::limits::Limits;
use crate::client::transfer::pieces;
use crate::client::transfer::{self, Delivered, Want};
use crate::pacman;
use crate::pacman::gpg::Verifier;
use crate::pacman::name::{self, FileKind};
use crate::pacman::syncdb;
use crate::protocol::peerhttp;

/// Everything that shapes a download besides its two arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time limits for mirrors.
    pub limits: Limits,
    /// Time limits for LAN peers: short, because a LAN answers in milliseconds and a stalled
    /// peer should cost the user seconds at most before the next source takes over. The header
    /// budget, speed floor and phase deadline of [`budget`] are added to these.
    pub peer_limits: Limits,
    /// Sent to mirrors and peers; pacman exports `HTTP_USER_AGENT` for us to pass on.
    pub user_agent: String,
    /// How to ask LAN peers; `None` goes straight to the mirror.
    pub discovery: Option<Discovery>,
    /// pacman's DBPath, whose `sync/*.db` files vouch for what peers send.
    pub dbpath: PathBuf,
    /// Take files no sync database lists from peers too, unverified.
    pub unverified_peers: bool,
    /// The invoking pacman forces a database refresh (`-Syy`): no If-Modified-Since.
    pub forced_refresh: bool,
    /// The local pacserved's agent socket (abstract name) for mirror downloads; None: always
    /// standalone.
    pub agent_socket: Option<String>,
    /// Never the mirror: a verified copy from a LAN peer or [`Error::NoPeer`]. pacserved's
    /// CacheServer endpoint runs us so (see `daemon::cacheserver`).
    pub peers_only: bool,
    /// pacman's configuration: which repositories want package signatures (SigLevel).
    pub pacman_conf: PathBuf,
    /// pacman's keyring, which a peer's signature must satisfy.
    pub gpgdir: PathBuf,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            limits: Limits::default(),
            peer_limits: Limits::peer_default(),
            user_agent: concat!("pacserve-fetch/", env!("CARGO_PKG_VERSION")).to_owned(),
            discovery: Some(Discovery::default()),
            dbpath: PathBuf::from(pacman::conf::DEFAULT_DBPATH),
            unverified_peers: false,
            forced_refresh: false,
            agent_socket: Some(crate::protocol::agent::DEFAULT_SOCKET.to_owned()),
            peers_only: false,
            pacman_conf: PathBuf::from(pacman::invocation::DEFAULT_CONFIG),
            gpgdir: PathBuf::from(crate::pacman::gpg::DEFAULT_GPGDIR),
        }
    }
}

/// What happened, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The URL the file came from.
    pub source: String,
    pub delivered: Delivered,
    /// Which source wrote which bytes, for the transaction's summary ([`report`]).
    pub credits: Credits,
}

/// Downloads `url` into `output` the way pacman's XferCommand contract requires.
pub fn fetch(
    settings: &Settings,
    output: &Path,
    url: &str,
    progress: &mut Progress,
) -> Result<Report, Error> {
    let name = name::requested_name(output, url).ok_or_else(|| Error::BadOutput {
        path: output.to_owned(),
        reason: "does not name a file",
    })?;
    // One writer per output: checked before anything is created, then held to the end.
    Output::inspect(output)?;
    let lock = OutputLock::acquire(output)?;
    let result = fetch_locked(settings, output, name, url, progress);
    lock.release(result.is_ok());
    if let (Ok(done), Some(socket)) = (&result, &settings.agent_socket) {
        report::send(socket, &done.credits, progress);
    }
    result
}

fn fetch_locked(
    settings: &Settings,
    output: &Path,
    name: &str,
    url: &str,
    progress: &mut Progress,
) -> Result<Report, Error> {
    // Decide: what the file is fixes whether we resume, whether a peer may supply it, and what
    // the result must match: for a package, its own sync database entry; for a signature, its
    // package's.
    let kind = FileKind::of(name);
    let package = name.strip_suffix(".sig").unwrap_or(name);
    let entry = kind
        .shareable()
        .then(|| syncdb::lookup(&settings.dbpath, package))
        .flatten();
    let expected = entry
        .as_ref()
        .filter(|_| kind == FileKind::Package)
        .map(|e| Expected {
            size: e.csize,
            sha256: e.sha256,
        })
        .filter(|e| !e.is_empty());
    // A signature the database carries, or one this user checked with its package from a
    // peer moments ago: no source needed.
    if let Some(entry) = entry
        .as_ref()
        .filter(|_| kind == FileKind::PackageSignature)
        && let Some((bytes, from)) = signature::local(entry)
    {
        let mut out = Output::open(output)?;
        out.truncate(0)?;
        out.append(&bytes)?;
        out.finish(None)?;
        return Ok(Report {
            source: from.to_owned(),
            delivered: Delivered::Body {
                from: 0,
                received: bytes.len() as u64,
            },
            credits: Credits::default(),
        });
    }
    // A peer's signature counts once gpg says pacman would accept it over the package pacman
    // has just downloaded next to it.
    let proof = entry
        .as_ref()
        .filter(|e| {
            kind == FileKind::PackageSignature && signature::checked(&settings.pacman_conf, &e.repo)
        })
        .map(|e| signature::Proof::for_output(output, e, Verifier::new(&settings.gpgdir)));
    let check = Check {
        expected,
        proof: proof.as_ref().and_then(|p| p.as_ref().ok()),
    };
    // pacman 7: take over what an earlier, failed batch stranded in its download-* directory.
    let adopted = adopt::stranded(output, name, kind, expected.as_ref(), progress);
    let mut out = Output::open(output)?;
    if expected.is_some_and(|e| e.sha256.is_some()) {
        out.hash_as_written();
    }
    if adopted == Adopted::Complete {
        return Ok(Report {
            source: "an earlier run's download directory".to_owned(),
            delivered: Delivered::AlreadyComplete,
            credits: Credits::default(),
        });
    }
    let want = Want {
        resume: kind.resumable(),
        unchanged_copy: dbcopy::unchanged_copy(kind, output, name, settings.forced_refresh),
        size: expected.and_then(|e| e.size),
        ceiling: None,
        only_resume: false,
        share: None,
        via_agent: false,
    };
    if !want.resume && !out.is_empty() {
        progress.note(|| format!("{name}: not resumable, discarding {} bytes", out.len()));
    }
    // A file no sync database vouches for (pacman -U <url>) comes from the mirror, unless the
    // user trusts the LAN; with --peers-only nothing unverified ever leaves this run.
    let trust_unlisted = settings.unverified_peers && !settings.peers_only;
    let peers_may_serve = kind.shareable() && (check.is_some() || trust_unlisted);
    let discovery = settings.discovery.as_ref();
    let listed = entry.is_some();
    if let Some(why) = explain::not_asking(
        name,
        kind,
        listed,
        settings.unverified_peers,
        discovery,
        &settings.dbpath,
    ) {
        progress.note(|| why);
    } else if let Some(Err(why)) = &proof {
        progress.note(|| format!("{name}: asking no peers: {why}"));
    }

    // A copy the local pacserved prefetched for this transaction is on this machine already:
    // it comes before the LAN (no query, no wait). It is checked like any other source.
    let socket = settings.agent_socket.as_deref();
    let mirror = mirror::Mirror::new(
        socket,
        (settings.limits, &settings.user_agent),
        url,
        progress,
    );
    // The last byte we can vouch for: what we had before any other source (nothing, when the
    // file starts over anyway).
    let mut vouched = if want.resume { out.len() } else { 0 };
    let staged = match kind {
        FileKind::Package => expected.is_some_and(|e| e.sha256.is_some()),
        _ => kind == FileKind::PackageSignature && entry.is_some(),
    };
    if staged {
        progress.source(name, Source::Mirror);
        match mirror.staged(url, &mut out, &want, progress) {
            // A prefetched signature is the mirror's: pacman checks it, as it would have.
            Some(Ok(delivered)) => match mismatch(
                &out,
                &Check {
                    proof: None,
                    ..check
                },
            )? {
                None => {
                    return Ok(Report {
                        source: format!("{url} (prefetched by pacserved)"),
                        delivered,
                        credits: out.take_credits(),
                    });
                }
                Some(why) => {
                    progress.warn(|| format!("pacserved's prefetched copy was bad ({why})"));
                    out.truncate(vouched)?;
                }
            },
            Some(Err(e)) if e.is_source_failure() => {
                progress.abandon();
                progress.warn(|| format!("pacserved's prefetched copy failed: {e}"));
                out.truncate(vouched)?;
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }

    // Ask peers: only for packages and their signatures, never databases.
    let asking = settings.discovery.as_ref().filter(|_| peers_may_serve);
    let mut memory = match asking {
        Some(_) => memory::load(),
        None => memory::Memory::default(),
    };
    let peers = match asking {
        Some(discovery) => {
            let size = match kind {
                FileKind::PackageSignature => candidates::Fits::Signature,
                _ => candidates::Fits::Size(want.size),
            };
            // A big file may come from more peers at once than are tried one after another.
            let most = match pieces::worth_splitting(want.size, out.len(), pieces::MAX_SOURCES) {
                true => pieces::MAX_SOURCES,
                false => budget::MAX_PEERS_PER_FILE,
            };
            candidates::peers_with(
                discovery,
                name,
                out.len(),
                size,
                most,
                &mut memory,
                progress,
            )
        }
        None => Vec::new(),
    };

    // Transfer and verify: each chosen peer in the order it answered, all of them within the
    // phase's budget, then the mirror pacman named. A peer that fails in any way is avoided
    // for a while by later runs too.
    let phase = PeerPhase::start(want.size.or(peers.first().map(|c| c.size)).unwrap_or(0));
    let limits = Limits {
        deadline: Some(phase.deadline),
        ..budget::peer_limits(settings.peer_limits)
    };
    // A big file several peers hold whole: from all of them at once, pieces they cannot send
    // from the mirror. If the whole is wrong, the sources that follow one by one find out who
    // lied (`split` keeps who sent what).
    let whole: Vec<Candidate> = peers.iter().filter(|c| !c.growing).copied().collect();
    let mut split: Option<(Vec<pieces::Record>, &[Candidate])> = None;
    let mut dead: Vec<Candidate> = Vec::new();
    if let Some(size) = want
        .size
        .filter(|_| expected.is_some_and(|e| e.sha256.is_some()))
        && pieces::worth_splitting(Some(size), out.len(), whole.len())
    {
        let fallback = (!settings.peers_only).then_some((url, settings.limits));
        let sources = &whole[..whole.len().min(pieces::MAX_SOURCES)];
        let result = several::fetch(
            (name, size),
            sources,
            fallback,
            &settings.user_agent,
            &mut out,
            limits,
            progress,
        )?;
        for (index, _) in &result.failed {
            if let Some(peer) = sources.get(*index) {
                memory.failed(peer.blame(), memory::now_secs());
                dead.push(*peer);
            }
        }
        memory::store(&memory);
        if out.len() == size {
            match mismatch(&out, &check)? {
                None => {
                    for peer in sources {
                        memory.succeeded(&peer.blame());
                    }
                    memory::store(&memory);
                    let urls: Vec<String> = sources.iter().map(|p| p.http.to_string()).collect();
                    return Ok(Report {
                        source: format!("{} peers at once: {}", sources.len(), urls.join(", ")),
                        delivered: Delivered::Body {
                            from: vouched,
                            received: out.len() - vouched,
                        },
                        credits: out.take_credits(),
                    });
                }
                Some(why) => {
                    progress.warn(|| {
                        format!("{name} from several sources was bad ({why}); discarding it")
                    });
                    // Bytes from before this run are suspects too: nobody checked them.
                    vouched = 0;
                    out.truncate(vouched)?;
                }
            }
        }
        split = Some((result.records, sources));
    }
    // One after another: those that did not fail above, as many as are tried for any file.
    let peers: Vec<Candidate> = peers
        .iter()
        .filter(|c| !dead.contains(c))
        .take(budget::MAX_PEERS_PER_FILE)
        .copied()
        .collect();
    for peer in peers {
        let Some(left) = phase.left() else {
            progress.warn(|| "the time given to peers is over; using the mirror".to_owned());
            break;
        };
        let peer_url = peerhttp::url(peer.http, name);
        progress.source(name, Source::Peer);
        out.credit(Credit::Peer(peer.http.ip(), peer.daemon_id));
        progress.note(|| format!("{peer_url}: {:.1} s left for peers", left.as_secs_f64()));
        let agent = transfer::peer_agent(limits, &settings.user_agent, peer.http);
        let peer_want = Want {
            ceiling: Some(peer.size),
            only_resume: true,
            ..want.clone()
        };
        // The package's signature from the same peer, fetched while the package arrives, so
        // that pacman's next call needs no LAN round trip.
        let along = entry
            .as_ref()
            .filter(|e| {
                kind == FileKind::Package
                    && peer.sig
                    && e.signature.is_none()
                    && signature::checked(&settings.pacman_conf, &e.repo)
            })
            .map(|e| (e, signature::fetch_along(&agent, &peer_url)));
        let result = transfer::fetch_url(&agent, &peer_url, &mut out, &peer_want, limits, progress);
        let mut blameless = false;
        let failure = match result {
            Ok(delivered) => match mismatch(&out, &check)? {
                None => {
                    if memory.succeeded(&peer.blame()) {
                        memory::store(&memory);
                    }
                    if let Some((entry, along)) = along {
                        let verifier = Verifier::new(&settings.gpgdir);
                        let wait = signature::ALONG_WAIT;
                        match along.check_and_keep(wait, entry, out.path(), &verifier) {
                            Ok(()) => progress
                                .note(|| format!("{peer_url}.sig: checked, kept for pacman")),
                            Err(not_kept) => {
                                progress.note(|| {
                                    format!("the signature stays for later: {}", not_kept.why)
                                });
                                // A peer that stalls its signatures would cost every package
                                // the wait: it is avoided like any peer that failed a transfer.
                                if not_kept.peer_failed {
                                    memory.failed(peer.blame(), memory::now_secs());
                                    memory::store(&memory);
                                }
                            }
                        }
                    }
                    let mut credits = out.take_credits();
                    several::name_liars(split.as_ref(), &out, &mut credits, &mut memory, progress);
                    return Ok(Report {
                        source: peer_url,
                        delivered,
                        credits,
                    });
                }
                // Resumed on bytes from before this run, which nobody here checked: they may be
                // the wrong part (an earlier run stopped mid-file on a liar's bytes), so the
                // peer is not blamed, and the next source starts from byte 0.
                Some(why) if vouched > 0 => {
                    blameless = true;
                    out.truncate(0)?;
                    vouched = 0;
                    format!(
                        "{name} was bad ({why}) after resuming an earlier run's bytes; starting \
                         over from byte 0"
                    )
                }
                Some(why) => {
                    out.blame(peer.http.ip());
                    out.truncate(vouched)?;
                    format!("{peer_url} sent a bad file ({why}); discarding its bytes")
                }
            },
            Err(e) if e.is_source_failure() => {
                progress.abandon();
                format!("peer failed, trying the next source: {e}")
            }
            Err(e) => return Err(e),
        };
        progress.warn(|| failure);
        // A signature pacman would not take may be the peer's honest copy under a key this
        // keyring does not trust: the peer is not avoided for that, only for bytes that failed.
        if check.proof.is_none() && !blameless {
            memory.failed(peer.blame(), memory::now_secs());
            memory::store(&memory);
        }
    }
    if settings.peers_only {
        out.truncate(0)?;
        return Err(Error::NoPeer {
            name: name.to_owned(),
        });
    }
    // Nothing will check a failed peer's bytes in a file no database lists: the mirror starts
    // from the last byte we had before the peers.
    if expected.is_none() && out.len() > vouched {
        progress.note(|| format!("{name}: dropping the unverifiable bytes of failed peers"));
        out.truncate(vouched)?;
    }
    // The mirror: through the local pacserved when it runs (warm connections, prefetched
    // files), else directly; see client::mirror.
    progress.source(name, Source::Mirror);
    mirror.offer_plan(kind, asking, progress);
    let on_peer_bytes = out.len() > vouched;
    let want = Want {
        share: mirror::share_value(kind, name, expected.as_ref()),
        ..want
    };
    let mut result = mirror_verified(&mirror, url, &mut out, &want, &check, progress);
    match &mut result {
        Ok(report) => several::name_liars(
            split.as_ref(),
            &out,
            &mut report.credits,
            &mut memory,
            progress,
        ),
        // The partial now holds bytes no one vouched for: keep only what we had before.
        Err(_) if on_peer_bytes => {
            let _ = out.truncate(vouched);
        }
        Err(_) => {}
    }
    result
}

/// The mirror pacman named, and the sync database's verdict on the result.
///
/// A bad result that was resumed (on an earlier run's partial, or on bytes the local daemon
/// relayed from a peer it followed) gets one more try, the whole file from byte 0 and without
/// asking the daemon to share or follow: whatever happens then is the mirror's own answer, so a
/// lying peer costs one download, never a loop.
fn mirror_verified(
    mirror: &mirror::Mirror,
    url: &str,
    out: &mut Output,
    want: &Want,
    check: &Check,
    progress: &mut Progress,
) -> Result<Report, Error> {
    // The mirror's signature is pacman's to check, as it would be without us.
    let check = &Check {
        proof: None,
        ..*check
    };
    let name = transfer::name_of(out.path()).to_owned();
    let mut delivered = from_mirror(mirror, url, out, want, progress)?;
    if let Some(why) = mismatch(out, check)? {
        let resumed = matches!(delivered, Delivered::Body { from, .. } if from > 0)
            || delivered == Delivered::AlreadyComplete;
        out.truncate(0)?;
        if !resumed && want.share.is_none() {
            return Err(Error::BadFile {
                url: url.to_owned(),
                why,
            });
        }
        progress.warn(|| format!("{name}: the file was bad ({why}); downloading it again"));
        let whole = Want {
            share: None,
            ..want.clone()
        };
        delivered = from_mirror(mirror, url, out, &whole, progress)?;
        if let Some(why) = mismatch(out, check)? {
            out.truncate(0)?;
            return Err(Error::BadFile {
                url: url.to_owned(),
                why,
            });
        }
    }
    Ok(Report {
        source: url.to_owned(),
        delivered,
        credits: out.take_credits(),
    })
}

/// The mirror pacman named: a local repository for `file://`, else HTTP(S).
fn from_mirror(
    mirror: &mirror::Mirror,
    url: &str,
    out: &mut Output,
    want: &Want,
    progress: &mut Progress,
) -> Result<Delivered, Error> {
    let is_file = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("file://"));
    match is_file {
        true => {
            out.credit(Credit::Local);
            file::fetch(url, out, want, progress)
        }
        false => mirror.fetch(url, out, want, progress),
    }
}

/// What a source's file must be: the sync database's size and SHA-256 (a package), or a
/// signature pacman would accept over the package next to it (a peer's signature).
#[derive(Clone, Copy)]
struct Check<'a> {
    expected: Option<Expected>,
    proof: Option<&'a signature::Proof>,
}

impl Check<'_> {
    fn is_some(&self) -> bool {
        self.expected.is_some() || self.proof.is_some()
    }
}

/// Checks a finished output: against the sync database, when one describes the file (by the
/// SHA-256 computed as it was written, else, a 304's copy say, by reading it back); a signature
/// with gpg, when it came from a peer.
fn mismatch(out: &Output, check: &Check) -> Result<Option<String>, Error> {
    if let Some(proof) = check.proof {
        return Ok(proof.check(out.path()).err());
    }
    let Some(expected) = check.expected else {
        return Ok(None);
    };
    if let Some(sha256) = out.sha256() {
        return Ok(verify::digest_mismatch(out.len(), sha256, &expected));
    }
    verify::mismatch(out.path(), &expected).map_err(|source| Error::WriteOutput {
        path: out.path().to_owned(),
        action: "read back",
        source,
    })
}
