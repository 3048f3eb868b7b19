//! HTTP connection slots, shared fairly between source addresses.
//!
//! Every connection holds a [`Slot`] for its lifetime. Slots are bounded in total (memory) and
//! per source address (one host cannot take them all), and they are charged only after the
//! allowlist check, so a host outside the allowlist never holds one. Per-source caps alone are
//! not enough: on a LAN one machine has many addresses (IPv6 privacy addresses, aliases), so 17
//! addresses × 64 connections filled all 1024 slots and real clients were refused. So when the
//! table is full, a newcomer from a source holding fewer connections than the heaviest source
//! takes a slot from that source: its oldest connection is told to close ([`Slot::evicted`]).
//! A client with one or two connections therefore always gets in while someone holds many;
//! the flood can only compete with itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_source: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    next_id: u64,
    /// Each source's connections, oldest first.
    by_source: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
}

/// One connection's claim; released on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
    id: u64,
    evicted: Arc<Notify>,
}

impl Slots {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max_total,
            max_per_source,
            table: Mutex::new(Table::default()),
        })
    }

    /// A slot for a connection from `source`, or `None` when it must be closed: the source is
    /// at its own cap, or every slot is taken by sources no heavier than this one.
    pub fn take(self: &Arc<Slots>, source: IpAddr) -> Option<Slot> {
        let mut table = self.table.lock().ok()?;
        let mine = table.by_source.get(&source).map_or(0, VecDeque::len);
        if mine >= self.max_per_source {
            return None;
        }
        if table.total >= self.max_total {
            let heaviest = table
                .by_source
                .iter()
                .max_by_key(|(_, conns)| conns.len())
                .map(|(ip, conns)| (*ip, conns.len()))?;
            if heaviest.1 <= mine + 1 {
                return None;
            }
            let conns = table.by_source.get_mut(&heaviest.0)?;
            let (_, victim) = conns.pop_front()?;
            if conns.is_empty() {
                table.by_source.remove(&heaviest.0);
            }
            table.total -= 1;
            // notify_one keeps the wake-up even if the connection is not waiting yet.
            victim.notify_one();
        }
        let id = table.next_id;
        table.next_id += 1;
        let evicted = Arc::new(Notify::new());
        table
            .by_source
            .entry(source)
            .or_default()
            .push_back((id, evicted.clone()));
        table.total += 1;
        Some(Slot {
            slots: self.clone(),
            source,
            id,
            evicted,
        })
    }

    /// Connections held now, in total.
    pub fn held(&self) -> usize {
        self.table.lock().map_or(0, |t| t.total)
    }
}

impl Slot {
    /// Completes when a lighter source has taken this slot: the connection should close.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut table) = self.slots.table.lock() else {
            return;
        };
        let Some(conns) = table.by_source.get_mut(&self.source) else {
            return;
        };
        // Absent when this slot was evicted: it was already uncounted then.
        if let Some(at) = conns.iter().position(|(id, _)| *id == self.id) {
            conns.remove(at);
            if conns.is_empty() {
                table.by_source.remove(&self.source);
            }
            table.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn per_source_cap_and_release_on_drop() {
        let slots = Slots::new(10, 2);
        let a = slots.take(ip(1)).unwrap();
        let _b = slots.take(ip(1)).unwrap();
        assert!(slots.take(ip(1)).is_none(), "source at its cap");
        drop(a);
        assert!(slots.take(ip(1)).is_some(), "released");
        assert_eq!(slots.held(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_table_gives_a_light_source_a_slot_of_the_heaviest() {
        let slots = Slots::new(4, 3);
        let flood: Vec<Slot> = (0..3).map(|_| slots.take(ip(1)).unwrap()).collect();
        let other = slots.take(ip(2)).unwrap();
        assert_eq!(slots.held(), 4);
        let newcomer = slots.take(ip(3)).expect("takes the flood's oldest slot");
        // The flood's oldest connection is told to close; the others are not.
        tokio::time::timeout(std::time::Duration::from_secs(1), flood[0].evicted())
            .await
            .expect("oldest evicted");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), flood[1].evicted())
                .await
                .is_err()
        );
        assert_eq!(slots.held(), 4);
        let fourth = slots.take(ip(4)).expect("ip 1 still holds 2");
        // Now every source holds one: nobody can take from an equal.
        assert!(slots.take(ip(5)).is_none());
        drop(flood);
        assert_eq!(slots.held(), 3, "evicted slots are not released twice");
        drop((other, newcomer, fourth));
        assert_eq!(slots.held(), 0);
    }
}
