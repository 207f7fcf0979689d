//! Making room for a blocked job: choose running jobs that may yield to it (a strictly lower
//! tier; within basic, jobs in a higher least-attained-service queue: see `class_of`; a larger
//! premium gang for a smaller premium job: see `may_yield`) to shrink by splicing (preferred)
//! or to preempt, in victim order: lowest tier first, then most SLA slack (attainment above the
//! tier's target; not for basic, which is best effort), then most attained service, then id.
//! Premium is only preempted (never shrunk), and only for a smaller premium gang; standard is
//! preempted only for premium.
//!
//! Nothing here frees a device at once: a shrink frees the devices it gives up when every node
//! has reported its checkpoint, a preemption when it completes (right after its checkpoint),
//! and the beneficiary is placed by the evaluation that report triggers. Actions carry
//! `for_job` so that apply checks the tier rules, and so that later plans keep the devices on
//! their way for the beneficiary.
//! It never shrinks a job below its tier floor and never touches a job with an action in flight.
//! When no running job at all may give a blocked job a device, `reclaim` finds it out once per
//! plan and such attempts end at once.

use super::config::PolicyConfig;
use super::reclaim::nothing_to_reclaim;
use super::session::Session;
use crate::action::ActionOp;
use crate::ids::{DeviceRef, JobId, NodeId};
use crate::job::{Job, JobSpec};
use crate::node::NodeStatus;
use crate::tier::Tier;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// SLA slack of a job, in parts per million: its attainment minus its tier's target (basic,
/// best effort, has a target of zero).
pub(crate) fn slack_ppm(job: &Job) -> i64 {
    i64::from(job.ledger.attainment_ppm())
        - i64::from(job.spec.tier.target_share_ppm().unwrap_or(0))
}

/// The order in which victims give up devices: lowest tier first; within premium and standard,
/// most SLA slack first (they have targets to keep); then most attained service (delivered
/// device-time) first, as least-attained-service schedulers do. Checkpoints are taken at a step
/// boundary, so a victim loses no work, and under heavy-tailed durations the job that has run
/// longest is the likeliest to run longest still, while a young one may finish soon. Basic is
/// best effort: its slack is ignored, only its attained service counts.
pub(crate) fn victim_key(job: &Job) -> (Tier, Reverse<i64>, Reverse<u64>, JobId) {
    let slack = match job.spec.tier {
        Tier::Basic => 0,
        Tier::Premium | Tier::Standard => slack_ppm(job),
    };
    (
        job.spec.tier,
        Reverse(slack),
        Reverse(job.ledger.delivered_device_ms),
        job.id,
    )
}

/// A job's yield class: premium 0, standard 1, basic 2 + its least-attained-service queue.
/// A running job may give up devices for a pending one of a smaller class: a lower tier for a
/// higher one, or, within basic, a job that has had more device-time for one that has had less
/// (`PolicyConfig::basic_queue_thresholds_device_ms`). Premium yields only by `may_yield`.
pub(crate) fn class_of(config: &PolicyConfig, job: &Job) -> usize {
    match job.spec.tier {
        Tier::Premium => 0,
        Tier::Standard => 1,
        Tier::Basic => {
            let delivered = job.ledger.delivered_device_ms;
            2 + config
                .basic_queue_thresholds_device_ms
                .iter()
                .take_while(|&&t| delivered >= t)
                .count()
        }
    }
}

/// Number of yield classes under `config`.
pub(crate) fn class_count(config: &PolicyConfig) -> usize {
    3 + config.basic_queue_thresholds_device_ms.len()
}

/// Whether `victim` may give up devices for `beneficiary` (see `class_of`). Premium yields
/// only to premium, and only to a smaller gang: premium runs whole (its floor is its world
/// size), so it may only be preempted, and a large premium gang holding much of the fleet
/// would otherwise keep many small premium jobs waiting past their targets. A premium job
/// never yields to one of its own size or larger, so two premium jobs cannot take turns.
pub(crate) fn may_yield(config: &PolicyConfig, victim: &Job, beneficiary: &Job) -> bool {
    if victim.spec.tier == Tier::Premium {
        return beneficiary.spec.tier == Tier::Premium
            && victim.spec.world_size > beneficiary.spec.world_size;
    }
    class_of(config, victim) > class_of(config, beneficiary)
}

/// Percent with no decimals, for reasons.
pub(crate) fn percent(ppm: u32) -> String {
    format!("{}%", ppm / 10_000)
}

/// "tier basic, SLA attainment 100% (best effort)" / "... 82% vs target 70%".
pub(crate) fn sla_text(job: &Job) -> String {
    let attained = percent(job.ledger.attainment_ppm());
    match job.spec.tier.target_share_ppm() {
        Some(target) => format!(
            "tier {}, SLA attainment {attained} vs target {}",
            job.spec.tier,
            percent(target)
        ),
        None => format!(
            "tier {}, SLA attainment {attained} (best effort)",
            job.spec.tier
        ),
    }
}

