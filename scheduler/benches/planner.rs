//! Benchmark of Singularity's policy at fleet scale (issue 4, "Performance"): on 100,000
//! devices (12,500 nodes of 8, 8 nodes to a locality domain) with 20,000 running jobs packed
//! unevenly (so free devices are fragmented), under a stream of submissions and completions,
//! the time of `planner::plan` for the submission of a 64-rank gang job. Target: p99 at most
//! 10 ms.
//!
//! Run: `cargo bench -p singularity-scheduler --bench planner`. Before criterion's own run it
//! prints p50/p99/max over a fixed number of timed plans (only `plan` is timed; submitting,
//! committing the plan and completing its actions happen between samples, untimed). Two more
//! summaries time a plan that must make room (every device held) and a crowded queue (20,000
//! blocked jobs, whose window leaves free devices to a job behind it).

use criterion::{criterion_group, Criterion};
use singularity_scheduler::planner::{plan, Evaluation};
use singularity_scheduler::testkit::{job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::*;
use std::time::{Duration, Instant};

const NODES: usize = 12_500;
const DEVICES_PER_NODE: usize = 8;
const NODES_PER_DOMAIN: usize = 8;
const RUNNING_JOBS: usize = 20_000;
/// Sizes of the running jobs, cycled: 40 devices per 10 jobs, so 80,000 of 100,000 devices are
/// held before packing leaves holes.
const JOB_SIZES: [u32; 10] = [2, 4, 8, 4, 1, 8, 4, 2, 4, 3];
const GANG_RANKS: u32 = 64;
/// Timed plans in the printed summary.
const SUMMARY_SAMPLES: usize = 400;
/// Random completions and small submissions between two timed plans.
const COMPLETIONS_PER_STEP: usize = 3;
const SUBMISSIONS_PER_STEP: usize = 2;
/// Timed plans in the contended summary.
const CONTENDED_SAMPLES: usize = 100;
/// Target p99 of one plan, in milliseconds.
const TARGET_P99_MS: f64 = 10.0;

fn tier_of(j: usize) -> Tier {
    match j % 10 {
        0 | 1 => Tier::Premium,
        2..=4 => Tier::Standard,
        _ => Tier::Basic,
    }
}

/// The stream of submissions and completions: a deterministic pseudo-random sequence
/// (xorshift) picks the jobs that complete; the previous gang completes too, so the load stays
/// about level.
struct Stream {
    seed: u64,
    step: usize,
    previous_gang: Option<JobId>,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Stream {
            seed,
            step: 0,
            previous_gang: None,
        }
    }

    fn pick(&mut self, below: usize) -> usize {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % below.max(1) as u64) as usize
    }
}

/// The fleet, built through real entries: jobs are packed node after node in id order, a job
/// going to the next node when it does not fit the current one.
fn big_fleet() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(false);
    let nodes = fleet.add_nodes(
        "gpu",
        NODES,
        DEVICES_PER_NODE,
        "h100",
        H100_MEMORY_BYTES,
        NODES_PER_DOMAIN,
    );
    let (mut node, mut used) = (0usize, 0usize);
    for j in 0..RUNNING_JOBS {
        let size = JOB_SIZES[j % JOB_SIZES.len()] as usize;
        if used + size > DEVICES_PER_NODE {
            node += 1;
            used = 0;
        }
        let devices = (used..used + size)
            .map(|i| DeviceRef::new(nodes[node], i as u16))
            .collect();
        used += size;
        fleet.run_job(
            job_spec(&format!("job-{j}"), tier_of(j), size as u32, "h100"),
            devices,
        );
    }
    fleet
}

