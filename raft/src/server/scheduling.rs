//! The leader's scheduling loop (issue 4, item 1). On the replica that leads, it drains the
//! evaluations that applied entries produced (job submitted, action finished, node down...),
//! plans with the pure policy (`singularity_scheduler::planner`), and proposes the plan as one
//! log entry with the index it was computed on. Apply re-validates it; if some actions no longer
//! fit, the loop re-plans on the fresher state, a bounded number of times. It also declares
//! silent nodes down and proposes periodic `Tick`s (SLA accrual, growth, rebalancing).
//!
//! A plan holds at most the policy's action limit, so after a full plan that committed actions
//! the loop plans again at once (`follows_up`; at most `MAX_FOLLOW_UP_PLANS` times in a row),
//! until a plan is not full: a burst of work larger than one plan (many submissions within one
//! round, or a new leader's rebuilt queue) is placed by follow-up plans, not at the next tick.
//! A plan that is not full is not followed up: the policy paces making room, growth and
//! defragmentation per plan on purpose, and the next evaluation comes with the actions' reports.
//!
//! A replica that becomes leader rebuilds its queue from the replicated state (pending jobs,
//! jobs to stop) after its read index confirms it has applied everything committed, so it
//! carries on where the old leader stopped. The loop decides nothing itself: every decision is
//! the policy's, and every effect goes through the log. Followers run it idle. While the leader
//! hands its leadership over, its proposals wait at the `ProposalGate`.

use crate::proposal::Proposal;
use crate::server::liveness::NodeLiveness;
use crate::server::status::leads;
use crate::server::transfer::ProposalGate;
use crate::store::StateMachineStore;
use crate::types::{NodeId, Raft};
use singularity_scheduler::planner::{
    follows_up, Evaluation, Policy, PolicyConfig, SingularityPolicy, MAX_FOLLOW_UP_PLANS,
};
use singularity_scheduler::{silent_nodes, Command, Effect, Entry, EvaluationQueue, Outcome, Plan};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the loop paces itself.
#[derive(Clone, Debug)]
pub struct SchedulingConfig {
    /// Off: the replica never plans (tests of the bare log use this).
    pub enabled: bool,
    /// The longest the loop sleeps when nothing is applied.
    pub wake_interval_ms: u64,
    /// How often the leader proposes a `Tick`.
    pub tick_interval_ms: u64,
    /// A node silent this long (by leader time) is declared down; `None`: never.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Plans proposed for one evaluation before the loop waits for the next change.
    pub max_replans: u32,
    /// The policy's settings (caps per plan, queue thresholds); the defaults are the policy's.
    pub policy: PolicyConfig,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            enabled: true,
            wake_interval_ms: 250,
            tick_interval_ms: 5_000,
            heartbeat_timeout_ms: Some(30_000),
            max_replans: 8,
            policy: PolicyConfig::default(),
        }
    }
}

/// The running loop; dropping it does not stop it, `stop` does.
pub struct SchedulingLoop {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl SchedulingLoop {
    /// Starts the loop for replica `node_id`.
    pub fn spawn(
        raft: Raft,
        sm: StateMachineStore,
        node_id: NodeId,
        config: SchedulingConfig,
        gate: ProposalGate,
        liveness: NodeLiveness,
    ) -> SchedulingLoop {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(run(raft, sm, node_id, config, gate, liveness, stopped));
        SchedulingLoop { stop, handle }
    }

