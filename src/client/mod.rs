//! `pacserve-fetch`: the one-shot downloader pacman runs as `XferCommand` for every file.
//!
//! Start at [`fetch::fetch`]: decide what the file is, ask the LAN who has it, try those peers,
//! then the mirror (through the local pacserved when one runs), and report. Each folder is one
//! concern that function leans on:
//! - [`output`]: `%o`, the only file written: one writer ([`output::lock`]), its running
//!   SHA-256, the check against the sync database ([`output::verify`]), the database copy a 304
//!   keeps, what an earlier pacman 7 run stranded;
//! - [`peers`]: asking the LAN, what recent runs learned of it, what the LAN may cost one file,
//!   why peers were not asked;
//! - [`transfer`]: moving bytes from an HTTP or `file://` URL into the output, with the limits
//!   of one transfer and of a response body;
//! - [`mirror`]: the mirror, through the local pacserved's agent when one runs, else directly,
//!   and the transaction's plan for its prefetch;
//! - [`terminal`]: progress and Ctrl-C.
//!
//! Beside them: [`signature`] (a package's `.sig`), [`report`] (what the run kept from where,
//! told to the local pacserved for the transaction's summary), [`args`] (options, configuration and the
//! invoking pacman combined into one download's settings, after [`checks`] refused values that
//! cannot work) and the one error type ([`error`]). Whose answers count is
//! [`crate::protocol::onlink`]'s decision.
//!
//! May use: [`crate::protocol`], [`crate::pacman`], and the shared pieces at the crate root.
//! Never [`crate::daemon`]: the client must work on a machine where no daemon runs.

pub mod args;
pub mod checks;
pub mod error;
pub mod fetch;
pub mod mirror;
pub mod output;
pub mod peers;
pub mod report;
pub mod signature;
pub mod terminal;
pub mod transfer;

pub use error::Error;
