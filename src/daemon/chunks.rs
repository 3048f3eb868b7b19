//! How much of a file a response reads at a time: large for speed, within a global budget.
//!
//! Only bodies hyper sends read chunks: what the kernel path ([`crate::daemon::sendfile`]) leaves
//! to hyper, such as a percent-encoded name. Plain GETs of cache files and of files still
//! arriving go by sendfile and hold no chunk.
//!
//! Every response holds what it has read until the client takes it: the chunk hyper is sending
//! and tokio's read buffer, two chunks. Large chunks (fewer reads, each a round trip to tokio's
//! blocking pool, and fewer writes) carried 32 concurrent downloads at 743 MB/s where 64 KiB
//! chunks managed 436 MB/s; but a client that never reads pins its two chunks until the send
//! timeout drops it, and 1024 such clients with 256 KiB chunks pinned over 500 MB. So only
//! [`BIG_CHUNKS`] responses at a time read [`BIG`] chunks; the rest read [`SMALL`] ones until a
//! big one is free. What non-reading clients can pin is then bounded by
//! `BIG_CHUNKS × 2 × BIG + (connections − BIG_CHUNKS) × 2 × SMALL`, 60 MiB (83 MB peak RSS
//! measured with 1088 non-reading clients, tests/it/lan_daemon_limits.rs), and a LAN's ordinary
//! dozens of downloads all go at full speed.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The chunk a response reads when the budget allows.
pub const BIG: usize = 256 * 1024;
/// The chunk it reads otherwise.
pub const SMALL: usize = 32 * 1024;
/// Responses reading big chunks at once.
pub const BIG_CHUNKS: usize = 64;

#[derive(Debug, Clone)]
pub struct ChunkBudget(Arc<Semaphore>);

/// The chunk size one response may use; a big one is returned to the budget on drop.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Default for ChunkBudget {
    fn default() -> ChunkBudget {
        ChunkBudget(Arc::new(Semaphore::new(BIG_CHUNKS)))
    }
}

impl Chunk {
    /// A small chunk, outside any budget.
    pub fn small() -> Chunk {
        Chunk {
            bytes: SMALL,
            _permit: None,
        }
    }
}

impl ChunkBudget {
    /// A big chunk if one is free, else a small one; never waits.
    pub fn take(&self) -> Chunk {
        match self.0.clone().try_acquire_owned() {
            Ok(permit) => Chunk {
                bytes: BIG,
                _permit: Some(permit),
            },
            Err(_) => Chunk::small(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_chunks_are_rationed_and_returned() {
        let budget = ChunkBudget::default();
        let big: Vec<Chunk> = (0..BIG_CHUNKS).map(|_| budget.take()).collect();
        assert!(big.iter().all(|c| c.bytes == BIG));
        assert_eq!(budget.take().bytes, SMALL, "budget spent");
        drop(big);
        assert_eq!(budget.take().bytes, BIG, "returned on drop");
    }
}
