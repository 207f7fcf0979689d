//! Scenario tests of Singularity's policy with exact expected plans: each builds a small fleet
//! through `testkit::Fleet` (real entries through `ClusterState::apply`), asks `planner::plan`
//! for a plan, checks it action by action, and commits it to prove apply accepts all of it.

use singularity_scheduler::action::{ActionOp, Plan, PlannedAction};
use singularity_scheduler::command::Command;
use singularity_scheduler::ids::{ActionId, DeviceRef, JobId, NodeId};
use singularity_scheduler::names::NodeName;
use singularity_scheduler::outcome::{Effect, Outcome};
use singularity_scheduler::planner::{
    explain, plan, Evaluation, PolicyConfig, SingularityPolicy, DEFAULT_MAX_PENDING_CONSIDERED,
    TIRESIAS_BASIC_QUEUE_THRESHOLDS_DEVICE_MS,
};
use singularity_scheduler::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::{evaluations_for, JobPhase, NodeStatus, Tier};

/// A fleet of `nodes` nodes of 8 h100 devices, 8 nodes to a domain (`n-d0`), invariants on.
fn fleet(nodes: usize) -> (Fleet, Vec<NodeId>) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(true);
    let ids = fleet.add_nodes("n", nodes, 8, "h100", H100_MEMORY_BYTES, 8);
    (fleet, ids)
}

/// Runs a job of `world` ranks on devices `first..first + world` of `node` (through apply).
fn running(
    fleet: &mut Fleet,
    name: &str,
    tier: Tier,
    world: u16,
    node: NodeId,
    first: u16,
) -> JobId {
    fleet.run_job(
        job_spec(name, tier, world.into(), "h100"),
        devices_of(node, first, world),
    )
}

/// Devices 4 to 7 of the first two nodes.
fn upper_halves(nodes: &[NodeId]) -> Vec<DeviceRef> {
    let mut devices = devices_of(nodes[0], 4, 4);
    devices.extend(devices_of(nodes[1], 4, 4));
    devices
}

fn plan_now(fleet: &Fleet, evaluation: Evaluation) -> Plan {
    plan(&fleet.state, &evaluation, fleet.clock_ms, fleet.applied)
}

/// Commits a plan and checks that apply took every action.
fn commit(fleet: &mut Fleet, plan: Plan) -> Vec<ActionId> {
    match fleet.apply(Command::ApplyPlan { plan }) {
        Outcome::Accepted(Effect::PlanApplied {
            committed,
            rejected,
        }) => {
            assert!(rejected.is_empty(), "apply rejected {rejected:?}");
            committed.into_iter().map(|c| c.action).collect()
        }
        other => panic!("plan not accepted: {other:?}"),
    }
}

/// Checks the plan action by action (reasons included), then commits it.
fn expect_and_commit(fleet: &mut Fleet, plan: Plan, expected: Vec<PlannedAction>) -> Vec<ActionId> {
    assert_eq!(plan.actions, expected);
    commit(fleet, plan)
}

fn ops(plan: &Plan) -> Vec<(JobId, ActionOp)> {
    plan.actions.iter().map(|a| (a.job, a.op.clone())).collect()
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.actions.iter().map(|a| a.reason.as_str()).collect()
}

fn action(job: JobId, op: ActionOp, reason: &str) -> PlannedAction {
    PlannedAction {
        job,
        op,
        reason: reason.to_string(),
    }
}

#[test]
fn pending_jobs_start_in_tier_order_on_one_node_each() {
    let (mut fleet, nodes) = fleet(2);
    let basic = fleet.submit(job_spec("b", Tier::Basic, 8, "h100"));
    let premium = fleet.submit(job_spec("p", Tier::Premium, 4, "h100"));
    let standard = fleet.submit(job_spec("s", Tier::Standard, 2, "h100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(plan.trigger, "tick");
    expect_and_commit(
        &mut fleet,
        plan,
        vec![
            action(
                premium,
                ActionOp::Place {
                    devices: devices_of(nodes[0], 0, 4),
                },
                "placed: 4 ranks on 1 node in domain n-d0",
            ),
            action(
                standard,
                ActionOp::Place {
                    devices: devices_of(nodes[0], 4, 2),
                },
                "placed: 2 ranks on 1 node in domain n-d0",
            ),
            action(
                basic,
                ActionOp::Place {
                    devices: devices_of(nodes[1], 0, 8),
                },
                "placed: 8 ranks on 1 node in domain n-d0",
            ),
        ],
    );
}

#[test]
fn premium_arrival_shrinks_basic_jobs_before_it_preempts_any() {
    let (mut fleet, nodes) = fleet(1);
    let older = running(&mut fleet, "b1", Tier::Basic, 4, nodes[0], 0);
    let newer = running(&mut fleet, "b2", Tier::Basic, 4, nodes[0], 4);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 4, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    // Same tier, same slack, same work delivered so far: the lower id goes first and shrinks
    // to 1 device (3 free); the other shrinks to 2 for the last device. Nobody is preempted.
    assert_eq!(
        ops(&plan),
        vec![
            (
                older,
                ActionOp::Resize {
                    to: devices_of(nodes[0], 0, 1),
                    for_job: Some(premium)
                }
            ),
            (
                newer,
                ActionOp::Resize {
                    to: devices_of(nodes[0], 4, 2),
                    for_job: Some(premium)
                }
            ),
        ]
    );
    assert!(reasons(&plan)[0].starts_with(&format!(
        "shrunk from 4 to 1 devices (4 ranks per device) for {premium} (premium)"
    )));
    let actions = commit(&mut fleet, plan);
    // Nothing is free until the shrinks complete: the premium job waits, and holds nothing.
    assert!(plan_now(&fleet, Evaluation::Tick).actions.is_empty());
    fleet.finish_action(actions[0], 10);
    // One shrink done, 3 devices free: 2 are held for the premium job (with the 2 on their
    // way it has 4); the spare one is idle capacity and goes to a shrunk job.
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            older,
            ActionOp::Resize {
                to: vec![DeviceRef::new(nodes[0], 0), DeviceRef::new(nodes[0], 3)],
                for_job: None
            }
        )]
    );
    fleet.finish_action(actions[1], 10);
    let plan = plan_now(
        &fleet,
        Evaluation::ActionFinished {
            action: actions[1],
            job: newer,
        },
    );
    // The premium job starts; the spare device goes to the shrunk job (the growth planned
    // above was never committed).
    expect_and_commit(
        &mut fleet,
        plan,
        vec![
            action(
                premium,
                ActionOp::Place {
                    devices: vec![
                        DeviceRef::new(nodes[0], 1),
                        DeviceRef::new(nodes[0], 2),
                        DeviceRef::new(nodes[0], 3),
                        DeviceRef::new(nodes[0], 6),
                    ],
                },
                "placed: 4 ranks on 1 node in domain n-d0",
            ),
            action(
                older,
                ActionOp::Resize {
                    to: vec![DeviceRef::new(nodes[0], 0), DeviceRef::new(nodes[0], 7)],
                    for_job: None,
                },
                "grown from 1 to 2 devices toward its world size of 4: idle devices go to \
                 shrunk jobs",
            ),
        ],
    );
}

