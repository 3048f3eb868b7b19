//! pacserve-fetch: share pacman's package cache across a LAN.
//!
//! The folders are the architecture:
//!
//! - [`client`]: `pacserve-fetch`, the program pacman runs for every file. Start at
//!   [`client::fetch::fetch`], one download top to bottom.
//! - [`daemon`]: `pacserved`, which answers the LAN's queries for the local cache and serves it
//!   over HTTP. Start at [`daemon::run`].
//! - [`protocol`]: what crosses the LAN between the two: the discovery datagrams, their spec, and
//!   the interfaces they go out on.
//! - [`pacman`]: pacman's world: file names, sync databases, pacman.conf, `pacsrv`.
//!
//! The client never imports from the daemon, nor the daemon from the client: they share only
//! `protocol`, `pacman` and the few pieces at this level ([`config`] files, [`cli`] helpers, the
//! [`statedir`], the HTTPS trust store in [`tls`], [`hex`]). The binaries in `src/bin/` only parse arguments and print errors.

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod hex;
pub mod pacman;
pub mod protocol;
pub mod statedir;
pub mod tls;
