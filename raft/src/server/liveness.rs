//! `NodeLiveness`: when the leader last heard each node agent's heartbeat, in the leader's
//! memory. Heartbeats are not log entries (at 10,000 nodes they would be 5,000 entries a second
//! that say nothing new); the log holds only what changes: registrations, health changes and
//! the `NodeDown` the leader proposes for a node silent too long. A new leader starts with an
//! empty record and counts every node as heard when it took over, so it never declares a node
//! down for silence it did not wait out itself.
//!
//! It is not replicated state and must not be read by the scheduler's apply; it only feeds the
//! leader's decision to propose `NodeDown`, which is logged with its reason.

use singularity_scheduler::limits::MAX_NODES;
use singularity_scheduler::NodeName;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What one leadership has heard, by wall-clock milliseconds.
#[derive(Debug, Default)]
struct Heard {
    /// When this replica's current leadership began (0: not leading).
    leading_since_ms: u64,
    /// The last heartbeat of each node heard during that leadership.
    last_heard_ms: BTreeMap<NodeName, u64>,
}

/// Node heartbeats heard by this replica while it leads; cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct NodeLiveness {
    heard: Arc<Mutex<Heard>>,
}

impl NodeLiveness {
    fn heard(&self) -> MutexGuard<'_, Heard> {
        // Each change is whole before the next, so a poisoned lock is still consistent.
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica began leading at `now_ms`: forget what an earlier leadership heard.
    pub fn lead_from(&self, now_ms: u64) {
        let mut heard = self.heard();
        heard.leading_since_ms = now_ms;
        heard.last_heard_ms.clear();
    }

    /// `node` (a registered node) sent a heartbeat at `now_ms`.
    pub fn heartbeat(&self, node: &NodeName, now_ms: u64) {
        let mut heard = self.heard();
        if !heard.last_heard_ms.contains_key(node) && heard.last_heard_ms.len() >= MAX_NODES {
            // More names than the cluster can hold nodes: keep the most recently heard.
            if let Some(oldest) = heard
                .last_heard_ms
                .iter()
                .min_by_key(|(_, ms)| **ms)
                .map(|(name, _)| name.clone())
            {
                heard.last_heard_ms.remove(&oldest);
            }
        }
        heard.last_heard_ms.insert(node.clone(), now_ms);
        assert!(heard.last_heard_ms.len() <= MAX_NODES);
    }

    /// When the current leadership began, and the last heartbeat of each node it heard.
    pub fn snapshot(&self) -> (u64, BTreeMap<NodeName, u64>) {
        let heard = self.heard();
        (heard.leading_since_ms, heard.last_heard_ms.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s.to_string()).unwrap()
    }

    #[test]
    fn a_new_leadership_forgets_what_the_last_one_heard() {
        let liveness = NodeLiveness::default();
        liveness.lead_from(1_000);
        liveness.heartbeat(&name("gpu-0"), 1_500);
        liveness.heartbeat(&name("gpu-0"), 2_000);
        let (since, heard) = liveness.snapshot();
        assert_eq!(since, 1_000);
        assert_eq!(heard.get(&name("gpu-0")), Some(&2_000));
        liveness.lead_from(9_000);
        let (since, heard) = liveness.snapshot();
        assert_eq!(since, 9_000);
        assert!(heard.is_empty());
    }
}