#[test]
fn premium_preempts_only_when_shrinking_is_not_enough() {
    let (mut fleet, nodes) = fleet(1);
    let basic = running(&mut fleet, "b", Tier::Basic, 8, nodes[0], 0);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    assert_eq!(
        ops(&plan),
        vec![(
            basic,
            ActionOp::Preempt {
                for_job: Some(premium)
            }
        )]
    );
    assert!(reasons(&plan)[0].starts_with(&format!("preempted for {premium} (tier premium)")));
    let actions = commit(&mut fleet, plan);
    fleet.finish_action(actions[0], 7);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            premium,
            ActionOp::Place {
                devices: devices_of(nodes[0], 0, 8)
            }
        )]
    );
    commit(&mut fleet, plan);
    assert_eq!(
        fleet.state.job(basic).map(|j| j.phase),
        Some(JobPhase::Pending)
    );
}

#[test]
fn standard_is_never_shrunk_below_its_floor() {
    let (mut fleet, nodes) = fleet(1);
    let standard = running(&mut fleet, "s", Tier::Standard, 8, nodes[0], 0);
    // Two devices needed: standard halves (its floor is 4), not a quarter.
    let small = fleet.submit(job_spec("p2", Tier::Premium, 2, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(small));
    assert_eq!(
        ops(&plan),
        vec![(
            standard,
            ActionOp::Resize {
                to: devices_of(nodes[0], 0, 4),
                for_job: Some(small)
            }
        )]
    );
    let actions = commit(&mut fleet, plan);
    fleet.finish_action(actions[0], 3);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            small,
            ActionOp::Place {
                devices: devices_of(nodes[0], 4, 2)
            }
        )]
    );
    commit(&mut fleet, plan);
    // Now a premium job of 4 on the 2 left: shrinking the standard job below 4 is not allowed,
    // so it is preempted.
    let big = fleet.submit(job_spec("p4", Tier::Premium, 4, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(big));
    assert_eq!(
        ops(&plan),
        vec![(standard, ActionOp::Preempt { for_job: Some(big) })]
    );
    commit(&mut fleet, plan);
}

