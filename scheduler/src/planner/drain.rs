//! Moving jobs off draining nodes: each running job with ranks on a draining node is migrated to
//! free devices elsewhere (same device count), or shrunk by splicing onto what is free (never
//! below its tier floor), or, when nothing is free, preempted so that it resumes from its
//! checkpoint once room frees up. Jobs on a down node were already released by apply and come
//! back through the pending path (`Resume`).
//!
//! It never targets a draining or down node: new devices come from the view, which holds only
//! free devices of up nodes.

use super::pending::find;
use super::session::Session;
use crate::action::ActionOp;
use crate::ids::DeviceRef;
use crate::job::{Job, JobPhase};
use crate::node::NodeStatus;
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// Names of the draining nodes a job is on, for reasons.
fn draining_names(s: &Session, job: &Job) -> String {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for d in &job.assignment {
        if let Some(node) = s.state.node(d.node) {
            if node.status != NodeStatus::Up {
                names.insert(node.name.as_str());
            }
        }
    }
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// Devices `count` more for `job`, away from draining nodes, or `None`.
fn more_devices(s: &Session, job: &Job, count: usize) -> Option<Vec<DeviceRef>> {
    if count == 0 {
        return Some(Vec::new());
    }
    find(s, &job.spec, count, true).map(|p| p.devices)
}

/// Proposes the move of one job off draining nodes.
fn evacuate(s: &mut Session, job: &Job) {
    let draining = draining_names(s, job);
    let keep: Vec<DeviceRef> = job
        .assignment
        .iter()
        .filter(|d| {
            s.state
                .node(d.node)
                .is_some_and(|n| n.status == NodeStatus::Up)
        })
        .copied()
        .collect();
    let held = job.assignment.len();
    let world = job.spec.world_size as usize;
    if let Some(new) = more_devices(s, job, held - keep.len()) {
        let mut to = keep;
        to.extend(new);
        let where_text = super::select::describe(&s.view, &to);
        s.push(
            job.id,
            ActionOp::Migrate { to },
            format!("migrated off draining node {draining} to {where_text}"),
        );
        return;
    }
    let floor = job.spec.tier.min_devices(job.spec.world_size) as usize;
    for size in (floor..held).rev().filter(|d| world % d == 0) {
        let to: Option<Vec<DeviceRef>> = if size <= keep.len() {
            Some(keep[..size].to_vec())
        } else {
            more_devices(s, job, size - keep.len()).map(|new| {
                let mut to = keep.clone();
                to.extend(new);
                to
            })
        };
        if let Some(to) = to {
            s.push(
                job.id,
                ActionOp::Resize { to, for_job: None },
                format!(
                    "shrunk from {held} to {size} devices to leave draining node {draining}: \
                     too few devices are free for the whole job elsewhere"
                ),
            );
            return;
        }
    }
    s.push(
        job.id,
        ActionOp::Preempt { for_job: None },
        format!(
            "preempted: node {draining} is draining and no devices are free elsewhere; it \
             resumes from its checkpoint when room frees up"
        ),
    );
}

/// Moves every movable job off draining nodes, highest tier first, within the plan's bounds.
pub(crate) fn drain_nodes(s: &mut Session) {
    let state = s.state;
    let mut jobs: BTreeSet<(Reverse<crate::tier::Tier>, crate::ids::JobId)> = BTreeSet::new();
    for node in state.nodes().filter(|n| n.status == NodeStatus::Draining) {
        for holder in node.devices.iter().filter_map(|d| d.holder) {
            if let Some(job) = state.job(holder) {
                if job.phase == JobPhase::Running && s.is_free(job) {
                    jobs.insert((Reverse(job.spec.tier), job.id));
                }
            }
        }
    }
    for (_, id) in jobs {
        if s.full() {
            break;
        }
        if let Some(job) = state.job(id) {
            evacuate(s, job);
        }
    }
}
