//! End to end, proxied: three `singularity server` replicas, `singularity agent` processes with
//! simulated devices, and the example training job submitted with `job submit --worker`, so
//! its ranks run under the agent's `singularity device-proxy` processes.
//! - a worker job of 4 ranks on a node of 2 devices runs spliced (2 ranks per proxy) to
//!   completion, every rank ends with the same weights, and its logs stream;
//! - a premium arrival preempts a basic worker job: the proxies checkpoint it (manifest and
//!   checksums), it resumes from that checkpoint and completes with weights bit-identical to an
//!   uninterrupted run of the same job;
//! - a premium arrival shrinks a standard worker job to one device (a resize through the
//!   proxies' checkpoint, 2 ranks spliced on 1 proxy); the premium job takes the device given up
//!   once its proxy holds no rank; the shrunk job completes with the same weights;
//! - draining its node migrates a worker job to another node through the proxies' checkpoint
//!   (in the shared checkpoint directory); it completes there with the same weights;
//! - a worker job whose ranks would span nodes is refused with the reason;
//! - `kill -9` of the agent takes its proxies and workers with it; the restarted agent runs the
//!   job again and leaves no process or shared-memory segment behind.
//!
//! Every wait is bounded; ports are picked free; every process is killed when a test ends. The
//! preempted job's workers are paused (SIGSTOP) while the preemption is planned, so the cut
//! falls mid-run whatever the machine's speed.

mod common;

use common::{processes_with, ranks_of, wait_until, Cluster, BIN};
use singularity_node::agent::{runtime_job_name, work_dir_token};
use singularity_node::checkpoint;
use singularity_scheduler::{Job, JobPhase};
use std::path::{Path, PathBuf};

/// Steps of the example job (a few seconds through the proxies on a quiet machine).
const STEPS: u64 = 20_000;
/// The preempted job is paused once it has passed this step.
const PAUSE_AFTER_STEP: u64 = 1_000;

/// `job submit --worker singularity -- train-example ...`: the example as a worker job.
fn submit_example(cluster: &Cluster, name: &str, tier: &str, world: u32, out: &Path) -> u64 {
    submit_example_with(cluster, &["--name", name, "--tier", tier], world, out)
}

/// The example as a worker job, with `job submit` flags of the caller's choosing.
fn submit_example_with(cluster: &Cluster, flags: &[&str], world: u32, out: &Path) -> u64 {
    let steps = STEPS.to_string();
    let world = world.to_string();
    let mut args = flags.to_vec();
    args.extend([
        "--world-size",
        &world,
        "--worker",
        BIN,
        "--",
        "train-example",
        "--steps",
        &steps,
        "--output-dir",
        out.to_str().expect("UTF-8 path"),
    ]);
    cluster.submit_with(&args)
}

/// Runs the same example uninterrupted on the same cluster and checks that `out` holds the very
/// same weights, bit for bit.
fn assert_same_weights_as_an_uninterrupted_run(cluster: &Cluster, out: &Path, world: u32) {
    let reference_out = cluster.dir.path().join("out-reference");
    let reference = submit_example(cluster, "reference", "standard", world, &reference_out);
    let reference_done = cluster.wait_phase(reference, JobPhase::Succeeded);
    assert_eq!(reference_done.preemptions, 0, "{reference_done:?}");
    assert_eq!(
        models(out, world),
        models(&reference_out, world),
        "the weights differ from the uninterrupted run's"
    );
}

/// The final weights of every rank, as the example wrote them.
fn models(out: &Path, world: u32) -> Vec<Vec<u8>> {
    (0..world)
        .map(|r| {
            std::fs::read(out.join(format!("model-rank{r}.bin")))
                .unwrap_or_else(|e| panic!("rank {r}'s weights in {}: {e}", out.display()))
        })
        .collect()
}

fn proxy_socket(cluster: &Cluster, node: &str, device: u16) -> PathBuf {
    cluster
        .work_dir(node)
        .join("proxies")
        .join(format!("device-{device}.sock"))
}

