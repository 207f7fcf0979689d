//! From a plan's commit to its ranks running on the node (issue 5): a 3-replica cluster and one
//! agent with 8 simulated devices, all real processes on loopback. One-rank jobs are submitted
//! one after another; each rank's first act is to print the wall clock in nanoseconds. The
//! latency of a placement is that time minus the leader time stamped on the plan entry that
//! placed the job (read back from the replicated log; the stamp is taken when the leader
//! proposes, so commit and replication are inside the measured time).
//!
//! Baseline, same run: the same command spawned directly by this process, from the spawn call to
//! the rank's printed time: the cost of starting the process itself. The goal is p99 at most
//! 100 ms beyond it.
//!
//! `cargo bench -p singularity --bench commit_to_running` (PLACEMENTS=100 by default).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Cluster;
use singularity_raft::client::Client;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The rank: print the wall clock in nanoseconds, then exit.
const RANK_SCRIPT: &str = "date +%s%N";
const WAIT_MS: u64 = 60_000;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Reads the rank's printed time from its log once the job has printed it.
fn printed_ns(path: &Path) -> u128 {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(Ok(ns)) = text.lines().next().map(|l| l.trim().parse()) {
                return ns;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Spawn-to-first-instruction of the same command, started directly: milliseconds.
fn baseline_ms(samples: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..samples {
        let spawned = now_ns();
        let output = Command::new("sh")
            .args(["-c", RANK_SCRIPT])
            .output()
            .expect("spawn");
        let printed: u128 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a time");
        out.push((printed.saturating_sub(spawned)) as f64 / 1e6);
    }
    out
}

fn main() {
    let placements: usize = std::env::var("PLACEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut cluster = Cluster::start(30_000);
    cluster.devices = "sim:8".to_string();
    cluster.add_agent("bench-node");
    let work_dir = cluster.work_dir("bench-node");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client =
        Client::new(cluster.endpoints.split(',').map(str::to_string).collect()).unwrap();

    let mut latencies_ms = Vec::new();
    let mut next_log_index = 1u64;
    for _ in 0..placements {
        let job = cluster.submit_with(&["--name", "probe", "--", "sh", "-c", RANK_SCRIPT]);
        let printed = printed_ns(
            &std::fs::canonicalize(&work_dir)
                .unwrap()
                .join(format!("logs/job-{job}/rank-0.stdout")),
        );
        // The plan entry that placed the job.
        let needle = format!("place job {job} on");
        let plan_ms = runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
            loop {
                let reply = client
                    .read_log(next_log_index, next_log_index + 999)
                    .await
                    .expect("read the log");
                if let Some(entry) = reply
                    .entries
                    .iter()
                    .find(|e| e.kind == "plan" && e.summary.contains(&needle))
                {
                    next_log_index = entry.index + 1;
                    return entry.leader_time_ms;
                }
                assert!(Instant::now() < deadline, "no plan placed job {job}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        latencies_ms.push((printed as f64 / 1e6) - plan_ms as f64);
    }
    let mut baseline = baseline_ms(placements);
    latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    baseline.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99) = (
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.99),
    );
    let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
    println!("commit to running, {placements} placements (3 replicas, 1 agent, loopback):");
    println!(
        "  plan entry time -> rank's first instruction: p50 {p50:.2} ms  p99 {p99:.2} ms  max {:.2} ms",
        latencies_ms.last().unwrap()
    );
    println!("  baseline, process start alone (spawn -> first instruction): p50 {b50:.2} ms  p99 {b99:.2} ms");
    println!(
        "  beyond process start: p50 {:.2} ms  p99 {:.2} ms  (goal: p99 <= 100 ms)",
        p50 - b50,
        p99 - b99
    );
}