    /// Stops the loop and waits for it to end (a proposal in flight is abandoned).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Stops the loop without waiting.
    pub fn abort(&self) {
        let _ = self.stop.send(true);
        self.handle.abort();
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a proposal did not go through.
enum ProposeError {
    /// This replica is no longer the leader.
    NotLeader,
    Other(String),
}

/// The raft handle and the gate every proposal of the loop waits at.
struct Proposer {
    raft: Raft,
    gate: ProposalGate,
}

async fn propose(proposer: &Proposer, command: Command) -> Result<Outcome, ProposeError> {
    // A leadership transfer pauses proposals; the plan is stamped after the wait.
    proposer.gate.wait_open().await;
    let raft = &proposer.raft;
    let entry = Entry::system(wall_clock_ms(), command);
    match raft.client_write(Proposal::One(entry)).await {
        Ok(response) => response.data.into_iter().next().ok_or_else(|| {
            ProposeError::Other("the state machine returned no outcome for a plan".into())
        }),
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(_),
        )) => Err(ProposeError::NotLeader),
        Err(e) => Err(ProposeError::Other(e.to_string())),
    }
}

async fn run(
    raft: Raft,
    sm: StateMachineStore,
    node_id: NodeId,
    config: SchedulingConfig,
    gate: ProposalGate,
    liveness: NodeLiveness,
    mut stopped: watch::Receiver<bool>,
) {
    if !config.enabled {
        return;
    }
    let proposer = Proposer {
        raft: raft.clone(),
        gate,
    };
    let policy = SingularityPolicy::with_config(config.policy.clone());
    let mut metrics = raft.metrics();
    let mut queue = EvaluationQueue::new();
    let mut leading = false;
    let mut last_tick = Instant::now();
    let mut last_silence_check = Instant::now();
    let wake = Duration::from_millis(config.wake_interval_ms.max(1));
    // The evaluation to plan again after a full plan that committed actions (`follows_up`),
    // and how many such follow-up plans ran in a row.
    let mut follow_up: Option<Evaluation> = None;
    let mut follow_ups: u32 = 0;
    loop {
        if follow_up.is_none() {
            tokio::select! {
                _ = stopped.changed() => return,
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wake) => {}
            }
        } else if *stopped.borrow() {
            return;
        }
        let is_leader = leads(&metrics.borrow(), node_id);
        if !is_leader {
            leading = false;
            follow_up = None;
            continue;
        }
        if !leading {
            // Applied everything committed before planning on it: the read index does that.
            if raft.ensure_linearizable().await.is_err() {
                continue;
            }
            sm.take_evaluations();
            queue = EvaluationQueue::rebuilt_from(&sm.read().state);
            leading = true;
            last_tick = Instant::now();
            liveness.lead_from_now();
            tracing::info!(
                queued = queue.len(),
                "leading: scheduling loop rebuilt its queue"
            );
        }
        queue.extend(sm.take_evaluations());
        let mut result = housekeeping(
            &proposer,
            &sm,
            &config,
            &liveness,
            &mut last_tick,
            &mut last_silence_check,
            &mut queue,
        )
        .await;
        if result.is_ok() {
            let next = match queue.pop() {
                // The policy is level-triggered: one plan covers every queued evaluation.
                // A pending follow-up is covered too: its count starts again.
                Some(first) => {
                    follow_up = None;
                    follow_ups = 0;
                    let more = std::iter::from_fn(|| queue.pop()).count();
                    Some((first, (more > 0).then(|| format!("and {more} more"))))
                }
                None => follow_up
                    .take()
                    .map(|first| (first, Some(format!("follow-up plan {follow_ups}")))),
            };
            if let Some((evaluation, note)) = next {
                result = plan_and_propose(&proposer, &sm, &policy, &config, &evaluation, note)
                    .await
                    .map(|committed_actions| {
                        // The plan proposed last was committed whole: planned = committed.
                        let limit = policy.action_limit();
                        if !follows_up(committed_actions, committed_actions, limit) {
                            follow_ups = 0;
                        } else if follow_ups < MAX_FOLLOW_UP_PLANS {
                            follow_ups += 1;
                            follow_up = Some(evaluation);
                        } else {
                            tracing::warn!(
                                plans = follow_ups,
                                "scheduling loop: still planning after {MAX_FOLLOW_UP_PLANS} follow-up plans; waiting for the next evaluation"
                            );
                            follow_ups = 0;
                        }
                    });
            }
        }
        match result {
            Ok(()) => {}
            Err(ProposeError::NotLeader) => leading = false,
            Err(ProposeError::Other(error)) => {
                // Leadership may be in doubt; the next round re-checks it and retries.
                tracing::warn!("scheduling loop: proposal failed: {error}");
                queue.push(Evaluation::Tick);
            }
        }
    }
}

