//! One integration-test binary (as ripgrep does): every module drives the real binaries
//! against real servers on loopback or inside network namespaces the tests create.

mod util;

// Servers the tests start: nginx as the mirror, and a scripted server for misbehaviour.
mod archrepo;
mod daemon;
mod faultserver;
mod hostile;
mod netns;
mod nginx;
mod relay;

// pacserve-fetch against nginx: fresh, resumed, databases, errors.
mod mirror;
// pacserve-fetch against servers that break the HTTP contract.
mod faults;
// file:// URLs, bad arguments, local failures (disk full, permissions), signals.
mod local;
// The real pacman using pacserve-fetch as its XferCommand.
mod pacman;
// pacman 7.1 with its DownloadUser sandbox: peers, mirror, -Syy, resuming across runs.
mod pacman7;
// pacman 7.1 with the Include line: pacserved's /cache/ endpoint between pacman and the LAN.
mod pacman7_include;
mod pacman7_setup;
// The Include line with packages too big for pacman's 10 s: kept alive from the mirror, then
// the verified LAN copy; failing peers, ranges, a local user hammering /cache/ (issue 22).
mod cacheserver;
// Peers on loopback inside a private namespace (rootless): protocol, daemon, discovery.
mod lan_loopback;
mod lan_pieces;
// Peers on a multi-host namespace LAN (root): IPv4, IPv6-only, static peers, real pacman.
mod lan_hosts;
// The local download agent: warm mirror connections, prefetch, fallback, refusals, HTTPS.
mod agent;
// Man pages, help, pacman.conf.example, unit, PKGBUILD, completions, README walkthrough.
mod arch;
// The README's debugging commands, bad values, fatal errors, the progress line.
mod by_hand;
// The Include line and its helper, the firewall definitions, the LICENSE.
mod contrib;
// Hostile peers, the allowlist, kill -9, and pacman 7's download user, with the real pacman.
mod lan_trust;
// Peers dying, unplugged, stalling or lying mid-transfer; the download carries on.
mod lan_faults;
// Hostile LAN hosts against the client's limits: endless or dripping bodies, floods of answers,
// spoofed ids, foreign ports; and one writer per output (issue 10).
mod lan_hostile;
// pacserved against clients that never read, idle floods, forged query sources (root).
mod lan_daemon_limits;
// pacserved's HTTP corners: If-Range, empty ranges, odd names, honest counts, the status page.
mod daemon_http;
// pacserved's own HTTP/1.1 against a hostile LAN host and local user (issue 20): smuggling,
// malformed and slow heads, floods, Range and conditional corners, path tricks, the agent socket.
mod http_attacks;
// Hosts upgrading together: downloads in progress shared, claims, protocol versions mixed.
mod lan_together;
// Large LANs: one answer per query, QUIET queries once many daemons are known, and attacks on both.
mod lan_scale;
// The real older releases (protocol versions 1 to 3, built from git history) with this one.
mod lan_versions;
mod oldbuilds;
// A local user against the download agent: squatting, plans, shares, firewalls, crowding.
mod local_attacks;
// The prerequisite policy: a missing tool is a clean skip, counted at the end; MISSING under
// PACSERVE_E2E=require.
mod skips;
// The HTML status page in headless Chromium: a screenshot read back (png), the DOM's numbers.
mod png;
mod status_page;
// Untrusted networks: queries only on the networks chosen.
mod untrusted;
// The line after a transaction and the totals, against the peers' and the mirror's counts.
mod summary;
// Signed packages as Arch signs them: peers' signatures checked as pacman would, offline installs.
mod signed;
// A hostile peer's signatures: doctored after signing, or dripped.
mod signed_hostile;
mod signing;
