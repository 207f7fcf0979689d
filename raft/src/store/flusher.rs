//! `WalFlusher`: the fsync of log appends, off the async runtime. An append writes its entries
//! to RocksDB without a sync and hands openraft's flush callback here; a dedicated thread syncs
//! the WAL once for every batch of waiting callbacks (`flush_wal(true)`) and only then reports
//! them flushed, in order, so nothing is acknowledged before it is on disk (DESIGN.md rule 2).
//! openraft 0.9 waits for each append's callback before the next append (it batches client
//! writes into one append instead), so today the gain is that no runtime thread blocks in
//! fsync; callbacks that do queue up share one sync. It must not report a callback whose
//! entries were written after the sync started: callbacks are queued only after their write
//! returned, and are drained before the sync begins.

use super::db::{Db, WeakDb};
use crate::types::TypeConfig;
use openraft::storage::LogFlushed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

/// Callbacks waiting for a sync at most; an append beyond it waits for room (back-pressure).
const MAX_PENDING_FLUSHES: usize = 65_536;

/// The sending side, owned by the log store; the thread ends when every clone is dropped.
#[derive(Clone)]
pub struct WalFlusher {
    queue: SyncSender<LogFlushed<TypeConfig>>,
}

impl WalFlusher {
    /// Starts the flusher thread for `db`. The thread holds the database only while it
    /// syncs, so closing the store closes the database.
    pub fn start(db: &Db) -> std::io::Result<WalFlusher> {
        let (queue, waiting) = sync_channel(MAX_PENDING_FLUSHES);
        let db = db.downgrade();
        std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || run(db, waiting))?;
        Ok(WalFlusher { queue })
    }

    /// Reports `callback` once the WAL holding its (already written) entries is synced.
    pub fn after_sync(&self, callback: LogFlushed<TypeConfig>) -> Result<(), String> {
        match self.queue.try_send(callback) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(callback)) => self
                .queue
                .send(callback)
                .map_err(|_| "the WAL flusher has stopped".to_string()),
            Err(TrySendError::Disconnected(_)) => Err("the WAL flusher has stopped".into()),
        }
    }
}

fn run(db: WeakDb, waiting: Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_PENDING_FLUSHES {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => db.raw().flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the database was closed before the WAL was synced".to_string()),
        };
        for callback in batch {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}