#[test]
fn standard_preempts_only_basic_and_basic_never_touches_standard() {
    let (mut fleet, nodes) = fleet(1);
    let standard = running(&mut fleet, "s", Tier::Standard, 8, nodes[0], 0);
    let other = fleet.submit(job_spec("s2", Tier::Standard, 8, "h100"));
    let basic = fleet.submit(job_spec("b", Tier::Basic, 1, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(other));
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(
        fleet.state.job(standard).map(|j| j.phase),
        Some(JobPhase::Running)
    );
    assert_eq!(
        fleet.state.job(basic).map(|j| j.phase),
        Some(JobPhase::Pending)
    );
}

#[test]
fn gangs_are_all_or_nothing() {
    let (mut fleet, nodes) = fleet(2);
    running(&mut fleet, "x", Tier::Premium, 4, nodes[0], 0);
    running(&mut fleet, "y", Tier::Premium, 4, nodes[1], 0);
    // 8 devices are free (4 + 4) and nothing may be preempted for anyone: a premium gang of
    // 12 gets no partial placement, and waits without holding anything.
    let premium = fleet.submit(job_spec("p", Tier::Premium, 12, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    assert!(plan.actions.is_empty(), "{plan:?}");
    // A basic gang of 8 behind it gets all 8 ranks, across both nodes.
    let wide = fleet.submit(job_spec("w", Tier::Basic, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(wide));
    let devices = upper_halves(&nodes);
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            wide,
            ActionOp::Place { devices },
            "placed: 8 ranks on 2 nodes in domain n-d0",
        )],
    );
}

#[test]
fn drain_moves_every_job_off_the_node() {
    let (mut fleet, nodes) = fleet(2);
    let a = running(&mut fleet, "a", Tier::Standard, 4, nodes[0], 0);
    let b = running(&mut fleet, "b", Tier::Basic, 2, nodes[0], 4);
    fleet.apply(Command::SetNodeDraining {
        name: NodeName::new("n-0").expect("valid"),
        draining: true,
    });
    let plan = plan_now(&fleet, Evaluation::NodeDraining(nodes[0]));
    let actions = expect_and_commit(
        &mut fleet,
        plan,
        vec![
            action(
                a,
                ActionOp::Migrate {
                    to: devices_of(nodes[1], 0, 4),
                },
                "migrated off draining node n-0 to 1 node in domain n-d0",
            ),
            action(
                b,
                ActionOp::Migrate {
                    to: devices_of(nodes[1], 4, 2),
                },
                "migrated off draining node n-0 to 1 node in domain n-d0",
            ),
        ],
    );
    for action in actions {
        fleet.finish_action(action, 5);
    }
    let node = fleet.state.node(nodes[0]).expect("node");
    assert_eq!(node.status, NodeStatus::Draining);
    assert!(node.devices.iter().all(|d| d.holder.is_none()));
}

#[test]
fn drain_preempts_what_cannot_move_and_nothing_targets_a_draining_node() {
    let (mut fleet, nodes) = fleet(2);
    let a = running(&mut fleet, "a", Tier::Premium, 8, nodes[0], 0);
    running(&mut fleet, "b", Tier::Premium, 8, nodes[1], 0);
    fleet.apply(Command::SetNodeDraining {
        name: NodeName::new("n-0").expect("valid"),
        draining: true,
    });
    let plan = plan_now(&fleet, Evaluation::NodeDraining(nodes[0]));
    assert_eq!(ops(&plan), vec![(a, ActionOp::Preempt { for_job: None })]);
    let actions = commit(&mut fleet, plan);
    fleet.finish_action(actions[0], 9);
    // Eight devices are free on the draining node, and the preempted job waits: it must not be
    // resumed there, nor anything else placed there.
    fleet.submit(job_spec("c", Tier::Basic, 2, "h100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    for action in &plan.actions {
        for device in action.op.target_devices().unwrap_or(&[]) {
            assert_ne!(device.node, nodes[0], "{action} targets the draining node");
        }
    }
    assert!(plan.actions.is_empty());
}

#[test]
fn a_lost_job_resumes_elsewhere_from_its_checkpoint() {
    let (mut fleet, nodes) = fleet(2);
    let job = running(&mut fleet, "j", Tier::Standard, 4, nodes[0], 0);
    // A migration within the node leaves a checkpoint at step 50.
    let moved = fleet.commit(
        job,
        ActionOp::Migrate {
            to: devices_of(nodes[0], 4, 4),
        },
        "test",
    );
    fleet.finish_action(moved, 50);
    fleet.apply(Command::NodeDown {
        name: NodeName::new("n-0").expect("valid"),
        reason: "missed heartbeats".into(),
    });
    assert_eq!(
        fleet.state.job(job).map(|j| j.phase),
        Some(JobPhase::Pending)
    );
    let plan = plan_now(&fleet, Evaluation::NodeDown(nodes[0]));
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            job,
            ActionOp::Resume {
                devices: devices_of(nodes[1], 0, 4),
            },
            "resumed from its checkpoint at step 50: 4 ranks on 1 node in domain n-d0",
        )],
    );
}

#[test]
fn shrunk_jobs_grow_back_when_capacity_frees() {
    let (mut fleet, nodes) = fleet(1);
    let small = running(&mut fleet, "x", Tier::Basic, 4, nodes[0], 0);
    let wide = fleet.submit(job_spec("w", Tier::Standard, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(wide));
    let actions = expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            wide,
            ActionOp::Place {
                devices: devices_of(nodes[0], 4, 4),
            },
            "placed: 8 ranks spliced onto 4 devices (2 per device) on 1 node in domain n-d0; \
             the whole gang did not fit, it grows back when devices free up",
        )],
    );
    fleet.finish_action(actions[0], 0);
    fleet.succeed(small);
    let plan = plan_now(&fleet, Evaluation::Tick);
    let mut to = devices_of(nodes[0], 4, 4);
    to.extend(devices_of(nodes[0], 0, 4));
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            wide,
            ActionOp::Resize { to, for_job: None },
            "grown from 4 to 8 devices toward its world size of 8: idle devices go to shrunk jobs",
        )],
    );
}

#[test]
fn cancelled_running_jobs_are_stopped_and_nothing_else() {
    let (mut fleet, nodes) = fleet(1);
    let job = running(&mut fleet, "x", Tier::Basic, 2, nodes[0], 0);
    fleet.apply(Command::CancelJob { job });
    let plan = plan_now(&fleet, Evaluation::JobCancelled(job));
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            job,
            ActionOp::Stop,
            "stopped: cancelled by a client",
        )],
    );
}

