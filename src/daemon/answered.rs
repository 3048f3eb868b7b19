//! The queries a responder thread handled last, so that each query gets one answer however many
//! copies of it arrive.
//!
//! A client sends its query twice with one nonce, in its own version first and in version 1 for
//! daemons not yet upgraded (see [`crate::protocol`], Versions). A daemon that understands the
//! first copy answers it, in that version, and drops the older copies that follow: half the
//! datagrams a LAN sends back per query. A QUIET query for a file that is not here is handled
//! too (by saying nothing), so its version 1 copy cannot bring the MISS back.
//!
//! Copies are recognised by nonce *and* source (address and port): every host of the LAN sees
//! a multicast query's nonce, and one that sends it from its own address must not silence the
//! answer to the client that chose it. A copy in a newer version than the one handled is
//! answered (it says more; the client keeps the newer answer). The ring is fixed in size: a
//! flood of distinct nonces overwrites it and costs no memory, and at worst lets a real
//! client's older copy through, answered as before this existed.

use std::net::SocketAddr;

/// Recent (nonce, source, version) handled, oldest overwritten first.
#[derive(Debug)]
pub struct Answered {
    entries: Vec<Entry>,
    /// Where the next entry goes once the ring is full.
    next: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    nonce: [u8; 8],
    from: SocketAddr,
    version: u8,
}

impl Answered {
    /// A client's copies arrive back to back, microseconds apart; this many other queries in
    /// between would take a flood (the responder answers at most 5000 a second).
    pub const CAPACITY: usize = 256;

    pub fn new() -> Answered {
        Answered {
            entries: Vec::with_capacity(Self::CAPACITY),
            next: 0,
        }
    }

    /// Whether the query `nonce` of `version` from `from` is to be handled: not when a copy of
    /// it from that source was handled already in this version or a newer one. Records it.
    pub fn first(&mut self, nonce: [u8; 8], from: SocketAddr, version: u8) -> bool {
        if let Some(seen) = (self.entries.iter_mut()).find(|e| e.nonce == nonce && e.from == from) {
            if seen.version >= version {
                return false;
            }
            seen.version = version;
            return true;
        }
        let entry = Entry {
            nonce,
            from,
            version,
        };
        if self.entries.len() < Self::CAPACITY {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % Self::CAPACITY;
        }
        true
    }

    #[cfg(test)]
    fn footprint(&self) -> (usize, usize) {
        (self.entries.len(), self.entries.capacity())
    }
}

impl Default for Answered {
    fn default() -> Answered {
        Answered::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    #[test]
    fn the_older_copy_of_a_query_is_dropped_a_newer_one_answered() {
        let mut a = Answered::new();
        let client = at(1, 40000);
        assert!(a.first([1; 8], client, 3), "the newest copy first");
        assert!(!a.first([1; 8], client, 1), "its version 1 copy");
        assert!(!a.first([1; 8], client, 3), "the same copy again");
        // Older first (a client that sends version 1 first, or reordering): both answered.
        assert!(a.first([2; 8], client, 1));
        assert!(a.first([2; 8], client, 3), "a newer copy says more");
        assert!(!a.first([2; 8], client, 1));
        assert!(!a.first([2; 8], client, 2), "older than the newest handled");
        // A version 1 client's only query is answered.
        assert!(a.first([3; 8], client, 1));
    }

    #[test]
    fn another_source_with_the_same_nonce_silences_nobody() {
        let mut a = Answered::new();
        let (client, spoofer) = (at(1, 40000), at(66, 40000));
        // The spoofer saw the multicast nonce and sends it first, in every version.
        assert!(a.first([9; 8], spoofer, 4));
        assert!(!a.first([9; 8], spoofer, 3));
        assert!(!a.first([9; 8], spoofer, 1));
        assert!(a.first([9; 8], client, 3), "the real client is answered");
        assert!(!a.first([9; 8], client, 1));
        // Nor does the same address from another port (another run on the same host).
        assert!(a.first([9; 8], at(1, 40001), 3));
    }

    #[test]
    fn a_flood_of_distinct_nonces_grows_nothing_and_forgets_the_oldest() {
        let mut a = Answered::new();
        let client = at(1, 40000);
        assert!(a.first([7; 8], client, 3));
        for i in 0..100_000u64 {
            let source = at((i % 250) as u8, 1024 + (i % 60000) as u16);
            assert!(a.first(i.to_be_bytes(), source, 3));
            let (len, capacity) = a.footprint();
            assert!(len <= Answered::CAPACITY && capacity == Answered::CAPACITY);
        }
        // Pushed out: the older copy is answered, as without the ring; nothing breaks.
        assert!(a.first([7; 8], client, 1));
        // A client whose copies arrive back to back is still deduplicated mid-flood.
        assert!(a.first([8; 8], client, 3));
        for i in 0..(Answered::CAPACITY as u64 - 1) {
            a.first(((i + 1) << 32).to_be_bytes(), at(2, 2000), 3);
        }
        assert!(!a.first([8; 8], client, 1), "within the ring's reach");
    }
}
