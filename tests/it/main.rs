//! One integration-test binary (as ripgrep does): every module drives the real binaries
//! against real servers on loopback or inside network namespaces the tests create.

mod util;

// Servers the tests start: nginx as the mirror, and a scripted server for misbehaviour.
mod archrepo;
mod faultserver;
mod nginx;

// pacserve-fetch against nginx: fresh, resumed, databases, errors.
mod mirror;
// pacserve-fetch against servers that break the HTTP contract.
mod faults;
// file:// URLs, bad arguments, local failures (disk full, permissions), signals.
mod local;
// The real pacman using pacserve-fetch as its XferCommand.
mod pacman;