/// Declares silent nodes down and proposes the periodic tick. The silence check scans every
/// node and copies what the leader heard, and under load the loop wakes on every applied
/// change: it runs at most once per wake interval, as often as on an idle leader.
async fn housekeeping(
    proposer: &Proposer,
    sm: &StateMachineStore,
    config: &SchedulingConfig,
    liveness: &NodeLiveness,
    last_tick: &mut Instant,
    last_silence_check: &mut Instant,
    queue: &mut EvaluationQueue,
) -> Result<(), ProposeError> {
    let check_due =
        last_silence_check.elapsed() >= Duration::from_millis(config.wake_interval_ms.max(1));
    if let Some(timeout_ms) = config.heartbeat_timeout_ms.filter(|_| check_due) {
        *last_silence_check = Instant::now();
        let now_ms = wall_clock_ms();
        let heard = liveness.view(now_ms);
        // A new leader has heard no heartbeat yet: it waits out one whole timeout first.
        if heard.leading_for_ms > timeout_ms {
            let silent = silent_nodes(&sm.read().state, now_ms, timeout_ms, &heard.last_heard_ms);
            for name in silent {
                let reason = format!("no heartbeat for more than {timeout_ms} ms");
                tracing::warn!(node = %name, "declaring node down: {reason}");
                propose(proposer, Command::NodeDown { name, reason }).await?;
            }
        }
    }
    if last_tick.elapsed() >= Duration::from_millis(config.tick_interval_ms) {
        *last_tick = Instant::now();
        propose(proposer, Command::Tick).await?;
        queue.push(Evaluation::Tick);
    }
    Ok(())
}

/// Plans on the current state and proposes; re-plans while apply refuses actions, up to
/// `max_replans` times. `note` is added to the plan's trigger in brackets. Returns how many
/// actions the committed plan holds (0: nothing to do, or every attempt refused).
async fn plan_and_propose(
    proposer: &Proposer,
    sm: &StateMachineStore,
    policy: &SingularityPolicy,
    config: &SchedulingConfig,
    evaluation: &Evaluation,
    note: Option<String>,
) -> Result<usize, ProposeError> {
    for attempt in 0..config.max_replans.max(1) {
        // Plan on a copy: the read lock is held only for the clone, so apply never waits
        // for the planner.
        let (state, index) = {
            let applied = sm.read();
            (
                applied.state.clone(),
                applied.last_applied.map_or(0, |id| id.index),
            )
        };
        let mut plan: Plan = policy.compute(&state, evaluation, index);
        drop(state);
        if let Some(note) = &note {
            plan.trigger = format!("{} ({note})", plan.trigger);
        }
        if plan.actions.is_empty() {
            return Ok(0);
        }
        let actions = plan.actions.len();
        match propose(proposer, Command::ApplyPlan { plan }).await? {
            Outcome::Accepted(Effect::PlanApplied { rejected, .. }) if rejected.is_empty() => {
                tracing::debug!(actions, "plan committed");
                return Ok(actions);
            }
            Outcome::Accepted(Effect::PlanApplied { rejected, .. }) => {
                tracing::info!(
                    actions,
                    refused = rejected.len(),
                    attempt,
                    "plan partly refused; re-planning"
                );
            }
            Outcome::Rejected(rejection) => {
                tracing::info!(actions, attempt, "plan refused ({rejection}); re-planning");
            }
            other => {
                return Err(ProposeError::Other(format!(
                    "unexpected outcome of a plan: {other:?}"
                )));
            }
        }
    }
    tracing::warn!(evaluation = %evaluation, "plans kept being refused; waiting for the next change");
    Ok(0)
}
