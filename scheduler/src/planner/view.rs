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
    /// Free devices (healthy, unheld, node up) as a bit set: bit `i` is device `i`. A node has
    /// at most `MAX_DEVICES_PER_NODE` (64) devices, so one word holds them all and building
    /// the view allocates nothing per node. Bits clear as the plan hands devices out.
    pub free: FreeSet,
    /// When every device of the node has the same kind and memory: (kind number, memory).
    /// Lets feasibility of the common, uniform node be decided without comparing strings.
    /// Only set on nodes with free devices (the only ones that are ever candidates).
    pub uniform: Option<(u32, u64)>,
}

/// A set of device indices below 64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FreeSet(u64);

/// Devices a `FreeSet` can hold (the apply limit on devices per node).
const FREE_SET_BITS: usize = crate::limits::MAX_DEVICES_PER_NODE;
const _: () = assert!(FREE_SET_BITS <= 64);

impl FreeSet {
    pub fn insert(&mut self, index: u16) {
        if usize::from(index) < FREE_SET_BITS {
            self.0 |= 1 << index;
        }
    }

    /// Removes an index; true when it was there.
    pub fn remove(&mut self, index: u16) -> bool {
        let there = self.contains(index);
        if there {
            self.0 &= !(1 << index);
        }
        there
    }

    pub fn contains(&self, index: u16) -> bool {
        usize::from(index) < FREE_SET_BITS && self.0 & (1 << index) != 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let index = bits.trailing_zeros() as u16;
            bits &= bits - 1;
            Some(index)
        })
    }

    pub fn to_vec(self) -> Vec<u16> {
        self.iter().collect()
    }
}

impl NodeView<'_> {
    /// Whether device `index` of this node could hold a rank of `spec` (kind, health, memory).
    pub fn suits(&self, index: u16, spec: &JobSpec) -> bool {
        self.node
            .devices
            .get(usize::from(index))
            .is_some_and(|d| device_suits(d, spec))
    }

    /// Devices of this node that suit `spec`, free or not.
    pub fn suitable(&self, spec: &JobSpec) -> usize {
        (0..self.node.devices.len() as u16)
            .filter(|&i| self.suits(i, spec))
            .count()
    }

    /// Free devices of this node that suit `spec`, in index order.
    pub fn usable<'s>(&'s self, spec: &'s JobSpec) -> impl Iterator<Item = u16> + 's {
        self.free.iter().filter(move |&i| self.suits(i, spec))
    }
}

/// Names numbered in order of first appearance. Consecutive nodes mostly share a domain and a
/// kind, so the last answer is checked before the map.
#[derive(Default)]
struct Numbering<'a> {
    numbers: BTreeMap<&'a str, u32>,
    last: Option<(&'a str, u32)>,
}

impl<'a> Numbering<'a> {
    fn number(&mut self, name: &'a str) -> u32 {
        if let Some((prev, id)) = self.last {
            if prev == name {
                return id;
            }
        }
        let next = self.numbers.len() as u32;
        let id = *self.numbers.entry(name).or_insert(next);
        self.last = Some((name, id));
        id
    }

    fn known(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }
}

/// The kind and memory shared by every device of `node`, if they all share them.
fn uniform_class(node: &Node) -> Option<(&str, u64)> {
    let first = node.devices.first()?;
    let kind = first.kind.as_str().as_bytes();
    let same = node.devices.iter().all(|d| {
        let other = d.kind.as_str().as_bytes();
        // Kinds are short: a byte loop beats a call to memcmp here.
        d.memory_bytes == first.memory_bytes
            && other.len() == kind.len()
            && other.iter().zip(kind).all(|(a, b)| a == b)
    });
    same.then(|| (first.kind.as_str(), first.memory_bytes))
}

/// Devices suiting one (kind, memory need): the most on one up node, and the total over up
/// nodes when it was counted.
type Capacity = (usize, Option<usize>);

/// The planner's view of free capacity, built once per call.
pub(crate) struct FleetView<'a> {
    /// Every node, in id order.
    pub nodes: Vec<NodeView<'a>>,
    /// Device kinds, numbered in order of first appearance.
    kinds: Numbering<'a>,
    /// Free devices over all nodes (any kind), kept as devices are taken and given back.
    pub free_total: usize,
    /// The most devices any node has.
    max_node_devices: usize,
    /// `capacity` answers by (device kind, memory need).
    capacity_cache: RefCell<BTreeMap<(String, u64), Capacity>>,
}

