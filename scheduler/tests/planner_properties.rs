//! Property tests of Singularity's policy: random fleets, jobs and events (submissions,
//! completions and failures of actions, successes, cancellations, drains, nodes lost, devices
//! turning unhealthy, time passing) run through `planner::plan` and `ClusterState::apply` with
//! every invariant checked after every entry. Every plan the policy proposes on a fresh state
//! must be accepted whole (no rejected action), must never target a device on a node that is not
//! up (not even one the job keeps), must give each job at most one action, must make room only
//! for a pending job of a strictly higher tier (or, within basic, one that has had less
//! service), and must be the same when computed twice.

use proptest::prelude::*;
use singularity_scheduler::action::{ActionOp, Plan, Progress};
use singularity_scheduler::command::Command;
use singularity_scheduler::names::NodeName;
use singularity_scheduler::node::{DeviceHealth, NodeStatus};
use singularity_scheduler::outcome::{Effect, Outcome};
use singularity_scheduler::planner::{Evaluation, PolicyConfig, SingularityPolicy};
use singularity_scheduler::testkit::{job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::Tier;
use std::collections::BTreeSet;

const KINDS: [&str; 2] = ["h100", "a100"];

#[derive(Clone, Debug)]
enum Event {
    Submit { tier: Tier, world: u32, kind: usize },
    FinishAction { pick: usize, step: u64 },
    FailAction { pick: usize },
    Succeed { pick: usize },
    Cancel { pick: usize },
    Drain { node: usize, on: bool },
    NodeDown { node: usize },
    Unhealthy { node: usize, device: u16 },
    Wait { ms: u64 },
}

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Premium), Just(Tier::Standard), Just(Tier::Basic)]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        5 => (tier(), prop_oneof![1u32..=4, 1u32..=16], 0usize..4).prop_map(|(tier, world, kind)| {
            Event::Submit { tier, world, kind: usize::from(kind == 3) }
        }),
        6 => (any::<usize>(), 1u64..1000).prop_map(|(pick, step)| Event::FinishAction { pick, step }),
        1 => any::<usize>().prop_map(|pick| Event::FailAction { pick }),
        2 => any::<usize>().prop_map(|pick| Event::Succeed { pick }),
        1 => any::<usize>().prop_map(|pick| Event::Cancel { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(node, on)| Event::Drain { node, on }),
        1 => any::<usize>().prop_map(|node| Event::NodeDown { node }),
        1 => (any::<usize>(), 0u16..8).prop_map(|(node, device)| Event::Unhealthy { node, device }),
        2 => prop_oneof![1u64..100_000, 3_600_000u64..40_000_000].prop_map(|ms| Event::Wait { ms }),
    ]
}

fn node_name(fleet: &Fleet, pick: usize) -> Option<NodeName> {
    let nodes: Vec<_> = fleet.state.nodes().collect();
    (!nodes.is_empty()).then(|| nodes[pick % nodes.len()].name.clone())
}

/// Applies one random event; entries the state refuses (a stale pick) are simply ignored.
fn perform(fleet: &mut Fleet, event: &Event) {
    match event {
        Event::Submit { tier, world, kind } => {
            fleet.submit(job_spec("job", *tier, *world, KINDS[*kind]));
        }
        Event::FinishAction { pick, step } => {
            let actions: Vec<_> = fleet.state.actions().map(|a| a.id).collect();
            if !actions.is_empty() {
                fleet.finish_action(actions[pick % actions.len()], *step);
            }
        }
        Event::FailAction { pick } => {
            let actions: Vec<_> = fleet.state.actions().cloned().collect();
            if !actions.is_empty() {
                let action = &actions[pick % actions.len()];
                if let Some(&node) = action.nodes.keys().next() {
                    fleet.apply(Command::ReportActionProgress {
                        action: action.id,
                        node,
                        progress: Progress::Failed {
                            reason: "worker crashed".into(),
                        },
                    });
                }
            }
        }
        Event::Succeed { pick } => {
            let running: Vec<_> = fleet
                .state
                .jobs()
                .filter(|j| j.phase == singularity_scheduler::JobPhase::Running)
                .map(|j| j.id)
                .collect();
            if !running.is_empty() {
                fleet.succeed(running[pick % running.len()]);
            }
        }
        Event::Cancel { pick } => {
            let active: Vec<_> = fleet
                .state
                .jobs()
                .filter(|j| !j.phase.is_terminal() && !j.cancel_requested)
                .map(|j| j.id)
                .collect();
            if !active.is_empty() {
                fleet.apply(Command::CancelJob {
                    job: active[pick % active.len()],
                });
            }
        }
        Event::Drain { node, on } => {
            if let Some(name) = node_name(fleet, *node) {
                fleet.apply(Command::SetNodeDraining {
                    name,
                    draining: *on,
                });
            }
        }
        Event::NodeDown { node } => {
            if let Some(name) = node_name(fleet, *node) {
                fleet.apply(Command::NodeDown {
                    name,
                    reason: "missed heartbeats".into(),
                });
            }
        }
        Event::Unhealthy { node, device } => {
            if let Some(name) = node_name(fleet, *node) {
                fleet.apply(Command::ReportNodeHealth {
                    name,
                    devices: vec![(
                        *device,
                        DeviceHealth::Unhealthy {
                            reason: "xid 79".into(),
                        },
                    )],
                });
            }
        }
        Event::Wait { ms } => {
            fleet.clock_ms += ms;
            fleet.apply(Command::Tick);
        }
    }
}

