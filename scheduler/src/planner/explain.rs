//! `explain`: why a job is where it is, for `singularity job status ID`. For a pending job it
//! runs the same feasibility checks as the planner over every node and counts, per rejection,
//! how many nodes it turned away ("12 nodes: device kind h100 ≠ a100"), and it shows the job's
//! SLA attainment against its tier's target.
//!
//! It only reads the state and builds text; it decides nothing.

use super::config::PolicyConfig;
use super::feasibility::check_node;
use super::pending::start_sizes;
use super::session::reservations;
use super::victims::percent;
use super::view::FleetView;
use crate::ids::JobId;
use crate::job::JobPhase;
use crate::state::ClusterState;
use crate::tier::Tier;
use std::collections::BTreeMap;
use std::fmt;

/// Why a job is where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub job: JobId,
    /// `None` when the state does not know the job.
    pub phase: Option<JobPhase>,
    pub tier: Option<Tier>,
    pub world_size: u32,
    /// Devices the job holds now.
    pub devices_held: usize,
    /// The fewest devices it may start on (its world size, or its tier floor when it may start
    /// spliced).
    pub needs_devices: usize,
    /// Whether those devices must be on one node (the gang fits one node of its kind).
    pub one_node: bool,
    /// Rejection text and how many nodes it turned away, most nodes first.
    pub rejections: Vec<(String, usize)>,
    /// Nodes that passed every check, and their free suitable devices.
    pub feasible_nodes: usize,
    pub feasible_free_devices: usize,
    /// Devices that actions in flight are freeing for this job.
    pub devices_on_the_way: usize,
    pub attainment_ppm: u32,
    pub target_ppm: Option<u32>,
    /// The last decision or failure that moved the job, as the state recorded it.
    pub last_reason: String,
}

/// Explains `job` against the current state (with the default policy's rules).
pub fn explain(state: &ClusterState, job: JobId) -> Explanation {
    let Some(record) = state.job(job) else {
        return Explanation {
            job,
            phase: None,
            tier: None,
            world_size: 0,
            devices_held: 0,
            needs_devices: 0,
            one_node: false,
            rejections: Vec::new(),
            feasible_nodes: 0,
            feasible_free_devices: 0,
            devices_on_the_way: 0,
            attainment_ppm: 0,
            target_ppm: None,
            last_reason: String::new(),
        };
    };
    let spec = &record.spec;
    let config = PolicyConfig::default();
    let allow_shrunk = config.start_shrunk && spec.tier != Tier::Premium;
    let needs = start_sizes(spec, allow_shrunk)
        .last()
        .copied()
        .unwrap_or(spec.world_size as usize);
    let view = FleetView::build(state);
    let one_node = needs <= view.node_capacity(spec);
    let need_on_node = if one_node { needs } else { 1 };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible_nodes = 0;
    let mut feasible_free_devices = 0;
    if record.phase == JobPhase::Pending {
        for node in &view.nodes {
            match check_node(node.node, &node.free.to_vec(), spec, need_on_node) {
                Ok(free) => {
                    feasible_nodes += 1;
                    feasible_free_devices += free;
                }
                Err(rejection) => *counts.entry(rejection.to_string()).or_default() += 1,
            }
        }
    }
    let mut rejections: Vec<(String, usize)> = counts.into_iter().collect();
    rejections.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let devices_on_the_way = reservations(state).get(&job).map_or(0, Vec::len);
    Explanation {
        job,
        phase: Some(record.phase),
        tier: Some(spec.tier),
        world_size: spec.world_size,
        devices_held: record.assignment.len(),
        needs_devices: needs,
        one_node,
        rejections,
        feasible_nodes,
        feasible_free_devices,
        devices_on_the_way,
        attainment_ppm: record.ledger.attainment_ppm(),
        target_ppm: spec.tier.target_share_ppm(),
        last_reason: record.last_reason.clone(),
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(phase), Some(tier)) = (self.phase, self.tier) else {
            return write!(
                f,
                "{} is not known: never submitted, or finished long ago and forgotten",
                self.job
            );
        };
        writeln!(
            f,
            "{} ({tier}, world size {}) is {phase}: {}",
            self.job, self.world_size, self.last_reason
        )?;
        if phase == JobPhase::Pending {
            let place = if self.one_node { " on one node" } else { "" };
            writeln!(
                f,
                "needs at least {}{place}",
                plural(self.needs_devices, "device", "devices")
            )?;
            for (reason, nodes) in &self.rejections {
                writeln!(f, "{}: {reason}", plural(*nodes, "node", "nodes"))?;
            }
            writeln!(
                f,
                "{} can take ranks, with {} free",
                plural(self.feasible_nodes, "node", "nodes"),
                plural(self.feasible_free_devices, "device", "devices")
            )?;
            if self.devices_on_the_way > 0 {
                writeln!(
                    f,
                    "{} being freed for it by actions in flight",
                    plural(self.devices_on_the_way, "device is", "devices are")
                )?;
            }
        } else if self.devices_held > 0 {
            writeln!(
                f,
                "holds {}",
                plural(self.devices_held, "device", "devices")
            )?;
        }
        match self.target_ppm {
            Some(target) => write!(
                f,
                "SLA attainment {} (target {} for {tier})",
                percent(self.attainment_ppm),
                percent(target)
            ),
            None => write!(
                f,
                "SLA attainment {} ({tier} is best effort)",
                percent(self.attainment_ppm)
            ),
        }
    }
}