#[test]
fn a_pending_job_is_explained() {
    let mut fleet = Fleet::new();
    fleet.add_nodes("a", 3, 8, "a100", H100_MEMORY_BYTES, 8);
    let nodes = fleet.add_nodes("h", 2, 8, "h100", H100_MEMORY_BYTES, 8);
    running(&mut fleet, "x", Tier::Premium, 6, nodes[0], 0);
    running(&mut fleet, "y", Tier::Premium, 8, nodes[1], 0);
    let job = fleet.submit(job_spec("p", Tier::Premium, 8, "h100"));
    fleet.clock_ms += 10_000;
    fleet.apply(Command::Tick);
    let explanation = explain(&fleet.state, job);
    assert_eq!(
        explanation.rejections,
        vec![
            ("device kind a100 \u{2260} h100".to_string(), 3),
            ("no free devices, needs 8".to_string(), 1),
            ("only 2 free devices, needs 8".to_string(), 1),
        ]
    );
    assert_eq!(explanation.attainment_ppm, 0);
    let text = explanation.to_string();
    assert!(
        text.contains("3 nodes: device kind a100 \u{2260} h100"),
        "{text}"
    );
    assert!(
        text.contains("1 node: only 2 free devices, needs 8"),
        "{text}"
    );
    assert!(
        text.contains("SLA attainment 0% (target 95% for premium)"),
        "{text}"
    );
    assert!(explain(&fleet.state, JobId(999))
        .to_string()
        .contains("not known"));
}

#[test]
fn a_node_is_defragmented_for_a_standard_gang_that_belongs_on_one_node() {
    let (mut fleet, nodes) = fleet(2);
    let a = running(&mut fleet, "a", Tier::Basic, 4, nodes[0], 0);
    running(&mut fleet, "b", Tier::Basic, 4, nodes[1], 0);
    // 8 devices are free, 4 on each node: the standard gang of 8 belongs on one node, so a
    // small job moves to clear one instead of the gang being spread.
    let standard = fleet.submit(job_spec("s", Tier::Standard, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(standard));
    let actions = expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            a,
            ActionOp::Migrate {
                to: devices_of(nodes[1], 4, 4),
            },
            &format!(
                "migrated to 1 node in domain n-d0 to defragment: node n-0 is being cleared for \
                 {standard} (standard), whose 8-device gang needs one node"
            ),
        )],
    );
    // While the migration is in flight, the gang waits for that node and nothing else moves.
    let submitted = fleet.submit(job_spec("c", Tier::Basic, 2, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(submitted));
    assert!(plan.actions.is_empty(), "{plan:?}");
    fleet.finish_action(actions[0], 4);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan)[0],
        (
            standard,
            ActionOp::Place {
                devices: devices_of(nodes[0], 0, 8)
            }
        )
    );
    commit(&mut fleet, plan);
}

#[test]
fn a_premium_gang_spreads_at_once_rather_than_wait_for_a_node() {
    let (mut fleet, nodes) = fleet(2);
    running(&mut fleet, "a", Tier::Basic, 4, nodes[0], 0);
    running(&mut fleet, "b", Tier::Basic, 4, nodes[1], 0);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    let devices = upper_halves(&nodes);
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            premium,
            ActionOp::Place { devices },
            "placed: 8 ranks on 2 nodes in domain n-d0",
        )],
    );
}

#[test]
fn with_las_queues_a_basic_job_with_much_service_yields_to_a_new_basic_job() {
    let (mut fleet, nodes) = fleet(1);
    let old = running(&mut fleet, "old", Tier::Basic, 8, nodes[0], 0);
    // Two hours on 8 devices: 16 device-hours, above the default 5 device-hour threshold
    // (and above Tiresias's 10).
    fleet.clock_ms += 2 * 3_600_000;
    fleet.apply(Command::Tick);
    let new = fleet.submit(job_spec("new", Tier::Basic, 8, "h100"));
    // With the queues turned off, basic jobs take only idle devices.
    let off = SingularityPolicy::with_config(PolicyConfig {
        basic_queue_thresholds_device_ms: Vec::new(),
        ..PolicyConfig::default()
    });
    assert!(off
        .compute(&fleet.state, &Evaluation::JobSubmitted(new), fleet.applied)
        .actions
        .is_empty());
    // The default policy and Tiresias's thresholds both make the old job yield.
    let tiresias = SingularityPolicy::with_config(PolicyConfig {
        basic_queue_thresholds_device_ms: TIRESIAS_BASIC_QUEUE_THRESHOLDS_DEVICE_MS.to_vec(),
        ..PolicyConfig::default()
    });
    assert_eq!(
        tiresias
            .compute(&fleet.state, &Evaluation::Tick, fleet.applied)
            .actions,
        plan_now(&fleet, Evaluation::Tick).actions
    );
    let las = SingularityPolicy::new();
    let plan_las = |fleet: &Fleet| las.compute(&fleet.state, &Evaluation::Tick, fleet.applied);
    let plan = plan_las(&fleet);
    let actions = expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            old,
            ActionOp::Preempt { for_job: Some(new) },
            &format!(
                "preempted for {new} (tier basic): shrinking was not enough; least attained \
                 service first within tier basic: it has had 16.0 device-hours, {new} has had 0.0"
            ),
        )],
    );
    fleet.finish_action(actions[0], 11);
    let plan = plan_las(&fleet);
    assert_eq!(
        ops(&plan),
        vec![(
            new,
            ActionOp::Place {
                devices: devices_of(nodes[0], 0, 8)
            }
        )]
    );
    commit(&mut fleet, plan);
    // The old job waits; having had more service, it cannot take the devices back.
    assert!(plan_las(&fleet).actions.is_empty());
}

