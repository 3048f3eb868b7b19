//! What the user sees and does while a file downloads: the progress line ([`progress`]) and
//! Ctrl-C ([`interrupt`]).

pub mod interrupt;
pub mod progress;
