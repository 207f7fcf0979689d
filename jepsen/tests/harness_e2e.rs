//! End-to-end: a short `run_test` against real replicas in network namespaces. Ignored by
//! default (needs root, `ip`, `iptables` and a release `singularity` binary, and takes about
//! 30 s); run with `cargo nextest run --release -p singularity-jepsen --run-ignored all`.

use singularity_jepsen::harness::{run_test, NemesisKind, TestOptions, WorkloadKind};
use std::path::PathBuf;

fn server_bin() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("release").join("singularity")
}

#[test]
#[ignore = "needs root, iptables and a release singularity binary; about 30 s"]
fn short_run_under_partitions_and_kills_is_valid() {
    let results_dir = std::env::temp_dir().join(format!("sjep-e2e-{}", std::process::id()));
    let outcome = run_test(TestOptions {
        server_bin: server_bin(),
        replicas: 3,
        time_limit_s: 15,
        concurrency: 3,
        seed: 7,
        results_dir: results_dir.clone(),
        nemeses: vec![NemesisKind::Partition, NemesisKind::Kill],
        workloads: vec![WorkloadKind::Register, WorkloadKind::Set],
        keys: 4,
        fault_ms: 3_000,
        heal_ms: 2_000,
        recovery_s: 3,
        op_timeout_ms: 3_000,
        op_delay_ms: 20,
        nodes: 3,
        devices_per_node: 4,
        agent_bin: None,
    })
    .expect("the run completes");
    assert!(outcome.valid, "{}", outcome.summary);
    for file in [
        "register.edn",
        "set.json",
        "faults.json",
        "latency.svg",
        "summary.json",
    ] {
        assert!(results_dir.join(file).is_file(), "{file} missing");
    }
    let _ = std::fs::remove_dir_all(&results_dir);
}

/// Every nemesis (membership changes and clock skew included, some windows combined), every
/// workload at once (the set workload's unplaceable jobs once starved the scheduler
/// workload's basic jobs: a planner bug, fixed); the checks pass and the membership is
/// restored.
#[test]
#[ignore = "needs root, iptables, libfaketime and a release singularity binary; about 60 s"]
fn short_run_with_every_nemesis_and_workload_is_valid() {
    let results_dir = std::env::temp_dir().join(format!("sjep-e2e-all-{}", std::process::id()));
    let outcome = run_test(TestOptions {
        server_bin: server_bin(),
        replicas: 3,
        time_limit_s: 25,
        concurrency: 3,
        seed: 5,
        results_dir: results_dir.clone(),
        nemeses: NemesisKind::ALL.to_vec(),
        workloads: vec![
            WorkloadKind::Register,
            WorkloadKind::Set,
            WorkloadKind::Scheduler,
        ],
        keys: 4,
        fault_ms: 2_500,
        heal_ms: 1_500,
        recovery_s: 3,
        op_timeout_ms: 3_000,
        op_delay_ms: 20,
        nodes: 2,
        devices_per_node: 4,
        agent_bin: None,
    })
    .expect("the run completes (the membership restored)");
    assert!(outcome.valid, "{}", outcome.summary);
    assert!(outcome.summary.contains("scheduler valid=true"));
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results_dir.join("scheduler-verdict.json")).expect("verdict"),
    )
    .expect("json");
    assert!(verdict["entries_replayed"].as_u64().unwrap_or(0) > 0);
    assert_eq!(verdict["digests_compared"].as_u64(), Some(3));
    let faults = std::fs::read_to_string(results_dir.join("faults.json")).expect("faults");
    assert!(faults.contains("\"fault\""), "no fault happened: {faults}");
    let _ = std::fs::remove_dir_all(&results_dir);
}

/// The clock nemesis really moves a replica's wall clock: with every replica's libfaketime
/// control file at +1 hour, the leader stamps new entries an hour ahead (`leader_time_ms` in
/// `ReadLog`); back at real time, it stamps them with the real time again.
#[test]
#[ignore = "needs root, libfaketime and a release singularity binary; about 10 s"]
fn clock_skew_reaches_the_leaders_entry_stamps() {
    use singularity_jepsen::harness::client::Conn;
    use singularity_jepsen::harness::cluster::{
        find_libfaketime, replica_endpoint, Cluster, ReplicaOptions,
    };
    use singularity_jepsen::harness::net::Network;
    use singularity_scheduler::{Command, NodeName};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const HOUR_MS: u64 = 3_600_000;
    const SLACK_MS: u64 = 60_000;
    let dir = std::env::temp_dir().join(format!("sjep-clock-{}", std::process::id()));
    let network = Network::create(3).expect("network");
    let mut cluster = Cluster::new(
        &server_bin(),
        3,
        &dir,
        ReplicaOptions {
            extra_args: vec!["--node-heartbeat-timeout-ms".into(), "0".into()],
            libfaketime: Some(find_libfaketime().expect("libfaketime installed")),
        },
    )
    .expect("cluster");
    cluster.start_all().expect("replicas start");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let endpoints: Vec<String> = (0..3).map(replica_endpoint).collect();
    let mut conn = Conn::new(endpoints, 77, 0);
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // Writes one entry (a deregistration of an unknown node: rejected, but logged and stamped)
    // and returns its leader stamp, read back from the leader's log.
    let stamp = |conn: &mut Conn| -> u64 {
        runtime.block_on(async {
            let command = Command::DeregisterNode {
                name: NodeName::new("nobody").unwrap(),
            };
            let mut written = false;
            for _ in 0..50 {
                if conn
                    .write(command.clone(), Duration::from_secs(5))
                    .await
                    .is_ok()
                {
                    written = true;
                    break;
                }
            }
            assert!(written, "the cluster never accepted a write");
            let leader = conn.leader().await.expect("a leader");
            let status = conn
                .status_of(leader, Duration::from_secs(2))
                .await
                .expect("status");
            let last = status["last_log_index"].as_u64().expect("last index");
            let log = conn
                .read_log_of(leader, last.saturating_sub(5), last, Duration::from_secs(2))
                .await
                .expect("log");
            log.entries
                .iter()
                .rev()
                .find(|e| e.kind == "deregister_node")
                .map(|e| e.leader_time_ms)
                .expect("the write is in the leader's log")
        })
    };
    let real = stamp(&mut conn);
    assert!(real.abs_diff(now_ms()) < SLACK_MS, "{real} vs {}", now_ms());
    for i in 0..3 {
        cluster.set_clock(i, "+3600").expect("skew");
    }
    let skewed = stamp(&mut conn);
    assert!(
        skewed >= now_ms() + HOUR_MS - SLACK_MS,
        "the leader stamped {skewed}, real time is {}",
        now_ms()
    );
    cluster.reset_clocks().expect("reset");
    let back = stamp(&mut conn);
    assert!(back.abs_diff(now_ms()) < SLACK_MS, "{back} vs {}", now_ms());
    drop(cluster);
    drop(network);
    let _ = std::fs::remove_dir_all(&dir);
}
