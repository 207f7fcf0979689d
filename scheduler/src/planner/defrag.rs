//! Defragmentation: when a standard gang belongs on one node (it fits one node of its
//! kind) and enough devices are free in the fleet but no node has enough, migrate a few small
//! jobs (each wholly on the chosen node, of a tier no higher than the gang's) to other nodes so
//! that the node is cleared for the gang. While such migrations are in flight, the gang waits
//! for that node and holds its free devices instead of clearing another one. Premium gangs do
//! not wait for locality (their SLA counts from submission): they spread at once.
//!
//! It works at node granularity (the unit a one-node gang needs), moves at most
//! `PolicyConfig::max_defrag_migrations_per_plan` jobs, never moves a job onto the node being
//! cleared, and never targets a node that is not up.

use super::pending::find;
use super::session::Session;
use crate::action::ActionOp;
use crate::ids::{DeviceRef, NodeId};
use crate::job::Job;
use crate::node::NodeStatus;
use crate::tier::Tier;
use std::collections::BTreeMap;

/// A node to clear: (devices moved, migrations, node) to minimise, and the jobs to move.
struct Clearing<'a> {
    cost: (usize, usize, NodeId),
    movers: Vec<&'a Job>,
}

/// Devices that migrations in flight are moving off each node.
fn leaving(s: &Session) -> BTreeMap<NodeId, usize> {
    let mut out: BTreeMap<NodeId, usize> = BTreeMap::new();
    for action in s.state.actions() {
        if let ActionOp::Migrate { to } = &action.op {
            if let Some(job) = s.state.job(action.job) {
                for d in job.assignment.iter().filter(|d| !to.contains(d)) {
                    *out.entry(d.node).or_default() += 1;
                }
            }
        }
    }
    out
}

/// Free devices of node `pos` that suit `job`.
fn usable_on(s: &Session, pos: usize, job: &Job) -> Vec<DeviceRef> {
    let node = &s.view.nodes[pos];
    node.usable(&job.spec)
        .map(|i| DeviceRef::new(node.node.id, i))
        .collect()
}

/// Devices of node `pos` that could hold ranks of `job`, free or not.
fn capacity_of(s: &Session, pos: usize, job: &Job) -> usize {
    s.view.nodes[pos].suitable(&job.spec)
}

/// Whether defragmentation may serve this job's gang of `need` devices.
/// Premium does not wait for locality (its SLA counts from submission: it spreads at once),
/// and basic takes what is idle; standard gangs wait for a node to be cleared.
fn applies(s: &Session, job: &Job, need: usize) -> bool {
    s.config.max_defrag_migrations_per_plan > 0 && job.spec.tier == Tier::Standard && need >= 2
}

/// For a gang of `need` devices that belongs on one node: when migrations in flight are
/// clearing a node that will then have room, the job waits for it and holds that node's free
/// devices. True when it waits.
pub(crate) fn wait_for_cleared_node(s: &mut Session, job: &Job, need: usize) -> bool {
    if !applies(s, job, need) {
        return false;
    }
    for (node, count) in leaving(s) {
        let Some(pos) = s.view.position(node) else {
            continue;
        };
        if s.view.nodes[pos].node.status != NodeStatus::Up || capacity_of(s, pos, job) < need {
            continue;
        }
        let free = usable_on(s, pos, job);
        if free.len() < need && free.len() + count >= need {
            s.view.take(&free);
            return true;
        }
    }
    false
}

/// For a gang of `need` devices that belongs on one node and found none: clears a node by
/// migrating small jobs away. True when migrations were proposed (the job waits for the node,
/// holding its free devices); false when defragmentation cannot help.
pub(crate) fn defragment(s: &mut Session, job: &Job, need: usize) -> bool {
    if !applies(s, job, need) {
        return false;
    }
    // Small jobs wholly on one node, that may move for this job.
    let mut movers: BTreeMap<NodeId, Vec<&Job>> = BTreeMap::new();
    for other in &s.running {
        let Some(first) = other.assignment.first() else {
            continue;
        };
        if other.spec.tier <= job.spec.tier
            && s.is_free(other)
            && other.assignment.iter().all(|d| d.node == first.node)
        {
            movers.entry(first.node).or_default().push(other);
        }
    }
    let limit = s.config.max_defrag_migrations_per_plan;
    let mut best: Option<Clearing> = None;
    for (node, mut jobs) in movers {
        let Some(pos) = s.view.position(node) else {
            continue;
        };
        if s.view.nodes[pos].node.status != NodeStatus::Up || capacity_of(s, pos, job) < need {
            continue;
        }
        let deficit = need.saturating_sub(usable_on(s, pos, job).len());
        // Largest first: fewest migrations.
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.assignment.len()), j.id));
        let mut moved = 0;
        let mut chosen = Vec::new();
        for j in jobs {
            if moved >= deficit || chosen.len() >= limit {
                break;
            }
            moved += j.assignment.len();
            chosen.push(j);
        }
        if moved < deficit {
            continue;
        }
        let cost = (moved, chosen.len(), node);
        if best.as_ref().map_or(true, |b| cost < b.cost) {
            best = Some(Clearing {
                cost,
                movers: chosen,
            });
        }
    }
    let Some(Clearing {
        cost: (_, _, node),
        movers: chosen,
    }) = best
    else {
        return false;
    };
    let Some(pos) = s.view.position(node) else {
        return false;
    };
    // Hold the node's free devices (nobody moves onto it), then find a home for each mover.
    let held = usable_on(s, pos, job);
    s.view.take(&held);
    let mut moves: Vec<(&Job, Vec<DeviceRef>, String)> = Vec::new();
    for mover in &chosen {
        match find(s, &mover.spec, mover.assignment.len(), false) {
            Some(p) => {
                s.view.take(&p.devices);
                moves.push((mover, p.devices, p.where_text));
            }
            None => {
                for (_, devices, _) in &moves {
                    s.view.give_back(devices);
                }
                s.view.give_back(&held);
                return false;
            }
        }
    }
    let node_name = s.view.nodes[pos].node.name.to_string();
    for (mover, to, where_text) in moves {
        let reason = format!(
            "migrated to {where_text} to defragment: node {node_name} is being cleared for {} \
             ({}), whose {need}-device gang needs one node",
            job.id, job.spec.tier
        );
        s.push(mover.id, ActionOp::Migrate { to }, reason);
    }
    true
}
