//! Apply code for node commands: register, deregister, health reports (heartbeats), drain and
//! node down. A job that loses a device it holds is released and waits to resume elsewhere.
//!
//! Every handler validates the whole command before it changes anything.

use crate::ids::{JobId, NodeId};
use crate::limits::{MAX_DEVICES_PER_NODE, MAX_DEVICE_MEMORY_BYTES, MAX_NODES, MAX_REASON_BYTES};
use crate::names::{LocalityDomain, NodeName};
use crate::node::{Device, DeviceHealth, DeviceSpec, Node, NodeStatus};
use crate::outcome::{Effect, Rejection};
use crate::state::ClusterState;
use std::collections::BTreeSet;

const MAX_UUID_BYTES: usize = 128;

fn validate_health(field: &str, health: &DeviceHealth) -> Result<(), Rejection> {
    if let DeviceHealth::Unhealthy { reason } = health {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(Rejection::invalid(
                field,
                format!("an unhealthy device needs a reason of 1 to {MAX_REASON_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

fn validate_devices(devices: &[DeviceSpec]) -> Result<(), Rejection> {
    if devices.is_empty() {
        return Err(Rejection::invalid(
            "devices",
            "a node must register at least one device",
        ));
    }
    if devices.len() > MAX_DEVICES_PER_NODE {
        return Err(Rejection::limit("devices per node", MAX_DEVICES_PER_NODE));
    }
    for (index, device) in devices.iter().enumerate() {
        device.kind.validate(&format!("devices[{index}].kind"))?;
        if device.memory_bytes == 0 || device.memory_bytes > MAX_DEVICE_MEMORY_BYTES {
            return Err(Rejection::invalid(
                &format!("devices[{index}].memory_bytes"),
                format!(
                    "is {}; it must be between 1 and {MAX_DEVICE_MEMORY_BYTES}",
                    device.memory_bytes
                ),
            ));
        }
        if device.uuid.len() > MAX_UUID_BYTES {
            return Err(Rejection::invalid(
                &format!("devices[{index}].uuid"),
                format!("is longer than {MAX_UUID_BYTES} bytes"),
            ));
        }
        validate_health(&format!("devices[{index}].health"), &device.health)?;
    }
    Ok(())
}

impl ClusterState {
    fn known_node(&self, name: &NodeName) -> Result<NodeId, Rejection> {
        self.node_names
            .get(name)
            .copied()
            .ok_or_else(|| Rejection::UnknownNode {
                node: name.to_string(),
            })
    }

    pub(crate) fn register_node(
        &mut self,
        name: NodeName,
        domain: LocalityDomain,
        devices: Vec<DeviceSpec>,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        name.validate("node")?;
        domain.validate("locality_domain")?;
        validate_devices(&devices)?;
        if let Some(&id) = self.node_names.get(&name) {
            let node = &self.nodes[&id];
            let same = node.devices.len() == devices.len()
                && node
                    .devices
                    .iter()
                    .zip(&devices)
                    .all(|(have, spec)| have.same_inventory(spec));
            if !same || node.domain != domain {
                return Err(Rejection::NodeConflict {
                    node: name.to_string(),
                    problem:
                        "with a different device inventory or locality domain; deregister it first"
                            .into(),
                });
            }
            // An agent restart: the node is back, with the health it reports now.
            let health: Vec<(u16, DeviceHealth)> = devices
                .into_iter()
                .enumerate()
                .map(|(i, spec)| (i as u16, spec.health))
                .collect();
            let node = self.nodes.get_mut(&id).expect("named node exists");
            if node.status == NodeStatus::Down {
                node.status = NodeStatus::Up;
            }
            self.apply_health(id, health, now_ms);
            return Ok(Effect::NodeRegistered {
                node: id,
                reregistered: true,
            });
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(Rejection::limit("registered nodes", MAX_NODES));
        }
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        let node = Node {
            id,
            name: name.clone(),
            domain,
            status: NodeStatus::Up,
            last_heartbeat_ms: now_ms,
            registered_at_ms: now_ms,
            devices: devices.into_iter().map(Device::from_spec).collect(),
        };
        self.nodes.insert(id, node);
        self.node_names.insert(name, id);
        Ok(Effect::NodeRegistered {
            node: id,
            reregistered: false,
        })
    }

    pub(crate) fn deregister_node(&mut self, name: &NodeName) -> Result<Effect, Rejection> {
        let id = self.known_node(name)?;
        let node = &self.nodes[&id];
        let holders: BTreeSet<JobId> = node.devices.iter().filter_map(|d| d.holder).collect();
        if !holders.is_empty() {
            return Err(Rejection::NodeBusy {
                node: name.to_string(),
                jobs: holders.into_iter().collect(),
            });
        }
        self.nodes.remove(&id);
        self.node_names.remove(name);
        Ok(Effect::NodeDeregistered { node: id })
    }

    pub(crate) fn report_node_health(
        &mut self,
        name: &NodeName,
        devices: Vec<(u16, DeviceHealth)>,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        let id = self.known_node(name)?;
        let node = &self.nodes[&id];
        if node.status == NodeStatus::Down {
            return Err(Rejection::NodeState {
                node: name.to_string(),
                status: node.status,
                problem: "its agent must register the node again".into(),
            });
        }
        if devices.len() > node.devices.len() {
            return Err(Rejection::invalid(
                "devices",
                format!(
                    "reports {} devices; node {name} has {}",
                    devices.len(),
                    node.devices.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (index, health) in &devices {
            if usize::from(*index) >= node.devices.len() || !seen.insert(*index) {
                return Err(Rejection::invalid(
                    "devices",
                    format!(
                        "device index {index} is out of range or repeated (node {name} has {} devices)",
                        node.devices.len()
                    ),
                ));
            }
            validate_health(&format!("devices[{index}].health"), health)?;
        }
        let jobs_lost = self.apply_health(id, devices, now_ms);
        Ok(Effect::NodeHealthRecorded {
            node: id,
            jobs_lost,
        })
    }

    /// Records a heartbeat and device health; releases jobs on devices that became unhealthy.
    fn apply_health(
        &mut self,
        id: NodeId,
        devices: Vec<(u16, DeviceHealth)>,
        now_ms: u64,
    ) -> Vec<JobId> {
        let node = self.nodes.get_mut(&id).expect("caller checked the node");
        node.last_heartbeat_ms = now_ms;
        let mut lost = BTreeSet::new();
        let name = node.name.clone();
        for (index, health) in devices {
            let device = &mut node.devices[usize::from(index)];
            if !health.is_healthy() {
                if let Some(job) = device.holder {
                    lost.insert(job);
                }
            }
            device.health = health;
        }
        for &job in &lost {
            self.lose_job(
                job,
                &format!("a device it held on node {name} became unhealthy"),
                now_ms,
            );
        }
        lost.into_iter().collect()
    }

    pub(crate) fn set_node_draining(
        &mut self,
        name: &NodeName,
        draining: bool,
    ) -> Result<Effect, Rejection> {
        let id = self.known_node(name)?;
        let node = self.nodes.get_mut(&id).expect("named node exists");
        if node.status == NodeStatus::Down {
            return Err(Rejection::NodeState {
                node: name.to_string(),
                status: node.status,
                problem: "a down node cannot be drained or returned to service until its agent registers again".into(),
            });
        }
        node.status = if draining {
            NodeStatus::Draining
        } else {
            NodeStatus::Up
        };
        Ok(Effect::NodeStatusChanged {
            node: id,
            status: node.status,
        })
    }

    pub(crate) fn node_down(
        &mut self,
        name: &NodeName,
        reason: &str,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(Rejection::invalid(
                "reason",
                format!("must say why the node is down, in 1 to {MAX_REASON_BYTES} bytes"),
            ));
        }
        let id = self.known_node(name)?;
        let node = self.nodes.get_mut(&id).expect("named node exists");
        node.status = NodeStatus::Down;
        let holders: BTreeSet<JobId> = node.devices.iter().filter_map(|d| d.holder).collect();
        for &job in &holders {
            self.lose_job(job, &format!("node {name} is down: {reason}"), now_ms);
        }
        Ok(Effect::NodeMarkedDown {
            node: id,
            jobs_lost: holders.into_iter().collect(),
        })
    }
}
