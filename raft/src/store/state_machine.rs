//! `StateMachineStore`: openraft's `RaftStateMachine` holding the scheduler's `ClusterState`,
//! its last applied log id and membership. Durability comes from snapshots: each snapshot is
//! synced to RocksDB before it is reported, and a restart loads the last one and lets openraft
//! re-apply the committed log after it. Snapshots are built from a clone taken under a short
//! read lock, so apply is not stopped while the snapshot is encoded and written.
//!
//! It must not decide anything itself: every entry goes to `ClusterState::apply` unchanged.

use super::db::{Db, CF_SM};
use super::snapshot::SnapshotEnvelope;
use super::{read_err, write_err};
use crate::error::RaftError;
use crate::proposal::Outcomes;
use crate::types::{LogEntry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use singularity_scheduler::planner::Evaluation;
use singularity_scheduler::{evaluations_for, ClusterState, EvaluationQueue};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// The applied state: what client reads see.
#[derive(Clone, Debug, Default)]
pub struct AppliedState {
    pub state: ClusterState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Counters of apply, for metrics.
#[derive(Debug, Default)]
pub struct ApplyStats {
    pub entries_applied: AtomicU64,
    pub entries_rejected: AtomicU64,
    pub plans_rejected: AtomicU64,
    pub apply_nanos_total: AtomicU64,
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
}

/// The state machine of one replica. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Db,
    applied: Arc<RwLock<AppliedState>>,
    stats: Arc<ApplyStats>,
    /// Evaluations that applied entries called for, drained by the leader's scheduling loop.
    evaluations: Arc<std::sync::Mutex<EvaluationQueue>>,
}

impl StateMachineStore {
    /// Opens the state machine from its last snapshot in `db` (empty if none).
    pub fn open(db: Db) -> Result<StateMachineStore, RaftError> {
        let applied = match db.get(CF_SM, KEY_SNAPSHOT)? {
            None => AppliedState::default(),
            Some(bytes) => {
                let envelope = SnapshotEnvelope::decode(&bytes).map_err(|e| corrupt(&db, e))?;
                let state = envelope.state().map_err(|e| corrupt(&db, e))?;
                AppliedState {
                    state,
                    last_applied: envelope.meta.last_log_id,
                    membership: envelope.meta.last_membership,
                }
            }
        };
        Ok(StateMachineStore {
            db,
            applied: Arc::new(RwLock::new(applied)),
            stats: Arc::new(ApplyStats::default()),
            evaluations: Arc::default(),
        })
    }

    /// Read access to the applied state; hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    /// Takes the evaluations applied entries called for since the last call.
    pub fn take_evaluations(&self) -> Vec<Evaluation> {
        let mut queue = self
            .evaluations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::iter::from_fn(|| queue.pop()).collect()
    }

    /// The last snapshot stored in RocksDB, encoded, if any.
    pub fn stored_snapshot(&self) -> Result<Option<Vec<u8>>, RaftError> {
        self.db.get(CF_SM, KEY_SNAPSHOT)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn corrupt(db: &Db, e: RaftError) -> RaftError {
    RaftError::CorruptDataDir {
        path: db.path().to_path_buf(),
        detail: format!("its last snapshot cannot be loaded: {e}"),
    }
}

/// Builds snapshots from a clone of the applied state.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // The lock is held only for the clone; encoding and the synced write happen outside it.
        let applied = self.store.read().clone();
        let envelope = SnapshotEnvelope::of(&applied).map_err(write_err)?;
        let meta = envelope.meta.clone();
        let bytes = envelope.encode().map_err(write_err)?;
        self.store
            .db
            .put_synced(CF_SM, KEY_SNAPSHOT, &bytes)
            .map_err(write_err)?;
        self.store
            .stats
            .snapshots_built
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcomes>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut replies = Vec::new();
        let mut evaluations = Vec::new();
        let mut applied = self.write();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcomes = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => {
                    // A batch applies as its entries one after another (proposal.rs).
                    let mut outcomes = Vec::with_capacity(proposal.entries().len());
                    for command in proposal.into_entries() {
                        let is_plan = command.command.kind() == "plan";
                        let outcome = applied.state.apply(command);
                        evaluations.extend(evaluations_for(&outcome));
                        if !outcome.is_accepted() {
                            self.stats.entries_rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        if is_plan && outcome.rejection().is_some() {
                            self.stats.plans_rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        outcomes.push(outcome);
                    }
                    outcomes
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            replies.push(outcomes);
        }
        drop(applied);
        if !evaluations.is_empty() {
            self.evaluations
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(evaluations);
        }
        self.stats
            .entries_applied
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        self.stats
            .apply_nanos_total
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let envelope = SnapshotEnvelope::decode(&bytes).map_err(read_err)?;
        if envelope.meta.last_log_id != meta.last_log_id {
            return Err(read_err(format!(
                "snapshot data is at {:?}, but its metadata says {:?}",
                envelope.meta.last_log_id, meta.last_log_id
            )));
        }
        let state = envelope.state().map_err(read_err)?;
        self.db
            .put_synced(CF_SM, KEY_SNAPSHOT, &bytes)
            .map_err(write_err)?;
        *self.write() = AppliedState {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.stats
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        match self.stored_snapshot().map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => {
                let envelope = SnapshotEnvelope::decode(&bytes).map_err(read_err)?;
                Ok(Some(Snapshot {
                    meta: envelope.meta,
                    snapshot: Box::new(Cursor::new(bytes)),
                }))
            }
        }
    }
}
