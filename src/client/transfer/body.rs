//! What a response body may be, enforced while it is read: no longer than the file can be, and,
//! from a LAN peer, no slower than a floor.
//!
//! A server's own framing cannot be trusted for either: a chunked or close-delimited body has
//! no length, and a body that drips one byte a second resets every per-read timeout forever.
//! So [`Guarded`] wraps the body reader. It refuses to hand out a byte past the ceiling (the
//! sync database's size, else the size a peer announced) — the output never grows past the
//! file's size, however endless the body — and it measures the rate over a window, like curl's
//! `--speed-limit`/`--speed-time` (and pacman's own 1 byte/s over 10 s, sized here for a LAN).
//! Both failures are typed, so [`crate::client::transfer`] can name them and discard the bytes
//! of an overlong body.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The slowest a body may arrive: fewer than `bytes_per_sec` × `window` bytes in any `window`
/// is a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeed {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

/// Why a guarded body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More than `limit` body bytes arrived.
    Overlong { limit: u64 },
    /// Only `got` bytes arrived in a whole window.
    TooSlow { got: u64, floor: LowSpeed },
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Overlong { limit } => write!(f, "body longer than {limit} bytes"),
            Cut::TooSlow { got, floor } => write!(
                f,
                "{got} bytes in {:?}, below {} bytes/s",
                floor.window, floor.bytes_per_sec
            ),
        }
    }
}

impl std::error::Error for Cut {}

impl Cut {
    /// The cut carried inside an I/O error from [`Guarded::read`], if it is one.
    pub fn of(e: &io::Error) -> Option<Cut> {
        e.get_ref()?.downcast_ref::<Cut>().copied()
    }
}

/// A body reader held to a ceiling and, optionally, a speed floor.
pub struct Guarded<R> {
    inner: R,
    /// Bytes still allowed; `None` for no ceiling.
    left: Option<u64>,
    limit: u64,
    /// The body went past the ceiling; reported on the next read.
    overran: bool,
    floor: Option<LowSpeed>,
    window_start: Instant,
    window_bytes: u64,
}

impl<R: Read> Guarded<R> {
    pub fn new(inner: R, ceiling: Option<u64>, floor: Option<LowSpeed>) -> Guarded<R> {
        Guarded {
            inner,
            left: ceiling,
            limit: ceiling.unwrap_or(u64::MAX),
            overran: false,
            floor,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    fn check_speed(&mut self, n: usize) -> io::Result<()> {
        let Some(floor) = self.floor else {
            return Ok(());
        };
        self.window_bytes += n as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed < floor.window {
            return Ok(());
        }
        let needed = (floor.bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
        if self.window_bytes < needed {
            let got = self.window_bytes;
            return Err(io::Error::other(Cut::TooSlow { got, floor }));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for at most one byte past the ceiling: enough to see that the body goes on,
        // without taking in a buffer of what can only be garbage.
        let room = match self.left {
            Some(left) => {
                usize::try_from(left.saturating_add(1)).map_or(buf.len(), |r| r.min(buf.len()))
            }
            None => buf.len(),
        };
        if self.overran {
            return Err(io::Error::other(Cut::Overlong { limit: self.limit }));
        }
        let mut n = self.inner.read(&mut buf[..room])?;
        if let Some(left) = self.left {
            if n as u64 > left {
                // Hand out the bytes up to the ceiling; the next read reports the overrun.
                self.overran = true;
                n = left as usize;
                if n == 0 {
                    return Err(io::Error::other(Cut::Overlong { limit: self.limit }));
                }
            }
            self.left = Some(left - n as u64);
        }
        self.check_speed(n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_past_the_ceiling_is_cut_before_the_extra_bytes_are_handed_out() {
        let mut exact = Guarded::new(&b"0123456789"[..], Some(10), None);
        let mut got = Vec::new();
        exact.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"0123456789");

        let mut long = Guarded::new(&b"0123456789x"[..], Some(10), None);
        let mut got = Vec::new();
        let err = long.read_to_end(&mut got).unwrap_err();
        assert_eq!(Cut::of(&err), Some(Cut::Overlong { limit: 10 }));
        assert_eq!(got, b"0123456789", "nothing past the ceiling");
    }

    /// A reader that yields one byte per call, `pause` apart.
    struct Drip(Duration);
    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.0);
            buf[0] = b'x';
            Ok(1)
        }
    }

    #[test]
    fn a_drip_fails_once_a_window_has_passed() {
        let floor = LowSpeed {
            bytes_per_sec: 1000,
            window: Duration::from_millis(50),
        };
        let mut drip = Guarded::new(Drip(Duration::from_millis(10)), None, Some(floor));
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let err = loop {
            match drip.read(&mut buf) {
                Ok(n) => assert!(n == 1 && started.elapsed() < Duration::from_secs(5)),
                Err(e) => break e,
            }
        };
        assert!(matches!(Cut::of(&err), Some(Cut::TooSlow { .. })), "{err}");
    }
}
