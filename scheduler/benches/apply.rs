//! Benchmarks of the state machine at fleet scale (issue: workspace and scheduler core).
//!
//! On a state of 100,000 devices (12,500 nodes of 8) and 20,000 running jobs:
//! - applying submit entries (target: at least 200,000 per second);
//! - validating and applying a plan that places one 8-rank job (target: median at most 20 µs);
//! - the digest and the full snapshot encoding (target: at most 1 s each);
//! - the state's memory (target: at most 1 GiB), counted by a counting global allocator.
//!
//! Run: `cargo bench -p singularity-scheduler --bench apply`. Before criterion's own runs it
//! prints a fixed-size summary (percentiles of single placements, memory, sizes) with the ratio
//! of each measurement to its target.

mod common;

use common::{busy_fleet, DEVICES_PER_NODE, FREE_NODES_FROM, NODES, RUNNING_JOBS};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use singularity_scheduler::testkit::{devices_of, job_spec, Fleet};
use singularity_scheduler::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes, so the state's footprint can be measured.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The fleet of the issue: 100,000 devices and 20,000 running jobs, built through real entries.
fn big_fleet() -> Fleet {
    busy_fleet().0
}

fn submit_entry(i: u64, now_ms: u64) -> Entry {
    let mut spec = job_spec("bench-submit", Tier::Standard, 8, "h100");
    spec.tenant = TenantName::new(format!("tenant-{}", i % 100)).unwrap();
    Entry::system(now_ms, Command::SubmitJob { spec })
}

fn place_plan(job: JobId, node: NodeId, index: u64) -> Entry {
    Entry::system(
        0,
        Command::ApplyPlan {
            plan: Plan {
                computed_at_index: index,
                trigger: format!("{job} submitted"),
                actions: vec![PlannedAction {
                    job,
                    op: ActionOp::Place {
                        devices: devices_of(node, 0, DEVICES_PER_NODE),
                    },
                    reason: "placed: 8 ranks on 1 node".into(),
                }],
            },
        },
    )
}

/// Submits a job (untimed), times the apply of the plan that places it on a free node, then
/// fails the placement and cancels the job (untimed) so the node is free again.
fn timed_placement(fleet: &mut Fleet, node: NodeId) -> Duration {
    let job = fleet.submit(job_spec("bench-place", Tier::Standard, 8, "h100"));
    let entry = place_plan(job, node, fleet.applied);
    let start = Instant::now();
    let outcome = fleet.state.apply(entry);
    let elapsed = start.elapsed();
    let action = match outcome {
        Outcome::Accepted(Effect::PlanApplied { committed, .. }) => committed[0].action,
        other => panic!("placement refused: {other:?}"),
    };
    fleet.apply(Command::ReportActionProgress {
        action,
        node,
        progress: Progress::Failed {
            reason: "benchmark cleanup".into(),
        },
    });
    fleet.apply(Command::CancelJob { job });
    elapsed
}

fn free_node(fleet: &Fleet, i: usize) -> NodeId {
    let free: Vec<NodeId> = fleet
        .state
        .nodes()
        .skip(FREE_NODES_FROM)
        .map(|n| n.id)
        .collect();
    free[i % free.len()]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let build_start = Instant::now();
    let mut fleet = big_fleet();
    let build_s = build_start.elapsed().as_secs_f64();
    let state_bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "fleet: {} nodes, {} devices, {} running jobs (built through {} entries in {build_s:.1} s)",
        NODES,
        NODES * usize::from(DEVICES_PER_NODE),
        RUNNING_JOBS,
        fleet.applied
    );
    println!(
        "state in memory: {:.1} MiB (target ≤ 1024 MiB: {:.3}x of target)",
        state_bytes as f64 / (1 << 20) as f64,
        state_bytes as f64 / (1u64 << 30) as f64
    );

    // Submit throughput over 200,000 entries on a clone.
    let mut state = fleet.state.clone();
    let entries: Vec<Entry> = (0..200_000)
        .map(|i| submit_entry(i, 10_000_000 + i))
        .collect();
    let start = Instant::now();
    for entry in entries {
        assert!(state.apply(entry).is_accepted());
    }
    let per_s = 200_000.0 / start.elapsed().as_secs_f64();
    println!(
        "submit apply: {per_s:.0} entries/s (target ≥ 200,000/s: {:.2}x of target)",
        per_s / 200_000.0
    );
    drop(state);

    // Single placements: percentiles over 10,000.
    let mut samples: Vec<Duration> = (0..10_000)
        .map(|i| {
            let node = free_node(&fleet, i);
            timed_placement(&mut fleet, node)
        })
        .collect();
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    println!("place one 8-rank job: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs (target median ≤ 20 µs: p50 is {:.3}x of target)",
        p50.as_secs_f64() * 1e6, percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6, p50.as_secs_f64() / 20e-6);

    let start = Instant::now();
    let digest = fleet.state.digest();
    let digest_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let snapshot = fleet.state.encode_snapshot().unwrap();
    let encode_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let restored = ClusterState::decode_snapshot(&snapshot).unwrap();
    let decode_s = start.elapsed().as_secs_f64();
    assert_eq!(restored.digest(), digest);
    println!("digest: {:.1} ms (target ≤ 1 s: {:.3}x); snapshot encode: {:.1} ms for {:.1} MiB (target ≤ 1 s: {:.3}x); decode + invariant check: {:.1} ms",
        digest_s * 1e3, digest_s, encode_s * 1e3, snapshot.len() as f64 / (1 << 20) as f64, encode_s, decode_s * 1e3);
}

fn benches(c: &mut Criterion) {
    let mut fleet = big_fleet();
    let mut group = c.benchmark_group("fleet_100k_devices_20k_jobs");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("apply_1000_submits", |b| {
        b.iter_batched_ref(
            || fleet.state.clone(),
            |state| {
                for i in 0..1_000 {
                    state.apply(submit_entry(i, 10_000_000 + i));
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_place_8_rank_plan", |b| {
        let mut i = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let node = free_node(&fleet, i);
                i += 1;
                total += timed_placement(&mut fleet, node);
            }
            total
        })
    });
    group.sample_size(10);
    group.bench_function("digest", |b| b.iter(|| fleet.state.digest()));
    group.bench_function("encode_snapshot", |b| {
        b.iter(|| fleet.state.encode_snapshot().unwrap())
    });
    group.finish();
}

criterion_group!(apply_benches, benches);

fn main() {
    summary();
    apply_benches();
    Criterion::default().configure_from_args().final_summary();
}
