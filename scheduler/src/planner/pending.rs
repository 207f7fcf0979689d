//! Starting pending jobs: new ones with `Place`, preempted or lost ones with `Resume` from their
//! checkpoint, highest tier first, then least attained service, then oldest, each as a whole
//! gang.
//!
//! A gang tries its full world size first (on one node if it fits one node, else packed into
//! the fewest domains and nodes); basic and standard jobs may then start spliced onto fewer
//! devices, down to their tier floor. It never targets a node that is not up (the view only
//! holds free devices of up nodes) and never gives away devices reserved for a higher job. A
//! job that does not fit makes room through `victims` and holds what it will use.

use super::defrag::{defragment, wait_for_cleared_node};
use super::reclaim::nothing_to_reclaim;
use super::select::{candidates, place, Candidate, Locality, Placement};
use super::session::Session;
use super::victims::{class_of, make_room};
use crate::action::ActionOp;
use crate::ids::{DeviceRef, NodeId};
use crate::job::{Job, JobSpec};
use crate::node::NodeStatus;
use crate::tier::Tier;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Device counts a job may start on, largest first: its world size, then (when the config
/// allows starting shrunk) every smaller divisor down to its tier's floor.
pub(crate) fn start_sizes(spec: &JobSpec, allow_shrunk: bool) -> Vec<usize> {
    let world = spec.world_size;
    let floor = if allow_shrunk {
        spec.tier.min_devices(world)
    } else {
        world
    };
    (floor..=world)
        .rev()
        .filter(|d| world % d == 0)
        .map(|d| d as usize)
        .collect()
}

/// Where a gang of `count` devices must go: one node when one node of its kind could hold it.
pub(crate) fn locality_for(s: &Session, spec: &JobSpec, count: usize) -> Locality {
    if count <= s.view.node_capacity(spec) {
        Locality::OneNode
    } else {
        Locality::Spread
    }
}

/// Pending jobs in scheduling order: tier (premium first), then least attained service (the
/// device-time delivered so far, as in Tiresias: new jobs before ones that already ran, which
/// favours short jobs without knowing durations), then submission order. When more jobs wait
/// than the window of `max_pending_considered`, jobs the fleet could not hold even with every
/// device free (no such kind, too little memory, too few devices) are left out, so they cannot
/// crowd out the jobs behind them; `explain` still says why they wait. The first
/// `max_pending_considered` jobs of the result are the window.
pub(crate) fn pending_jobs<'a>(s: &Session<'a>) -> Vec<&'a Job> {
    // Only a full window needs the fleet-wide count (one pass over every node per class).
    let crowded = s.pending.len() > s.config.max_pending_considered;
    let mut jobs: Vec<&'a Job> = s
        .pending
        .iter()
        .copied()
        .filter(|j| {
            if !crowded {
                return true;
            }
            let allow_shrunk = s.config.start_shrunk && j.spec.tier != Tier::Premium;
            let smallest = start_sizes(&j.spec, allow_shrunk)
                .last()
                .copied()
                .unwrap_or(j.spec.world_size as usize);
            s.view.fleet_capacity(&j.spec) >= smallest
        })
        .collect();
    jobs.sort_by_key(|j| (Reverse(j.spec.tier), j.ledger.delivered_device_ms, j.id));
    jobs
}

/// Finds devices for `job` at `count` devices: on one node if that is where it belongs, or,
/// when `relax` is set, spread over the fewest domains and nodes.
pub(crate) fn find(s: &Session, spec: &JobSpec, count: usize, relax: bool) -> Option<Placement> {
    find_among(s, spec, &candidates(&s.view, spec, 1), count, relax)
}

/// `find` over candidates already computed for this spec (nodes with any suitable free device).
fn find_among(
    s: &Session,
    spec: &JobSpec,
    cands: &[Candidate],
    count: usize,
    relax: bool,
) -> Option<Placement> {
    let locality = locality_for(s, spec, count);
    place(&s.view, spec, cands, count, locality).or_else(|| {
        (relax && locality == Locality::OneNode)
            .then(|| place(&s.view, spec, cands, count, Locality::Spread))
            .flatten()
    })
}

/// Proposes the start of `job` on `placement`: `Resume` with a checkpoint, else `Place`.
pub(crate) fn start(s: &mut Session, job: &Job, placement: Placement, why: &str) -> bool {
    let world = job.spec.world_size as usize;
    let count = placement.devices.len();
    let shape = if count == world {
        format!("{world} ranks on {}", placement.where_text)
    } else {
        format!(
            "{world} ranks spliced onto {count} devices ({} per device) on {}",
            world / count.max(1),
            placement.where_text
        )
    };
    let (op, reason) = match &job.checkpoint {
        Some(checkpoint) => (
            ActionOp::Resume {
                devices: placement.devices,
            },
            format!(
                "resumed from its checkpoint at step {}: {shape}{why}",
                checkpoint.step
            ),
        ),
        None => (
            ActionOp::Place {
                devices: placement.devices,
            },
            format!("placed: {shape}{why}"),
        ),
    };
    s.push(job.id, op, reason)
}

