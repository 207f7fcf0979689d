//! `PolicyConfig`: the knobs of Singularity's policy, each with a documented default and a
//! named upper bound on the work one plan may do (DESIGN.md rule 8); and, because one plan is
//! capped, when and how often its callers (the leader's loop, the simulator) plan again at once
//! after a full plan (`follows_up`, `MAX_FOLLOW_UP_PLANS`).
//!
//! Plain data: it must not read the environment or a file; the binary builds it from flags.

use crate::limits::MAX_ACTIONS_PER_PLAN;

/// Plans computed again at once, with the same evaluation, after a plan that was full (it held
/// as many actions as the policy allows in one plan) and committed actions, one after another
/// while each is full: a burst larger than one plan is placed by follow-up plans, not at the
/// next event. A plan that is not full did all its bounded rounds allowed it (making room,
/// growth and defragmentation are paced per plan on purpose) and is not followed up. Past this
/// many the caller waits for the next evaluation (a policy that never settles would otherwise
/// fill the log). The leader's scheduling loop (`raft/src/server/scheduling.rs`) and the
/// simulator (`sim/engine.rs`) share it and `follows_up`.
pub const MAX_FOLLOW_UP_PLANS: u32 = 1_024;

/// Whether a plan of `planned` actions, `committed` of them committed, is followed up at once
/// by a policy whose plans hold at most `action_limit` actions: only a full plan that changed
/// something may have left work that a plan at the same moment can do.
pub fn follows_up(planned: usize, committed: usize, action_limit: usize) -> bool {
    committed > 0 && planned >= action_limit
}

/// Actions one plan of the default policy may hold: well below `MAX_ACTIONS_PER_PLAN`, so a
/// plan is a small log entry and one evaluation never monopolises the leader.
pub const DEFAULT_MAX_ACTIONS_PER_PLAN: usize = 256;
/// Pending jobs one plan may make room for (in priority order); those behind only backfill.
pub const DEFAULT_MAX_PENDING_CONSIDERED: usize = 512;
/// Shrunk jobs one plan may grow back toward their world size.
pub const DEFAULT_MAX_GROWTHS_PER_PLAN: usize = 64;
/// Jobs one plan may move to open a node for a gang that does not fit otherwise.
pub const DEFAULT_MAX_DEFRAG_MIGRATIONS_PER_PLAN: usize = 8;
/// Blocked premium or standard jobs that may make room (or hold devices) in one plan.
pub const DEFAULT_MAX_ROOM_ATTEMPTS_PER_PLAN: usize = 8;
/// Queue thresholds of attained service for basic jobs as the Tiresias baseline uses them, in
/// device-milliseconds: below 1 device-hour, below 10 device-hours, above.
pub const TIRESIAS_BASIC_QUEUE_THRESHOLDS_DEVICE_MS: [u64; 2] = [3_600_000, 36_000_000];
/// The default queue thresholds of attained service within basic, in device-milliseconds:
/// below 5 device-hours, below 50 device-hours, above. A basic job in a lower queue may shrink
/// or preempt basic jobs in a higher one, so large or long basic gangs yield to fresh basic
/// jobs (2D least attained service, as Tiresias). Chosen on the ten ITP clusters
/// (docs/SIMULATION.md): Tiresias's 1 and 10 device-hours churned more (more basic jobs in
/// flight when a short premium job arrives) and cost premium attainment.
pub const DEFAULT_BASIC_QUEUE_THRESHOLDS_DEVICE_MS: [u64; 2] = [18_000_000, 180_000_000];
/// Victim candidates one pending job may examine when it needs room.
pub const DEFAULT_MAX_VICTIMS_CONSIDERED: usize = 4_096;

/// How the policy behaves. `PolicyConfig::default()` is what `plan` uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Upper bound on actions in one plan (default `DEFAULT_MAX_ACTIONS_PER_PLAN`, 256; clamped
    /// to `MAX_ACTIONS_PER_PLAN`).
    pub max_actions_per_plan: usize,
    /// Pending jobs per plan that may make room or have a node cleared, highest priority first
    /// (default 512); the jobs behind them may only start on devices still free (backfill).
    pub max_pending_considered: usize,
    /// Shrunk jobs grown back per plan (default 64).
    pub max_growths_per_plan: usize,
    /// Migrations per plan made only to defragment (default 8; 0 turns defragmentation off).
    pub max_defrag_migrations_per_plan: usize,
    /// Blocked premium or standard jobs that may make room per plan, highest priority first
    /// (default 8); the others wait for a later plan.
    pub max_room_attempts_per_plan: usize,
    /// Running jobs examined as victims for one pending job (default 4,096).
    pub max_victims_considered: usize,
    /// Least-attained-service queues within the basic tier (Tiresias-style): a basic job whose
    /// delivered device-time is below a threshold may shrink or preempt basic jobs above it.
    /// Ascending device-millisecond thresholds; default `DEFAULT_BASIC_QUEUE_THRESHOLDS_DEVICE_MS`
    /// (5 and 50 device-hours). Empty turns it off: basic jobs then only take idle devices.
    pub basic_queue_thresholds_device_ms: Vec<u64>,
    /// Let basic and standard jobs start on fewer devices than their world size (down to the
    /// tier floor, by splicing) when the whole gang does not fit (default true).
    pub start_shrunk: bool,
    /// Grow shrunk jobs back toward their world size on idle devices (default true).
    pub grow_shrunk: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_actions_per_plan: DEFAULT_MAX_ACTIONS_PER_PLAN,
            max_pending_considered: DEFAULT_MAX_PENDING_CONSIDERED,
            max_growths_per_plan: DEFAULT_MAX_GROWTHS_PER_PLAN,
            max_defrag_migrations_per_plan: DEFAULT_MAX_DEFRAG_MIGRATIONS_PER_PLAN,
            max_room_attempts_per_plan: DEFAULT_MAX_ROOM_ATTEMPTS_PER_PLAN,
            max_victims_considered: DEFAULT_MAX_VICTIMS_CONSIDERED,
            basic_queue_thresholds_device_ms: DEFAULT_BASIC_QUEUE_THRESHOLDS_DEVICE_MS.to_vec(),
            start_shrunk: true,
            grow_shrunk: true,
        }
    }
}

impl PolicyConfig {
    /// The action bound actually used: never above the apply limit, never zero.
    pub fn action_limit(&self) -> usize {
        self.max_actions_per_plan.clamp(1, MAX_ACTIONS_PER_PLAN)
    }
}