/// Checks a plan against the state it was computed on, then applies it: all of it must commit.
fn check_and_commit(fleet: &mut Fleet, plan: Plan) -> Result<(), TestCaseError> {
    let mut jobs = BTreeSet::new();
    for action in &plan.actions {
        prop_assert!(jobs.insert(action.job), "two actions for {}", action.job);
        prop_assert!(!action.reason.trim().is_empty());
        let job = fleet.state.job(action.job).expect("planned job exists");
        for device in action.op.target_devices().unwrap_or(&[]) {
            let status = fleet.state.node(device.node).map(|n| n.status);
            prop_assert_eq!(
                status,
                Some(NodeStatus::Up),
                "{} targets a node not up",
                action
            );
        }
        if job.cancel_requested {
            prop_assert_eq!(&action.op, &ActionOp::Stop);
        }
        // Room is made only for a pending job of a higher tier, a basic job with less service,
        // or (by preempting, never shrinking) a premium job smaller than the premium victim.
        if let ActionOp::Preempt { for_job: Some(b) }
        | ActionOp::Resize {
            for_job: Some(b), ..
        } = &action.op
        {
            let beneficiary = fleet.state.job(*b).expect("beneficiary exists");
            let by_tier = beneficiary.spec.tier > job.spec.tier;
            let by_service = beneficiary.spec.tier == Tier::Basic
                && job.spec.tier == Tier::Basic
                && job.ledger.delivered_device_ms > beneficiary.ledger.delivered_device_ms;
            let by_size = beneficiary.spec.tier == Tier::Premium
                && job.spec.tier == Tier::Premium
                && job.spec.world_size > beneficiary.spec.world_size
                && matches!(action.op, ActionOp::Preempt { .. });
            prop_assert!(by_tier || by_service || by_size, "{}", action);
            prop_assert_eq!(beneficiary.phase, singularity_scheduler::JobPhase::Pending);
        }
    }
    if plan.actions.is_empty() {
        return Ok(());
    }
    let shown = format!("{plan:?}");
    match fleet.apply(Command::ApplyPlan { plan }) {
        Outcome::Accepted(Effect::PlanApplied { rejected, .. }) => {
            prop_assert!(rejected.is_empty(), "rejected {:?} of {}", rejected, shown);
        }
        other => prop_assert!(false, "plan refused: {:?} for {}", other, shown),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_on_a_fresh_state_is_accepted_whole(
        nodes in 1usize..6,
        devices_per_node in prop_oneof![Just(8usize), 1usize..8],
        mixed_kinds in any::<bool>(),
        las_queues in any::<bool>(),
        events in prop::collection::vec(event(), 1..40),
    ) {
        // The default policy (least-attained-service queues within basic), or with those
        // queues turned off.
        let mut config = PolicyConfig::default();
        if !las_queues {
            config.basic_queue_thresholds_device_ms = Vec::new();
        }
        let policy = SingularityPolicy::with_config(config);
        let mut fleet = Fleet::new();
        fleet.state.set_verify_invariants(true);
        fleet.add_nodes("n", nodes, devices_per_node, "h100", H100_MEMORY_BYTES, 2);
        if mixed_kinds {
            fleet.add_nodes("m", 1, devices_per_node, "a100", H100_MEMORY_BYTES / 2, 2);
        }
        for event in &events {
            perform(&mut fleet, event);
            let evaluation = Evaluation::Tick;
            let first = policy.compute(&fleet.state, &evaluation, fleet.applied);
            let again = policy.compute(&fleet.state, &evaluation, fleet.applied);
            prop_assert_eq!(&first, &again, "the planner is not deterministic");
            check_and_commit(&mut fleet, first)?;
        }
        // Let everything settle: finish actions and re-plan until quiet (bounded).
        for _ in 0..50 {
            let actions: Vec<_> = fleet.state.actions().map(|a| a.id).collect();
            for action in &actions {
                fleet.finish_action(*action, 1);
            }
            let next = policy.compute(&fleet.state, &Evaluation::Tick, fleet.applied);
            let quiet = next.actions.is_empty() && actions.is_empty();
            check_and_commit(&mut fleet, next)?;
            if quiet {
                break;
            }
        }
        fleet.state.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
