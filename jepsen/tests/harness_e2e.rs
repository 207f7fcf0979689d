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
