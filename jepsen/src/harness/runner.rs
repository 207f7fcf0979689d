//! One test run from start to verdict: network and replicas up, setup, workloads and nemesis
//! for the time limit, heal, recovery, final reads, checks, results directory, summary line.
//!
//! It must stay bounded in time: every loop has a deadline or a count, every RPC a timeout.

use crate::checker::{check_history, CheckOptions};
use crate::error::{Error, Result};
use crate::harness::agents::AgentProcesses;
use crate::harness::client::{CallError, Conn};
use crate::harness::cluster::{find_libfaketime, replica_endpoint, Cluster, ReplicaOptions};
use crate::harness::fleet::{FleetOptions, NodeFleet, PlayedNodes};
use crate::harness::nemesis::Nemesis;
use crate::harness::net::{is_root, Network};
use crate::harness::plot::{render_svg, Point, Shade};
use crate::harness::recorder::{render, NemesisEvent, Recorder};
use crate::harness::rng::Rng;
use crate::harness::sched_check::{check_scheduler, SchedulerReport};
use crate::harness::sched_run::{
    await_recovery, collect_evidence, next_sched_op, scheduler_op, SchedShared,
    SCHEDULER_OP_PAUSE_MS,
};
use crate::harness::schedule::{build_schedule, faults_name, NemesisKind, ScheduleOptions, Window};
use crate::harness::workload::{check_set, next_register_op, AddOutcome, RegisterOp, SetReport};
use crate::history::History;
use crate::model::ModelKind;
use crate::op::{Op, OpType};
use crate::report::Validity;
use crate::value::Value;
use serde::Serialize;
use singularity_scheduler::{
    Command, DeviceKind, Effect, JobId, JobSpec, Outcome, RunSpec, TenantName, Tier,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time for the cluster to elect a leader and accept the setup writes.
const SETUP_TIMEOUT_MS: u64 = 60_000;
/// Time one setup write may take before it is retried.
const SETUP_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Time for the final reads, after recovery.
const FINAL_READ_TIMEOUT_MS: u64 = 30_000;
/// Time the linearizability check may take before it answers unknown.
const CHECK_TIME_LIMIT_MS: u64 = 120_000;
/// Granularity of the harness's sleeps, so an interrupt is noticed quickly.
const POLL_MS: u64 = 100;
/// Time a window's heal may spend restoring the membership (retried at the final heal).
const WINDOW_MEMBERSHIP_RESTORE_MS: u64 = 10_000;
/// Time the final heal may spend restoring the membership before the run fails.
const FINAL_MEMBERSHIP_RESTORE_MS: u64 = 60_000;
/// A scheduler-workload node silent this long (leader time) is declared down.
const SCHEDULER_NODE_HEARTBEAT_TIMEOUT_MS: u64 = 10_000;
/// Log entries kept behind a snapshot in scheduler runs: all of them, for the replay.
const SCHEDULER_LOGS_KEPT: u64 = 10_000_000;
/// Longest recovery window of the scheduler workload (it ends as soon as every preempted job
/// was resumed or finished).
const SCHEDULER_RECOVERY_MS: u64 = 60_000;
/// Longest wait for the replicas to quiesce (same last, committed and applied index).
const QUIESCE_TIMEOUT_MS: u64 = 20_000;
/// Process ids of the final reads start here.
const FINAL_PROCESS_BASE: i64 = 1_000_000;
/// The device kind no node has, so the workloads' jobs stay pending.
const UNPLACEABLE_DEVICE_KIND: &str = "none";
/// Job names of the register workload's jobs and the set workload's submissions.
const REGISTER_JOB_PREFIX: &str = "jepsen-reg-";
const SET_JOB_PREFIX: &str = "jepsen-set-";

/// Which workloads run (concurrently, each with its own clients and history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Register,
    Set,
    /// Mixed-tier job submissions and cancellations on nodes; checked for scheduler safety.
    Scheduler,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub server_bin: PathBuf,
    pub replicas: usize,
    pub time_limit_s: u64,
    /// Clients per workload.
    pub concurrency: usize,
    pub seed: u64,
    pub results_dir: PathBuf,
    pub nemeses: Vec<NemesisKind>,
    pub workloads: Vec<WorkloadKind>,
    /// Registers (jobs) of the register workload.
    pub keys: usize,
    pub fault_ms: u64,
    pub heal_ms: u64,
    /// Time after the workload, all faults healed, before the final reads.
    pub recovery_s: u64,
    /// Time one client operation may take before it is indeterminate.
    pub op_timeout_ms: u64,
    /// Pause of each client between two operations.
    pub op_delay_ms: u64,
    /// Nodes of the scheduler workload, and simulated devices per node.
    pub nodes: usize,
    pub devices_per_node: u16,
    /// Real node agents (`<bin> agent ...`, one per node in its own namespace) instead of the
    /// harness playing the nodes.
    pub agent_bin: Option<PathBuf>,
}

