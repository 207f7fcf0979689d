//! Growing shrunk jobs back toward their world size on idle devices (work conservation):
//! after pending jobs had their turn, a running job on fewer devices than its world size gets
//! the largest divisor of its world size that the free devices allow, preferring free devices
//! on the nodes it already uses.
//!
//! It only uses devices still free in the view, so it never takes what a pending job holds.

use super::pending::find;
use super::session::Session;
use crate::action::ActionOp;
use crate::ids::DeviceRef;
use crate::job::Job;
use crate::node::NodeStatus;
use std::cmp::Reverse;

/// Up to `count` free devices for `job` on the nodes it already uses.
fn local_devices(s: &Session, job: &Job, count: usize) -> Vec<DeviceRef> {
    let mut nodes: Vec<_> = job.assignment.iter().map(|d| d.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut out = Vec::new();
    for node in nodes {
        let Some(pos) = s.view.position(node) else {
            continue;
        };
        let view = &s.view.nodes[pos];
        out.extend(
            view.usable(&job.spec)
                .map(|i| DeviceRef::new(node, i))
                .take(count - out.len()),
        );
        if out.len() == count {
            break;
        }
    }
    out
}

/// Proposes the growth of one job; true when one was proposed.
fn grow(s: &mut Session, job: &Job) -> bool {
    let held = job.assignment.len();
    let world = job.spec.world_size as usize;
    for size in (held + 1..=world).rev().filter(|d| world % d == 0) {
        let extra = size - held;
        if extra > s.view.free_total {
            continue;
        }
        let mut new = local_devices(s, job, extra);
        if new.len() < extra {
            let rest = extra - new.len();
            if s.known_not_to_fit(&job.spec, rest) {
                continue;
            }
            s.view.take(&new);
            let more = find(s, &job.spec, rest, true);
            s.view.give_back(&new);
            match more {
                Some(p) => new.extend(p.devices),
                None => {
                    s.remember_no_fit(&job.spec, rest);
                    continue;
                }
            }
        }
        let mut to = job.assignment.clone();
        to.extend(new);
        return s.push(
            job.id,
            ActionOp::Resize { to, for_job: None },
            format!(
                "grown from {held} to {size} devices toward its world size of {world}: idle \
                 devices go to shrunk jobs"
            ),
        );
    }
    false
}

/// Grows shrunk jobs, highest tier first, then lowest id, within the plan's bounds.
pub(crate) fn grow_shrunk(s: &mut Session) {
    if !s.config.grow_shrunk {
        return;
    }
    let state = s.state;
    let mut jobs: Vec<&Job> = s
        .running
        .iter()
        .copied()
        .filter(|j| {
            !j.assignment.is_empty()
                && j.assignment.len() < j.spec.world_size as usize
                && s.is_free(j)
                && j.assignment.iter().all(|d| {
                    state
                        .node(d.node)
                        .is_some_and(|n| n.status == NodeStatus::Up)
                })
        })
        .collect();
    jobs.sort_by_key(|j| (Reverse(j.spec.tier), j.id));
    let mut grown = 0;
    for job in jobs {
        if s.full() || grown >= s.config.max_growths_per_plan {
            break;
        }
        if s.view.free_total == 0 {
            break;
        }
        if grow(s, job) {
            grown += 1;
        }
    }
}