/// The worker processes of `job` on the agent of `node`.
fn workers_of(cluster: &Cluster, node: &str, job: u64) -> Vec<u32> {
    let var = format!(
        "SINGULARITY_JOB={}",
        runtime_job_name(singularity_scheduler::JobId(job))
    );
    processes_with(&cluster.work_dir(node), &[&var])
}

/// Waits until `job`, running on both devices of `node`, has passed `PAUSE_AFTER_STEP`, then
/// pauses its two workers (SIGSTOP) so a cut planned now falls mid-run; returns their pids.
fn pause_mid_run(cluster: &Cluster, node: &str, job: u64) -> Vec<u32> {
    let socket = proxy_socket(cluster, node, 0);
    wait_until("the job to pass the pause step", || {
        singularity_node::launcher::stats(&socket).is_ok_and(|s| s.last_step > PAUSE_AFTER_STEP)
    });
    let workers = workers_of(cluster, node, job);
    assert_eq!(workers.len(), 2, "one worker per rank: {workers:?}");
    signal(&workers, "-STOP");
    workers
}

fn signal(pids: &[u32], signal: &str) {
    for pid in pids {
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Collective segments the workers of `node`'s agent left in /dev/shm.
fn segments_left(cluster: &Cluster, node: &str) -> Vec<String> {
    let work_dir = std::fs::canonicalize(cluster.work_dir(node)).expect("work dir");
    let marker = format!("-{}-", work_dir_token(&work_dir));
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("singularity-coll-") && n.contains(&marker))
        .collect()
}

/// Every checkpoint the agent reported was the proxies' own: it never fell back to an older
/// one or stopped workers that missed the cut.
fn assert_every_checkpoint_was_taken(cluster: &Cluster, node: &str) {
    let log = std::fs::read_to_string(cluster.dir.path().join(format!("agent-{node}.log")))
        .expect("agent log");
    for sign in [
        "no usable proxy checkpoint",
        "did not take the checkpoint",
        "did not checkpoint and exit",
    ] {
        assert!(!log.contains(sign), "{sign:?} in the agent's log:\n{log}");
    }
    assert!(log.contains("device proxy started"), "{log}");
}

fn logs(cluster: &Cluster, job: u64, rank: u32) -> String {
    cluster.cli_ok(&["job", "logs", &job.to_string(), "--rank", &rank.to_string()])
}

#[test]
fn a_spliced_worker_job_runs_to_completion_through_the_device_proxies() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let out = cluster.dir.path().join("out-spliced");
    // World size 4 on a node of 2 devices: the job starts shrunk, 2 ranks per device.
    let job = submit_example(&cluster, "spliced", "standard", 4, &out);
    let running = cluster.wait_phase(job, JobPhase::Running);
    assert_eq!(running.assignment.len(), 2, "{running:?}");
    let mut followed = String::new();
    wait_until("job logs --follow of rank 3", || {
        let out = cluster.cli(&["job", "logs", &job.to_string(), "--rank", "3", "--follow"]);
        followed = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && followed.contains("finished")
    });
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 0, "{done:?}");
    assert!(
        followed.contains(&format!("rank 3/4: finished {STEPS} steps")),
        "{followed}"
    );

    // Data-parallel ranks end with the same bits.
    let weights = models(&out, 4);
    assert!(weights.iter().all(|w| *w == weights[0] && !w.is_empty()));

    // Both proxies served the job and time-sliced its ranks (replica splicing).
    for device in 0..2 {
        let stats = singularity_node::launcher::stats(&proxy_socket(&cluster, "node-a", device))
            .expect("the proxy still runs");
        assert_eq!(stats.device_index, u32::from(device));
        assert_eq!(stats.last_step, STEPS, "{stats:?}");
        assert!(
            stats.swaps > 0,
            "two ranks shared device {device}: {stats:?}"
        );
        assert!(stats.swap_bytes <= stats.naive_swap_bytes, "{stats:?}");
    }
    assert!(segments_left(&cluster, "node-a").is_empty());
}

