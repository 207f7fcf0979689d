//! End to end with real processes: three `singularity server` replicas and `singularity agent`
//! processes with simulated devices, jobs whose ranks are real shell processes.
//! - a job runs to completion and `job logs --follow` streams its output;
//! - a premium arrival preempts a basic job (SIGTERM seen by the ranks, checkpoint directory
//!   kept), which later resumes from its checkpoint and completes;
//! - `kill -9` of an agent and a restart reconciles: the ranks run again, no orphan is left,
//!   and a cancel stops them;
//! - losing a node (its agent killed) gets it declared down and its job placed elsewhere;
//! - a rank that crashes is reported and the job restarts within its policy;
//! - a device that turns unhealthy on the node is reported by the agent's heartbeat;
//! - heartbeats keep a node up past the silence timeout without writing to the log.
//!
//! Every wait is bounded; ports are picked free; every process is killed when a test ends.

mod common;

use common::{ranks_of, wait_until, Cluster};
use singularity_scheduler::{DeviceHealth, JobPhase, NodeStatus};
use std::path::Path;

/// A rank that counts steps, saves its step in the checkpoint directory after each one,
/// resumes from it, and notes SIGTERM there before it exits.
const RESUMABLE: &str = r#"
ckpt="$SINGULARITY_CHECKPOINT_DIR"
step=$(cat "$ckpt/step" 2>/dev/null || echo 0)
echo "rank $RANK resumed from step $step"
trap 'echo "rank $RANK got SIGTERM at step $step" >> "$ckpt/events"; exit 0' TERM
while [ "$step" -lt 40 ]; do
  sleep 0.1 & wait $!
  step=$((step + 1))
  [ "$RANK" = 0 ] && echo "$step" > "$ckpt/step.tmp" && mv "$ckpt/step.tmp" "$ckpt/step"
done
echo "rank $RANK finished at step $step"
"#;

#[test]
fn a_job_runs_to_completion_and_its_logs_stream() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let script = r#"for i in 1 2 3 4 5; do echo "line $i of rank $RANK/$WORLD_SIZE local $LOCAL_RANK"; sleep 0.2; done"#;
    let job = cluster.submit("hello", "standard", 2, script);
    // Follow rank 1 as soon as it has a log; the stream ends when the rank exits.
    let mut followed = String::new();
    wait_until("job logs --follow of rank 1", || {
        let out = cluster.cli(&["job", "logs", &job.to_string(), "--rank", "1", "--follow"]);
        followed = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 0);
    let logs = cluster.cli_ok(&["job", "logs", &job.to_string(), "--rank", "1"]);
    assert_eq!(logs.lines().count(), 5, "{logs}");
    assert!(logs.contains("line 5 of rank 1/2 local 1"), "{logs}");
    assert!(followed.contains("line 1 of rank 1/2"), "{followed}");

    // A rank that does not exist, and a job that does not exist, get clear errors.
    let out = cluster.cli(&["job", "logs", &job.to_string(), "--rank", "7"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rank 7 does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.cli(&["job", "logs", "999"]);
    assert!(!out.status.success());
}

#[test]
fn a_premium_arrival_preempts_a_basic_job_which_resumes_and_completes() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let basic = cluster.submit("basic", "basic", 2, RESUMABLE);
    cluster.wait_phase(basic, JobPhase::Running);
    let steps = cluster
        .checkpoints()
        .join(format!("job-{basic}"))
        .join("step");
    wait_until("the basic job to make progress", || {
        std::fs::read_to_string(&steps)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|s| s >= 3)
    });
    let premium = cluster.submit("urgent", "premium", 2, "echo premium rank $RANK; sleep 1");
    let preempted = cluster.wait_phase(premium, JobPhase::Succeeded);
    assert_eq!(preempted.phase, JobPhase::Succeeded);

    let events = std::fs::read_to_string(
        cluster
            .checkpoints()
            .join(format!("job-{basic}"))
            .join("events"),
    )
    .expect("the ranks noted SIGTERM in the checkpoint directory");
    assert!(events.contains("got SIGTERM"), "{events}");

    let finished = cluster.wait_phase(basic, JobPhase::Succeeded);
    assert!(finished.preemptions >= 1, "{finished:?}");
    let checkpoint = finished.checkpoint.expect("a checkpoint was committed");
    assert!(
        Path::new(&checkpoint.location).is_dir(),
        "kept: {checkpoint:?}"
    );
    assert!(checkpoint.step >= 3, "{checkpoint:?}");
    let logs = cluster.cli_ok(&["job", "logs", &basic.to_string()]);
    let resumed_from: Vec<u32> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("rank 0 resumed from step "))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    assert_eq!(resumed_from.len(), 2, "started, then resumed: {logs}");
    assert_eq!(resumed_from[0], 0);
    assert!(resumed_from[1] >= 3, "resumed where it stopped: {logs}");
    assert!(logs.contains("rank 0 finished at step 40"), "{logs}");
}