/// The verdicts of a run.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// `jepsen: register valid=... set valid=... ops=... faults=...`.
    pub summary: String,
    /// True when every check is valid.
    pub valid: bool,
    pub results_dir: PathBuf,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
struct TimelineEntry {
    fault: String,
    start_ms: u64,
    end_ms: u64,
    detail: String,
    /// What healing did (for membership: the learners added and voters restored).
    healed: String,
}

struct Shared {
    interrupted: AtomicBool,
    clients_created: AtomicU64,
    set_names: AtomicU64,
    nemesis: Mutex<Vec<NemesisEvent>>,
    timeline: Mutex<Vec<TimelineEntry>>,
    sched: SchedShared,
    set_adds: Mutex<BTreeMap<String, AddOutcome>>,
    seed: u64,
}

impl Shared {
    fn client_id(&self) -> u128 {
        let n = self.clients_created.fetch_add(1, Ordering::Relaxed) as u128;
        ((self.seed as u128) << 64) | ((std::process::id() as u128) << 32) | n
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io_error(path))
}

/// Sleeps until `until` or an interrupt.
fn sleep_until(shared: &Shared, until: Instant) {
    while !shared.interrupted() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(POLL_MS)));
    }
}

fn job_spec(name: String) -> Result<JobSpec> {
    let invalid =
        |e: singularity_scheduler::Rejection| Error::harness("job spec", format!("{e:?}"));
    Ok(JobSpec {
        name,
        tenant: TenantName::new("jepsen").map_err(invalid)?,
        tier: Tier::Basic,
        world_size: 1,
        device_kind: DeviceKind::new(UNPLACEABLE_DEVICE_KIND).map_err(invalid)?,
        memory_per_rank_bytes: 1,
        run: RunSpec::Command {
            argv: vec!["true".into()],
            env: BTreeMap::new(),
        },
        max_restarts: 0,
        metadata: BTreeMap::new(),
    })
}