#[test]
fn a_preempted_worker_job_resumes_from_the_proxies_checkpoint_bit_identical() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let work_dir = cluster.work_dir("node-a");

    // A basic worker job on both devices; pause it mid-run.
    let out = cluster.dir.path().join("out-preempted");
    let basic = submit_example(&cluster, "basic", "basic", 2, &out);
    cluster.wait_phase(basic, JobPhase::Running);
    let workers = pause_mid_run(&cluster, "node-a", basic);

    // A premium job needs both devices: the basic one is preempted (checkpoint through the
    // proxies), and continues once its workers run again.
    let premium = cluster.submit("urgent", "premium", 2, "echo premium rank $RANK; sleep 1");
    wait_until("the preemption to be planned", || {
        cluster.job(basic).phase != JobPhase::Running
    });
    signal(&workers, "-CONT");
    cluster.wait_phase(premium, JobPhase::Succeeded);
    let finished: Job = cluster.wait_phase(basic, JobPhase::Succeeded);
    assert!(finished.preemptions >= 1, "{finished:?}");
    assert_eq!(finished.restarts, 0, "preempted, not failed: {finished:?}");

    // The committed checkpoint is the proxies' own, intact, taken mid-run.
    let cut = finished
        .checkpoint
        .clone()
        .expect("a checkpoint was committed");
    let location = PathBuf::from(&cut.location);
    assert!(
        location.starts_with(cluster.checkpoints().join(format!("job-{basic}"))),
        "{cut:?}"
    );
    assert!(
        location
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("proxy-")),
        "{cut:?}"
    );
    let manifest = checkpoint::verify(&location).expect("every checksum verifies");
    assert_eq!(manifest.step, cut.step);
    assert_eq!(manifest.world_size, 2);
    assert!(
        cut.step > PAUSE_AFTER_STEP && cut.step < STEPS,
        "cut at step {}",
        cut.step
    );

    // Each rank stopped at the cut and started again from it.
    for rank in 0..2 {
        let text = logs(&cluster, basic, rank);
        let expected = [
            format!("rank {rank}/2: starting at step 0 of {STEPS}"),
            format!(
                "rank {rank}/2: checkpointed at step {} and stopped",
                cut.step
            ),
            format!("rank {rank}/2: starting at step {} of {STEPS}", cut.step),
            format!("rank {rank}/2: finished {STEPS} steps"),
        ];
        let mut from = 0;
        for line in &expected {
            let at = text[from..]
                .find(line.as_str())
                .unwrap_or_else(|| panic!("rank {rank}'s log lacks {line:?} in order:\n{text}"));
            from += at + line.len();
        }
    }

    // The same job, uninterrupted: bit-for-bit the same weights.
    assert_same_weights_as_an_uninterrupted_run(&cluster, &out, 2);
    let resumed = models(&out, 2);
    assert_eq!(resumed[0], resumed[1]);

    wait_until("no worker left", || {
        workers_of(&cluster, "node-a", basic).is_empty()
    });
    assert!(segments_left(&cluster, "node-a").is_empty());
    assert_every_checkpoint_was_taken(&cluster, "node-a");
    // What runs now for this agent is its two proxies, nothing else.
    assert_eq!(ranks_of(&work_dir).len(), 2, "{:?}", ranks_of(&work_dir));
}

