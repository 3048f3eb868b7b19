//! Making way: a daemon that already leads a download lets another daemon lead the next one,
//! when the hosts of the LAN are fetching the same files at the same time; so does a daemon on
//! a link clearly slower than another daemon's (version 5), leading or not.
//!
//! Why: claims settled in the same instant go to different hosts ([`super::choose`]), but hosts
//! upgrading together rarely claim in the same instant. The host that reaches a file first
//! leads it; it finishes first (its followers read behind it), so it reaches the next file first
//! too, and leads every file: the star around one host's upload link that claims by rank were
//! meant to end. On a LAN of Wi-Fi laptops and wired desktops, a laptop that got ahead once fed
//! every desktop at Wi-Fi speed for the whole upgrade. So before claiming, a daemon that leads
//! a download already waits, without claiming, a moment for another daemon to claim the file;
//! if one does, it follows that daemon's copy. If nobody does, it claims as always. Nothing
//! changes on the wire: older daemons simply see the claim of the daemon that did not make way,
//! and so does everybody else. (A transaction's first files, settled at once before anyone
//! leads anything, are spread by rank instead: see `BURST_WINDOW` in [`super`].)
//!
//! Why the slower host too: claims by link ([`super::choose::defers`]) keep a Wi-Fi laptop from
//! leading a file that a wired desktop claims at the same moment, but a laptop that reaches a
//! file first (the desktops are busy with the files before it) would lead it alone, and the
//! desktops would wait for it at Wi-Fi speed, pacman installing in order. So it waits a moment
//! for a faster host to claim the file first.
//!
//! A lone host never waits, nor does a host whose neighbours fetch other files: the wait is
//! paid only when another daemon fetched one of this daemon's files within
//! [`TOGETHER_FRESH`], and then at most [`MAKE_WAY`] per file, plus [`super::DEFER_LIMIT`]
//! when a daemon claimed it and did not start (that host is then not waited for again for a
//! while, as in [`super::Claims::settle`]). After [`FRUITLESS`] waits in a row in which nobody
//! claimed the file, it stops making way for [`PAUSE`], so a LAN host that fakes an upgrade
//! together (claiming this daemon's files, or telling a fast link) costs a few waits, not one
//! per file.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Among, Claims, DEFER_POLL, Here, Versions};
use crate::protocol::asker::Asker;
use crate::protocol::netif;

/// Another daemon fetched one of this daemon's files this recently: the hosts are upgrading
/// together, and making way is worth a moment.
pub const TOGETHER_FRESH: Duration = Duration::from_secs(30);
/// The longest a daemon waits for another to claim a file before claiming it itself: hosts
/// upgrading together reach each file within a fraction of a second of each other, and the
/// file's download is still ahead.
pub const MAKE_WAY: Duration = Duration::from_millis(250);
/// After this many waits in a row in which nobody claimed the file, a daemon stops making way
/// for [`PAUSE`]: the other hosts are not reaching its files first after all (or a LAN host is
/// faking an upgrade together, or a fast link), and every further wait would be lost.
const FRUITLESS: u32 = 3;
const PAUSE: Duration = Duration::from_secs(10);

/// This daemon's turn to settle a file: held from [`Claims::make_way`] until its verdict is
/// recorded (a led download counts in [`crate::daemon::growing::Growing::leading`]), so that
/// files settled at once on one host see each other ([`super::BURST_WINDOW`]).
pub struct Turn<'a> {
    claims: &'a Claims,
    made_way: bool,
}

impl Turn<'_> {
    /// Whether this daemon waited for another to lead the file (counted on `/metrics`).
    pub fn made_way(&self) -> bool {
        self.made_way
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.claims.lock();
        state.settling = state.settling.saturating_sub(1);
    }
}

impl Claims {
    /// Before settling `name`: when this daemon leads `leading` downloads already and the
    /// hosts are upgrading together, gives another daemon [`MAKE_WAY`] to
    /// claim the file, and then the time to start it; see the module doc. With the turn, the
    /// copy to follow when one started meanwhile (no need to settle then: asking again could
    /// miss an answer that a busy link holds back).
    pub fn make_way(&self, name: &str, leading: usize) -> (Turn<'_>, Option<SocketAddr>) {
        let together = {
            let state = self.lock();
            state
                .together
                .is_some_and(|at| at.elapsed() < TOGETHER_FRESH)
        };
        if !together || (leading == 0 && !self.outpaced(Among::Claiming)) || self.pausing() {
            self.lock().settling += 1;
            let turn = Turn {
                claims: self,
                made_way: false,
            };
            return (turn, None);
        }
        let copy = match self.given_up_on(name) {
            true => None,
            false => self.wait_for_another(name),
        };
        if copy.is_some() {
            self.settles(name);
        }
        self.lock().settling += 1;
        let turn = Turn {
            claims: self,
            made_way: true,
        };
        (turn, copy)
    }

    /// Whether making way is paused ([`FRUITLESS`]).
    pub(super) fn pausing(&self) -> bool {
        let state = self.lock();
        let (times, at) = state.fruitless;
        times >= FRUITLESS && at.is_some_and(|at| at.elapsed() < PAUSE)
    }

    /// A wait for another daemon's claim ended: with none (`true`), or with one.
    pub(super) fn fruitless(&self, none: bool) {
        let mut state = self.lock();
        state.fruitless = match (none, state.fruitless) {
            (false, _) => (0, None),
            // The pause is over: one more fruitless wait pauses again.
            (true, (times, Some(at))) if times >= FRUITLESS && at.elapsed() >= PAUSE => {
                (FRUITLESS, Some(Instant::now()))
            }
            (true, (times, _)) => (times + 1, Some(Instant::now())),
        };
    }

    /// Waits for another daemon to claim `name` and start it; its copy (or another), or None
    /// when waiting no longer pays.
    fn wait_for_another(&self, name: &str) -> Option<SocketAddr> {
        let socket = Asker::open().ok()?;
        let interfaces = netif::discovery_interfaces(&self.interfaces);
        let locals = netif::local_addresses();
        let here = Here {
            interfaces: &interfaces,
            locals: &locals,
        };
        // A copy on its way already: no wait at all.
        if let Some(copy) = self.ask(&socket, &here, name, Versions::Plain).best {
            return Some(copy.http);
        }
        let until = Instant::now() + MAKE_WAY;
        let claimants = loop {
            let claimants = self.believed(&self.heard_claims(name));
            if !claimants.is_empty() {
                break claimants;
            }
            if Instant::now() >= until {
                self.fruitless(true);
                return None;
            }
            std::thread::sleep(DEFER_POLL);
        };
        self.fruitless(false);
        // Another daemon claimed it: asked as a client would (claiming nothing, so as not to
        // win the file back by rank), until its copy or another's starts.
        let until = Instant::now() + super::DEFER_LIMIT;
        while Instant::now() < until {
            std::thread::sleep(DEFER_POLL);
            if let Some(copy) = self.ask(&socket, &here, name, Versions::Plain).best {
                self.showed_up(&claimants);
                return Some(copy.http);
            }
        }
        self.no_show(&claimants);
        None
    }
}