/// Submits one job per register key; retries until `SETUP_TIMEOUT_MS`.
async fn setup_registers(shared: &Shared, endpoints: &[String], keys: usize) -> Result<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_millis(SETUP_TIMEOUT_MS);
    let mut conn = Conn::new(endpoints.to_vec(), shared.client_id(), 0);
    let mut jobs = Vec::with_capacity(keys);
    for key in 0..keys {
        let spec = job_spec(format!("{REGISTER_JOB_PREFIX}{key}"))?;
        let mut last = String::new();
        // The same Conn retries with a new sequence each time, so a lost first submission may
        // leave an extra job behind; only the id we are told is used.
        loop {
            if Instant::now() >= deadline || shared.interrupted() {
                return Err(Error::harness(
                    "setup",
                    format!("the cluster did not accept the register jobs in {SETUP_TIMEOUT_MS} ms: {last}"),
                ));
            }
            let command = Command::SubmitJob { spec: spec.clone() };
            match conn
                .write(command, Duration::from_millis(SETUP_WRITE_TIMEOUT_MS))
                .await
            {
                Ok(outcome) => match outcome.effect() {
                    Some(Effect::JobSubmitted { job, .. }) => {
                        jobs.push(job.0);
                        break;
                    }
                    _ => last = format!("unexpected outcome {outcome:?}"),
                },
                Err(e) => last = e.message().to_string(),
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
    Ok(jobs)
}

fn write_command(job: u64, expected_version: Option<u64>, value: i64) -> Command {
    Command::UpdateJobMetadata {
        job: JobId(job),
        expected_version,
        set: BTreeMap::from([("v".to_string(), value.to_string())]),
        remove: Vec::new(),
    }
}

fn write_completion(result: std::result::Result<Outcome, CallError>) -> OpType {
    match result {
        Ok(Outcome::Accepted(_)) | Ok(Outcome::Duplicate(_)) => OpType::Ok,
        Ok(Outcome::Rejected(_)) | Err(CallError::Definite(_)) => OpType::Fail,
        Err(CallError::Indefinite(_)) => OpType::Info,
    }
}

/// One register operation, recorded; returns the completion type.
async fn register_op(
    conn: &mut Conn,
    recorder: &Recorder,
    process: i64,
    key: i64,
    job: u64,
    op: RegisterOp,
    timeout: Duration,
) -> OpType {
    match op {
        RegisterOp::Read => {
            recorder.record(process, OpType::Invoke, "read", Some(key), Value::Nil);
            match conn.read_register(job, timeout).await {
                Ok(read) => {
                    let value = read.value.map(Value::Int).unwrap_or(Value::Nil);
                    recorder.record(process, OpType::Ok, "read", Some(key), value);
                    OpType::Ok
                }
                // A read changes nothing, so a read that did not answer did not happen.
                Err(_) => {
                    recorder.record(process, OpType::Fail, "read", Some(key), Value::Nil);
                    OpType::Fail
                }
            }
        }
        RegisterOp::Write(v) => {
            recorder.record(process, OpType::Invoke, "write", Some(key), Value::Int(v));
            let kind = write_completion(conn.write(write_command(job, None, v), timeout).await);
            recorder.record(process, kind, "write", Some(key), Value::Int(v));
            kind
        }
        RegisterOp::Cas(from, to) => {
            let value = Value::Vector(vec![Value::Int(from), Value::Int(to)]);
            recorder.record(process, OpType::Invoke, "cas", Some(key), value.clone());
            let kind = match conn.read_register(job, timeout).await {
                Ok(read) if read.value == Some(from) => write_completion(
                    conn.write(write_command(job, Some(read.version), to), timeout)
                        .await,
                ),
                _ => OpType::Fail,
            };
            recorder.record(process, kind, "cas", Some(key), value);
            kind
        }
    }
}

/// One submission of the set workload, recorded.
async fn set_op(
    conn: &mut Conn,
    recorder: &Recorder,
    shared: &Shared,
    process: i64,
    timeout: Duration,
) -> Result<OpType> {
    let n = shared.set_names.fetch_add(1, Ordering::Relaxed) as i64;
    let name = format!("{SET_JOB_PREFIX}{n}");
    let spec = job_spec(name.clone())?;
    recorder.record(process, OpType::Invoke, "add", None, Value::Int(n));
    let kind = write_completion(conn.write(Command::SubmitJob { spec }, timeout).await);
    recorder.record(process, kind, "add", None, Value::Int(n));
    let outcome = match kind {
        OpType::Ok => AddOutcome::Ok,
        OpType::Fail => AddOutcome::Fail,
        _ => AddOutcome::Info,
    };
    shared
        .set_adds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, outcome);
    Ok(kind)
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    workload: WorkloadKind,
    worker: usize,
    options: Arc<TestOptions>,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    endpoints: Vec<String>,
    jobs: Arc<Vec<u64>>,
    deadline: Instant,
) -> Result<()> {
    let concurrency = options.concurrency as i64;
    let mut process = worker as i64;
    let mut rng = Rng::new(
        options
            .seed
            .wrapping_mul(31)
            .wrapping_add(worker as u64 + 1),
    );
    let mut conn = Conn::new(endpoints.clone(), shared.client_id(), worker);
    let timeout = Duration::from_millis(options.op_timeout_ms);
    while Instant::now() < deadline && !shared.interrupted() {
        let kind = match workload {
            WorkloadKind::Register => {
                let key = rng.below(jobs.len() as u64) as usize;
                let op = next_register_op(&mut rng);
                register_op(
                    &mut conn, &recorder, process, key as i64, jobs[key], op, timeout,
                )
                .await
            }
            WorkloadKind::Set => set_op(&mut conn, &recorder, &shared, process, timeout).await?,
            WorkloadKind::Scheduler => {
                let op = next_sched_op(&mut rng);
                let kind =
                    scheduler_op(&mut conn, &recorder, &shared.sched, process, op, timeout).await;
                tokio::time::sleep(Duration::from_millis(SCHEDULER_OP_PAUSE_MS)).await;
                kind
            }
        };
        if kind == OpType::Info {
            // The indeterminate op stays open forever: go on as a new process and client.
            process += concurrency;
            conn = Conn::new(endpoints.clone(), shared.client_id(), worker);
        }
        tokio::time::sleep(Duration::from_millis(options.op_delay_ms)).await;
    }
    Ok(())
}

/// Carries out `schedule`, then heals everything (the full membership included). Runs on its
/// own thread.
fn nemesis_loop(
    schedule: Vec<Window>,
    start: Instant,
    recorder_start: Instant,
    shared: Arc<Shared>,
    mut nemesis: Nemesis,
) -> Result<()> {
    let now_ns = || i64::try_from(recorder_start.elapsed().as_nanos()).unwrap_or(i64::MAX);
    let event = |f: String, value: String| {
        shared
            .nemesis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(NemesisEvent {
                time_ns: now_ns(),
                f,
                value,
            });
    };
    let mut result = Ok(());
    for window in schedule {
        sleep_until(&shared, start + Duration::from_millis(window.start_ms));
        if shared.interrupted() {
            break;
        }
        let leader = nemesis.leader();
        let started_ms = start.elapsed().as_millis() as u64;
        let name = faults_name(&window.faults);
        let mut details = Vec::with_capacity(window.faults.len());
        for fault in &window.faults {
            match nemesis.inject(*fault, leader) {
                Ok(detail) => details.push(detail),
                Err(e) => {
                    details.push(format!("failed: {e}"));
                    result = Err(e);
                }
            }
        }
        let detail = details.join(" | ");
        event(format!("start-{name}"), detail.clone());
        sleep_until(&shared, start + Duration::from_millis(window.end_ms));
        let healed = match nemesis.heal(Duration::from_millis(WINDOW_MEMBERSHIP_RESTORE_MS)) {
            Ok(healed) => healed,
            // A membership the group could not restore yet is retried at the final heal.
            Err(e) => format!("not fully healed: {e}"),
        };
        event(format!("stop-{name}"), healed.clone());
        shared
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TimelineEntry {
                fault: name,
                start_ms: started_ms,
                end_ms: start.elapsed().as_millis() as u64,
                detail,
                healed,
            });
        if result.is_err() {
            break;
        }
    }
    let heal = nemesis.heal(Duration::from_millis(FINAL_MEMBERSHIP_RESTORE_MS));
    if let Ok(healed) = &heal {
        event("final-heal".into(), healed.clone());
    }
    result.and(heal.map(|_| ()))
}