#[test]
fn kill_9_of_an_agent_takes_its_proxies_and_workers_and_a_restart_runs_the_job_again() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let work_dir = cluster.work_dir("node-a");
    let out = cluster.dir.path().join("out-killed");
    let job = submit_example(&cluster, "survivor", "standard", 2, &out);
    cluster.wait_phase(job, JobPhase::Running);
    wait_until("both workers and both proxies running", || {
        workers_of(&cluster, "node-a", job).len() == 2 && ranks_of(&work_dir).len() == 4
    });
    // Paused, so the job cannot finish before the agent dies.
    signal(&workers_of(&cluster, "node-a", job), "-STOP");
    let before = ranks_of(&work_dir);

    cluster.kill_agent("node-a");
    wait_until("the proxies and workers to die with the agent", || {
        ranks_of(&work_dir).is_empty()
    });
    cluster.restart_agent("node-a");
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 0, "reconciled, not failed: {done:?}");
    let text = logs(&cluster, job, 0);
    assert_eq!(
        text.matches("rank 0/2: starting at step 0").count(),
        2,
        "started, then started again after the restart:\n{text}"
    );
    assert!(
        text.contains(&format!("rank 0/2: finished {STEPS} steps")),
        "{text}"
    );
    let weights = models(&out, 2);
    assert_eq!(weights[0], weights[1]);

    let after = ranks_of(&work_dir);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "nothing of the killed agent is left: {before:?} {after:?}"
    );
    assert_eq!(after.len(), 2, "the new agent's two proxies: {after:?}");
    assert!(
        segments_left(&cluster, "node-a").is_empty(),
        "{:?}",
        segments_left(&cluster, "node-a")
    );
}

#[test]
fn a_premium_arrival_shrinks_a_worker_job_by_splicing_with_the_same_result() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    let out = cluster.dir.path().join("out-shrunk");
    let job = submit_example(&cluster, "shrinkable", "standard", 2, &out);
    let running = cluster.wait_phase(job, JobPhase::Running);
    assert_eq!(running.assignment.len(), 2, "{running:?}");
    let workers = pause_mid_run(&cluster, "node-a", job);
    // A premium job of one rank: the standard job yields one of its two devices.
    let premium = cluster.submit("urgent", "premium", 1, "sleep 2");
    let mut phases = Vec::new();
    wait_until("the standard job to leave Running", || {
        let phase = cluster.job(job).phase;
        phases.push(phase);
        phase != JobPhase::Running
    });
    assert_eq!(phases.last(), Some(&JobPhase::Resizing), "{phases:?}");
    let before: Vec<u16> = cluster
        .job(job)
        .assignment
        .iter()
        .map(|d| d.index)
        .collect();
    signal(&workers, "-CONT");
    // The premium job gets the device the shrink gives up as soon as every node has
    // checkpointed (before the restore completes); by then that device's proxy has dropped the
    // worker rank that ran there, so the device is empty when the premium job lands on it.
    let mut given_up = None;
    wait_until(
        "the premium job to take the device the shrink gave up",
        || {
            let now = cluster.job(premium);
            if let Some(device) = now.assignment.first() {
                given_up = Some(device.index);
                let stats = singularity_node::launcher::stats(&proxy_socket(
                    &cluster,
                    "node-a",
                    device.index,
                ))
                .expect("the proxy of the given-up device answers");
                assert_eq!(
                    stats.ranks_attached, 0,
                    "a rank of {job} is still attached to the proxy of device {}",
                    device.index
                );
                return true;
            }
            now.phase.is_terminal()
        },
    );
    if let Some(device) = given_up {
        assert!(before.contains(&device), "{before:?} {device}");
    }
    wait_until("the job to run shrunk on one device", || {
        let now = cluster.job(job);
        now.phase == JobPhase::Running && now.assignment.len() == 1
    });
    cluster.wait_phase(premium, JobPhase::Succeeded);
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 0, "{done:?}");
    assert_eq!(done.preemptions, 0, "resized, not preempted: {done:?}");
    let cut = done
        .checkpoint
        .clone()
        .expect("the resize committed a checkpoint");
    checkpoint::verify(Path::new(&cut.location)).expect("every checksum verifies");
    assert!(cut.step > PAUSE_AFTER_STEP && cut.step < STEPS, "{cut:?}");
    let text = logs(&cluster, job, 1);
    assert!(
        text.contains(&format!(
            "rank 1/2: starting at step {} of {STEPS}",
            cut.step
        )),
        "rank 1 restored from the cut on the shrunk assignment:\n{text}"
    );

    // The same job, never shrunk: the same bits.
    assert_same_weights_as_an_uninterrupted_run(&cluster, &out, 2);
    assert_every_checkpoint_was_taken(&cluster, "node-a");
}

