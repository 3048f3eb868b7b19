//! One big file from several sources at once: the file is cut into pieces, and each source
//! takes the next piece nobody has taken yet, so a fast source takes more of them.
//!
//! This is for packages of tens of megabytes held whole by several LAN peers: one peer's upload
//! link then no longer sets the speed. Small files keep the single-source path, where the
//! extra requests cost more than they save ([`worth_splitting`]).
//!
//! `%o` must stay a correct prefix at every moment (pacman and the next run resume it), so a
//! piece is appended only when every byte before it is there. A piece that arrives early waits
//! in a holding file: an unnamed temporary file beside `%o` (`O_TMPFILE`), which nobody can open
//! and which vanishes with the process; pieces are handed out at most [`AHEAD`] past the
//! prefix, and copied ones are punched out, so it holds at most that much. A holding file that
//! runs out of room ends the split, not the download. At most one piece per source is in
//! memory.
//!
//! Nothing here is trusted: the sync database's SHA-256 of the whole file, checked by the
//! caller, is the one trust root. What this module adds is a record of which source sent which
//! piece and that piece's own SHA-256 ([`Record`]), so that when the whole fails, the next
//! source that produces a verified file also says who lied ([`disagreeing`]). A source that
//! fails a piece (an error, a stall, a short or wrong answer) takes no more pieces; its piece
//! goes back to the others, and when no source is left, to the `fallback` (the mirror).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::fcntl::FallocateFlags;
use sha2::{Digest, Sha256};

mod piece;
use piece::fetch_piece;
use ureq::Agent;

use crate::client::error::Error;
use crate::client::output::Output;
use crate::client::output::credits::Credit;
use crate::client::terminal::progress::Progress;
use crate::client::transfer::limits::Limits;

/// Files at least this big are split when several sources have them. aria2 splits only above
/// 20–40 MiB; on a LAN a request costs about a millisecond, and the `multi-source` bench shows
/// two equal peers already paying off well below this, but a file of a few megabytes is over
/// before a second connection is up to speed.
pub const SPLIT_ABOVE: u64 = 32 * 1024 * 1024;

/// The size of a piece: a few hundred milliseconds from a 100 Mbit/s peer, so a slow source
/// holds up the end of the file briefly, and a few thousand requests for the biggest packages.
pub const PIECE: u64 = 4 * 1024 * 1024;

/// At most this many sources share one file: past a handful, the receiving link is full.
pub const MAX_SOURCES: usize = 6;

/// How long an idle source waits, at most, for a piece another source may hand back.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Pieces are handed out at most this far past the end of the prefix in `%o`, so that a source
/// stalling the piece at the front holds at most this much in the holding file (the others
/// then fetch a twin of that piece instead of running ahead).
const AHEAD: u64 = 16 * PIECE;

/// Whether a file of `size` (the sync database's), of which `have` bytes are already in `%o`,
/// is worth fetching from `sources` sources at once.
pub fn worth_splitting(size: Option<u64>, have: u64, sources: usize) -> bool {
    sources >= 2 && size.is_some_and(|size| size.saturating_sub(have) >= SPLIT_ABOVE)
}

/// One place the file can come from.
pub struct Source {
    /// The file's URL there.
    pub url: String,
    /// The HTTP client for it (a peer's pins the peer's address; see
    /// [`crate::client::transfer::peer_agent`]).
    pub agent: Agent,
    /// Whose bytes these are, for the run's report.
    pub credit: Credit,
    /// Its speed floor, and how its errors are worded.
    pub limits: Limits,
}

/// One piece as it was received: which source sent bytes `start..end`, and their SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Index into the sources given to [`fetch`] (the fallback is last).
    pub source: usize,
    pub start: u64,
    pub end: u64,
    pub sha256: [u8; 32],
}

