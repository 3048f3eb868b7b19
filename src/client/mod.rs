//! `pacserve-fetch`: the one-shot downloader pacman runs as `XferCommand` for every file.
//!
//! Start at [`fetch::fetch`]: decide what the file is, ask the LAN who has it, try those peers,
//! then the mirror (through the local pacserved's [`agent`] when one runs), and report. The rest of this folder is what that function leans on: the
//! `%o` file ([`output`]), moving bytes over HTTP ([`transfer`]) or from `file://`
//! ([`localfile`]), asking the LAN ([`discovery`], remembered between runs in [`lanmemory`]),
//! checking a finished file against the sync database ([`verify`]), the database copy a 304 may
//! keep ([`dbcopy`]), what an earlier pacman 7 run stranded ([`adopt`]), the terminal
//! ([`progress`], [`interrupt`]) and the one error type ([`error`]). [`args`] combines options,
//! configuration and the invoking pacman's command line into the settings of one download, after
//! [`checks`] refused values that cannot work; [`explain`] words why peers were not asked.
//! What the LAN may cost is bounded by [`peerlimits`] (how many peers, how long), [`bodylimit`]
//! (how long and how slow a body), [`crate::protocol::onlink`] (whose answers count) and
//! [`outlock`] (one writer per output).
//!
//! May use: [`crate::protocol`], [`crate::pacman`], and the shared pieces at the crate root.
//! Never [`crate::daemon`]: the client must work on a machine where no daemon runs.

pub mod adopt;
pub mod agent;
pub mod args;
pub mod bodylimit;
pub mod checks;
pub mod dbcopy;
pub mod discovery;
pub mod error;
pub mod explain;
pub mod fetch;
pub mod httperror;
pub mod interrupt;
pub mod lanmemory;
pub mod limits;
pub mod localfile;
pub mod outhash;
pub mod outlock;
pub mod output;
pub mod peerlimits;
pub mod progress;
pub mod signature;
pub mod transfer;
pub mod verify;

pub use error::Error;
