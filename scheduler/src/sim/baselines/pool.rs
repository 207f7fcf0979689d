//! The free devices of a state, and how the baselines pick devices for a gang: the best-fitting
//! single node when the gang fits on one, else the best-fitting locality domain, taking its
//! fullest-free nodes first, else the fullest-free nodes of the whole fleet.
//!
//! A pool is a scratch copy for planning one plan; it never changes the state. Order is by node
//! id, so picks are deterministic.

use crate::ids::DeviceRef;
use crate::node::NodeStatus;
use crate::state::ClusterState;

struct NodeFree {
    domain: String,
    devices: Vec<DeviceRef>,
}

/// Free, healthy devices on nodes that take new work.
pub struct FreePool {
    nodes: Vec<NodeFree>,
    total: usize,
}

impl FreePool {
    pub fn of(state: &ClusterState) -> FreePool {
        let nodes: Vec<NodeFree> = state
            .nodes()
            .filter(|n| n.status == NodeStatus::Up)
            .map(|n| NodeFree {
                domain: n.domain.as_str().to_string(),
                devices: n
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.holder.is_none() && d.health.is_healthy())
                    .map(|(i, _)| DeviceRef::new(n.id, i as u16))
                    .collect(),
            })
            .collect();
        let total = nodes.iter().map(|n| n.devices.len()).sum();
        FreePool { nodes, total }
    }

    /// Free devices left in the pool.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes `count` devices for one gang, or none if there are not that many.
    pub fn take(&mut self, count: usize) -> Option<Vec<DeviceRef>> {
        if count == 0 || count > self.total {
            return None;
        }
        let single = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.devices.len() >= count)
            .min_by_key(|(i, n)| (n.devices.len(), *i))
            .map(|(i, _)| i);
        let order: Vec<usize> = match single {
            Some(i) => vec![i],
            None => self.spanning_order(count),
        };
        let mut taken = Vec::with_capacity(count);
        for i in order {
            let node = &mut self.nodes[i];
            let want = (count - taken.len()).min(node.devices.len());
            taken.extend(node.devices.drain(..want));
            if taken.len() == count {
                break;
            }
        }
        self.total -= taken.len();
        debug_assert_eq!(taken.len(), count);
        Some(taken)
    }

    /// Node indices for a gang larger than any node: the smallest domain that holds it, fullest
    /// nodes first; else every node, fullest first.
    fn spanning_order(&self, count: usize) -> Vec<usize> {
        let mut domains: Vec<(&str, usize)> = Vec::new();
        for n in &self.nodes {
            match domains.iter_mut().find(|(d, _)| *d == n.domain) {
                Some((_, free)) => *free += n.devices.len(),
                None => domains.push((&n.domain, n.devices.len())),
            }
        }
        let domain = domains
            .iter()
            .filter(|(_, free)| *free >= count)
            .min_by_key(|(_, free)| *free)
            .map(|(d, _)| *d);
        let mut order: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| domain.map_or(true, |d| self.nodes[i].domain == d))
            .filter(|&i| !self.nodes[i].devices.is_empty())
            .collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(self.nodes[i].devices.len()), i));
        order
    }
}