#[test]
fn victims_with_the_most_attained_service_yield_first() {
    let (mut fleet, nodes) = fleet(1);
    // Two hours on the same node: `small` (lower id) has had 4 device-hours, `large` 8.
    let small = running(&mut fleet, "b-small", Tier::Basic, 2, nodes[0], 0);
    let large = running(&mut fleet, "b-large", Tier::Basic, 4, nodes[0], 2);
    fleet.clock_ms += 2 * 3_600_000;
    fleet.apply(Command::Tick);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 4, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    // Two devices are free; the job with the most service shrinks alone from 4 to 2 (the
    // lower id, with less service, keeps running as it was).
    assert_eq!(
        ops(&plan),
        vec![(
            large,
            ActionOp::Resize {
                to: devices_of(nodes[0], 2, 2),
                for_job: Some(premium)
            }
        )]
    );
    assert!(reasons(&plan)[0].ends_with("then most attained service"));
    commit(&mut fleet, plan);
    assert_eq!(fleet.state.job(small).map(|j| j.assignment.len()), Some(2));
}

#[test]
fn a_large_premium_gang_is_preempted_for_a_smaller_premium_job_only() {
    let (mut fleet, nodes) = fleet(1);
    let big = running(&mut fleet, "p-big", Tier::Premium, 8, nodes[0], 0);
    fleet.clock_ms += 3_600_000;
    fleet.apply(Command::Tick);
    // A premium gang of the same size waits: premium never yields to its own size or larger.
    let equal = fleet.submit(job_spec("p-equal", Tier::Premium, 8, "h100"));
    assert!(plan_now(&fleet, Evaluation::JobSubmitted(equal))
        .actions
        .is_empty());
    assert!(matches!(
        fleet.apply(Command::CancelJob { job: equal }),
        Outcome::Accepted(_)
    ));
    let small = fleet.submit(job_spec("p-small", Tier::Premium, 1, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(small));
    assert_eq!(
        ops(&plan),
        vec![(
            big,
            ActionOp::Preempt {
                for_job: Some(small)
            }
        )]
    );
    assert!(reasons(&plan)[0].starts_with(&format!(
        "preempted for {small} (tier premium): shrinking was not enough; a premium gang of 8 \
         ranks yields to a smaller premium gang (1 ranks)"
    )));
    let actions = commit(&mut fleet, plan);
    fleet.finish_action(actions[0], 5);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            small,
            ActionOp::Place {
                devices: devices_of(nodes[0], 0, 1)
            }
        )]
    );
    commit(&mut fleet, plan);
    // The big gang waits for the whole node; it cannot take it back from a smaller job.
    assert!(plan_now(&fleet, Evaluation::Tick).actions.is_empty());
}

/// An idle node of kind `sim`, `unplaceable` pending basic jobs of a kind no node has submitted
/// first, then one basic `sim` job: is the `sim` job placed? (Found by the Jepsen scheduler
/// workload running beside the set workload, whose jobs of kind `none` never start.)
fn runnable_job_is_placed_behind(unplaceable: usize) -> bool {
    let mut fleet = Fleet::new();
    fleet.add_nodes("node", 1, 4, "sim", 16 << 30, 1);
    for i in 0..unplaceable {
        fleet.submit(job_spec(&format!("none-{i}"), Tier::Basic, 1, "none"));
    }
    // Too big for the fleet, too: 8 ranks of a premium job (never spliced) on 4 devices.
    fleet.submit(job_spec("too-big", Tier::Premium, 8, "sim"));
    let job = fleet.submit(job_spec("runnable", Tier::Basic, 1, "sim"));
    let plan = plan(&fleet.state, &Evaluation::Tick, 0, fleet.applied);
    plan.actions
        .iter()
        .any(|a| a.job == job && matches!(a.op, ActionOp::Place { .. }))
}

#[test]
fn jobs_no_node_can_hold_do_not_starve_the_jobs_behind_them() {
    assert!(runnable_job_is_placed_behind(10));
    assert!(
        runnable_job_is_placed_behind(DEFAULT_MAX_PENDING_CONSIDERED + 100),
        "a full window of unplaceable jobs kept the idle node from the runnable one"
    );
}

/// Checkpoints an action on every node and returns the evaluations the leader would queue for
/// the last report (`evaluations_for`, as the live loop and the simulator do).
fn checkpoint(fleet: &mut Fleet, action: ActionId, step: u64) -> Vec<Evaluation> {
    let effect = fleet
        .checkpoint_action(action, step)
        .expect("the action checkpoints");
    evaluations_for(&Outcome::Accepted(effect))
}

#[test]
fn a_shrink_hands_its_given_up_devices_to_the_premium_job_at_its_checkpoint() {
    let (mut fleet, nodes) = fleet(1);
    let basic = running(&mut fleet, "b", Tier::Basic, 8, nodes[0], 0);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 4, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    assert_eq!(
        ops(&plan),
        vec![(
            basic,
            ActionOp::Resize {
                to: devices_of(nodes[0], 0, 4),
                for_job: Some(premium)
            }
        )]
    );
    let shrink = commit(&mut fleet, plan)[0];
    // Before the checkpoint nothing is free: the premium job waits.
    assert!(plan_now(&fleet, Evaluation::Tick).actions.is_empty());
    // The checkpoint frees the four devices given up and calls for an evaluation at once.
    let evaluations = checkpoint(&mut fleet, shrink, 12);
    assert_eq!(
        evaluations,
        vec![Evaluation::ActionCheckpointed {
            action: shrink,
            job: basic
        }]
    );
    let plan = plan_now(&fleet, evaluations[0].clone());
    assert_eq!(
        plan.trigger,
        format!("{shrink} of {basic} checkpointed and released devices")
    );
    // The premium job starts on them while the shrunk job is still restoring on the others.
    let place = expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            premium,
            ActionOp::Place {
                devices: devices_of(nodes[0], 4, 4),
            },
            "placed: 4 ranks on 1 node in domain n-d0",
        )],
    )[0];
    assert_eq!(
        fleet.state.job(basic).map(|j| j.phase),
        Some(JobPhase::Resizing)
    );
    fleet.finish_action(place, 0);
    fleet.finish_action(shrink, 12);
    assert_eq!(
        fleet.state.job(basic).map(|j| j.assignment.clone()),
        Some(devices_of(nodes[0], 0, 4))
    );
    assert_eq!(
        fleet.state.job(premium).map(|j| j.phase),
        Some(JobPhase::Running)
    );
}