impl<'a> FleetView<'a> {
    /// Builds the view in O(devices).
    pub fn build(state: &'a ClusterState) -> Self {
        let mut nodes = Vec::with_capacity(state.nodes().size_hint().0);
        let mut domains = Numbering::default();
        let mut kinds = Numbering::default();
        let mut free_total = 0;
        let mut max_node_devices = 0;
        for node in state.nodes() {
            let domain = domains.number(node.domain.as_str());
            max_node_devices = max_node_devices.max(node.devices.len());
            let mut free = FreeSet::default();
            if node.status == NodeStatus::Up {
                // The holder is read first: most devices are held, and for those the health
                // (on another cache line) is never read. This loop is the planner's hot spot.
                for (i, d) in node.devices.iter().enumerate() {
                    if d.holder.is_none() && d.health.is_healthy() {
                        free.insert(i as u16);
                    }
                }
            }
            // Only nodes with free devices are ever candidates; the others need no class.
            let uniform = if free.is_empty() {
                None
            } else {
                uniform_class(node).map(|(kind, memory_bytes)| (kinds.number(kind), memory_bytes))
            };
            free_total += free.len();
            nodes.push(NodeView {
                node,
                domain,
                free,
                uniform,
            });
        }
        FleetView {
            nodes,
            kinds,
            free_total,
            max_node_devices,
            capacity_cache: RefCell::new(BTreeMap::new()),
        }
    }

    /// False when no device of `node` can suit `spec`, as far as its uniform kind and memory
    /// tell without comparing names; true means "check the devices" (`NodeView::suits`).
    pub fn may_suit(&self, node: &NodeView, spec: &JobSpec) -> bool {
        self.uniform_fit(node, spec) != Some(false)
    }

    /// For a uniform node, whether its devices are of `spec`'s kind with enough memory
    /// (health aside); `None` for a node of mixed devices, which needs the per-device checks.
    pub fn uniform_fit(&self, node: &NodeView, spec: &JobSpec) -> Option<bool> {
        let (kind, memory_bytes) = node.uniform?;
        Some(
            self.kinds.known(spec.device_kind.as_str()) == Some(kind)
                && memory_bytes >= spec.memory_per_rank_bytes,
        )
    }

    /// Free devices suiting `spec` over every node (the nodes `may_suit` admits, their
    /// `usable` devices), counted until `enough` are found.
    pub fn usable_free(&self, spec: &JobSpec, enough: usize) -> usize {
        let mut found = 0;
        for n in &self.nodes {
            if found >= enough {
                break;
            }
            if !n.free.is_empty() && self.may_suit(n, spec) {
                found += n.usable(spec).count();
            }
        }
        found
    }

    /// The position of a node in `nodes` (nodes are in id order).
    pub fn position(&self, id: NodeId) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |n| n.node.id).ok()
    }

    /// Marks devices as handed out in this plan (they were free).
    pub fn take(&mut self, devices: &[DeviceRef]) {
        for device in devices {
            if let Some(pos) = self.position(device.node) {
                if self.nodes[pos].free.remove(device.index) {
                    self.free_total -= 1;
                }
            }
        }
    }

    /// Returns devices taken earlier in this plan to the free lists.
    pub fn give_back(&mut self, devices: &[DeviceRef]) {
        for device in devices {
            if let Some(pos) = self.position(device.node) {
                let free = &mut self.nodes[pos].free;
                if !free.contains(device.index) {
                    free.insert(device.index);
                    self.free_total += 1;
                }
            }
        }
    }

    /// The most devices suiting `spec` (healthy, right kind and memory) that any up node has,
    /// free or not: a gang of at most this many devices belongs on one node.
    pub fn node_capacity(&self, spec: &JobSpec) -> usize {
        self.capacity(spec, false).0
    }

    /// The devices suiting `spec` over every up node, free or not: a job needing more can
    /// never start on this fleet, whatever is preempted.
    pub fn fleet_capacity(&self, spec: &JobSpec) -> usize {
        self.capacity(spec, true).1
    }

    /// (most on one up node, total over up nodes) of devices suiting `spec`, cached per
    /// (kind, memory need) for the plan. Without `need_total`, the pass may stop once one node
    /// is as large as the largest node (the total is then `None` in the cache).
    fn capacity(&self, spec: &JobSpec, need_total: bool) -> (usize, usize) {
        let key = (
            spec.device_kind.as_str().to_string(),
            spec.memory_per_rank_bytes,
        );
        if let Some(&(most, total)) = self.capacity_cache.borrow().get(&key) {
            match (need_total, total) {
                (false, _) => return (most, 0),
                (true, Some(total)) => return (most, total),
                (true, None) => {}
            }
        }
        let (mut most, mut total) = (0, 0);
        for n in self
            .nodes
            .iter()
            .filter(|n| n.node.status == NodeStatus::Up)
        {
            let here = match self.uniform_fit(n, spec) {
                Some(false) => 0,
                Some(true) => n
                    .node
                    .devices
                    .iter()
                    .filter(|d| d.health.is_healthy())
                    .count(),
                None => n
                    .node
                    .devices
                    .iter()
                    .filter(|d| device_suits(d, spec))
                    .count(),
            };
            most = most.max(here);
            total += here;
            if !need_total && most >= self.max_node_devices {
                self.capacity_cache.borrow_mut().insert(key, (most, None));
                return (most, 0);
            }
        }
        self.capacity_cache
            .borrow_mut()
            .insert(key, (most, Some(total)));
        (most, total)
    }
}