/// The `singularity server` flags of a run. Register and set runs have no nodes, so nodes are
/// never declared down; the scheduler workload's nodes heartbeat, and every log entry is kept
/// so its checker can replay the log from index 1.
fn server_args(options: &TestOptions) -> Vec<String> {
    let heartbeat_timeout_ms = if options.workloads.contains(&WorkloadKind::Scheduler) {
        SCHEDULER_NODE_HEARTBEAT_TIMEOUT_MS
    } else {
        0
    };
    let mut args = vec![
        "--node-heartbeat-timeout-ms".to_string(),
        heartbeat_timeout_ms.to_string(),
    ];
    if options.workloads.contains(&WorkloadKind::Scheduler) {
        args.push("--logs-kept-after-snapshot".into());
        args.push(SCHEDULER_LOGS_KEPT.to_string());
    }
    args
}

/// Latency points from a history: each completion paired with its process's invocation.
fn latency_points(ops: &[Op]) -> Vec<Point> {
    let mut open: HashMap<i64, i64> = HashMap::new();
    let mut points = Vec::new();
    for op in ops {
        let t = op.time_ns.unwrap_or(0);
        match op.kind {
            OpType::Invoke => {
                open.insert(op.process, t);
            }
            kind => {
                if let Some(start) = open.remove(&op.process) {
                    points.push(Point {
                        time_s: t as f64 / 1e9,
                        latency_ms: (t - start) as f64 / 1e6,
                        kind: kind.name(),
                    });
                }
            }
        }
    }
    points
}

