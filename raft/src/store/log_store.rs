//! `LogStore`: openraft's `RaftLogStorage` over RocksDB. Entries live in the `log` column
//! family under their big-endian index; the vote, the last purged log id and the committed log
//! id live in `meta`. Votes, truncations, purges and appends are written with `sync = true`, so
//! an append is reported to openraft only after RocksDB synced the WAL that holds it. The
//! newest synced entries are also kept in memory (`RecentEntries`) for replication and apply.
//! It must not reorder writes or leave holes in the log.

// openraft's traits fix the error type (`StorageError`, ~224 bytes); helpers share it.
#![allow(clippy::result_large_err)]

use super::codec::{decode, decode_entry, encode, encode_entry, index_key, key_index};
use super::db::{Db, CF_LOG, CF_META};
use super::recent_entries::RecentEntries;
use super::{read_err, write_err};
use crate::limits::{MAX_CACHED_LOG_BYTES, MAX_CACHED_LOG_ENTRIES};
use crate::types::{LogEntry, LogId, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

/// A log record as stored: its index and its encoded bytes.
type StoredRecord = (u64, Box<[u8]>);

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The replicated log of one replica, in RocksDB. Cheap to clone (it shares the database
/// and the recent entries).
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    recent: Arc<Mutex<RecentEntries>>,
}

impl LogStore {
    /// The log in `db`. (It cannot fail today; the `Result` keeps room for start-up checks.)
    pub fn new(db: Db) -> std::io::Result<LogStore> {
        let recent = RecentEntries::new(MAX_CACHED_LOG_ENTRIES, MAX_CACHED_LOG_BYTES);
        Ok(LogStore {
            db,
            recent: Arc::new(Mutex::new(recent)),
        })
    }

    /// The recent entries; a panic elsewhere while holding them leaves them consistent (each
    /// change is whole before the next), so a poisoned lock is taken over.
    fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get(CF_META, key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => decode(meta_name(key), &bytes).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = encode(meta_name(key), value).map_err(write_err)?;
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.db
            .raw()
            .put_cf_opt(self.db.cf(CF_META), key, bytes, &options)
            .map_err(write_err)
    }

    /// The first (`IteratorMode::Start`) or last (`End`) stored log record, if any.
    fn edge(&self, mode: IteratorMode) -> Result<Option<StoredRecord>, StorageError> {
        let mut iter = self.db.raw().iterator_cf(self.db.cf(CF_LOG), mode);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(read_err)?;
                Ok(Some((key_index(&key).map_err(read_err)?, value)))
            }
        }
    }

    /// The last log entry stored, if any.
    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.edge(IteratorMode::End)? {
            None => Ok(None),
            Some((_, value)) => Ok(Some(decode_entry(&value).map_err(read_err)?.log_id)),
        }
    }

    /// Stored entries with index in `[start, end)`, in order, from the first one stored in the
    /// range; stops at the first hole.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<LogEntry>, StorageError> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        if let Some(cached) = self.recent().get(start, end) {
            return Ok(cached);
        }
        let from = index_key(start);
        let iter = self.db.raw().iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut expected = None;
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = key_index(&key).map_err(read_err)?;
            if index >= end || expected.is_some_and(|e| e != index) {
                break;
            }
            out.push(decode_entry(&value).map_err(read_err)?);
            expected = Some(index + 1);
        }
        Ok(out)
    }

    /// The index of the first entry stored (after a purge, later than 1).
    pub fn first_index(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.edge(IteratorMode::Start)?.map(|(index, _)| index))
    }

    /// The last purged log id and the last log id, as openraft sees them.
    pub fn log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Before openraft starts: a committed vote of this replica's own (it led that term) is
    /// stored again uncommitted, for the same term. openraft 0.9 restores a replica whose
    /// committed vote is its own as leader of that term at once, with the commit index it
    /// finds on disk, which may lag what it acknowledged before it stopped (the commit index
    /// is saved without a WAL record); its read index would then be its term's first entry,
    /// and a linearizable read could return a state older than one already read (Jepsen found
    /// it: a leader killed and restarted within the election timeout). Uncommitted, the vote
    /// still counts as cast in that term, and the replica has to win a newer term, whose first
    /// entry commits after everything acknowledged, before it leads again. Returns whether it
    /// changed the vote.
    pub fn forget_own_leadership(&self, node_id: NodeId) -> Result<bool, StorageError> {
        let Some(vote) = self.meta::<Vote>(KEY_VOTE)? else {
            return Ok(false);
        };
        let leader = vote.leader_id();
        if !vote.is_committed() || leader.voted_for() != Some(node_id) {
            return Ok(false);
        }
        self.put_meta(KEY_VOTE, &Vote::new(leader.term, node_id), true)?;
        Ok(true)
    }

    /// The committed log id last saved (may lag the true commit index).
    pub fn committed(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }
}

fn meta_name(key: &[u8]) -> &'static str {
    match key {
        KEY_VOTE => "vote",
        KEY_LAST_PURGED => "last purged log id",
        _ => "committed log id",
    }
}

fn start_end(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let (start, end) = start_end(&range);
        self.entries(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only an optimisation of restart (how far to re-apply), saved on every commit: no
        // sync and no WAL record. A crash may lose it, and openraft then re-applies from an
        // older committed id, which is allowed (it may lag, never lead, the true one).
        let bytes = encode(meta_name(KEY_COMMITTED), &committed).map_err(write_err)?;
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(true);
        self.db
            .raw()
            .put_cf_opt(self.db.cf(CF_META), KEY_COMMITTED, bytes, &options)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.committed()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOG);
        let mut stored = Vec::new();
        for entry in entries {
            let bytes = encode_entry(&entry).map_err(write_err)?;
            batch.put_cf(cf, index_key(entry.log_id.index), &bytes);
            stored.push((entry, bytes.len()));
        }
        // One synced write per append: openraft 0.9 waits for this append's callback before
        // it appends again, so there is never a second append to share the sync with, and
        // syncing here saves the two thread hand-offs a background flusher would cost. The
        // callback comes only after RocksDB synced the WAL (DESIGN.md rule 2).
        match self.db.raw().write_opt(batch, &Db::synced()) {
            Ok(()) => {
                self.recent().stored(stored);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // What RocksDB holds now is unknown: read it back from RocksDB from now on.
                self.recent().clear();
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The cache first: a reader in between reads the entries from RocksDB, as before.
        self.recent().truncated(log_id.index);
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.db
            .raw()
            .write_opt(batch, &Db::synced())
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two writes leaves extra entries,
        // never a hole. The cache first, as in `truncate`.
        self.recent().purged(log_id.index);
        self.put_meta(KEY_LAST_PURGED, &log_id, true)?;
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(0), index_key(log_id.index.saturating_add(1)));
        self.db
            .raw()
            .write_opt(batch, &Db::synced())
            .map_err(write_err)
    }
}
