//! Placements per second through a live 3-replica cluster (issue 4: at least 2,000 per second;
//! Nomad's two-million-container run placed about 1,500 per second).
//!
//! Three real replicas (RocksDB with synced appends, tonic on loopback) run in this process.
//! Baseline, measured in the same run: the same cluster with the scheduling loop off, the same
//! clients writing the same submissions: the raw rate of committed client writes. Then a fresh
//! cluster with the leader's scheduling loop on: the clients submit the jobs, the leader plans
//! and proposes placements, and the clock stops when the leader's applied state has every job
//! placed. A placement is a committed `place` action of a plan (all ranks of a gang).
//!
//! Run: `cargo bench -p singularity-raft --bench placements` (add `-- --jobs N --clients C`).

use singularity_raft::client::Client;
use singularity_raft::server::{Replica, SchedulingConfig, ServerConfig};
use singularity_scheduler::testkit::{job_spec, H100_MEMORY_BYTES};
use singularity_scheduler::{
    Command, DeviceHealth, DeviceKind, DeviceSpec, JobPhase, LocalityDomain, NodeName, Tier,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const NODES: usize = 1_250;
const DEVICES_PER_NODE: usize = 8;
/// Polls of the leader's state while waiting for placements (10 ms apart).
const MAX_POLLS: u32 = 30_000;

struct Cluster {
    _dir: tempfile::TempDir,
    replicas: Vec<Replica>,
    endpoints: Vec<String>,
}

async fn start_cluster(scheduling: bool) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let endpoints: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect();
    let initial: BTreeMap<u64, String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e.clone()))
        .collect();
    let mut replicas = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let addr = listener.local_addr().expect("addr");
        let mut config = ServerConfig::new(
            id,
            addr,
            addr.to_string(),
            dir.path().join(format!("node-{id}")),
        );
        config.initial_cluster = initial.clone();
        config.scheduling = SchedulingConfig {
            enabled: scheduling,
            wake_interval_ms: 20,
            heartbeat_timeout_ms: None,
            tick_interval_ms: 60_000,
            ..SchedulingConfig::default()
        };
        replicas.push(
            Replica::start_on(config, listener)
                .await
                .expect("start replica"),
        );
    }
    Cluster {
        _dir: dir,
        replicas,
        endpoints,
    }
}

impl Cluster {
    fn leader(&self) -> Option<&Replica> {
        self.replicas.iter().find(|r| {
            let m = r.raft.metrics().borrow().clone();
            m.current_leader == Some(m.id)
        })
    }

    async fn shutdown(self) {
        for replica in self.replicas {
            replica.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Runs `commands` through `clients` concurrent clients; returns the elapsed time.
async fn write_all(endpoints: &[String], commands: Vec<Command>, clients: usize) -> Duration {
    let mut shares: Vec<Vec<Command>> = vec![Vec::new(); clients];
    for (i, command) in commands.into_iter().enumerate() {
        shares[i % clients].push(command);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in shares {
        let endpoints = endpoints.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(endpoints).expect("client");
            for command in share {
                let written = client.write(command).await.expect("write commits");
                assert!(written.outcome.is_accepted(), "{:?}", written.outcome);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

fn register(n: usize) -> Command {
    Command::RegisterNode {
        name: NodeName::new(format!("gpu-{n}")).expect("name"),
        domain: LocalityDomain::new(format!("rack-{}", n / 16)).expect("domain"),
        devices: (0..DEVICES_PER_NODE)
            .map(|_| DeviceSpec {
                kind: DeviceKind::new("h100").expect("kind"),
                memory_bytes: H100_MEMORY_BYTES,
                uuid: String::new(),
                health: DeviceHealth::Healthy,
            })
            .collect(),
    }
}

fn submissions(jobs: usize) -> Vec<Command> {
    (0..jobs)
        .map(|i| Command::SubmitJob {
            spec: job_spec(&format!("bench-{i}"), Tier::Basic, 1, "h100"),
        })
        .collect()
}

async fn wait_for_leader(cluster: &Cluster) {
    for _ in 0..MAX_POLLS {
        if cluster.leader().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader");
}

struct Run {
    submit_s: f64,
    place_s: f64,
    plans: usize,
}

async fn run(jobs: usize, clients: usize, scheduling: bool) -> Run {
    let cluster = start_cluster(scheduling).await;
    wait_for_leader(&cluster).await;
    write_all(
        &cluster.endpoints,
        (0..NODES).map(register).collect(),
        clients,
    )
    .await;
    let started = Instant::now();
    let submit = write_all(&cluster.endpoints, submissions(jobs), clients).await;
    let mut placed_at = None;
    let mut plans = 0;
    if scheduling {
        for _ in 0..MAX_POLLS {
            if let Some(leader) = cluster.leader() {
                let applied = leader.sm.read();
                let placed = applied
                    .state
                    .jobs()
                    .filter(|j| j.phase != JobPhase::Pending)
                    .count();
                if placed == jobs {
                    placed_at = Some(started.elapsed());
                    plans = applied.state.counters().plans_committed as usize;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(placed_at.is_some(), "not every job was placed in time");
    }
    cluster.shutdown().await;
    Run {
        submit_s: submit.as_secs_f64(),
        place_s: placed_at.unwrap_or_default().as_secs_f64(),
        plans,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let jobs = arg("--jobs", 8_000);
    let clients = arg("--clients", 64);
    assert!(jobs <= NODES * DEVICES_PER_NODE, "more jobs than devices");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let baseline = run(jobs, clients, false).await;
        let writes_per_s = jobs as f64 / baseline.submit_s;
        println!(
            "baseline: {jobs} submissions by {clients} clients, scheduling off: {:.2} s, {writes_per_s:.0} committed writes/s",
            baseline.submit_s
        );
        let live = run(jobs, clients, true).await;
        let placements_per_s = jobs as f64 / live.place_s;
        println!(
            "live: {jobs} submissions by {clients} clients with the leader's scheduling loop: submitted in {:.2} s, all placed after {:.2} s, in {} plan entries ({:.0} placements per plan)",
            live.submit_s,
            live.place_s,
            live.plans,
            jobs as f64 / live.plans.max(1) as f64
        );
        println!(
            "placements: {placements_per_s:.0}/s; target 2,000/s: {:.2}x; Nomad's ~1,500/s: {:.2}x; vs the raw write rate of the same cluster: {:.2}x",
            placements_per_s / 2_000.0,
            placements_per_s / 1_500.0,
            placements_per_s / writes_per_s
        );
    });
}
