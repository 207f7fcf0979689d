//! The busy fleet the fleet-scale benchmarks share (`apply`, `node_view`): 12,500 nodes of 8
//! devices (100,000 devices) and 20,000 running 4-rank jobs, two per node on the first 10,000
//! nodes, tiers premium, standard, basic in turn and 50 tenants; the last 2,500 nodes stay free.
//! Built through real entries (`testkit::Fleet`). Benchmark setup only: it must not measure
//! anything itself.

use singularity_scheduler::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::{JobId, NodeId, TenantName, Tier};

pub const NODES: usize = 12_500;
pub const DEVICES_PER_NODE: u16 = 8;
pub const RUNNING_JOBS: usize = 20_000;
pub const JOB_RANKS: u16 = 4;
/// The first node with no running job.
pub const FREE_NODES_FROM: usize = RUNNING_JOBS / 2;

/// The busy fleet, with invariant checks off (they would dominate the build); returns it, its
/// nodes in order and its running jobs in order.
pub fn busy_fleet() -> (Fleet, Vec<NodeId>, Vec<JobId>) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(false);
    let nodes = fleet.add_nodes(
        "gpu",
        NODES,
        DEVICES_PER_NODE.into(),
        "h100",
        H100_MEMORY_BYTES,
        8,
    );
    let jobs = (0..RUNNING_JOBS)
        .map(|j| {
            let first = (j % 2) as u16 * JOB_RANKS;
            let mut spec = job_spec(
                &format!("job-{j}"),
                [Tier::Premium, Tier::Standard, Tier::Basic][j % 3],
                JOB_RANKS.into(),
                "h100",
            );
            spec.tenant = TenantName::new(format!("tenant-{}", j % 50)).expect("valid name");
            fleet.run_job(spec, devices_of(nodes[j / 2], first, JOB_RANKS))
        })
        .collect();
    (fleet, nodes, jobs)
}
