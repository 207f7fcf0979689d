//! Feasibility checks, the first stage of the pipeline (as in Nomad): each check is a small type
//! that accepts a node for a job or rejects it with a named reason, so "why is my job pending?"
//! has an answer (`explain`).
//!
//! Checks only read a node and the job's spec; they never score, choose or change anything.

use crate::job::JobSpec;
use crate::node::{Device, Node, NodeStatus};
use std::fmt;

/// Why one node cannot take a job (or its share of a gang).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeRejection {
    /// The node is draining or down: nothing new is placed on it.
    NotUp { status: NodeStatus },
    /// The node has no device of the job's kind.
    DeviceKind { have: String, need: String },
    /// Every device of the job's kind is unhealthy.
    Unhealthy { kind: String },
    /// No healthy device of the job's kind has memory for a rank.
    Memory { have_bytes: u64, need_bytes: u64 },
    /// Too few suitable devices are free.
    FreeDevices { free: usize, need: usize },
}

fn gib(bytes: u64) -> String {
    let tenths = bytes.saturating_mul(10) / (1 << 30);
    format!("{}.{} GiB", tenths / 10, tenths % 10)
}

impl fmt::Display for NodeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRejection::NotUp { status } => write!(f, "{status}"),
            NodeRejection::DeviceKind { have, need } => {
                write!(f, "device kind {have} \u{2260} {need}")
            }
            NodeRejection::Unhealthy { kind } => write!(f, "no healthy {kind} device"),
            NodeRejection::Memory {
                have_bytes,
                need_bytes,
            } => write!(
                f,
                "device memory {} < {} per rank",
                gib(*have_bytes),
                gib(*need_bytes)
            ),
            NodeRejection::FreeDevices { free: 0, need } => {
                write!(f, "no free devices, needs {need}")
            }
            NodeRejection::FreeDevices { free, need } => {
                let noun = if *free == 1 { "device" } else { "devices" };
                write!(f, "only {free} free {noun}, needs {need}")
            }
        }
    }
}

/// One feasibility check.
pub trait FeasibilityCheck {
    /// A short name for logs and tests.
    fn name(&self) -> &'static str;

    /// Accepts `node` (with `free` the indices of its free devices) for `spec` when at least
    /// `need_on_node` devices are wanted there, or says why not.
    fn check(
        &self,
        node: &Node,
        free: &[u16],
        spec: &JobSpec,
        need_on_node: usize,
    ) -> Result<(), NodeRejection>;
}

/// The node takes new work.
pub struct NodeUp;
/// The node has devices of the job's kind.
pub struct DeviceKindMatches;
/// Some device of the job's kind is healthy.
pub struct HealthyDevice;
/// Some healthy device of the job's kind has memory for a rank.
pub struct EnoughMemory;
/// Enough suitable devices are free.
pub struct FreeDevices;

impl FeasibilityCheck for NodeUp {
    fn name(&self) -> &'static str {
        "node up"
    }

    fn check(&self, node: &Node, _: &[u16], _: &JobSpec, _: usize) -> Result<(), NodeRejection> {
        match node.status {
            NodeStatus::Up => Ok(()),
            status => Err(NodeRejection::NotUp { status }),
        }
    }
}

impl FeasibilityCheck for DeviceKindMatches {
    fn name(&self) -> &'static str {
        "device kind"
    }

    fn check(&self, node: &Node, _: &[u16], spec: &JobSpec, _: usize) -> Result<(), NodeRejection> {
        if node.devices.iter().any(|d| d.kind == spec.device_kind) {
            return Ok(());
        }
        let mut kinds: Vec<&str> = node.devices.iter().map(|d| d.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        Err(NodeRejection::DeviceKind {
            have: kinds.join("+"),
            need: spec.device_kind.to_string(),
        })
    }
}

impl FeasibilityCheck for HealthyDevice {
    fn name(&self) -> &'static str {
        "health"
    }

    fn check(&self, node: &Node, _: &[u16], spec: &JobSpec, _: usize) -> Result<(), NodeRejection> {
        if node
            .devices
            .iter()
            .any(|d| d.kind == spec.device_kind && d.health.is_healthy())
        {
            return Ok(());
        }
        Err(NodeRejection::Unhealthy {
            kind: spec.device_kind.to_string(),
        })
    }
}

impl FeasibilityCheck for EnoughMemory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check(&self, node: &Node, _: &[u16], spec: &JobSpec, _: usize) -> Result<(), NodeRejection> {
        let best = node
            .devices
            .iter()
            .filter(|d| d.kind == spec.device_kind && d.health.is_healthy())
            .map(|d| d.memory_bytes)
            .max()
            .unwrap_or(0);
        if best >= spec.memory_per_rank_bytes {
            return Ok(());
        }
        Err(NodeRejection::Memory {
            have_bytes: best,
            need_bytes: spec.memory_per_rank_bytes,
        })
    }
}

/// Whether one device could hold a rank of `spec`: healthy, of its kind, with enough memory.
pub fn device_suits(device: &Device, spec: &JobSpec) -> bool {
    device.health.is_healthy()
        && device.kind == spec.device_kind
        && device.memory_bytes >= spec.memory_per_rank_bytes
}

/// Free devices of `node` among `free` that suit `spec` (kind, health, memory).
pub fn suitable_free(node: &Node, free: &[u16], spec: &JobSpec) -> usize {
    free.iter()
        .filter(|&&i| {
            node.devices
                .get(usize::from(i))
                .is_some_and(|d| device_suits(d, spec))
        })
        .count()
}

impl FeasibilityCheck for FreeDevices {
    fn name(&self) -> &'static str {
        "free devices"
    }

    fn check(
        &self,
        node: &Node,
        free: &[u16],
        spec: &JobSpec,
        need_on_node: usize,
    ) -> Result<(), NodeRejection> {
        let have = suitable_free(node, free, spec);
        if have >= need_on_node.max(1) {
            return Ok(());
        }
        Err(NodeRejection::FreeDevices {
            free: have,
            need: need_on_node.max(1),
        })
    }
}

/// The checks, in the order they run: the first that rejects a node names the reason.
pub const CHECKS: [&(dyn FeasibilityCheck + Sync); 5] = [
    &NodeUp,
    &DeviceKindMatches,
    &HealthyDevice,
    &EnoughMemory,
    &FreeDevices,
];

/// Runs every check on a node; `Ok` with the number of suitable free devices, or the first
/// rejection.
pub fn check_node(
    node: &Node,
    free: &[u16],
    spec: &JobSpec,
    need_on_node: usize,
) -> Result<usize, NodeRejection> {
    for check in CHECKS {
        check.check(node, free, spec, need_on_node)?;
    }
    Ok(suitable_free(node, free, spec))
}