/// Device-hours with one decimal, for reasons.
fn device_hours(device_ms: u64) -> String {
    let tenths = device_ms / 360_000;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// Why this victim was chosen, in words.
fn why_victim(victim: &Job, beneficiary: &Job) -> String {
    if victim.spec.tier < beneficiary.spec.tier {
        format!(
            "victims go lowest tier first, then most SLA slack ({}), then most attained service",
            sla_text(victim)
        )
    } else if victim.spec.tier == Tier::Premium {
        format!(
            "a premium gang of {} ranks yields to a smaller premium gang ({} ranks) rather than \
             keep it waiting; {}",
            victim.spec.world_size,
            beneficiary.spec.world_size,
            sla_text(victim)
        )
    } else {
        format!(
            "least attained service first within tier {}: it has had {} device-hours, {} has \
             had {}",
            victim.spec.tier,
            device_hours(victim.ledger.delivered_device_ms),
            beneficiary.id,
            device_hours(beneficiary.ledger.delivered_device_ms),
        )
    }
}

/// Whether a device a victim gives up would serve the beneficiary (right kind and memory, on
/// an up node, on the target node if there is one).
fn useful(s: &Session, device: DeviceRef, spec: &JobSpec, target: Option<NodeId>) -> bool {
    if target.is_some_and(|t| t != device.node) {
        return false;
    }
    let Some(pos) = s.view.position(device.node) else {
        return false;
    };
    let node = &s.view.nodes[pos];
    node.node.status == NodeStatus::Up
        && s.view.may_suit(node, spec)
        && node.suits(device.index, spec)
}

/// The victim's devices in the order it should give them up: useful ones first, then those on
/// nodes where it has the fewest devices (so it keeps its locality), then the highest first.
fn give_up_order(
    s: &Session,
    victim: &Job,
    spec: &JobSpec,
    target: Option<NodeId>,
) -> Vec<DeviceRef> {
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    for d in &victim.assignment {
        *per_node.entry(d.node).or_default() += 1;
    }
    let mut devices = victim.assignment.clone();
    devices.sort_by_key(|d| {
        (
            !useful(s, *d, spec, target),
            per_node.get(&d.node).copied().unwrap_or(0),
            Reverse(*d),
        )
    });
    devices
}

/// One candidate victim and what it could give.
struct Candidate<'a> {
    job: &'a Job,
    order: Vec<DeviceRef>,
    /// Device counts it may shrink to, largest first (divisors of its world size, at or above
    /// its floor, below what it holds); empty when it may not shrink.
    shrink_sizes: Vec<usize>,
    preemptable: bool,
}

impl Candidate<'_> {
    fn gain(&self, s: &Session, spec: &JobSpec, target: Option<NodeId>, give: usize) -> usize {
        self.order
            .iter()
            .take(give)
            .filter(|d| useful(s, **d, spec, target))
            .count()
    }

    fn max_shrink_gain(&self, s: &Session, spec: &JobSpec, target: Option<NodeId>) -> usize {
        match self.shrink_sizes.last() {
            Some(&smallest) => self.gain(s, spec, target, self.job.assignment.len() - smallest),
            None => 0,
        }
    }
}

impl<'a> Candidate<'a> {
    fn new(s: &Session, job: &'a Job, beneficiary: &Job, target: Option<NodeId>) -> Self {
        let tier = beneficiary.spec.tier;
        let held = job.assignment.len();
        let world = job.spec.world_size as usize;
        let floor = job.spec.tier.min_devices(job.spec.world_size) as usize;
        // A shrink keeps some of the job's devices: never ones on a node that is not up (the
        // drain step moves such jobs; here they may only be preempted).
        let all_up = job.assignment.iter().all(|d| {
            s.view
                .position(d.node)
                .is_some_and(|p| s.view.nodes[p].node.status == NodeStatus::Up)
        });
        let shrink_sizes = if all_up && job.spec.tier.may_be_shrunk_for(tier) {
            (floor..held).rev().filter(|d| world % d == 0).collect()
        } else {
            Vec::new()
        };
        Candidate {
            order: give_up_order(s, job, &beneficiary.spec, target),
            job,
            shrink_sizes,
            preemptable: job.spec.tier.may_be_preempted_for(tier),
        }
    }
}

/// Whether running `job` may give up, for `beneficiary`, a device it could use (on `target`
/// when there is one): it may yield to it (`may_yield`), is free to act in this plan, and holds
/// a useful device. A job none of whose devices the beneficiary could use (another kind, or not
/// on the target) frees nothing for it, and does not take a place among the candidates.
///
/// A job holds only devices of its own kind (a state invariant, `invariants.rs`; a node
/// registers again only with the same inventory), so a job of another kind is turned away before its devices are
/// looked up: in a fleet of several kinds most running jobs are.
///
/// Within a plan the answer can only turn from true to false: `may_yield` and `useful` read
/// only the state and the view's fixed parts (node status, kinds), and a job stops being free
/// once it has an action in the plan (`Session::touched` only grows). `reclaim` relies on it.
pub(crate) fn may_give_room(
    s: &Session,
    job: &Job,
    beneficiary: &Job,
    target: Option<NodeId>,
) -> bool {
    may_yield(s.config, job, beneficiary)
        && job.spec.device_kind == beneficiary.spec.device_kind
        && s.is_free(job)
        && job
            .assignment
            .iter()
            .any(|&d| useful(s, d, &beneficiary.spec, target))
}

