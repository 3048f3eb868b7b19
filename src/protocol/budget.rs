//! What one LAN source may cost a download, on either side: the client taking a file from a
//! peer, and the daemon's agent following another daemon's download.
//!
//! Anyone on the LAN can answer a query, so a peer is never trusted to be fast, honest or
//! finished: it gets a floor under its speed, a deadline for the whole file, and no system port.
//! Both sides apply the same numbers, so a lying host costs a daemon no more than a client.

use std::time::Duration;

/// An answer naming an HTTP port below this is ignored: those are the system ports (ssh, smtp,
/// http, …) where a LAN host could otherwise point our GETs at another service; pacserved
/// runs unprivileged on 15678, and tests use ephemeral ports.
pub const MIN_HTTP_PORT: u16 = 1024;

/// A peer's status line and headers, with any `100 Continue` before them, must arrive this soon
/// after the request: a daemon answers in milliseconds.
pub const HEADER_BUDGET: Duration = Duration::from_secs(3);

/// The slowest a peer may send, averaged over [`FLOOR_WINDOW`]: 64 KiB/s. The slowest LAN
/// worth using (weak Wi-Fi) does several hundred KiB/s; anything below is a broken or hostile
/// peer, and the mirror is likely faster.
pub const FLOOR_BYTES_PER_SEC: u64 = 64 * 1024;
pub const FLOOR_WINDOW: Duration = Duration::from_secs(3);

/// The whole of one file from the LAN gets this much time…
pub const PHASE_BASE: Duration = Duration::from_secs(10);
/// …plus the file's size at this rate (1 MiB/s, slower than any LAN but fast enough that a peer
/// just above the floor cannot hold a large package for hours).
pub const PHASE_RATE: u64 = 1024 * 1024;

/// [`PHASE_BASE`] plus `size` at [`PHASE_RATE`].
pub fn phase(size: u64) -> Duration {
    PHASE_BASE + Duration::from_secs(size / PHASE_RATE)
}

/// A source that failed (stalled, broke off, or sent a file that is not the file) is avoided for
/// this long per consecutive failure (as pacredir does)…
pub const BACKOFF_STEP: Duration = Duration::from_secs(30);
/// …but never longer than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);

/// How long a source that has failed `failures` times in a row is avoided.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_STEP.saturating_mul(failures).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_grows_with_the_file() {
        assert_eq!(phase(20_000), PHASE_BASE);
        assert_eq!(
            phase(100 * PHASE_RATE),
            PHASE_BASE + Duration::from_secs(100)
        );
    }
}