#[test]
fn a_worker_job_whose_ranks_span_nodes_is_refused_with_the_reason() {
    let mut cluster = Cluster::start(30_000);
    cluster.devices = "sim:1".to_string();
    cluster.add_agent("node-a");
    cluster.add_agent("node-b");
    let out = cluster.dir.path().join("out-spread");
    // Premium never starts shrunk: its two ranks need the two nodes' devices.
    let flags = [
        "--name",
        "spread",
        "--tier",
        "premium",
        "--max-restarts",
        "0",
    ];
    let job = submit_example_with(&cluster, &flags, 2, &out);
    let failed = cluster.wait_phase(job, JobPhase::Failed);
    assert!(
        failed
            .last_reason
            .contains("must run all its ranks on one node"),
        "{}",
        failed.last_reason
    );
    assert!(
        failed.last_reason.contains("has 1 of its 2 ranks"),
        "{}",
        failed.last_reason
    );
    for node in ["node-a", "node-b"] {
        assert!(workers_of(&cluster, node, job).is_empty());
    }
}

#[test]
fn draining_its_node_migrates_a_worker_job_through_the_proxies_with_the_same_result() {
    let mut cluster = Cluster::start(30_000);
    cluster.add_agent("node-a");
    cluster.add_agent("node-b");
    let out = cluster.dir.path().join("out-migrated");
    let job = submit_example(&cluster, "mover", "standard", 2, &out);
    let running = cluster.wait_phase(job, JobPhase::Running);
    let from = cluster.node_of(&running);
    let to = if from == "node-a" { "node-b" } else { "node-a" };
    let workers = pause_mid_run(&cluster, &from, job);
    cluster.cli_ok(&["node", "drain", &from]);
    wait_until("the migration to be planned", || {
        cluster.job(job).phase == JobPhase::Migrating
    });
    signal(&workers, "-CONT");
    wait_until("the job to run on the other node", || {
        let now = cluster.job(job);
        now.phase != JobPhase::Migrating && cluster.node_of(&now) == to
    });
    let done = cluster.wait_phase(job, JobPhase::Succeeded);
    assert_eq!(done.restarts, 0, "{done:?}");
    let cut = done
        .checkpoint
        .clone()
        .expect("the migration committed a checkpoint");
    checkpoint::verify(Path::new(&cut.location)).expect("every checksum verifies");
    assert!(cut.step > PAUSE_AFTER_STEP && cut.step < STEPS, "{cut:?}");
    // The target's ranks restored the cut; `job logs` gathers both nodes' parts.
    let target_log = std::fs::read_to_string(
        cluster
            .work_dir(to)
            .join("logs")
            .join(format!("job-{job}"))
            .join("rank-1.stdout"),
    )
    .expect("rank 1 ran on the target");
    assert!(
        target_log.contains(&format!(
            "rank 1/2: starting at step {} of {STEPS}",
            cut.step
        )),
        "{target_log}"
    );
    let text = logs(&cluster, job, 1);
    assert!(text.contains("rank 1/2: starting at step 0"), "{text}");
    assert!(
        text.contains(&format!(
            "rank 1/2: checkpointed at step {} and stopped",
            cut.step
        )),
        "{text}"
    );
    assert!(workers_of(&cluster, &from, job).is_empty());

    cluster.cli_ok(&["node", "undrain", &from]);
    assert_same_weights_as_an_uninterrupted_run(&cluster, &out, 2);
    assert_every_checkpoint_was_taken(&cluster, &from);
}
