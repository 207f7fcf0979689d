//! Nodes and their devices as the replicated state knows them.
//!
//! A node is registered with a fixed device inventory; health and status change over time. A
//! device knows which job holds it, if any: that back-pointer is the one place the "no device
//! is given to two jobs" rule is enforced, so only `ClusterState` may change it.

use crate::ids::{JobId, NodeId};
use crate::names::{DeviceKind, LocalityDomain, NodeName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a node takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Heartbeating and schedulable.
    Up,
    /// Alive, but its jobs are being moved away and nothing new is placed on it.
    Draining,
    /// Declared lost (missed heartbeats or an operator said so); its jobs were released.
    Down,
}

impl NodeStatus {
    /// Whether ranks may keep running here (running ranks on a draining node are fine).
    pub fn is_alive(self) -> bool {
        matches!(self, NodeStatus::Up | NodeStatus::Draining)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Up => "up",
            NodeStatus::Draining => "draining",
            NodeStatus::Down => "down",
        })
    }
}

/// A device's health as its node agent last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceHealth {
    Healthy,
    /// Not usable; the reason is what the agent saw (an XID error, ECC errors, lost from NVML).
    Unhealthy {
        reason: String,
    },
}

impl DeviceHealth {
    pub fn is_healthy(&self) -> bool {
        matches!(self, DeviceHealth::Healthy)
    }
}

/// What an agent reports about one device when it registers its node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub memory_bytes: u64,
    /// A stable hardware identity where there is one (an NVML UUID); empty for simulated devices.
    pub uuid: String,
    pub health: DeviceHealth,
}

/// One device of a node, as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub memory_bytes: u64,
    pub uuid: String,
    pub health: DeviceHealth,
    /// The job whose ranks this device holds (ranks of one spliced job may share it).
    pub holder: Option<JobId>,
}

impl Device {
    pub fn from_spec(spec: DeviceSpec) -> Self {
        Device {
            kind: spec.kind,
            memory_bytes: spec.memory_bytes,
            uuid: spec.uuid,
            health: spec.health,
            holder: None,
        }
    }

    /// Whether the inventory (not the health) of this device matches a registration spec.
    pub fn same_inventory(&self, spec: &DeviceSpec) -> bool {
        self.kind == spec.kind && self.memory_bytes == spec.memory_bytes && self.uuid == spec.uuid
    }
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: NodeName,
    pub domain: LocalityDomain,
    pub status: NodeStatus,
    /// Leader time of the last registration or health report from this node's agent.
    pub last_heartbeat_ms: u64,
    pub registered_at_ms: u64,
    /// Devices by index; the inventory is fixed for the life of the registration.
    pub devices: Vec<Device>,
}

impl Node {
    /// Devices that no job holds, are healthy, and are on a node that takes new work.
    pub fn free_device_count(&self) -> usize {
        if self.status != NodeStatus::Up {
            return 0;
        }
        self.devices
            .iter()
            .filter(|d| d.holder.is_none() && d.health.is_healthy())
            .count()
    }
}
