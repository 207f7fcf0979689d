//! Benchmarks of `ClusterState::node_view` at fleet scale: what the control plane's WatchNode
//! service computes for every watching agent after an applied change.
//!
//! On a state of 100,000 devices (12,500 nodes of 8) and 20,000 running 4-rank jobs (two per
//! node on the first 10,000 nodes; 1,000 of them with a migration in flight to the last 2,500
//! nodes, so views carry actions too), it measures one node's view and the views of all 12,500
//! nodes (one applied change for a fully watched fleet), through the node index and, as the
//! baseline in the same run, through the full scan of every job (`node_view_by_full_scan`, the
//! code `node_view` ran before the index).
//!
//! Run: `cargo bench -p singularity-scheduler --bench node_view`. Before criterion's own runs it
//! prints a fixed-size summary: one pass over all nodes each way (checking that both give equal
//! views for every node) and the ratio.

use criterion::{criterion_group, Criterion};
mod common;

use common::{busy_fleet, DEVICES_PER_NODE, FREE_NODES_FROM, JOB_RANKS, RUNNING_JOBS};
use singularity_scheduler::testkit::{devices_of, Fleet};
use singularity_scheduler::*;
use std::hint::black_box;
use std::time::Instant;

/// Jobs 0..MIGRATING move to the free nodes (two per node); their actions stay in flight.
const MIGRATING: usize = 1_000;

/// The busy fleet with migrations in flight; returns it and every node's name.
fn big_fleet() -> (Fleet, Vec<NodeName>) {
    let (mut fleet, nodes, jobs) = busy_fleet();
    for (j, &job) in jobs.iter().take(MIGRATING).enumerate() {
        let to = devices_of(
            nodes[FREE_NODES_FROM + j / 2],
            (j % 2) as u16 * JOB_RANKS,
            JOB_RANKS,
        );
        fleet.commit(job, ActionOp::Migrate { to }, "bench: migrate");
    }
    let names = fleet.state.nodes().map(|n| n.name.clone()).collect();
    (fleet, names)
}

fn all_views_indexed(state: &ClusterState, names: &[NodeName]) -> usize {
    names
        .iter()
        .map(|name| state.node_view(name).expect("registered").jobs.len())
        .sum()
}

fn all_views_full_scan(state: &ClusterState, names: &[NodeName]) -> usize {
    names
        .iter()
        .map(|name| {
            state
                .node_view_by_full_scan(name)
                .expect("registered")
                .jobs
                .len()
        })
        .sum()
}

fn summary(fleet: &Fleet, names: &[NodeName]) {
    println!(
        "fleet: {} nodes, {} devices, {} running jobs ({} migrating), {} entries applied",
        names.len(),
        names.len() * usize::from(DEVICES_PER_NODE),
        RUNNING_JOBS,
        MIGRATING,
        fleet.applied
    );
    let state = &fleet.state;
    for name in names {
        assert_eq!(
            state.node_view(name),
            state.node_view_by_full_scan(name),
            "the indexed view of {name} differs from the full scan"
        );
    }
    let start = Instant::now();
    let scan_entries = all_views_full_scan(state, names);
    let scan_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let indexed_entries = all_views_indexed(state, names);
    let indexed_s = start.elapsed().as_secs_f64();
    assert_eq!(scan_entries, indexed_entries);
    println!(
        "all {} node views ({} node-job entries): full scan {:.1} ms, indexed {:.2} ms ({:.0}x faster)",
        names.len(),
        indexed_entries,
        scan_s * 1e3,
        indexed_s * 1e3,
        scan_s / indexed_s
    );
}

fn benches(c: &mut Criterion) {
    let (fleet, names) = big_fleet();
    summary(&fleet, &names);
    let state = &fleet.state;
    // A node with two running jobs, one of them migrating away; and a target node.
    let busy = names[0].clone();
    let target = names[FREE_NODES_FROM].clone();
    let mut group = c.benchmark_group("node_view_12500_nodes_20k_jobs");
    for (label, name) in [("busy_node", &busy), ("migration_target", &target)] {
        group.bench_function(format!("one_{label}/full_scan"), |b| {
            b.iter(|| state.node_view_by_full_scan(black_box(name)))
        });
        group.bench_function(format!("one_{label}/indexed"), |b| {
            b.iter(|| state.node_view(black_box(name)))
        });
    }
    group.sample_size(10);
    group.bench_function("all_12500_nodes/full_scan", |b| {
        b.iter(|| all_views_full_scan(state, black_box(&names)))
    });
    group.bench_function("all_12500_nodes/indexed", |b| {
        b.iter(|| all_views_indexed(state, black_box(&names)))
    });
    group.finish();
}

criterion_group!(node_view_benches, benches);

fn main() {
    node_view_benches();
    Criterion::default().configure_from_args().final_summary();
}
