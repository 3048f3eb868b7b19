//! pacserve-fetch: share pacman's package cache across a LAN.
//!
//! pacman runs `pacserve-fetch '%o' '%u'` once per file it needs. [`fetch::fetch`] is that whole
//! job, top to bottom; everything else in this crate is one idea it leans on:
//!
//! - [`name`]: what kind of file pacman asked for (database, signature, package), which decides
//!   whether it may be resumed and where it may come from.
//! - [`output`]: the `%o` file itself — the only file we ever write.
//! - [`transfer`]: moving bytes from an `http(s)://` or `file://` source into the output,
//!   resuming where it makes sense and refusing anything that would corrupt it.
//! - [`progress`]: the terminal progress line, drawn only when stderr is a terminal.
//! - [`error`]: the one error type, whose messages name the file or URL involved.
//!
//! The binaries in `src/bin/` only parse arguments and print errors.

pub mod allow;
pub mod args;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod interrupt;
pub mod journal;
pub mod lanmemory;
pub mod localfile;
pub mod mdns;
pub mod name;
pub mod netif;
pub mod output;
pub mod pacmanconf;
pub mod pacsrv;
pub mod progress;
pub mod protocol;
pub mod ratelimit;
pub mod responder;
pub mod server;
pub mod statedir;
pub mod stats;
pub mod syncdb;
pub mod transfer;
pub mod verify;

pub use error::Error;
