//! pacman's world, as both binaries see it: what a file name says ([`name`]), what the sync
//! databases vouch for ([`syncdb`]), the few settings read from pacman.conf ([`conf`]), the
//! invoking pacman's command line and the paths it resolves ([`invocation`]), whether pacman 7's
//! download user can run us ([`download_user`]), the invoking pacman as a process ([`process`]), the Include line for pacman.conf ([`include`]),
//! and `pacsrv`, which runs pacman once through pacserve-fetch ([`pacsrv`]).
//!
//! Start at [`name::FileKind`]: what kind of file pacman asked for decides everything else.
//! May use only the shared pieces at the crate root; the client and the daemon both use this.

pub mod conf;
pub mod download_user;
pub mod gpg;
pub mod include;
pub mod invocation;
pub mod known_keys;
pub mod name;
pub mod pacsrv;
pub mod process;
pub mod repos;
pub mod syncdb;
