//! The LAN side of one download: who to ask and who answered ([`discovery`]), what recent runs
//! learned about the LAN so the next file does not wait for nobody ([`memory`]), what the peer
//! phase may cost before the mirror takes over ([`budget`]), which interfaces to ask on
//! ([`networks`]), and why peers were or were not asked, in words ([`explain`]); which of the
//! answers one download tries ([`candidates`]), and a big file from several at once
//! ([`several`]).
//!
//! A peer is untrusted: what comes from one counts only once [`crate::client::output::verify`]
//! says it is the file the sync database describes.

pub mod budget;
pub mod candidates;
pub mod discovery;
pub mod explain;
pub mod memory;
pub mod networks;
pub mod several;
