//! An in-process cluster of real replicas (RocksDB data dirs, tonic servers on loopback ports)
//! for the cluster tests. Every wait is bounded in time and in iterations; nothing asserts on
//! wall-clock durations. Data dirs are temporary and removed when the cluster is dropped.

#![allow(dead_code)]

use singularity_proto::query;
use singularity_raft::client::Client;
use singularity_raft::server::{Replica, SchedulingConfig, ServerConfig};
use singularity_raft::types::NodeId;
use singularity_scheduler::testkit;
use singularity_scheduler::{Command, Effect, Job, JobId, JobSpec, Outcome, Tier};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Longest any wait in these tests may take.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Pause between polls while waiting.
pub const POLL: Duration = Duration::from_millis(50);
/// Polls per wait: `WAIT_LIMIT / POLL`.
pub const MAX_POLLS: u32 = 1_200;

pub struct TestCluster {
    pub dir: TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub replicas: BTreeMap<NodeId, Replica>,
    pub initial: BTreeMap<NodeId, String>,
    pub snapshot_every_entries: u64,
    pub logs_kept_after_snapshot: u64,
    /// The leader's scheduling loop; off for tests of the bare log (it appends ticks and plans).
    pub scheduling: SchedulingConfig,
}

pub fn spec(name: &str) -> JobSpec {
    testkit::job_spec(name, Tier::Standard, 2, "h100")
}

pub fn submit(name: &str) -> Command {
    Command::SubmitJob { spec: spec(name) }
}

/// Writes `count` job submissions named `{prefix}-{i}` and returns the acknowledged job ids.
pub async fn submit_jobs(client: &mut Client, prefix: &str, count: usize) -> Vec<JobId> {
    let mut jobs = Vec::new();
    for i in 0..count {
        let result = client
            .write(submit(&format!("{prefix}-{i}")))
            .await
            .expect("write");
        match result.outcome {
            Outcome::Accepted(Effect::JobSubmitted { job }) => jobs.push(job),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    jobs
}

/// The ids of every job, by a linearizable read.
pub async fn job_ids(client: &mut Client) -> BTreeSet<JobId> {
    let reply = client.read(query::JOBS, 0, false).await.expect("read");
    let jobs: Vec<Job> = serde_json::from_str(&reply.json).expect("jobs json");
    jobs.into_iter().map(|j| j.id).collect()
}

/// Asserts that every acknowledged job is in the cluster's state (a linearizable read).
pub async fn assert_present(client: &mut Client, acked: &[JobId]) {
    let present = job_ids(client).await;
    for job in acked {
        assert!(present.contains(job), "acknowledged {job} is missing");
    }
}

/// A client that submits jobs one at a time in the background, at most `max_writes`, until
/// stopped.
pub struct BackgroundWriter {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<JobId>>,
}

impl BackgroundWriter {
    pub fn start(cluster: &TestCluster, max_writes: usize) -> BackgroundWriter {
        let endpoints: Vec<String> = cluster.addrs.values().map(|a| a.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut client = Client::new(endpoints).expect("client");
            let mut acked = Vec::new();
            for i in 0..max_writes {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                acked.extend(submit_jobs(&mut client, &format!("load-{i}"), 1).await);
            }
            acked
        });
        BackgroundWriter { stop, handle }
    }

    /// Stops it and returns the acknowledged jobs.
    pub async fn stop(self) -> Vec<JobId> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("writer")
    }
}

impl TestCluster {
    /// Starts `n` voters (ids 1..=n) that bootstrap together.
    pub async fn start(n: u64) -> TestCluster {
        TestCluster::start_with(n, 10_000, 1_000).await
    }

    pub async fn start_with(
        n: u64,
        snapshot_every_entries: u64,
        logs_kept_after_snapshot: u64,
    ) -> TestCluster {
        let scheduling = SchedulingConfig {
            enabled: false,
            ..SchedulingConfig::default()
        };
        TestCluster::start_full(
            n,
            snapshot_every_entries,
            logs_kept_after_snapshot,
            scheduling,
        )
        .await
    }

