//! `Reclaimable`: a per-plan memo of whether any running job could give up a device that a
//! blocked job of a given shape and yield class could use (`RoomKey`). When none could, making
//! room for such a job cannot succeed, and `pending::wait_for_room` and `victims::make_room`
//! end at once instead of walking every running job and every node again for each blocked job
//! of that key (the crowded queue: many gangs waiting for a kind that jobs which may not yield
//! to them hold wholly).
//!
//! It is only a shortcut and must not change any plan: a "none" answer must be the answer the
//! full search would give at that moment (it never hides a victim), and a "some" answer
//! promises nothing (the full search runs). It lives for one plan, reads the session, and never
//! changes the state, the view or the actions.

use super::config::PolicyConfig;
use super::session::Session;
use super::victims::{class_of, may_give_room};
use crate::job::Job;
use crate::tier::Tier;
use std::collections::BTreeMap;

/// Everything about a blocked job that decides which running jobs may give it room and which
/// of their devices it could use: its device kind and memory per rank (`victims::useful`), its
/// yield class (`victims::class_of`) and, for premium only, its world size (a premium gang
/// yields only to a smaller premium job: `victims::may_yield`). Two blocked jobs with the same
/// key have the same possible victims in the same session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RoomKey {
    device_kind: String,
    memory_per_rank_bytes: u64,
    yield_class: usize,
    /// `Some` only for a premium job: the premium victims it may have depend on its size.
    premium_world_size: Option<u32>,
}

impl RoomKey {
    pub fn of(config: &PolicyConfig, job: &Job) -> Self {
        RoomKey {
            device_kind: job.spec.device_kind.as_str().to_string(),
            memory_per_rank_bytes: job.spec.memory_per_rank_bytes,
            yield_class: class_of(config, job),
            premium_world_size: (job.spec.tier == Tier::Premium).then_some(job.spec.world_size),
        }
    }
}

/// Per `RoomKey` asked in this plan: whether some running job could give room when it was
/// first asked. At most one entry per blocked job that tried to make room, so it is bounded by
/// the window of pending jobs (`PolicyConfig::max_pending_considered`).
#[derive(Debug, Default)]
pub(crate) struct Reclaimable {
    some_when_asked: BTreeMap<RoomKey, bool>,
}

/// Whether any running job could give `beneficiary` a device it could use, on any node: the
/// running jobs `victims::candidates` walks (`Session::running`, there in victim order), with
/// its test (`victims::may_give_room`), without a target.
fn any_victim(s: &Session, beneficiary: &Job) -> bool {
    s.running
        .iter()
        .any(|&victim| may_give_room(s, victim, beneficiary, None))
}

/// True when no running job could give `beneficiary` a device it could use, on any node, now:
/// then `victims::candidates` finds nobody for it, whatever the target, and making room fails.
///
/// The first question for a key walks the running jobs once (stopping at the first possible
/// victim); later questions for the same key in the same plan are answered from the memo.
/// A remembered "none" stays true for the rest of the plan: `may_give_room` can only turn from
/// true to false within a plan (the running jobs, their yield rules and the usefulness of their
/// devices are fixed for the plan; a job stops being free once the plan gives it an action, and
/// actions are never taken back), so what the plan does after the first question can only take
/// victims away, never add one. A remembered "some" may have become stale; it only means "do
/// the full search", which then decides exactly as without the memo.
pub(crate) fn nothing_to_reclaim(s: &mut Session, beneficiary: &Job) -> bool {
    let key = RoomKey::of(s.config, beneficiary);
    if let Some(&some) = s.reclaimable.some_when_asked.get(&key) {
        debug_assert!(
            some || !any_victim(s, beneficiary),
            "a victim appeared for {key:?} after none was found in this plan"
        );
        return !some;
    }
    let some = any_victim(s, beneficiary);
    s.reclaimable.some_when_asked.insert(key, some);
    debug_assert!(
        s.reclaimable.some_when_asked.len() <= s.config.max_pending_considered.max(1),
        "more room keys than jobs allowed to make room"
    );
    !some
}