#[test]
fn kill_9_of_an_agent_and_a_restart_reconcile_without_orphans() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let work_dir = cluster.work_dir("node-a");
    let script = r#"echo "rank $RANK started"; while true; do sleep 0.1 & wait $!; done"#;
    let job = cluster.submit("long", "standard", 2, script);
    cluster.wait_phase(job, JobPhase::Running);
    wait_until("both ranks running", || ranks_of(&work_dir).len() >= 2);
    let before = ranks_of(&work_dir);

    cluster.kill_agent("node-a");
    // The ranks die with their agent (parent-death signal), their children with them.
    wait_until("the ranks to die with the agent", || {
        ranks_of(&work_dir).is_empty()
    });
    cluster.restart_agent("node-a");
    wait_until("the restarted agent to start the ranks again", || {
        let now = ranks_of(&work_dir);
        now.len() >= 2 && now.iter().all(|pid| !before.contains(pid))
    });
    let job_now = cluster.job(job);
    assert_eq!(job_now.phase, JobPhase::Running);
    assert_eq!(job_now.restarts, 0, "reconciled, not failed: {job_now:?}");
    let logs = cluster.cli_ok(&["job", "logs", &job.to_string()]);
    assert_eq!(logs.matches("rank 0 started").count(), 2, "{logs}");

    // Exactly the job's ranks run (two shells and their sleeps at most), and a cancel stops them.
    cluster.cli_ok(&["job", "cancel", &job.to_string()]);
    cluster.wait_phase(job, JobPhase::Cancelled);
    wait_until("no rank left after the cancel", || {
        ranks_of(&work_dir).is_empty()
    });
}

#[test]
fn losing_a_node_reschedules_its_job_on_another() {
    let mut cluster = Cluster::start(3_000);
    cluster.add_agent("node-a");
    cluster.add_agent("node-b");
    let script =
        r#"echo "rank $RANK on $SINGULARITY_NODE"; while true; do sleep 0.1 & wait $!; done"#;
    let job = cluster.submit("moving", "standard", 2, script);
    let running = cluster.wait_phase(job, JobPhase::Running);
    let lost = cluster.node_of(&running);
    assert_eq!(running.nodes().len(), 1, "two ranks fit on one node");
    cluster.kill_agent(&lost);

    let survivor = if lost == "node-a" { "node-b" } else { "node-a" };
    wait_until("the job to run on the surviving node", || {
        let job = cluster.job(job);
        job.phase == JobPhase::Running && cluster.node_of(&job) == survivor
    });
    let down = cluster
        .nodes()
        .into_iter()
        .find(|n| n.name.as_str() == lost)
        .expect("listed");
    assert!(!down.status.is_alive(), "{down:?}");
    wait_until("the ranks to start on the survivor", || {
        ranks_of(&cluster.work_dir(survivor)).len() >= 2
    });
    assert!(ranks_of(&cluster.work_dir(&lost)).is_empty());
    cluster.cli_ok(&["job", "cancel", &job.to_string()]);
    cluster.wait_phase(job, JobPhase::Cancelled);
}

#[test]
fn a_crashing_rank_is_reported_and_the_job_restarts_within_its_policy() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    // Crashes on its first two runs (counted in its checkpoint directory), then succeeds.
    let flaky = r#"
