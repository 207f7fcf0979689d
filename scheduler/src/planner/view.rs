//! `FleetView`: the planner's per-call picture of the fleet: for every node, the devices that
//! are free to hand out right now (healthy, held by no job, on a node that is up, not claimed
//! earlier in the same plan), with locality domains numbered for cheap comparison.
//!
//! The state keeps no free-device index, so the view is built once per `plan` call in
//! O(devices). It only reads the state; taking devices from it changes the view, never the state.

use super::feasibility::device_suits;
use crate::ids::{DeviceRef, NodeId};
use crate::job::JobSpec;
use crate::node::{Node, NodeStatus};
use crate::state::ClusterState;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// One node as the view sees it.
pub(crate) struct NodeView<'a> {
    pub node: &'a Node,
    /// The node's locality domain, numbered in order of first appearance (node id order).
    pub domain: u32,
    /// Indices of free devices (healthy, unheld, node up), ascending; shrinks as the plan
    /// hands devices out.
    pub free: Vec<u16>,
}

impl NodeView<'_> {
    /// Whether device `index` of this node could hold a rank of `spec` (kind, health, memory).
    pub fn suits(&self, index: u16, spec: &JobSpec) -> bool {
        self.node
            .devices
            .get(usize::from(index))
            .is_some_and(|d| device_suits(d, spec))
    }

    /// Free devices of this node that suit `spec`, in index order.
    pub fn usable<'s>(&'s self, spec: &'s JobSpec) -> impl Iterator<Item = u16> + 's {
        self.free
            .iter()
            .copied()
            .filter(move |&i| self.suits(i, spec))
    }
}

/// The planner's view of free capacity, built once per call.
pub(crate) struct FleetView<'a> {
    /// Every node, in id order.
    pub nodes: Vec<NodeView<'a>>,
    /// `node_capacity` answers by (device kind, memory need).
    capacity_cache: RefCell<BTreeMap<(String, u64), usize>>,
}

impl<'a> FleetView<'a> {
    /// Builds the view in O(devices).
    pub fn build(state: &'a ClusterState) -> Self {
        let mut nodes = Vec::with_capacity(state.nodes().size_hint().0);
        let mut domains: BTreeMap<&'a str, u32> = BTreeMap::new();
        let mut last: Option<(&'a str, u32)> = None;
        for node in state.nodes() {
            let name = node.domain.as_str();
            let domain = match last {
                Some((prev, id)) if prev == name => id,
                _ => {
                    let next = domains.len() as u32;
                    let id = *domains.entry(name).or_insert(next);
                    last = Some((name, id));
                    id
                }
            };
            let free = if node.status == NodeStatus::Up {
                node.devices
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.holder.is_none() && d.health.is_healthy())
                    .map(|(i, _)| i as u16)
                    .collect()
            } else {
                Vec::new()
            };
            nodes.push(NodeView { node, domain, free });
        }
        FleetView {
            nodes,
            capacity_cache: RefCell::new(BTreeMap::new()),
        }
    }

    /// The position of a node in `nodes` (nodes are in id order).
    pub fn position(&self, id: NodeId) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |n| n.node.id).ok()
    }

    /// Marks devices as handed out in this plan (they were free).
    pub fn take(&mut self, devices: &[DeviceRef]) {
        for device in devices {
            if let Some(pos) = self.position(device.node) {
                let free = &mut self.nodes[pos].free;
                if let Ok(i) = free.binary_search(&device.index) {
                    free.remove(i);
                }
            }
        }
    }

    /// Returns devices taken earlier in this plan to the free lists.
    pub fn give_back(&mut self, devices: &[DeviceRef]) {
        for device in devices {
            if let Some(pos) = self.position(device.node) {
                let free = &mut self.nodes[pos].free;
                if let Err(i) = free.binary_search(&device.index) {
                    free.insert(i, device.index);
                }
            }
        }
    }

    /// The most devices suiting `spec` (healthy, right kind and memory) that any up node has,
    /// free or not: a gang of at most this many devices belongs on one node.
    pub fn node_capacity(&self, spec: &JobSpec) -> usize {
        let key = (
            spec.device_kind.as_str().to_string(),
            spec.memory_per_rank_bytes,
        );
        if let Some(&known) = self.capacity_cache.borrow().get(&key) {
            return known;
        }
        let capacity = self
            .nodes
            .iter()
            .filter(|n| n.node.status == NodeStatus::Up)
            .map(|n| {
                n.node
                    .devices
                    .iter()
                    .filter(|d| device_suits(d, spec))
                    .count()
            })
            .max()
            .unwrap_or(0);
        self.capacity_cache.borrow_mut().insert(key, capacity);
        capacity
    }
}
