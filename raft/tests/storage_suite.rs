//! openraft's storage conformance `Suite` on the RocksDB log store and state machine, and a
//! restart check: what a store acknowledged is there after it is closed and reopened.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::RaftSnapshotBuilder;
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use singularity_raft::proposal::Proposal;
use singularity_raft::store::{Db, LogStore, StateMachineStore};
use singularity_raft::types::{LogEntry, LogId, StorageError, TypeConfig};
use singularity_scheduler::testkit;
use singularity_scheduler::{Command, Entry};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let sm = StateMachineStore::open(db.clone()).expect("open state machine");
        Ok((dir, LogStore::new(db).expect("log store"), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_rocksdb_store() {
    Suite::test_all(RocksBuilder).expect("storage suite");
}

fn submit_entry(term: u64, index: u64, name: &str) -> LogEntry {
    let spec = testkit::job_spec(name, singularity_scheduler::Tier::Standard, 2, "h100");
    LogEntry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Proposal::One(Entry::system(
            index * 1000,
            Command::SubmitJob { spec },
        ))),
    }
}

async fn append(log: &mut LogStore, entries: Vec<LogEntry>) {
    log.blocking_append(entries).await.expect("append");
}

#[tokio::test]
async fn a_reopened_store_has_its_log_vote_and_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (digest, applied) = {
        let db = Db::open(dir.path()).expect("open");
        let mut log = LogStore::new(db.clone()).expect("log store");
        let mut sm = StateMachineStore::open(db).expect("sm");
        let entries: Vec<LogEntry> = (1..=5)
            .map(|i| submit_entry(1, i, &format!("job-{i}")))
            .collect();
        append(&mut log, entries.clone()).await;
        log.save_vote(&openraft::Vote::new(3, 2))
            .await
            .expect("vote");
        let outcomes = sm.apply(entries[..3].to_vec()).await.expect("apply");
        assert!(
            outcomes.iter().flatten().all(|o| o.is_accepted()),
            "{outcomes:?}"
        );
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot");
        let applied = sm.read();
        (applied.state.digest(), applied.last_applied)
    };
    let db = Db::open(dir.path()).expect("reopen");
    let mut log = LogStore::new(db.clone()).expect("log store");
    let mut sm = StateMachineStore::open(db).expect("sm");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(openraft::Vote::new(3, 2))
    );
    assert_eq!(
        log.get_log_state()
            .await
            .expect("state")
            .last_log_id
            .map(|l| l.index),
        Some(5)
    );
    let entries = log.try_get_log_entries(1..=5).await.expect("entries");
    assert_eq!(entries.len(), 5);
    assert_eq!(sm.applied_state().await.expect("applied").0, applied);
    assert_eq!(sm.read().state.digest(), digest);
    assert_eq!(applied.map(|l| l.index), Some(3));
}

fn submit(index: u64, name: &str) -> Entry {
    let spec = testkit::job_spec(name, singularity_scheduler::Tier::Standard, 2, "h100");
    Entry::system(index * 1000, Command::SubmitJob { spec })
}

/// A batch of client writes is stored as one log entry, read back whole after a reopen, and
/// applies exactly as the same writes in separate entries: one outcome each, the same state.
#[tokio::test]
async fn a_batch_entry_round_trips_and_applies_like_separate_entries() {
    let names = ["a", "b", "c"];
    let batch_dir = tempfile::tempdir().expect("temp dir");
    {
        let db = Db::open(batch_dir.path()).expect("open");
        let mut log = LogStore::new(db).expect("log store");
        let batch = Proposal::of(names.iter().map(|n| submit(1, n)).collect());
        assert!(matches!(batch, Proposal::Batch(_)));
        let entry = LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(batch),
        };
        append(&mut log, vec![entry]).await;
    }
    let db = Db::open(batch_dir.path()).expect("reopen");
    let mut log = LogStore::new(db.clone()).expect("log store");
    let mut sm = StateMachineStore::open(db).expect("sm");
    let stored = log.try_get_log_entries(1..=1).await.expect("entries");
    match &stored[0].payload {
        EntryPayload::Normal(Proposal::Batch(entries)) => assert_eq!(entries.len(), 3),
        other => panic!("expected a batch of 3, read {other:?}"),
    }
    let outcomes = sm.apply(stored).await.expect("apply");
    assert_eq!(outcomes.len(), 1, "one reply per log entry");
    assert_eq!(outcomes[0].len(), 3, "one outcome per write of the batch");
    assert!(outcomes[0].iter().all(|o| o.is_accepted()), "{outcomes:?}");

    let single_dir = tempfile::tempdir().expect("temp dir");
    let mut single =
        StateMachineStore::open(Db::open(single_dir.path()).expect("open")).expect("sm");
    let separate: Vec<LogEntry> = names
        .iter()
        .enumerate()
        .map(|(i, n)| LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
            payload: EntryPayload::Normal(Proposal::One(submit(1, n))),
        })
        .collect();
    let separate_outcomes = single.apply(separate).await.expect("apply");
    let flat: Vec<_> = separate_outcomes.into_iter().flatten().collect();
    assert_eq!(flat, outcomes[0]);
    assert_eq!(single.read().state.digest(), sm.read().state.digest());
}

#[test]
fn a_foreign_or_corrupt_data_dir_is_refused_with_a_clear_error() {
    use singularity_raft::store::DataDirIdentity;
    use singularity_raft::RaftError;
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = DataDirIdentity {
        cluster: "prod".into(),
        node_id: 1,
    };
    drop(Db::open_for(dir.path(), &ours).expect("first open records the identity"));
    drop(Db::open_for(dir.path(), &ours).expect("the same identity opens again"));
    let other = DataDirIdentity {
        cluster: "staging".into(),
        node_id: 1,
    };
    match Db::open_for(dir.path(), &other) {
        Err(RaftError::ForeignDataDir { found, .. }) => assert!(found.contains("prod"), "{found}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("another cluster's data dir was accepted"),
    }
    std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-999999\n").expect("corrupt");
    match Db::open_for(dir.path(), &ours) {
        Err(RaftError::CorruptDataDir { detail, .. }) => {
            assert!(detail.contains("RocksDB"), "{detail}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a corrupt data dir was accepted"),
    }
}