n=$(cat "$SINGULARITY_CHECKPOINT_DIR/runs" 2>/dev/null || echo 0)
[ "$RANK" = 0 ] && echo $((n + 1)) > "$SINGULARITY_CHECKPOINT_DIR/runs"
echo "run $n restart $SINGULARITY_RESTART_COUNT"
[ "$SINGULARITY_RESTART_COUNT" -ge 2 ] || { [ "$RANK" = 1 ] && exit 3; sleep 5; }
"#;
    let out = cluster.cli_ok(&[
        "job",
        "submit",
        "--name",
        "flaky",
        "--world-size",
        "2",
        "--max-restarts",
        "2",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        flaky,
    ]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = value["outcome"]["Accepted"]["JobSubmitted"]["job"]
        .as_u64()
        .unwrap();
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 2, "{done:?}");

    // One that always crashes fails after its restarts, naming the rank and its status.
    let out = cluster.cli_ok(&[
        "job",
        "submit",
        "--name",
        "broken",
        "--max-restarts",
        "1",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = value["outcome"]["Accepted"]["JobSubmitted"]["job"]
        .as_u64()
        .unwrap();
    let failed = cluster.wait_phase(job, JobPhase::Failed);
    assert_eq!(failed.restarts, 2);
    assert!(
        failed.last_reason.contains("rank 0 exited with status 7"),
        "{}",
        failed.last_reason
    );
    assert!(
        failed.last_reason.contains("gave up after 1 restart"),
        "{}",
        failed.last_reason
    );
}

#[test]
fn device_health_changes_reach_the_control_plane() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let faults = cluster.fault_dir("node-a");
    std::fs::create_dir_all(&faults).unwrap();
    let health_of = |cluster: &Cluster, index: usize| {
        cluster
            .nodes()
            .into_iter()
            .find(|n| n.name.as_str() == "node-a")
            .map(|n| n.devices[index].health.clone())
    };
    std::fs::write(
        faults.join("device-1.unhealthy"),
        "XID 79: fell off the bus\n",
    )
    .unwrap();
    wait_until("device 1 reported unhealthy", || {
        matches!(
            health_of(&cluster, 1),
            Some(DeviceHealth::Unhealthy { reason }) if reason.contains("XID 79")
        )
    });
    assert_eq!(health_of(&cluster, 0), Some(DeviceHealth::Healthy));
    std::fs::remove_file(faults.join("device-1.unhealthy")).unwrap();
    wait_until("device 1 reported healthy again", || {
        health_of(&cluster, 1) == Some(DeviceHealth::Healthy)
    });
}

#[test]
fn heartbeats_keep_a_node_up_without_log_entries() {
    let mut cluster = Cluster::start(3_000);
    cluster.add_agent("node-a");
    // The agent heartbeats every 500 ms; the leader declares a node down after 3 s of
    // silence. Past two timeouts the node must still be up, and the log must hold nothing
    // from it after its registration: heartbeats live in the leader's memory.
    std::thread::sleep(std::time::Duration::from_millis(7_000));
    let node = cluster
        .nodes()
        .into_iter()
        .find(|n| n.name.as_str() == "node-a")
        .expect("listed");
    assert_eq!(node.status, NodeStatus::Up, "{node:?}");
    let log = cluster.cli_ok(&["operator", "log", "--output", "json"]);
    let kinds: Vec<String> = log
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
            entry["kind"].as_str().expect("a kind").to_string()
        })
        .collect();
    assert!(kinds.iter().any(|k| k == "register_node"), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| k == "node_health" || k == "node_down"),
        "{kinds:?}"
    );
}

#[test]
fn jobs_that_end_at_once_run_exactly_once() {
    // A run that ends between two views must not look like ranks lost to an agent restart.
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let jobs: Vec<u64> = (0..16)
        .map(|i| cluster.submit(&format!("instant-{i}"), "standard", 1, "echo once"))
        .collect();
    for &job in &jobs {
        cluster.wait_phase(job, JobPhase::Succeeded);
    }
    for &job in &jobs {
        let logs = cluster.cli_ok(&["job", "logs", &job.to_string()]);
        assert_eq!(logs, "once\n", "job {job} ran more than once");
    }
}