    /// Starts `n` voters with the leader's scheduling loop configured as given.
    pub async fn start_full(
        n: u64,
        snapshot_every_entries: u64,
        logs_kept_after_snapshot: u64,
        scheduling: SchedulingConfig,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, listener.local_addr().expect("addr"));
            listeners.insert(id, listener);
        }
        let initial: BTreeMap<NodeId, String> =
            addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let mut cluster = TestCluster {
            dir,
            addrs,
            replicas: BTreeMap::new(),
            initial,
            snapshot_every_entries,
            logs_kept_after_snapshot,
            scheduling,
        };
        for (id, listener) in listeners {
            let config = cluster.config(id, true);
            let replica = Replica::start_on(config, listener)
                .await
                .expect("start replica");
            cluster.replicas.insert(id, replica);
        }
        cluster
    }

    pub fn config(&self, id: NodeId, initial: bool) -> ServerConfig {
        let addr = self.addrs[&id];
        let mut config = ServerConfig::new(
            id,
            addr,
            addr.to_string(),
            self.dir.path().join(format!("node-{id}")),
        );
        if initial {
            config.initial_cluster = self.initial.clone();
        }
        config.election_timeout_min_ms = 400;
        config.election_timeout_max_ms = 800;
        config.heartbeat_interval_ms = 100;
        config.snapshot_every_entries = self.snapshot_every_entries;
        config.logs_kept_after_snapshot = self.logs_kept_after_snapshot;
        config.scheduling = self.scheduling.clone();
        config
    }

    /// Starts an empty replica with a new id (for joining as a learner).
    pub async fn start_empty(&mut self, id: NodeId) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.addrs.insert(id, listener.local_addr().expect("addr"));
        let replica = Replica::start_on(self.config(id, false), listener)
            .await
            .expect("start");
        self.replicas.insert(id, replica);
    }

    /// Stops a replica cleanly.
    pub async fn stop(&mut self, id: NodeId) {
        let replica = self.replicas.remove(&id).expect("running replica");
        replica.shutdown().await.expect("clean shutdown");
    }

    /// Stops a replica without waiting for anything.
    pub fn crash(&mut self, id: NodeId) {
        let replica = self.replicas.remove(&id).expect("running replica");
        replica.abort();
    }

    /// Restarts a stopped replica from its data dir on its old address.
    pub async fn restart(&mut self, id: NodeId) {
        let addr = self.addrs[&id];
        let initial = self.initial.contains_key(&id);
        for _ in 0..MAX_POLLS {
            // The port and the RocksDB lock are released once the old replica's tasks end.
            if let Ok(listener) = TcpListener::bind(addr).await {
                match Replica::start_on(self.config(id, initial), listener).await {
                    Ok(replica) => {
                        self.replicas.insert(id, replica);
                        return;
                    }
                    Err(e) if e.to_string().contains("lock") => {}
                    Err(e) => panic!("restart of {id} failed: {e}"),
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("replica {id} could not be restarted");
    }

    /// A client of every replica ever started.
    /// The current term as replica `id` sees it.
    pub fn term_of(&self, id: NodeId) -> u64 {
        self.replicas[&id].raft.metrics().borrow().current_term
    }

    pub fn client(&self) -> Client {
        Client::new(self.addrs.values().map(|a| a.to_string()).collect()).expect("client")
    }

    /// Waits until a running replica is leader and all running replicas agree on it.
    pub async fn wait_leader(&self) -> NodeId {
        for _ in 0..MAX_POLLS {
            let leaders: Vec<Option<NodeId>> = self
                .replicas
                .values()
                .map(|r| r.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                let agreed = leaders.iter().all(|l| *l == Some(*leader));
                let alive = self
                    .replicas
                    .get(leader)
                    .map(|r| r.raft.metrics().borrow().current_leader == Some(*leader))
                    .unwrap_or(false);
                if agreed && alive {
                    return *leader;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("no leader agreed within the wait limit");
    }

    /// Waits until every running replica has applied the leader's whole log, and returns that
    /// index.
    pub async fn wait_converged(&self) -> u64 {
        for _ in 0..MAX_POLLS {
            let leader = self.wait_leader().await;
            let last = self.replicas[&leader]
                .raft
                .metrics()
                .borrow()
                .last_log_index
                .unwrap_or(0);
            let all = self.replicas.values().all(|r| {
                r.raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .map(|l| l.index)
                    .unwrap_or(0)
                    == last
            });
            if all {
                return last;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("replicas did not converge within the wait limit");
    }

    /// Every running replica's (applied index, digest).
    pub fn digests(&self) -> BTreeMap<NodeId, (u64, String)> {
        self.replicas
            .iter()
            .map(|(id, r)| {
                let applied = r.sm.read();
                (
                    *id,
                    (
                        applied.last_applied.map(|l| l.index).unwrap_or(0),
                        applied.state.digest().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Asserts all running replicas converge to the same digest at the same applied index.
    pub async fn assert_same_digest(&self) {
        let index = self.wait_converged().await;
        let digests = self.digests();
        let first = digests.values().next().cloned().expect("a replica");
        assert_eq!(first.0, index);
        for (id, d) in &digests {
            assert_eq!(d, &first, "replica {id} differs: {digests:?}");
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}
