//! The invoking pacman as a process: which transaction a download belongs to, and whether a
//! caller is that pacman's own child, read from `/proc`.
//!
//! pacman runs `pacserve-fetch` once per file, so nothing names the transaction those runs belong
//! to but the pacman process itself. Its pid alone is not enough (pids are reused), so a
//! transaction is the pid with the process's start time, which together never repeat while the
//! machine runs. The client names its transaction this way in a plan for the local pacserved;
//! the daemon checks with the same functions that a caller is a child of the pacman it claims,
//! and that the pacman still runs.

use std::fmt;

/// One pacman transaction: its process id and start time (clock ticks after boot, from
/// `/proc/<pid>/stat`), which together never repeat while the machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transaction {
    pub pid: u32,
    pub start: u64,
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

impl Transaction {
    pub fn parse(word: &str) -> Result<Transaction, String> {
        let (pid, start) = word
            .split_once('-')
            .ok_or_else(|| format!("bad transaction {word:?}"))?;
        Ok(Transaction {
            pid: number(pid)?,
            start: number(start)?,
        })
    }

    /// The process `pid` as it runs now; None when it is gone.
    pub fn of_process(pid: u32) -> Option<Transaction> {
        let start = stat_field(pid, 19)?.parse().ok()?;
        Some(Transaction { pid, start })
    }

    /// Whether `caller` is a child of this transaction's pacman: only pacman's own downloader
    /// may tell the daemon about its transaction.
    pub fn is_parent_of(&self, caller: u32) -> bool {
        parent_of(caller) == Some(self.pid) && self.alive()
    }

    /// Whether the pacman that started this transaction still runs.
    pub fn alive(&self) -> bool {
        Transaction::of_process(self.pid) == Some(*self)
    }
}

/// The parent process id of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 1)?.parse().ok()
}

/// Whether process `pid` runs a program named `pacman`.
pub fn is_pacman(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "pacman")
}

/// The kernel reports start times in clock ticks of 1/100 s (USER_HZ) on every architecture.
const TICKS_PER_SEC: u64 = 100;

/// Now, in the clock of [`Transaction::start`]: ticks since boot, suspend included
/// (`CLOCK_BOOTTIME`, which needs no `/proc/uptime`: pacserved's unit hides it).
pub fn now_ticks() -> Option<u64> {
    use nix::time::{ClockId, clock_gettime};
    let now = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let ticks = u64::try_from(now.tv_nsec()).ok()? / (1_000_000_000 / TICKS_PER_SEC);
    Some(secs * TICKS_PER_SEC + ticks)
}

/// Field `n` of `/proc/<pid>/stat` counted after the command name (0 is the state). The name
/// may hold spaces and parentheses, so fields count from the last ')'.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n).map(str::to_owned)
}

fn number<T: std::str::FromStr>(word: &str) -> Result<T, String> {
    word.parse().map_err(|_| format!("not a number: {word:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_live_transaction() {
        let me = Transaction::of_process(std::process::id()).unwrap();
        assert!(me.alive());
        assert!(!Transaction { start: 1, ..me }.alive() || me.start == 1);
        let parent = Transaction::of_process(std::os::unix::process::parent_id()).unwrap();
        assert!(parent.is_parent_of(std::process::id()));
        assert!(!me.is_parent_of(std::process::id()));
    }

    #[test]
    fn this_process_started_before_now_in_the_same_clock() {
        let me = Transaction::of_process(std::process::id()).unwrap();
        let now = now_ticks().unwrap();
        assert!(
            me.start <= now && now - me.start < 100 * 3600,
            "{me} at {now}"
        );
    }

    #[test]
    fn a_transaction_reads_back_what_it_writes() {
        let txn = Transaction { pid: 7, start: 99 };
        assert_eq!(Transaction::parse(&txn.to_string()), Ok(txn));
        for bad in ["7", "7-", "-9", "x-9", "99999999999-1", "7-9-1"] {
            assert!(Transaction::parse(bad).is_err(), "{bad}");
        }
    }
}