/// Runs one test. Needs root; errors say what failed; the verdicts are in the outcome.
pub fn run_test(options: TestOptions) -> Result<TestOutcome> {
    if !is_root() {
        return Err(Error::NotRoot);
    }
    if options.concurrency == 0 || options.keys == 0 || options.workloads.is_empty() {
        return Err(Error::harness(
            "options",
            "concurrency, keys and workloads must not be zero or empty",
        ));
    }
    let dir = options.results_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    for i in 0..options.replicas {
        let data = dir.join(format!("n{}", i + 1)).join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io_error(&data))?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Error::harness("tokio runtime", e.to_string()))?;
    let shared = Arc::new(Shared {
        interrupted: AtomicBool::new(false),
        clients_created: AtomicU64::new(0),
        set_names: AtomicU64::new(0),
        nemesis: Mutex::new(Vec::new()),
        timeline: Mutex::new(Vec::new()),
        sched: SchedShared::default(),
        set_adds: Mutex::new(BTreeMap::new()),
        seed: options.seed,
    });
    {
        let shared = shared.clone();
        runtime.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("jepsen: interrupted; stopping the run and cleaning up");
            shared.interrupted.store(true, Ordering::Relaxed);
        });
    }

    // Guards: declared network first, so the cluster's processes die before the namespaces go.
    let agents = match (
        &options.agent_bin,
        options.workloads.contains(&WorkloadKind::Scheduler),
    ) {
        (Some(_), true) => options.nodes,
        _ => 0,
    };
    let network = Arc::new(Network::create_with_agents(options.replicas, agents)?);
    let libfaketime = if options.nemeses.contains(&NemesisKind::Clock) {
        Some(find_libfaketime()?)
    } else {
        None
    };
    let cluster = Arc::new(Mutex::new(Cluster::new(
        &options.server_bin,
        options.replicas,
        &dir,
        ReplicaOptions {
            extra_args: server_args(&options),
            libfaketime,
        },
    )?));
    cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .start_all()?;
    let endpoints: Vec<String> = (0..options.replicas).map(replica_endpoint).collect();
    let recorder_start = Instant::now();
    let registers = Arc::new(Recorder::new(recorder_start));
    let sets = Arc::new(Recorder::new(recorder_start));
    let scheds = Arc::new(Recorder::new(recorder_start));
    let run_register = options.workloads.contains(&WorkloadKind::Register);
    let run_set = options.workloads.contains(&WorkloadKind::Set);
    let run_sched = options.workloads.contains(&WorkloadKind::Scheduler);

    eprintln!(
        "jepsen: {} replicas up; setting up {} registers",
        options.replicas, options.keys
    );
    let jobs = Arc::new(runtime.block_on(setup_registers(
        &shared,
        &endpoints,
        if run_register { options.keys } else { 0 },
    ))?);

    // The scheduler workload's nodes (played by the harness until the agent exists).
    let mut fleet: Option<Box<dyn NodeFleet>> = None;
    if run_sched {
        let fleet_options = FleetOptions {
            nodes: options.nodes,
            devices_per_node: options.devices_per_node,
        };
        let mut nodes: Box<dyn NodeFleet> = match &options.agent_bin {
            Some(bin) => Box::new(AgentProcesses::new(
                bin,
                endpoints.clone(),
                fleet_options,
                &dir,
            )?),
            None => Box::new(PlayedNodes::new(
                fleet_options,
                endpoints.clone(),
                (0..options.nodes).map(|_| shared.client_id()).collect(),
                runtime.handle().clone(),
            )),
        };
        nodes.start()?;
        eprintln!("jepsen: scheduler nodes: {}", nodes.describe());
        fleet = Some(nodes);
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.time_limit_s);
    let schedule = build_schedule(&ScheduleOptions {
        seed: options.seed,
        time_limit_ms: options.time_limit_s * 1000,
        replicas: options.replicas,
        nemeses: options.nemeses.clone(),
        fault_ms: options.fault_ms,
        heal_ms: options.heal_ms,
    });
    eprintln!(
        "jepsen: running for {} s with {} faults scheduled",
        options.time_limit_s,
        schedule.len()
    );
    let options = Arc::new(options);
    let mut tasks = Vec::new();
    for (workload, enabled, recorder) in [
        (WorkloadKind::Register, run_register, &registers),
        (WorkloadKind::Set, run_set, &sets),
        (WorkloadKind::Scheduler, run_sched, &scheds),
    ] {
        if !enabled {
            continue;
        }
        for worker in 0..options.concurrency {
            tasks.push(runtime.spawn(client_loop(
                workload,
                worker,
                options.clone(),
                shared.clone(),
                recorder.clone(),
                endpoints.clone(),
                jobs.clone(),
                deadline,
            )));
        }
    }
    let nemesis = {
        let shared = shared.clone();
        let nemesis = Nemesis::new(
            network.clone(),
            cluster.clone(),
            Conn::new(endpoints.clone(), shared.client_id(), 0),
            options.seed,
            runtime.handle().clone(),
        );
        std::thread::spawn(move || nemesis_loop(schedule, start, recorder_start, shared, nemesis))
    };
    let mut failures = Vec::new();
    for task in tasks {
        match runtime.block_on(task) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("a client task failed: {e}")),
        }
    }
    match nemesis.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("nemesis: {e}")),
        Err(_) => failures.push("the nemesis thread panicked".into()),
    }
    if !failures.is_empty() {
        return Err(Error::harness("workload", failures.join("; ")));
    }

    // Recovery: everything healed; give the cluster time, then final reads.
    sleep_until(
        &shared,
        Instant::now() + Duration::from_secs(options.recovery_s),
    );
    if shared.interrupted() {
        return Err(Error::harness("run", "interrupted by a signal; cleaned up"));
    }
    let final_deadline = Instant::now() + Duration::from_millis(FINAL_READ_TIMEOUT_MS);
    let mut final_names = None;
    let mut final_read_error = String::from("no attempt (interrupted or out of time)");
    runtime.block_on(async {
        let mut conn = Conn::new(endpoints.clone(), shared.client_id(), 0);
        let timeout = Duration::from_millis(options.op_timeout_ms.max(SETUP_WRITE_TIMEOUT_MS));
        if run_register {
            for (key, &job) in jobs.iter().enumerate() {
                let process = FINAL_PROCESS_BASE + key as i64;
                // Bounded by the deadline; a failed read is recorded as :fail and retried.
                while Instant::now() < final_deadline && !shared.interrupted() {
                    let kind = register_op(
                        &mut conn,
                        &registers,
                        process,
                        key as i64,
                        job,
                        RegisterOp::Read,
                        timeout,
                    )
                    .await;
                    if kind == OpType::Ok {
                        break;
                    }
                }
            }
        }
        if run_set {
            let process = FINAL_PROCESS_BASE;
            while Instant::now() < final_deadline && !shared.interrupted() {
                sets.record(process, OpType::Invoke, "read", None, Value::Nil);
                match conn.read_job_names(timeout).await {
                    Ok(names) => {
                        let ids: Vec<Value> = names
                            .iter()
                            .filter_map(|n| n.strip_prefix(SET_JOB_PREFIX))
                            .filter_map(|n| n.parse().ok())
                            .map(Value::Int)
                            .collect();
                        sets.record(process, OpType::Ok, "read", None, Value::Vector(ids));
                        final_names = Some(names);
                        break;
                    }
                    Err(e) => {
                        final_read_error = e.message().to_string();
                        sets.record(process, OpType::Fail, "read", None, Value::Nil);
                    }
                }
            }
        }
    });
    if shared.interrupted() {
        return Err(Error::harness("run", "interrupted by a signal; cleaned up"));
    }
    // Scheduler: recovery window with the nodes still working, then the nodes stop, the
    // replicas quiesce, and every replica's status and log are collected.
    let mut sched_result: Option<(SchedulerReport, serde_json::Value)> = None;
    if let Some(mut nodes) = fleet.take() {
        let mut conn = Conn::new(endpoints.clone(), shared.client_id(), 0);
        let recovery_deadline =
            tokio::time::Instant::now() + Duration::from_millis(SCHEDULER_RECOVERY_MS);
        let recovery_started = Instant::now();
        let jobs = runtime.block_on(await_recovery(&mut conn, recovery_deadline));
        let recovery_ms = recovery_started.elapsed().as_millis() as u64;
        nodes.stop();
        let quiesce_deadline =
            tokio::time::Instant::now() + Duration::from_millis(QUIESCE_TIMEOUT_MS);
        let (evidence, quiesced) = runtime.block_on(collect_evidence(
            &mut conn,
            options.replicas,
            quiesce_deadline,
        ));
        let names: Vec<String> = (1..=options.replicas).map(|i| format!("n{i}")).collect();
        let report = check_scheduler(&names, &evidence, jobs.as_deref().map_err(Clone::clone));
        let context = serde_json::json!({
            "nodes": nodes.describe(),
            "node_stats": nodes.stats(),
            "recovery_ms": recovery_ms,
            "quiesced": quiesced,
        });
        sched_result = Some((report, context));
    }
    if shared.interrupted() {
        return Err(Error::harness("run", "interrupted by a signal; cleaned up"));
    }
    cluster.lock().unwrap_or_else(|e| e.into_inner()).stop_all();
    let nemesis_events = shared
        .nemesis
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let timeline = shared
        .timeline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    // Histories, verdicts, timeline, plot.
    let mut parts = Vec::new();
    let mut valid = true;
    let mut total_ops = 0;
    let mut all_points = Vec::new();
    if run_register {
        let ops = registers.ops();
        total_ops += ops.iter().filter(|o| o.kind == OpType::Invoke).count();
        all_points.extend(latency_points(&ops));
        let (edn, json) = render(&ops, &nemesis_events);
        write_file(&dir.join("register.edn"), &edn)?;
        write_file(&dir.join("register.json"), &json)?;
        let mut check = CheckOptions::new(ModelKind::CasRegister);
        check.time_limit_ms = Some(CHECK_TIME_LIMIT_MS);
        let report = check_history(&History::new(ops), &check)?;
        write_file(&dir.join("register-verdict.json"), &report.to_json())?;
        if report.valid == Validity::NotLinearizable {
            let page = crate::html::render_html(&report, "register.edn");
            write_file(&dir.join("register-failure.html"), &page)?;
        }
        let verdict = match report.valid {
            Validity::Linearizable => "true",
            Validity::NotLinearizable => "false",
            Validity::Unknown => "unknown",
        };
        valid &= report.valid == Validity::Linearizable;
        parts.push(format!("register valid={verdict}"));
    }
    if run_set {
        let ops = sets.ops();
        total_ops += ops.iter().filter(|o| o.kind == OpType::Invoke).count();
        all_points.extend(latency_points(&ops));
        let (edn, json) = render(&ops, &nemesis_events);
        write_file(&dir.join("set.edn"), &edn)?;
        write_file(&dir.join("set.json"), &json)?;
        let adds = shared
            .set_adds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let report: Option<SetReport> = final_names
            .as_ref()
            .map(|names| check_set(&adds, names, SET_JOB_PREFIX));
        let json = match &report {
            Some(r) => serde_json::to_string_pretty(r).unwrap_or_default(),
            None => {
                serde_json::json!({"valid": "unknown", "error": "the final read never succeeded"})
                    .to_string()
            }
        };
        write_file(&dir.join("set-verdict.json"), &json)?;
        let verdict = match &report {
            Some(r) if r.valid => "true",
            Some(_) => "false",
            None => "unknown",
        };
        valid &= verdict == "true";
        parts.push(format!("set valid={verdict}"));
    }
    if let Some((report, context)) = &sched_result {
        let ops = scheds.ops();
        total_ops += ops.iter().filter(|o| o.kind == OpType::Invoke).count();
        all_points.extend(latency_points(&ops));
        let (edn, json) = render(&ops, &nemesis_events);
        write_file(&dir.join("scheduler.edn"), &edn)?;
        write_file(&dir.join("scheduler.json"), &json)?;
        let mut verdict = serde_json::to_value(report).unwrap_or_default();
        if let (Some(map), Some(extra)) = (verdict.as_object_mut(), context.as_object()) {
            map.extend(extra.clone());
        }
        write_file(
            &dir.join("scheduler-verdict.json"),
            &serde_json::to_string_pretty(&verdict).unwrap_or_default(),
        )?;
        valid &= report.valid;
        parts.push(format!("scheduler valid={}", report.valid));
    }
    write_file(
        &dir.join("faults.json"),
        &serde_json::to_string_pretty(&timeline).unwrap_or_default(),
    )?;
    let shades: Vec<Shade> = timeline
        .iter()
        .map(|t| Shade {
            start_s: (start - recorder_start).as_secs_f64() + t.start_ms as f64 / 1e3,
            end_s: (start - recorder_start).as_secs_f64() + t.end_ms as f64 / 1e3,
            label: t.fault.clone(),
            detail: format!("{}: {}", t.fault, t.detail),
        })
        .collect();
    let duration_s = recorder_start.elapsed().as_secs_f64();
    let title = format!(
        "singularity-jepsen: {} replicas, seed {}, {} s",
        options.replicas, options.seed, options.time_limit_s
    );
    write_file(
        &dir.join("latency.svg"),
        &render_svg(&title, &all_points, &shades, duration_s),
    )?;
    let summary = format!(
        "jepsen: {} ops={total_ops} faults={}",
        parts.join(" "),
        timeline.len()
    );
    write_file(
        &dir.join("summary.json"),
        &serde_json::json!({"valid": valid, "summary": summary, "seed": options.seed}).to_string(),
    )?;
    drop(cluster);
    drop(network);
    Ok(TestOutcome {
        summary,
        valid,
        results_dir: dir,
    })
}
