//! The leader's scheduling loop on a real 3-replica cluster: a submitted job is placed by a
//! plan the leader proposes (with its reason in the log), and after the leader is killed the
//! new leader rebuilds its queue from the replicated state and places the next job. Waits are
//! bounded in time and count; nothing asserts on durations. A burst larger than one plan is
//! placed by follow-up plans, not left for the next tick.

mod common;

use common::{TestCluster, MAX_POLLS, POLL};
use singularity_raft::server::SchedulingConfig;
use singularity_scheduler::planner::PolicyConfig;
use singularity_scheduler::testkit::H100_MEMORY_BYTES;
use singularity_scheduler::{
    Command, DeviceHealth, DeviceKind, DeviceSpec, Effect, JobId, JobPhase, LocalityDomain,
    NodeName, Outcome,
};

fn register(name: &str) -> Command {
    register_with(name, 8)
}

fn register_with(name: &str, devices: usize) -> Command {
    Command::RegisterNode {
        name: NodeName::new(name).unwrap(),
        domain: LocalityDomain::new("rack-1").unwrap(),
        devices: (0..devices)
            .map(|_| DeviceSpec {
                kind: DeviceKind::new("h100").unwrap(),
                memory_bytes: H100_MEMORY_BYTES,
                uuid: String::new(),
                health: DeviceHealth::Healthy,
            })
            .collect(),
    }
}

/// Waits until `job` has left `Pending` on the leader's applied state; returns its phase.
async fn wait_placed(cluster: &TestCluster, job: JobId) -> JobPhase {
    for _ in 0..MAX_POLLS {
        let leader = cluster.wait_leader().await;
        let phase = cluster.replicas[&leader]
            .sm
            .read()
            .state
            .job(job)
            .map(|j| j.phase);
        if let Some(phase) = phase.filter(|p| *p != JobPhase::Pending) {
            return phase;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{job} was never placed");
}

async fn submit(cluster: &TestCluster, name: &str) -> JobId {
    let mut client = cluster.client();
    let written = client.write(common::submit(name)).await.expect("submit");
    match written.outcome {
        Outcome::Accepted(Effect::JobSubmitted { job }) => job,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_places_submitted_jobs_and_a_new_leader_carries_on() {
    let scheduling = SchedulingConfig {
        wake_interval_ms: 50,
        // No agent heartbeats in this test: never declare the node down.
        heartbeat_timeout_ms: None,
        ..SchedulingConfig::default()
    };
    let mut cluster = TestCluster::start_full(3, 10_000, 1_000, scheduling).await;
    cluster.wait_leader().await;
    let mut client = cluster.client();
    let registered = client.write(register("gpu-1")).await.expect("register");
    assert!(registered.outcome.is_accepted(), "{:?}", registered.outcome);

    let first = submit(&cluster, "first").await;
    assert_eq!(wait_placed(&cluster, first).await, JobPhase::Starting);

    // The placement is a plan entry in the log, with its reason.
    let leader = cluster.wait_leader().await;
    let log = client.read_log(1, 1_000).await.expect("read log");
    let plan = log
        .entries
        .iter()
        .find(|e| e.kind == "plan")
        .unwrap_or_else(|| panic!("no plan in the log: {:?}", log.entries));
    assert!(plan.summary.contains("place"), "{}", plan.summary);
    assert!(
        plan.summary.contains(&format!("{first}")),
        "{}",
        plan.summary
    );

    // Kill the leader; the new one rebuilds its queue and places the next job.
    cluster.crash(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let second = submit(&cluster, "second").await;
    assert_eq!(wait_placed(&cluster, second).await, JobPhase::Starting);
    let state = cluster.replicas[&new_leader].sm.read().state.clone();
    let placed = state.job(second).unwrap();
    assert_eq!(placed.assignment.len(), 2);
    assert!(!placed.last_reason.is_empty());
    state.check_invariants().expect("invariants hold");
}

/// Eight two-device jobs wait for a node; one node of 16 devices arrives (one evaluation), and
/// the policy may put only 3 actions in a plan. Follow-up plans place all eight at once: the
/// tick, the only other trigger here, is an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_larger_than_one_plan_is_placed_by_follow_up_plans_not_at_the_next_tick() {
    let scheduling = SchedulingConfig {
        wake_interval_ms: 50,
        tick_interval_ms: 3_600_000,
        heartbeat_timeout_ms: None,
        policy: PolicyConfig {
            max_actions_per_plan: 3,
            ..PolicyConfig::default()
        },
        ..SchedulingConfig::default()
    };
    let cluster = TestCluster::start_full(3, 10_000, 1_000, scheduling).await;
    cluster.wait_leader().await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(submit(&cluster, &format!("burst-{i}")).await);
    }
    let mut client = cluster.client();
    let registered = client
        .write(register_with("gpu-wide", 16))
        .await
        .expect("register");
    assert!(registered.outcome.is_accepted(), "{:?}", registered.outcome);
    for &job in &jobs {
        assert_eq!(wait_placed(&cluster, job).await, JobPhase::Starting);
    }
    let leader = cluster.wait_leader().await;
    let plans = cluster.replicas[&leader]
        .sm
        .read()
        .state
        .counters()
        .plans_committed;
    assert!(
        plans >= 3,
        "8 placements at 3 per plan need 3 plans, saw {plans}"
    );
    let log = client.read_log(1, 1_000).await.expect("read log");
    assert!(
        log.entries
            .iter()
            .any(|e| e.summary.contains("(follow-up plan 1)")),
        "a follow-up plan says so in its trigger"
    );
    cluster.shutdown().await;
}
