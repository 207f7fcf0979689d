//! A 3-replica cluster on loopback with real servers: leader failover with writes going on, a
//! restarted follower catching up from its RocksDB dir, a lagging replica catching up by
//! snapshot behind a purged log, membership 3 -> 5 -> 3 under writes, equal digests at equal
//! applied indexes, a crash of every replica losing no acknowledged write, and a leader
//! restarted at once leading again only in a newer term.

mod common;

use common::{assert_present, submit_jobs, BackgroundWriter, TestCluster, MAX_POLLS, POLL};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_then_follower_restart_catches_up() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    let mut acked = submit_jobs(&mut client, "before", 10).await;

    let old_leader = cluster.wait_leader().await;
    cluster.stop(old_leader).await;
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, old_leader);
    acked.extend(submit_jobs(&mut client, "after", 10).await);

    cluster.restart(old_leader).await;
    cluster.assert_same_digest().await;
    assert_present(&mut client, &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_replica_catches_up_by_snapshot_after_purge() {
    // Snapshot every 20 entries and keep no log behind it, so the lagging replica's next
    // entry is purged on the leader and only a snapshot can bring it up to date.
    let mut cluster = TestCluster::start_with(3, 20, 0).await;
    let mut client = cluster.client();
    submit_jobs(&mut client, "warm", 3).await;
    let leader = cluster.wait_leader().await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop(lagging).await;

    let acked = submit_jobs(&mut client, "while-down", 60).await;
    let mut purged = false;
    for _ in 0..MAX_POLLS {
        let metrics = cluster.replicas[&leader].raft.metrics().borrow().clone();
        if metrics.purged.map(|p| p.index).unwrap_or(0) > 5 {
            purged = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(purged, "the leader never purged its log");

    cluster.restart(lagging).await;
    cluster.assert_same_digest().await;
    let installed = cluster.replicas[&lagging]
        .sm
        .stats()
        .snapshots_installed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        installed >= 1,
        "the lagging replica did not install a snapshot"
    );
    assert_present(&mut client, &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_grows_to_five_and_back_to_three_under_writes() {
    let mut cluster = TestCluster::start(3).await;
    // Membership changes are refused until the initial membership entry has committed.
    cluster.wait_converged().await;
    let writer = BackgroundWriter::start(&cluster, 2_000);

    cluster.start_empty(4).await;
    cluster.start_empty(5).await;
    let mut admin = cluster.client();
    for id in [4, 5] {
        admin
            .add_learner(id, &cluster.addrs[&id].to_string())
            .await
            .expect("add learner");
    }
    admin
        .change_membership(vec![1, 2, 3, 4, 5], false)
        .await
        .expect("grow to 5");
    admin
        .change_membership(vec![1, 2, 3], false)
        .await
        .expect("shrink to 3");
    let acked = writer.stop().await;
    assert!(!acked.is_empty());

    cluster.stop(4).await;
    cluster.stop(5).await;
    cluster.assert_same_digest().await;
    assert_present(&mut admin, &acked).await;
    let leader = cluster.wait_leader().await;
    let voters: BTreeSet<u64> = cluster.replicas[&leader]
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_of_every_replica_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    let acked = submit_jobs(&mut client, "durable", 30).await;
    for id in [1, 2, 3] {
        cluster.crash(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id).await;
    }
    cluster.wait_leader().await;
    let mut client = cluster.client();
    assert_present(&mut client, &acked).await;
    cluster.assert_same_digest().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_restarted_at_once_leads_again_only_in_a_newer_term() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    let acked = submit_jobs(&mut client, "before", 20).await;
    let leader = cluster.wait_leader().await;
    let old_term = cluster.term_of(leader);
    // Back before the followers' election timeout runs out: they still follow it in its term.
    cluster.crash(leader);
    cluster.restart(leader).await;
    let now_leading = cluster.wait_leader().await;
    let term = cluster.term_of(now_leading);
    // Had it resumed its old term, its read index could lag what it acknowledged.
    assert!(
        term > old_term,
        "node {now_leading} leads in term {term}; node {leader} led term {old_term} before"
    );
    assert_present(&mut client, &acked).await;
    cluster.assert_same_digest().await;
    cluster.shutdown().await;
}