/// Tries to start `job` on free devices; true when a start was proposed, or when the job waits
/// for a node being cleared for it (`defrag`). With `may_clear_nodes` unset (backfill), the
/// job neither waits for a node being cleared nor has one cleared: it only takes free devices.
pub(crate) fn try_start(s: &mut Session, job: &Job, may_clear_nodes: bool) -> bool {
    let allow_shrunk = s.config.start_shrunk && job.spec.tier != Tier::Premium;
    let sizes = start_sizes(&job.spec, allow_shrunk);
    let whole = job.spec.world_size as usize;
    let one_node = may_clear_nodes && locality_for(s, &job.spec, whole) == Locality::OneNode;
    if one_node && wait_for_cleared_node(s, job, whole) {
        return true;
    }
    let smallest = sizes.last().copied().unwrap_or(usize::MAX);
    // Free devices only go away within a plan: a shape that did not fit does not fit later.
    if smallest > s.view.free_total || s.known_not_to_fit(&job.spec, smallest) {
        return false;
    }
    let cands = candidates(&s.view, &job.spec, 1);
    for (i, &count) in sizes.iter().enumerate() {
        if i == 0 && one_node {
            // The whole gang belongs on one node: there, or on a node cleared for it, before
            // it is spread over several.
            if let Some(placement) = place(&s.view, &job.spec, &cands, count, Locality::OneNode) {
                return start(s, job, placement, "");
            }
            if defragment(s, job, count) {
                return true;
            }
        }
        if let Some(placement) = find_among(s, &job.spec, &cands, count, true) {
            let why = if i == 0 {
                ""
            } else {
                "; the whole gang did not fit, it grows back when devices free up"
            };
            return start(s, job, placement, why);
        }
    }
    s.remember_no_fit(&job.spec, smallest);
    false
}

/// Starts what fits, in priority order, within the plan's bounds; a blocked premium or
/// standard job makes room (shrinks, then preemptions of lower tiers) and holds the free
/// devices it will use, so that lower jobs do not take them meanwhile. Jobs behind the window
/// then backfill: each may start on devices still free, in the same order, without making
/// room or clearing a node, so that a window of blocked gangs does not leave devices idle that
/// a job behind it could use.
pub(crate) fn schedule_pending(s: &mut Session) {
    let jobs = pending_jobs(s);
    let (window, behind) = jobs.split_at(s.config.max_pending_considered.min(jobs.len()));
    for &job in window {
        if s.full() {
            break;
        }
        if try_start(s, job, true) {
            continue;
        }
        // A basic job makes room only from basic jobs that have had more service.
        let las = !s.config.basic_queue_thresholds_device_ms.is_empty();
        if job.spec.tier == Tier::Basic && !las {
            continue;
        }
        // A job others are already making room for always holds what it will use; the bound
        // is on new rounds of making room.
        if !s.reserved(job.id).is_empty() {
            wait_for_room(s, job);
        } else if s.room_attempts < s.config.max_room_attempts_per_plan {
            s.room_attempts += 1;
            wait_for_room(s, job);
        }
    }
    // Each job behind the window costs at most one placement search per shape that does not
    // fit (`known_not_to_fit`) or one start: bounded by the pending jobs and the plan's limit.
    for &job in behind {
        if s.full() || s.view.free_total == 0 {
            break;
        }
        try_start(s, job, false);
    }
}

/// The devices a blocked job waits for: premium its whole gang, standard its floor, basic
/// (which makes room only by least attained service) its whole gang.
fn room_needed(spec: &JobSpec) -> usize {
    match spec.tier {
        Tier::Basic => spec.world_size as usize,
        _ => spec.tier.min_devices(spec.world_size) as usize,
    }
}

/// Where a blocked gang that belongs on one node waits for its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// On this node: room is made there, and the gang holds that node's free devices.
    OnNode(NodeId),
    /// Anywhere: room is made across nodes, and the gang holds free devices on any node.
    Spread,
    /// Anywhere, for the room already on its way: the gang holds free devices on any node and
    /// makes no new room until that round completes.
    InFlight,
}