/// What [`fetch`] did. The output is complete when its length is the file's size; it is then
/// still unverified.
#[derive(Debug, Default)]
pub struct Split {
    /// Every piece appended to the output, in file order.
    pub records: Vec<Record>,
    /// The sources that failed a piece, with why; they were given nothing more.
    pub failed: Vec<(usize, Error)>,
}

/// Fetches bytes `out.len()..size` of the file from `sources` at once, starting no piece after
/// `limits.deadline`, then from `fallback` for whatever they could not supply. Errs only on a
/// local failure (writing the output or the holding file); a source failing is in
/// [`Split::failed`], and the output is then a prefix. Without a holding file (a directory that
/// takes no new file), nothing is fetched: the caller's one-source-at-a-time path remains.
pub fn fetch(
    sources: &[Source],
    fallback: Option<&Source>,
    out: &mut Output,
    size: u64,
    limits: Limits,
    progress: &Progress,
) -> Result<Split, Error> {
    let from = out.len();
    out.begin_at(from)?;
    let dir = out
        .path()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let holding = match tempfile::tempfile_in(dir) {
        Ok(file) => file,
        Err(e) => {
            progress.note(|| {
                format!(
                    "{}: no holding file for pieces ({e}); one peer at a time",
                    dir.display()
                )
            });
            return Ok(Split::default());
        }
    };
    let pieces = (from..size)
        .step_by(PIECE as usize)
        .map(|start| start..(start + PIECE).min(size))
        .collect::<VecDeque<_>>();
    let shared = Shared {
        state: Mutex::new(State::new(out, holding, pieces)),
        changed: Condvar::new(),
        size,
        deadline: limits.deadline,
    };
    std::thread::scope(|scope| {
        for (index, source) in sources.iter().enumerate() {
            let shared = &shared;
            scope.spawn(move || shared.work(index, source, progress));
        }
    });
    let unsupplied = {
        let state = shared.lock();
        if state.no_room {
            progress.note(|| "no room to hold pieces; one source at a time".to_owned());
        }
        state.local.is_none() && !state.no_room && !state.waiting.is_empty()
    };
    if let Some(fallback) = fallback.filter(|_| unsupplied) {
        progress.note(|| format!("{}: taking the pieces no peer could send", fallback.url));
        // The mirror is not held to the peers' deadline: it is the last resort.
        let shared = Shared {
            deadline: None,
            ..shared
        };
        shared.work(sources.len(), fallback, progress);
        return shared.finish();
    }
    shared.finish()
}

/// The pieces of `records` whose bytes differ from the file at `verified` (one that passed the
/// sync database's check): each names a source that sent wrong bytes.
pub fn disagreeing(records: &[Record], verified: &Path) -> io::Result<Vec<Record>> {
    let file = File::open(verified)?;
    let mut buf = vec![0u8; PIECE as usize];
    let mut wrong = Vec::new();
    for record in records {
        let len = (record.end - record.start) as usize;
        let buf = &mut buf[..len.min(PIECE as usize)];
        let same = match file.read_exact_at(buf, record.start) {
            Ok(()) => Sha256::digest(&*buf).as_slice() == record.sha256,
            // The verified file is shorter: nothing past its end can be right.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(e),
        };
        if !same {
            wrong.push(*record);
        }
    }
    Ok(wrong)
}

/// What the sources share: the output and the pieces.
struct Shared<'o> {
    state: Mutex<State<'o>>,
    /// Signalled when a piece is handed back or finished, for sources waiting for work.
    changed: Condvar,
    size: u64,
    /// No piece is started after this (the peer phase's end).
    deadline: Option<Instant>,
}

/// A piece being fetched: by which source, since when.
struct Running {
    piece: std::ops::Range<u64>,
    by: usize,
    since: Instant,
}

