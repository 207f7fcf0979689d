//! `RecentEntries`: the newest log entries of one replica, kept in memory after RocksDB synced
//! them, so that replication to followers and apply (openraft 0.9 reads every entry back from
//! the log store for both, on the leader once per follower) do not open a RocksDB iterator and
//! decode each entry again. It mirrors the stored log exactly for the indexes it holds; it
//! must not hold an entry RocksDB does not hold, nor answer for an index it does not hold.

use crate::types::LogEntry;
use std::collections::VecDeque;

/// A contiguous run of the newest stored entries, bounded in count and encoded bytes.
#[derive(Debug)]
pub struct RecentEntries {
    /// Consecutive indexes, oldest first, each with its encoded size.
    entries: VecDeque<(LogEntry, usize)>,
    /// The sum of the encoded sizes held.
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl RecentEntries {
    /// An empty cache holding at most `max_entries` entries and (beyond its newest entry)
    /// `max_bytes` encoded bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> RecentEntries {
        assert!(max_entries > 0, "a cache of recent entries must hold one");
        RecentEntries {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Records entries RocksDB has just stored (synced), in index order. An entry that does
    /// not extend the run exactly replaces what the cache held from its index on (a write
    /// over stored indexes) or, after a gap, everything.
    pub fn stored(&mut self, entries: impl IntoIterator<Item = (LogEntry, usize)>) {
        for (entry, size) in entries {
            let index = entry.log_id.index;
            match self.last_index() {
                Some(last) if index == last + 1 => {}
                Some(last)
                    if self.first_index().is_some_and(|first| index >= first) && index <= last =>
                {
                    self.truncated(index)
                }
                _ => self.clear(),
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
            while self.entries.len() > self.max_entries
                || (self.entries.len() > 1 && self.bytes > self.max_bytes)
            {
                self.pop_front();
            }
        }
        self.check();
    }

    /// Forgets every entry at `index` or later (the log was truncated there).
    pub fn truncated(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            let (_, size) = self.entries.pop_back().expect("a last entry exists");
            self.bytes -= size;
        }
        self.check();
    }

    /// Forgets every entry at `index` or earlier (the log was purged up to it).
    pub fn purged(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
        self.check();
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Copies of the entries with index in `[start, end)`, if the cache holds all of them;
    /// `None` when any of them must be read from RocksDB instead.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<LogEntry>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        if start < first || end > last + 1 || start > end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn check(&self) {
        debug_assert!(self.entries.len() <= self.max_entries);
        debug_assert_eq!(
            self.bytes,
            self.entries.iter().map(|(_, s)| s).sum::<usize>()
        );
        debug_assert!(self
            .entries
            .iter()
            .zip(self.entries.iter().skip(1))
            .all(|((a, _), (b, _))| b.log_id.index == a.log_id.index + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64, term: u64) -> (LogEntry, usize) {
        let log_id = LogId::new(CommittedLeaderId::new(term, 1), index);
        (
            LogEntry {
                log_id,
                payload: EntryPayload::Blank,
            },
            100,
        )
    }

    fn indexes(entries: &[LogEntry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect()
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let mut cache = RecentEntries::new(4, 10_000);
        assert!(cache.get(1, 2).is_none());
        cache.stored((1..=6).map(|i| entry(i, 1)));
        // 4 newest kept: 3..=6.
        assert_eq!(
            indexes(&cache.get(3, 7).unwrap()),
            [(3, 1), (4, 1), (5, 1), (6, 1)]
        );
        assert_eq!(indexes(&cache.get(5, 6).unwrap()), [(5, 1)]);
        assert!(cache.get(4, 4).unwrap().is_empty());
        assert!(cache.get(2, 5).is_none(), "index 2 was evicted");
        assert!(cache.get(5, 8).is_none(), "index 7 is not stored");
    }

    #[test]
    fn mirrors_truncate_purge_and_overwrite() {
        let mut cache = RecentEntries::new(100, 10_000);
        cache.stored((1..=5).map(|i| entry(i, 1)));
        cache.truncated(4);
        assert!(cache.get(3, 5).is_none());
        cache.stored([entry(4, 2)]);
        assert_eq!(indexes(&cache.get(3, 5).unwrap()), [(3, 1), (4, 2)]);
        // Overwriting from index 2 drops the old 2..=4.
        cache.stored([entry(2, 3)]);
        assert_eq!(indexes(&cache.get(1, 3).unwrap()), [(1, 1), (2, 3)]);
        assert!(cache.get(3, 4).is_none());
        cache.purged(1);
        assert!(cache.get(1, 2).is_none());
        assert_eq!(indexes(&cache.get(2, 3).unwrap()), [(2, 3)]);
        // A gap (a snapshot installed, then later entries): only the new run is held.
        cache.stored([entry(10, 3)]);
        assert!(cache.get(2, 3).is_none());
        assert_eq!(indexes(&cache.get(10, 11).unwrap()), [(10, 3)]);
    }

    #[test]
    fn bounded_by_bytes_but_keeps_the_newest() {
        let mut cache = RecentEntries::new(100, 250);
        cache.stored((1..=5).map(|i| entry(i, 1)));
        assert_eq!(indexes(&cache.get(4, 6).unwrap()), [(4, 1), (5, 1)]);
        assert!(cache.get(3, 4).is_none());
        let big = (entry(6, 1).0, 1_000);
        cache.stored([big]);
        assert_eq!(indexes(&cache.get(6, 7).unwrap()), [(6, 1)]);
        assert!(cache.get(5, 6).is_none());
    }
}