/// The stream between two timed plans (untimed): the previous gang and a few random running
/// jobs complete, a few small jobs are submitted, then the 64-rank gang.
fn step(fleet: &mut Fleet, stream: &mut Stream) -> JobId {
    if let Some(gang) = stream.previous_gang.take() {
        if fleet.state.job(gang).map(|j| j.phase) == Some(JobPhase::Running) {
            fleet.succeed(gang);
        }
    }
    for _ in 0..COMPLETIONS_PER_STEP {
        let running: Vec<JobId> = fleet
            .state
            .jobs()
            .filter(|j| j.phase == JobPhase::Running)
            .map(|j| j.id)
            .collect();
        if running.is_empty() {
            break;
        }
        let pick = stream.pick(running.len());
        fleet.succeed(running[pick]);
    }
    let n = stream.step;
    stream.step += 1;
    for k in 0..SUBMISSIONS_PER_STEP {
        let size = JOB_SIZES[(n + k) % JOB_SIZES.len()];
        fleet.submit(job_spec("small", tier_of(n + k), size, "h100"));
    }
    let gang = fleet.submit(job_spec("gang", tier_of(n), GANG_RANKS, "h100"));
    stream.previous_gang = Some(gang);
    gang
}

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`, Linux), or `None`
/// elsewhere. On a shared machine, wall time includes time spent waiting for a core; this
/// does not.
#[cfg(target_os = "linux")]
fn on_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (rc == 0).then(|| time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn on_cpu_ns() -> Option<u64> {
    None
}

/// One timed plan: wall time, and on-CPU time where the platform tells it.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    on_cpu: Option<Duration>,
}

/// Times one plan for the gang's submission, then commits the plan and completes its actions.
fn timed_plan(fleet: &mut Fleet, stream: &mut Stream) -> Duration {
    timed_plan_sample(fleet, stream).wall
}

fn timed_plan_sample(fleet: &mut Fleet, stream: &mut Stream) -> Sample {
    let gang = step(fleet, stream);
    let (planned, sample) = time_plan(fleet, &Evaluation::JobSubmitted(gang));
    if !planned.actions.is_empty() {
        if let Outcome::Accepted(Effect::PlanApplied { committed, .. }) =
            fleet.apply(Command::ApplyPlan { plan: planned })
        {
            for c in committed {
                fleet.finish_action(c.action, 1);
            }
        }
    }
    sample
}

/// Times one call of `plan`: wall time and on-CPU time.
fn time_plan(fleet: &Fleet, evaluation: &Evaluation) -> (Plan, Sample) {
    let cpu_start = on_cpu_ns();
    let start = Instant::now();
    let planned = plan(&fleet.state, evaluation, fleet.clock_ms, fleet.applied);
    let wall = start.elapsed();
    let on_cpu = match (cpu_start, on_cpu_ns()) {
        (Some(a), Some(b)) => Some(Duration::from_nanos(b.saturating_sub(a))),
        _ => None,
    };
    (planned, Sample { wall, on_cpu })
}

/// Prints p50/p99/max of wall and on-CPU time, with the ratio of the p99 to the target.
fn report(what: &str, all: &[Sample]) {
    let mut wall: Vec<Duration> = all.iter().map(|s| s.wall).collect();
    wall.sort();
    let p99 = percentile(&wall, 0.99);
    println!(
        "{what}, {} samples: wall p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         (target p99 <= {TARGET_P99_MS} ms: {:.3}x of target)",
        wall.len(),
        ms(percentile(&wall, 0.5)),
        ms(p99),
        ms(*wall.last().expect("samples")),
        ms(p99) / TARGET_P99_MS,
    );
    let mut on_cpu: Vec<Duration> = all.iter().filter_map(|s| s.on_cpu).collect();
    on_cpu.sort();
    if !on_cpu.is_empty() {
        println!(
            "  on-CPU time of the same plans (excludes waiting for a core on a shared machine): \
             p50 {:.2} ms, p99 {:.2} ms (p99 {:.3}x of target)",
            ms(percentile(&on_cpu, 0.5)),
            ms(percentile(&on_cpu, 0.99)),
            ms(percentile(&on_cpu, 0.99)) / TARGET_P99_MS,
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(fleet: &mut Fleet) {
    let mut stream = Stream::new(0x9e37_79b9_7f4a_7c15);
    let all: Vec<Sample> = (0..SUMMARY_SAMPLES)
        .map(|_| timed_plan_sample(fleet, &mut stream))
        .collect();
    let held: usize = fleet
        .state
        .nodes()
        .map(|n| n.devices.iter().filter(|d| d.holder.is_some()).count())
        .sum();
    report(
        &format!(
            "stream: plan for a {GANG_RANKS}-rank gang's submission (at the end {} active jobs, \
             {held} of {} devices held)",
            fleet.state.active_job_count(),
            NODES * DEVICES_PER_NODE
        ),
        &all,
    );
}

/// The contended case: a fleet with every device held (the running jobs above plus basic
/// 8-rank jobs on every node left free), where a premium 64-rank gang must make room by
/// shrinking and preempting lower tiers. Times the plan only (the same state each time).
fn contended_summary(fleet: &Fleet) {
    let mut full = fleet.clone();
    let free: Vec<Vec<DeviceRef>> = full
        .state
        .nodes()
        .map(|n| {
            n.devices
                .iter()
                .enumerate()
                .filter(|(_, d)| d.holder.is_none())
                .map(|(i, _)| DeviceRef::new(n.id, i as u16))
                .collect::<Vec<_>>()
        })
        .filter(|f: &Vec<DeviceRef>| !f.is_empty())
        .collect();
    for devices in free {
        let size = devices.len();
        // A gang must divide its devices evenly: fill each hole with one basic job.
        full.run_job(
            job_spec("filler", Tier::Basic, size as u32, "h100"),
            devices,
        );
    }
    let gang = full.submit(job_spec("premium-gang", Tier::Premium, GANG_RANKS, "h100"));
    let evaluation = Evaluation::JobSubmitted(gang);
    let mut all = Vec::with_capacity(CONTENDED_SAMPLES);
    let mut actions = 0;
    for _ in 0..CONTENDED_SAMPLES {
        let (planned, sample) = time_plan(&full, &evaluation);
        all.push(sample);
        actions = planned.actions.len();
    }
    report(
        &format!(
            "contended: every device held, a premium {GANG_RANKS}-rank gang makes room \
             ({actions} actions per plan)"
        ),
        &all,
    );
}

/// Pending jobs behind the window in the crowded summary.
const CROWDED_PENDING: usize = 20_000;
/// Nodes of a second kind, every device held by premium jobs, that the crowded queue waits for.
const CROWDED_NODES: usize = 1_000;

/// The crowded queue: next to the fleet above (fragmented, about 20,000 h100 devices free),
/// 1,000 a100 nodes all held by premium jobs, and `waiting` premium 8-rank a100 jobs pending
/// (blocked: nothing of a lower tier to preempt), then one basic 1-rank h100 job. Returns the
/// plan samples and whether the h100 job started (behind the window when `waiting` exceeds it).
fn crowded_plans(fleet: &Fleet, waiting: usize) -> (Vec<Sample>, bool) {
    let mut crowded = fleet.clone();
    let nodes = crowded.add_nodes(
        "a100-",
        CROWDED_NODES,
        DEVICES_PER_NODE,
        "a100",
        H100_MEMORY_BYTES,
        NODES_PER_DOMAIN,
    );
    for &node in &nodes {
        let devices = (0..DEVICES_PER_NODE as u16)
            .map(|i| DeviceRef::new(node, i))
            .collect();
        crowded.run_job(
            job_spec(
                "a100-running",
                Tier::Premium,
                DEVICES_PER_NODE as u32,
                "a100",
            ),
            devices,
        );
    }
    for _ in 0..waiting {
        crowded.submit(job_spec("a100-waiting", Tier::Premium, 8, "a100"));
    }
    let small = crowded.submit(job_spec("h100-small", Tier::Basic, 1, "h100"));
    let evaluation = Evaluation::Tick;
    let mut all = Vec::with_capacity(CONTENDED_SAMPLES);
    let mut started = false;
    for _ in 0..CONTENDED_SAMPLES {
        let (planned, sample) = time_plan(&crowded, &evaluation);
        all.push(sample);
        started = planned.actions.iter().any(|a| a.job == small);
    }
    (all, started)
}

/// The crowded queue against the same fleet with a window's worth of waiting jobs only: the
/// cost of looking past the window for jobs that fit free devices (backfill).
fn crowded_summary(fleet: &Fleet) {
    let window = singularity_scheduler::planner::DEFAULT_MAX_PENDING_CONSIDERED;
    for waiting in [window - 1, window + CROWDED_PENDING] {
        let (samples, started) = crowded_plans(fleet, waiting);
        report(
            &format!(
                "crowded: {waiting} blocked a100 jobs pending, then a 1-rank h100 job ({})",
                if started { "started" } else { "NOT started" }
            ),
            &samples,
        );
    }
}

fn bench(c: &mut Criterion) {
    let build = Instant::now();
    let mut fleet = big_fleet();
    println!(
        "fleet: {NODES} nodes, {} devices, {RUNNING_JOBS} running jobs (built in {:.1} s)",
        NODES * DEVICES_PER_NODE,
        build.elapsed().as_secs_f64()
    );
    contended_summary(&fleet);
    crowded_summary(&fleet);
    summary(&mut fleet);
    let mut stream = Stream::new(0x2545_f491_4f6c_dd1d);
    c.bench_function("plan_64_rank_gang_100k_devices_20k_jobs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += timed_plan(&mut fleet, &mut stream);
            }
            total
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
