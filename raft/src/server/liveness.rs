//! `NodeLiveness`: when the leader last heard each node agent's heartbeat, in the leader's
//! memory. Heartbeats are not log entries (at 10,000 nodes they would be 5,000 entries a second
//! that say nothing new); the log holds only what changes: registrations, health changes and
//! the `NodeDown` the leader proposes for a node silent too long. A new leader starts with an
//! empty record and counts every node as heard when it took over, so it never declares a node
//! down for silence it did not wait out itself. Times are kept on the monotonic clock, so a
//! jump of the leader's wall clock does not make every node look silent at once.
//!
//! It is not replicated state and must not be read by the scheduler's apply; it only feeds the
//! leader's decision to propose `NodeDown`, which is logged with its reason.

use singularity_scheduler::limits::MAX_NODES;
use singularity_scheduler::NodeName;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What one leadership has heard, on the monotonic clock (a jump of the wall clock must not
/// make every node look silent at once).
#[derive(Debug, Default)]
struct Heard {
    /// When this replica's current leadership began (`None`: not leading yet).
    leading_since: Option<Instant>,
    /// The last heartbeat of each node heard during that leadership.
    last_heard: BTreeMap<NodeName, Instant>,
}

/// Node heartbeats heard by this replica while it leads; cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct NodeLiveness {
    heard: Arc<Mutex<Heard>>,
}

/// What the silence check needs, read at one moment.
#[derive(Debug, PartialEq, Eq)]
pub struct LivenessView {
    /// How long the current leadership has lasted, in milliseconds (0: not leading).
    pub leading_for_ms: u64,
    /// Each heard node's last heartbeat as a wall-clock time: `now_ms` less how long ago it
    /// was heard on the monotonic clock.
    pub last_heard_ms: BTreeMap<NodeName, u64>,
}

impl NodeLiveness {
    fn heard(&self) -> MutexGuard<'_, Heard> {
        // Each change is whole before the next, so a poisoned lock is still consistent.
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica begins leading now: forget what an earlier leadership heard.
    pub fn lead_from_now(&self) {
        let mut heard = self.heard();
        heard.leading_since = Some(Instant::now());
        heard.last_heard.clear();
    }

    /// `node` (a registered node) sent a heartbeat now.
    pub fn heartbeat(&self, node: &NodeName) {
        let mut heard = self.heard();
        if !heard.last_heard.contains_key(node) && heard.last_heard.len() >= MAX_NODES {
            // More names than the cluster can hold nodes: keep the most recently heard.
            if let Some(oldest) = heard
                .last_heard
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(name, _)| name.clone())
            {
                heard.last_heard.remove(&oldest);
            }
        }
        heard.last_heard.insert(node.clone(), Instant::now());
        assert!(heard.last_heard.len() <= MAX_NODES);
    }

    /// The current leadership's age and what it heard, with heartbeats placed on the wall
    /// clock that reads `now_ms`.
    pub fn view(&self, now_ms: u64) -> LivenessView {
        let heard = self.heard();
        let ms_since = |at: Instant| at.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        LivenessView {
            leading_for_ms: heard.leading_since.map_or(0, ms_since),
            last_heard_ms: heard
                .last_heard
                .iter()
                .map(|(name, at)| (name.clone(), now_ms.saturating_sub(ms_since(*at))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name(s: &str) -> NodeName {
        NodeName::new(s.to_string()).unwrap()
    }

    #[test]
    fn a_new_leadership_forgets_what_the_last_one_heard() {
        let liveness = NodeLiveness::default();
        assert_eq!(liveness.view(5_000).leading_for_ms, 0, "not leading yet");
        liveness.lead_from_now();
        liveness.heartbeat(&name("gpu-0"));
        std::thread::sleep(Duration::from_millis(20));
        let view = liveness.view(1_000_000);
        assert!(view.leading_for_ms >= 20, "{view:?}");
        let heard_ms = view.last_heard_ms[&name("gpu-0")];
        assert!(
            (1_000_000 - 60_000..=1_000_000 - 20).contains(&heard_ms),
            "{view:?}"
        );
        liveness.lead_from_now();
        let view = liveness.view(1_000_000);
        assert!(view.leading_for_ms < 20, "{view:?}");
        assert!(view.last_heard_ms.is_empty());
    }

    #[test]
    fn a_wall_clock_jump_does_not_age_what_was_heard() {
        let liveness = NodeLiveness::default();
        liveness.lead_from_now();
        liveness.heartbeat(&name("gpu-0"));
        // However far the wall clock moved, the heartbeat is as recent as it was.
        for now_ms in [10_000, 3_600_000_000] {
            let view = liveness.view(now_ms);
            assert!(
                now_ms - view.last_heard_ms[&name("gpu-0")] < 60_000,
                "{view:?}"
            );
        }
    }
}
