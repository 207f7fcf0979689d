//! End-to-end tests of `singularity simulate`: a small trace replayed through the real binary,
//! JSON and table output, and clear errors for a missing or malformed trace.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_singularity");

fn write_trace(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("singularity-simulate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write trace");
    path
}

fn simulate(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("simulate")
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Simulates `trace` on 16 devices under `policy`, with more flags.
fn simulate_on_16(trace: &std::path::Path, policy: &str, more: &[&str]) -> Output {
    let path = trace.to_str().expect("utf-8 path");
    let mut args = vec!["--trace", path, "--devices", "16", "--policy", policy];
    args.extend_from_slice(more);
    simulate(&args)
}

fn small_trace() -> String {
    let mut text = String::from("job_id,submission_time,duration,num_gpu\n");
    for n in 0..40u64 {
        let gpus = [1, 2, 4, 8][(n % 4) as usize];
        text.push_str(&format!("job-{n},{},{},{gpus}\n", n * 300, 600 + n * 113));
    }
    text
}

#[test]
fn replays_a_trace_and_prints_json() {
    let trace = write_trace("small.csv", &small_trace());
    for policy in ["fifo", "backfill", "tiresias", "singularity"] {
        let out = simulate_on_16(&trace, policy, &["--output", "json", "--limit-jobs", "30"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if policy == "singularity" && stderr.contains("not available") {
            continue;
        }
        assert!(out.status.success(), "{policy}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the output is JSON");
        assert_eq!(report["policy"], policy);
        assert_eq!(report["jobs"], 30);
        assert_eq!(report["tiers"].as_array().map(Vec::len), Some(3));
    }
}

#[test]
fn prints_a_table_by_default() {
    let trace = write_trace("table.csv", &small_trace());
    let out = simulate_on_16(&trace, "fifo", &["--tier-mix", "premium=0.5,basic=0.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("utilization"), "{text}");
    assert!(text.contains("premium"), "{text}");
    assert!(
        text.contains("premium SLA under any policy: at most"),
        "{text}"
    );
}

/// Two 8-GPU premium jobs due at once on 8 devices, then one that fits later.
fn contended_trace() -> String {
    "job_id,submission_time,duration,num_gpu\na,0,1000,8\nb,0,1000,8\nc,5000,1000,8\n".to_string()
}

#[test]
fn premium_bound_alone_prints_the_bound_without_a_replay() {
    let trace = write_trace("contended.csv", &contended_trace());
    let path = trace.to_str().expect("utf-8 path");
    let common = ["--trace", path, "--devices", "8", "--tier-mix", "premium=1"];
    let out = simulate(&[&common[..], &["--premium-bound"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("premium SLA under any policy: at most 66.67% (1 of 3 premium jobs"),
        "{text}"
    );
    assert!(!text.contains("utilization"), "no replay: {text}");

    let out = simulate(&[&common[..], &["--premium-bound", "--output", "json"]].concat());
    assert!(out.status.success());
    let bound: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(bound["premium_jobs"], 3);
    assert_eq!(bound["must_miss"], 1);
    assert_eq!(bound["devices"], 8);
    assert_eq!(bound["complete"], true);
    assert_eq!(bound["worst_window"]["must_miss"], 1);

    // The same bound is part of a full report.
    let out = simulate(&[&common[..], &["--policy", "fifo", "--output", "json"]].concat());
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["premium_bound"], bound);
}

#[test]
fn a_missing_or_bad_trace_gets_a_clear_error() {
    let out = simulate(&["--trace", "/nonexistent/trace.csv", "--devices", "8"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the trace"), "{stderr}");

    let bad = write_trace(
        "bad.csv",
        "job_id,submission_time,duration,num_gpu\na,1,600,x\n",
    );
    let out = simulate(&["--trace", bad.to_str().expect("utf-8"), "--devices", "8"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2, column 4 (num_gpu)"), "{stderr}");

    let out = simulate(&[
        "--trace",
        bad.to_str().expect("utf-8"),
        "--devices",
        "8",
        "--tier-mix",
        "premium=0.9",
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sum to 0.9"));
}

#[test]
fn every_flag_has_help() {
    let out = simulate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--trace",
        "--devices",
        "--devices-per-node",
        "--policy",
        "--tier-mix",
        "--output",
        "--limit-jobs",
        "--seed",
        "--tick-s",
        "--premium-bound",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
