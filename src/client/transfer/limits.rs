//! The time limits of one transfer: how long connecting, a silent server, the response head
//! and the whole exchange may take, and the slowest a body may arrive. Mirrors get pacman's
//! own numbers; LAN peers much shorter ones (see [`crate::client::peers::budget`]).

use std::time::{Duration, Instant};

use crate::client::transfer::body::LowSpeed;

/// The time limits of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long resolving and connecting (TCP and TLS) may take.
    pub connect: Duration,
    /// How long a server may send nothing, before the headers or in the body, before we give up.
    pub stall: Duration,
    /// How long the whole response head may take, however it trickles in; `None`: only `stall`.
    pub headers: Option<Duration>,
    /// A body slower than this is abandoned (see [`crate::client::transfer::body`]); `None`: never.
    pub low_speed: Option<LowSpeed>,
    /// The exchange must be over by then, body included; `None`: no end.
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    /// 10 s each: what pacman's own downloader uses (CURLOPT_CONNECTTIMEOUT, and LOW_SPEED_TIME
    /// with a 1 byte/s floor), so switching to pacserve-fetch does not change how long a dead
    /// mirror costs.
    fn default() -> Limits {
        Limits {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(10),
            headers: None,
            low_speed: None,
            deadline: None,
        }
    }
}

impl Limits {
    /// For LAN peers: 2 s to connect, 2 s without data (the rest is added per file by
    /// [`crate::client::peers::budget`]).
    pub fn peer_default() -> Limits {
        Limits {
            connect: Duration::from_secs(2),
            stall: Duration::from_secs(2),
            ..Limits::default()
        }
    }
}