struct State<'o> {
    out: &'o mut Output,
    /// Pieces that arrived before the bytes in front of them, at their own offsets.
    holding: File,
    /// Pieces no source has taken, lowest first.
    waiting: VecDeque<std::ops::Range<u64>>,
    /// Pieces in the holding file, by where they start, and whose bytes they are.
    held: BTreeMap<u64, (Record, Credit)>,
    /// Pieces being fetched right now.
    running: Vec<Running>,
    /// Pieces fetched whole, and the time they took together: what a piece normally takes.
    fetched: (u32, Duration),
    split: Split,
    /// A local failure: everyone stops.
    local: Option<Error>,
    /// The holding file could not take a piece: everyone stops, the prefix stays.
    no_room: bool,
}

impl<'o> Shared<'o> {
    fn lock(&self) -> MutexGuard<'_, State<'o>> {
        // A poisoned lock means a source thread panicked mid-piece; the output is still a
        // prefix (appends happen whole under the lock), so carry on with what is there.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One source's loop: take a piece, fetch it, hand it over; stop at the first failure,
    /// when nothing is left, or at the deadline.
    fn work(&self, index: usize, source: &Source, progress: &Progress) {
        while let Some(piece) = self.take(index) {
            let wanted = || !self.lock().placed(piece.start);
            match fetch_piece(source, piece.clone(), self.size, self.deadline, &wanted) {
                Ok(Some(bytes)) => {
                    let record = Record {
                        source: index,
                        start: piece.start,
                        end: piece.end,
                        sha256: Sha256::digest(&bytes).into(),
                    };
                    progress.advance(bytes.len() as u64);
                    self.deliver(index, record, &bytes, source.credit);
                }
                // Its twin arrived first.
                Ok(None) => self.drop_piece(index, &piece, None),
                Err(e) => {
                    progress.warn(|| format!("{e}; its pieces go to the other sources"));
                    self.drop_piece(index, &piece, Some(e));
                    return;
                }
            }
        }
    }

    /// The next piece for source `index`: the lowest nobody has taken; once there is none, a
    /// twin of a piece another source is fetching far slower than pieces normally arrive (so the
    /// end of a file never waits for its slowest source); `None` when all is done, or at the
    /// deadline.
    fn take(&self, index: usize) -> Option<std::ops::Range<u64>> {
        let mut state = self.lock();
        loop {
            if state.local.is_some()
                || state.no_room
                || self.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return None;
            }
            let window = state.out.len() + AHEAD;
            if let Some(piece) = state.waiting.pop_front_if(|p| p.start < window) {
                state.running.push(Running {
                    piece: piece.clone(),
                    by: index,
                    since: Instant::now(),
                });
                return Some(piece);
            }
            if let Some(piece) = state.overdue(index) {
                state.running.push(Running {
                    piece: piece.clone(),
                    by: index,
                    since: Instant::now(),
                });
                return Some(piece);
            }
            if state.running.is_empty() {
                return None;
            }
            state = match self.changed.wait_timeout(state, IDLE_POLL) {
                Ok((state, _)) => state,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Appends the piece if every byte before it is there (then any held pieces that follow),
    /// else holds it; a piece its twin already delivered is dropped.
    fn deliver(&self, index: usize, record: Record, bytes: &[u8], credit: Credit) {
        let mut state = self.lock();
        if let Some(since) = state.stop_running(index, record.start) {
            state.fetched.0 += 1;
            state.fetched.1 += since.elapsed();
        }
        if !state.placed(record.start) {
            match state.place(record, bytes, credit) {
                Ok(true) => {}
                // No room to hold it: the split ends here, and what is in `%o` is a prefix the
                // one-source-at-a-time path resumes.
                Ok(false) => {
                    state.no_room = true;
                    state.give_back(record.start..record.end);
                }
                Err(e) => {
                    state.local.get_or_insert(e);
                }
            }
        }
        self.changed.notify_all();
    }

    /// Source `index` stopped fetching `piece` (it `failed`, or its twin won): the piece goes
    /// back to the others unless it is placed or still being fetched.
    fn drop_piece(&self, index: usize, piece: &std::ops::Range<u64>, failed: Option<Error>) {
        let mut state = self.lock();
        state.stop_running(index, piece.start);
        let fetched = state.running.iter().any(|r| r.piece.start == piece.start);
        if !state.placed(piece.start) && !fetched {
            state.give_back(piece.clone());
        }
        if let Some(e) = failed {
            state.split.failed.push((index, e));
        }
        self.changed.notify_all();
    }

    fn finish(self) -> Result<Split, Error> {
        let state = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        match state.local {
            Some(e) => Err(e),
            None => Ok(state.split),
        }
    }
}

impl<'o> State<'o> {
    /// Nothing fetched yet: `waiting` pieces to go into `out`, early ones into `holding`.
    fn new(out: &'o mut Output, holding: File, waiting: VecDeque<Range<u64>>) -> State<'o> {
        State {
            out,
            holding,
            waiting,
            held: BTreeMap::new(),
            running: Vec::new(),
            fetched: (0, Duration::ZERO),
            split: Split::default(),
            local: None,
            no_room: false,
        }
    }

    /// The piece starting at `start` is in the output or held.
    fn placed(&self, start: u64) -> bool {
        start < self.out.len() || self.held.contains_key(&start)
    }

    /// Puts `piece` back among those waiting, in order.
    fn give_back(&mut self, piece: std::ops::Range<u64>) {
        let at = self.waiting.partition_point(|p| p.start < piece.start);
        self.waiting.insert(at, piece);
    }

    /// Source `index` no longer fetches the piece at `start`; returns since when it did.
    fn stop_running(&mut self, index: usize, start: u64) -> Option<Instant> {
        let at = (self.running.iter()).position(|r| r.piece.start == start && r.by == index)?;
        Some(self.running.swap_remove(at).since)
    }

    /// A piece for source `index` to fetch as a twin: one that another source alone has been
    /// fetching for more than twice what a piece takes, and that is not placed yet.
    fn overdue(&self, index: usize) -> Option<std::ops::Range<u64>> {
        let (count, total) = self.fetched;
        let normal = total.checked_div(count)?;
        let alone = |start| {
            self.running
                .iter()
                .filter(|r| r.piece.start == start)
                .count()
                == 1
        };
        (self.running.iter())
            .find(|r| {
                r.by != index
                    && r.since.elapsed() > normal * 2
                    && alone(r.piece.start)
                    && !self.placed(r.piece.start)
            })
            .map(|r| r.piece.clone())
    }

    /// Appends or holds the piece: false when there was no room to hold it (a full disk, say).
    fn place(&mut self, record: Record, bytes: &[u8], credit: Credit) -> Result<bool, Error> {
        if record.start != self.out.len() {
            if self.holding.write_all_at(bytes, record.start).is_err() {
                return Ok(false);
            }
            self.held.insert(record.start, (record, credit));
            return Ok(true);
        }
        self.out.credit(credit);
        self.out.append(bytes)?;
        self.split.records.push(record);
        let mut buf = Vec::new();
        while let Some((next, credit)) = self.held.remove(&self.out.len()) {
            buf.resize((next.end - next.start) as usize, 0);
            self.holding
                .read_exact_at(&mut buf, next.start)
                .map_err(|e| self.holding_error(e))?;
            self.out.credit(credit);
            self.out.append(&buf)?;
            self.split.records.push(next);
            // Copied out: give the disk back (best effort; the file goes when the run ends).
            let _ = nix::fcntl::fallocate(
                &self.holding,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                next.start as i64,
                buf.len() as i64,
            );
        }
        Ok(true)
    }

    fn holding_error(&self, source: io::Error) -> Error {
        Error::WriteOutput {
            path: self.out.path().with_extension("(holding file)"),
            action: "use the holding file beside",
            source,
        }
    }
}

#[cfg(test)]
mod tests;