#[test]
fn a_migration_hands_the_node_it_clears_to_the_gang_at_its_checkpoint() {
    let (mut fleet, nodes) = fleet(2);
    let a = running(&mut fleet, "a", Tier::Basic, 4, nodes[0], 0);
    running(&mut fleet, "b", Tier::Basic, 4, nodes[1], 0);
    let standard = fleet.submit(job_spec("s", Tier::Standard, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(standard));
    assert_eq!(
        ops(&plan),
        vec![(
            a,
            ActionOp::Migrate {
                to: devices_of(nodes[1], 4, 4)
            }
        )]
    );
    let migrate = commit(&mut fleet, plan)[0];
    let evaluations = checkpoint(&mut fleet, migrate, 4);
    assert_eq!(
        evaluations,
        vec![Evaluation::ActionCheckpointed {
            action: migrate,
            job: a
        }]
    );
    // Node n-0 is clear once the old ranks are checkpointed: the gang starts there while the
    // migrated job restores on n-1.
    let plan = plan_now(&fleet, evaluations[0].clone());
    let place = expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            standard,
            ActionOp::Place {
                devices: devices_of(nodes[0], 0, 8),
            },
            "placed: 8 ranks on 1 node in domain n-d0",
        )],
    )[0];
    assert_eq!(
        fleet.state.job(a).map(|j| j.phase),
        Some(JobPhase::Migrating)
    );
    fleet.finish_action(migrate, 4);
    fleet.finish_action(place, 0);
    assert_eq!(
        fleet.state.job(a).map(|j| (j.phase, j.assignment.clone())),
        Some((JobPhase::Running, devices_of(nodes[1], 4, 4)))
    );
}

#[test]
fn a_preemption_still_frees_its_devices_when_it_completes() {
    let (mut fleet, nodes) = fleet(1);
    let basic = running(&mut fleet, "b", Tier::Basic, 8, nodes[0], 0);
    let premium = fleet.submit(job_spec("p", Tier::Premium, 8, "h100"));
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    let preempt = commit(&mut fleet, plan)[0];
    // A preemption's checkpoint is reported, but its devices go with its completion, so the
    // checkpoint calls for no evaluation and nothing starts yet.
    assert!(checkpoint(&mut fleet, preempt, 3).is_empty());
    assert_eq!(
        fleet.state.job(basic).map(|j| j.phase),
        Some(JobPhase::Preempting)
    );
    assert!(plan_now(&fleet, Evaluation::Tick).actions.is_empty());
}

/// A premium gang that made room across two nodes, and whose room is now in flight on one node
/// that cannot hold it (a premium rank runs there), keeps the devices already freed on the
/// other node: the standard jobs it preempted do not resume there (to be preempted again for
/// it, over and over, as replays of cluster05 did 28,000 times), and it starts spread once the
/// rest of its room is free.
#[test]
fn a_premium_gang_keeps_the_room_it_made_across_nodes_while_the_rest_is_in_flight() {
    let (mut fleet, nodes) = fleet(2);
    let mut spread = devices_of(nodes[0], 0, 6);
    spread.extend(devices_of(nodes[1], 0, 2));
    fleet.run_job(job_spec("p0", Tier::Premium, 8, "h100"), spread);
    let mut standard = vec![
        running(&mut fleet, "s0", Tier::Standard, 1, nodes[0], 6),
        running(&mut fleet, "s1", Tier::Standard, 1, nodes[0], 7),
    ];
    for i in 0..6u16 {
        standard.push(running(
            &mut fleet,
            &format!("s{}", i + 2),
            Tier::Standard,
            1,
            nodes[1],
            2 + i,
        ));
    }
    let premium = fleet.submit(job_spec("p", Tier::Premium, 8, "h100"));
    // No node can be cleared (each runs premium ranks): room is made across both nodes.
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(premium));
    assert_eq!(
        ops(&plan),
        standard
            .iter()
            .map(|&job| (
                job,
                ActionOp::Preempt {
                    for_job: Some(premium)
                }
            ))
            .collect::<Vec<_>>()
    );
    let preempts = commit(&mut fleet, plan);
    // The two preemptions on the first node complete: their devices are free, the other six
    // are still in flight, all on the second node, which cannot hold an 8-rank gang.
    fleet.finish_action(preempts[0], 1);
    fleet.finish_action(preempts[1], 1);
    assert_eq!(
        fleet.state.job(standard[0]).map(|j| j.phase),
        Some(JobPhase::Pending)
    );
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        plan.actions,
        vec![],
        "the freed devices stay held for {premium}"
    );
    for &preempt in &preempts[2..] {
        fleet.finish_action(preempt, 1);
    }
    let mut devices = devices_of(nodes[1], 2, 6);
    devices.extend(devices_of(nodes[0], 6, 2));
    let plan = plan_now(&fleet, Evaluation::Tick);
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            premium,
            ActionOp::Place { devices },
            "placed: 8 ranks on 2 nodes in domain n-d0",
        )],
    );
}