/// Where a one-node gang waits. With room on its way to several nodes: spread, as it was made.
/// With room on its way to one up node that can hold the gang (its free devices, the devices
/// coming, and what jobs that may yield hold there reach `need`): that node. To one node that
/// cannot (what is left in flight of a round made across nodes, whose other devices are
/// already free elsewhere): premium and basic keep spreading; standard, which waits for
/// locality (`defrag`), waits for the round in flight without making new room. Either way the
/// gang holds the free devices of every node, so that the devices its round has already freed
/// are not taken back by the jobs it made room from (which, resumed there, it would preempt
/// again: a livelock). With nothing on its way: of the up nodes with enough devices of the
/// job's kind, the one that needs the fewest reclaimed from jobs that may yield (ties: lowest
/// node id), else spread.
fn wait_for(s: &Session, job: &Job, need: usize) -> Wait {
    let spec = &job.spec;
    let mut coming: BTreeMap<NodeId, usize> = BTreeMap::new();
    for d in s.reserved(job.id) {
        *coming.entry(d.node).or_default() += 1;
    }
    let class = class_of(s.config, job);
    // Devices on a node held by jobs that may yield to this one.
    let yielding = |held: &Vec<usize>| -> usize { held.iter().skip(class + 1).sum() };
    // Free devices suiting the job on an up node that could hold the whole gang; `None` for
    // any other node (down, or too few devices of the job's kind: no room made there helps).
    let free_on = |s: &Session, node: NodeId| {
        s.view
            .position(node)
            .map(|p| &s.view.nodes[p])
            .filter(|n| {
                n.node.status == NodeStatus::Up
                    && s.view.may_suit(n, spec)
                    && n.suitable(spec) >= need
            })
            .map(|n| n.usable(spec).count())
    };
    let mut coming_nodes = coming.iter();
    match (coming_nodes.next(), coming_nodes.next()) {
        (None, _) => {}
        (Some((&node, &count)), None) => {
            let held = s.held_by_class().get(&node).map_or(0, yielding);
            if free_on(s, node).is_some_and(|free| free + count + held >= need) {
                return Wait::OnNode(node);
            }
            return match spec.tier {
                Tier::Standard => Wait::InFlight,
                Tier::Premium | Tier::Basic => Wait::Spread,
            };
        }
        _ => return Wait::Spread,
    }
    let largest = s.view.node_capacity(spec);
    s.held_by_class()
        .iter()
        .filter_map(|(&node, held)| {
            let held = yielding(held);
            if held + largest < need {
                return None;
            }
            let free = free_on(s, node)?;
            (free + held >= need).then_some((need.saturating_sub(free), node))
        })
        .min()
        .map_or(Wait::Spread, |(_, node)| Wait::OnNode(node))
}

/// Whether `wait_for_room` would end with nothing planned and nothing held, known cheaply:
/// nothing is on its way to the job, no running job could give it a device (`reclaim`), and
/// the free devices suiting it over the whole fleet fall short of `need`. Then, whatever node
/// `wait_for` picks, the shortfall is positive and room may be made (`Wait::InFlight` needs
/// devices on their way), `make_room` finds no candidate and fails, and with nothing reserved
/// the job holds nothing. Ending at once skips the search for a node to wait on, the list of
/// free devices and the walk over the victims, and leaves the plan as it would have been.
fn cannot_make_room(s: &mut Session, job: &Job, need: usize) -> bool {
    s.reserved(job.id).is_empty()
        && nothing_to_reclaim(s, job)
        && s.view.usable_free(&job.spec, need) < need
}

/// Handles a job that did not fit (premium, standard, or basic with least-attained-service
/// queues): makes room if none is on its way, and holds the free devices it will use.
fn wait_for_room(s: &mut Session, job: &Job) {
    let spec = &job.spec;
    let need = room_needed(spec);
    if cannot_make_room(s, job, need) {
        return;
    }
    // A gang that belongs on one node waits for one node to be cleared; when no node can be
    // (say every node runs some premium rank), room is made across nodes instead: waiting for
    // locality would cost more than spreading.
    let wait = match locality_for(s, spec, need) {
        Locality::OneNode => wait_for(s, job, need),
        Locality::Spread => Wait::Spread,
    };
    let target = match wait {
        Wait::OnNode(node) => Some(node),
        Wait::Spread | Wait::InFlight => None,
    };
    let on_target = |d: &DeviceRef| target.map_or(true, |t| d.node == t);
    let reserved = s.reserved(job.id).iter().filter(|d| on_target(d)).count();
    let free: Vec<DeviceRef> = s
        .view
        .nodes
        .iter()
        .filter(|n| {
            !n.free.is_empty()
                && target.map_or(true, |t| n.node.id == t)
                && s.view.may_suit(n, spec)
        })
        .flat_map(|n| n.usable(spec).map(|i| DeviceRef::new(n.node.id, i)))
        .collect();
    let shortfall = need.saturating_sub(free.len() + reserved);
    let may_make_room = wait != Wait::InFlight;
    if shortfall > 0 && may_make_room && !make_room(s, job, shortfall, target) && reserved == 0 {
        return;
    }
    // Hold what it will use; the devices in flight toward it make up the rest.
    let hold = need.saturating_sub(reserved).min(free.len());
    s.view.take(&free[..hold]);
}