/// Victims for `beneficiary` in victim order: running, strictly lower tier, free to act, on
/// the target node if there is one. The walk stops early once shrinking alone would free
/// `shortfall` devices (shrinks are preferred, so later victims would not be asked).
fn candidates<'a>(
    s: &mut Session<'a>,
    beneficiary: &Job,
    shortfall: usize,
    target: Option<NodeId>,
) -> Vec<Candidate<'a>> {
    let pool = s.victim_pool();
    let mut out = Vec::new();
    let mut shrinkable = 0;
    for job in pool {
        if out.len() >= s.config.max_victims_considered || shrinkable >= shortfall {
            break;
        }
        if !may_give_room(s, job, beneficiary, target) {
            continue;
        }
        let candidate = Candidate::new(s, job, beneficiary, target);
        shrinkable += candidate.max_shrink_gain(s, &beneficiary.spec, target);
        out.push(candidate);
    }
    out
}

/// Proposes shrinks (first) and preemptions that free `shortfall` useful devices for
/// `beneficiary`, or nothing when even all of them would not be enough. Returns whether room
/// is on its way.
pub(crate) fn make_room(
    s: &mut Session,
    beneficiary: &Job,
    shortfall: usize,
    target: Option<NodeId>,
) -> bool {
    let spec = &beneficiary.spec;
    // Nobody may give it a device on any node: no candidate on any target (`reclaim`), and
    // nothing (fewer than `shortfall`) is enough.
    if shortfall > 0 && nothing_to_reclaim(s, beneficiary) {
        debug_assert!(
            candidates(s, beneficiary, shortfall, target).is_empty(),
            "reclaim found no victim for {} where the full search finds one",
            beneficiary.id
        );
        return false;
    }
    let cands = candidates(s, beneficiary, shortfall, target);
    let shrink_gain: Vec<usize> = cands
        .iter()
        .map(|c| c.max_shrink_gain(s, spec, target))
        .collect();
    let preempt_gain: Vec<usize> = cands
        .iter()
        .map(|c| {
            if c.preemptable {
                c.gain(s, spec, target, usize::MAX)
            } else {
                0
            }
        })
        .collect();
    let mut shrinkable: usize = shrink_gain.iter().sum();
    let mut preempted = vec![false; cands.len()];
    let mut from_preempts = 0;
    for i in 0..cands.len() {
        if from_preempts + shrinkable >= shortfall {
            break;
        }
        if preempt_gain[i] > shrink_gain[i] {
            preempted[i] = true;
            from_preempts += preempt_gain[i];
            shrinkable -= shrink_gain[i];
        }
    }
    if from_preempts + shrinkable < shortfall {
        return false;
    }
    let bene = beneficiary.id;
    let bene_tier = spec.tier;
    let budget = s.config.action_limit().saturating_sub(s.actions.len());
    let mut remaining = shortfall.saturating_sub(from_preempts);
    let mut planned: Vec<(JobId, ActionOp, String)> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if remaining == 0 {
            break;
        }
        if preempted[i] || shrink_gain[i] == 0 {
            continue;
        }
        let held = c.job.assignment.len();
        // The largest size that still frees what is missing, else the floor.
        let size = c
            .shrink_sizes
            .iter()
            .copied()
            .find(|&d| c.gain(s, spec, target, held - d) >= remaining)
            .or_else(|| c.shrink_sizes.last().copied());
        let Some(size) = size else { continue };
        let give: Vec<DeviceRef> = c.order.iter().take(held - size).copied().collect();
        remaining = remaining.saturating_sub(c.gain(s, spec, target, held - size));
        let to: Vec<DeviceRef> = c
            .job
            .assignment
            .iter()
            .filter(|d| !give.contains(d))
            .copied()
            .collect();
        let reason = format!(
            "shrunk from {held} to {size} devices ({} ranks per device) for {bene} ({bene_tier}): \
             shrinking is preferred to preempting; {}",
            c.job.spec.world_size as usize / size,
            why_victim(c.job, beneficiary),
        );
        planned.push((
            c.job.id,
            ActionOp::Resize {
                to,
                for_job: Some(bene),
            },
            reason,
        ));
    }
    for (i, c) in cands.iter().enumerate() {
        if preempted[i] {
            let reason = format!(
                "preempted for {bene} (tier {bene_tier}): shrinking was not enough; {}",
                why_victim(c.job, beneficiary),
            );
            planned.push((
                c.job.id,
                ActionOp::Preempt {
                    for_job: Some(bene),
                },
                reason,
            ));
        }
    }
    if planned.len() > budget {
        // Half a making of room frees devices nobody can use yet: wait for a roomier plan.
        return false;
    }
    for (job, op, reason) in planned {
        s.push(job, op, reason);
    }
    true
}