/// The same for a standard gang, which waits for locality: once its room in flight is on one
/// node that cannot hold it, it holds the devices already freed elsewhere and makes no new
/// room until the round completes, then starts spread (at its floor) on what it made.
#[test]
fn a_standard_gang_waits_for_the_room_in_flight_and_keeps_what_is_already_free() {
    let (mut fleet, nodes) = fleet(2);
    let mut spread = devices_of(nodes[0], 0, 6);
    spread.extend(devices_of(nodes[1], 0, 2));
    fleet.run_job(job_spec("p0", Tier::Premium, 8, "h100"), spread);
    running(&mut fleet, "p1", Tier::Premium, 3, nodes[1], 2);
    let basic = [
        running(&mut fleet, "b0", Tier::Basic, 1, nodes[0], 6),
        running(&mut fleet, "b1", Tier::Basic, 1, nodes[0], 7),
        running(&mut fleet, "b2", Tier::Basic, 1, nodes[1], 5),
        running(&mut fleet, "b3", Tier::Basic, 1, nodes[1], 6),
        running(&mut fleet, "b4", Tier::Basic, 1, nodes[1], 7),
    ];
    let standard = fleet.submit(job_spec("s", Tier::Standard, 8, "h100"));
    // Its floor is 4 devices; no node can be cleared for it: room is made across nodes.
    let plan = plan_now(&fleet, Evaluation::JobSubmitted(standard));
    assert_eq!(
        ops(&plan),
        basic[..4]
            .iter()
            .map(|&job| (
                job,
                ActionOp::Preempt {
                    for_job: Some(standard)
                }
            ))
            .collect::<Vec<_>>()
    );
    let preempts = commit(&mut fleet, plan);
    fleet.finish_action(preempts[0], 1);
    fleet.finish_action(preempts[1], 1);
    // Two in flight on the second node, which holds 3 at most for it (b4 is the third): it
    // waits for them, preempts nothing more, and b0 and b1 do not resume.
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        plan.actions,
        vec![],
        "the freed devices stay held for {standard}"
    );
    fleet.finish_action(preempts[2], 1);
    fleet.finish_action(preempts[3], 1);
    let mut devices = devices_of(nodes[0], 6, 2);
    devices.extend(devices_of(nodes[1], 5, 2));
    let plan = plan_now(&fleet, Evaluation::Tick);
    expect_and_commit(
        &mut fleet,
        plan,
        vec![action(
            standard,
            ActionOp::Place { devices },
            "placed: 8 ranks spliced onto 4 devices (2 per device) on 2 nodes in domain n-d0; \
             the whole gang did not fit, it grows back when devices free up",
        )],
    );
}

/// One node of 8 devices, 7 of them held by a running premium job; `blocked` premium 8-device
/// gangs wait (no lower tier to preempt), then a basic 1-device job. True when the plan starts
/// the basic job on the free device.
fn small_job_backfills_behind(blocked: usize) -> bool {
    let (mut fleet, nodes) = fleet(1);
    running(&mut fleet, "running", Tier::Premium, 7, nodes[0], 0);
    for i in 0..blocked {
        fleet.submit(job_spec(&format!("gang-{i}"), Tier::Premium, 8, "h100"));
    }
    let small = fleet.submit(job_spec("small", Tier::Basic, 1, "h100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    let placed = plan.actions.iter().any(|a| {
        a.job == small
            && a.op
                == ActionOp::Place {
                    devices: devices_of(nodes[0], 7, 1),
                }
    });
    commit(&mut fleet, plan);
    placed
}

#[test]
fn a_job_past_the_window_starts_on_devices_the_window_left_free() {
    assert!(small_job_backfills_behind(10));
    assert!(
        small_job_backfills_behind(DEFAULT_MAX_PENDING_CONSIDERED + 100),
        "a full window of blocked gangs kept the free device from the job behind them"
    );
}

#[test]
fn a_job_past_the_window_does_not_take_devices_a_job_in_it_holds() {
    let (mut fleet, nodes) = fleet(1);
    let basic = running(&mut fleet, "basic", Tier::Basic, 4, nodes[0], 0);
    let gangs: Vec<JobId> = (0..DEFAULT_MAX_PENDING_CONSIDERED + 100)
        .map(|i| fleet.submit(job_spec(&format!("gang-{i}"), Tier::Premium, 8, "h100")))
        .collect();
    let small = fleet.submit(job_spec("small", Tier::Basic, 1, "h100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    // The first gang preempts the basic job and holds the four free devices meanwhile; the
    // small job behind the window gets none of them.
    assert_eq!(
        ops(&plan),
        vec![(
            basic,
            ActionOp::Preempt {
                for_job: Some(gangs[0])
            }
        )]
    );
    assert!(plan.actions.iter().all(|a| a.job != small));
    commit(&mut fleet, plan);
}

/// One a100 node running an 8-rank a100 job of `a100_tier` and one h100 node running a basic
/// 8-rank h100 job (the h100 node first, with the lower id, when `h100_first`), then a premium
/// 8-rank a100 job waiting. Returns the fleet, the a100 job and the waiting one.
fn mixed_kinds(a100_tier: Tier, h100_first: bool) -> (Fleet, JobId, JobId) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(true);
    let mut add =
        |name: &str, kind: &str| fleet.add_nodes(name, 1, 8, kind, H100_MEMORY_BYTES, 8)[0];
    let (h100, a100) = if h100_first {
        let h100 = add("h", "h100");
        (h100, add("a", "a100"))
    } else {
        let a100 = add("a", "a100");
        (add("h", "h100"), a100)
    };
    fleet.run_job(
        job_spec("h-run", Tier::Basic, 8, "h100"),
        devices_of(h100, 0, 8),
    );
    let running = fleet.run_job(
        job_spec("a-run", a100_tier, 8, "a100"),
        devices_of(a100, 0, 8),
    );
    let waiting = fleet.submit(job_spec("a-wait", Tier::Premium, 8, "a100"));
    (fleet, running, waiting)
}

#[test]
fn a_blocked_job_makes_no_room_on_nodes_of_another_kind() {
    let (fleet, _, _) = mixed_kinds(Tier::Premium, false);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(ops(&plan), vec![], "{:?}", plan.actions);
}

#[test]
fn a_blocked_gang_makes_room_on_a_node_of_its_kind_not_on_a_lower_node_of_another() {
    let (mut fleet, basic, premium) = mixed_kinds(Tier::Basic, true);
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            basic,
            ActionOp::Preempt {
                for_job: Some(premium)
            }
        )]
    );
    commit(&mut fleet, plan);
}

/// A crowded kind beside an open one: two a100 nodes, each wholly held by a premium 8-rank a100
/// job; three h100 nodes: one wholly held by a basic 8-rank job, one with a basic 4-rank job on
/// devices 0-3 (4-7 free), one with a basic 7-rank job on devices 0-6 (7 free). Returns the
/// fleet, the nodes (a100 first, then h100) and the running jobs in that order.
fn crowded_beside_open() -> (Fleet, Vec<NodeId>, Vec<JobId>) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(true);
    let mut nodes = fleet.add_nodes("a", 2, 8, "a100", H100_MEMORY_BYTES, 8);
    nodes.extend(fleet.add_nodes("h", 3, 8, "h100", H100_MEMORY_BYTES, 8));
    let mut jobs = Vec::new();
    for &node in &nodes[..2] {
        let spec = job_spec("a-run", Tier::Premium, 8, "a100");
        jobs.push(fleet.run_job(spec, devices_of(node, 0, 8)));
    }
    for (node, world) in [(nodes[2], 8), (nodes[3], 4), (nodes[4], 7)] {
        jobs.push(running(&mut fleet, "h-run", Tier::Basic, world, node, 0));
    }
    (fleet, nodes, jobs)
}

/// The crowded case of the planner benchmark, small: blocked premium a100 gangs that nothing
/// may yield to get no action (their attempts to make room end at once, `planner/reclaim.rs`),
/// while, in the same plan and after them, a premium h100 gang still makes room on the h100
/// node that needs the fewest devices reclaimed (preempting its basic job: shrinking it to its
/// floor would not free enough) and holds the free devices there, and a basic h100 job starts
/// on the one device left free elsewhere.
#[test]
fn blocked_gangs_of_a_crowded_kind_change_nothing_and_other_kinds_still_make_room() {
    let (mut fleet, nodes, jobs) = crowded_beside_open();
    // Five, so that the h100 gang behind them still has one of the plan's room attempts.
    let blocked: Vec<JobId> = (0..5)
        .map(|i| fleet.submit(job_spec(&format!("a-wait-{i}"), Tier::Premium, 8, "a100")))
        .collect();
    let gang = fleet.submit(job_spec("h-gang", Tier::Premium, 8, "h100"));
    let small = fleet.submit(job_spec("h-small", Tier::Basic, 1, "h100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert!(
        plan.actions.iter().all(|a| !blocked.contains(&a.job)),
        "{:?}",
        plan.actions
    );
    assert_eq!(
        ops(&plan),
        vec![
            (
                jobs[3],
                ActionOp::Preempt {
                    for_job: Some(gang)
                }
            ),
            (
                small,
                ActionOp::Place {
                    devices: devices_of(nodes[4], 7, 1)
                }
            ),
        ]
    );
    commit(&mut fleet, plan);
}

/// A larger premium gang yields to a smaller premium job only, so the blocked jobs nobody can
/// make room for depend on the blocked job's size: after an 8-rank a100 gang found no victim,
/// a 4-rank one of the same kind and tier still preempts an 8-rank premium a100 job.
#[test]
fn a_smaller_premium_job_makes_room_where_a_larger_one_of_its_kind_found_none() {
    let (mut fleet, _, jobs) = crowded_beside_open();
    let larger = fleet.submit(job_spec("a-wait-8", Tier::Premium, 8, "a100"));
    let smaller = fleet.submit(job_spec("a-wait-4", Tier::Premium, 4, "a100"));
    let plan = plan_now(&fleet, Evaluation::Tick);
    assert_eq!(
        ops(&plan),
        vec![(
            jobs[0],
            ActionOp::Preempt {
                for_job: Some(smaller)
            }
        )]
    );
    assert!(plan.actions.iter().all(|a| a.job != larger));
    commit(&mut fleet, plan);
}
