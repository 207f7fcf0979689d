//! Scenario tests of `ClusterState::apply`: each job lifecycle path, exactly-once retries,
//! re-validation of stale plans, tier rules enforced at apply, and bad input changing nothing.

use singularity_scheduler::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::*;
use std::collections::BTreeMap;

fn fleet(nodes: usize) -> (Fleet, Vec<NodeId>) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(true);
    let ids = fleet.add_nodes("gpu", nodes, 8, "h100", H100_MEMORY_BYTES, 2);
    (fleet, ids)
}

fn rejection(outcome: Outcome) -> Rejection {
    match outcome {
        Outcome::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn plan(job: JobId, op: ActionOp) -> Command {
    Command::ApplyPlan {
        plan: Plan {
            computed_at_index: 0,
            trigger: "test".into(),
            actions: vec![PlannedAction {
                job,
                op,
                reason: "because the test says so".into(),
            }],
        },
    }
}

#[test]
fn a_job_runs_to_completion_and_its_ledger_adds_up() {
    let (mut fleet, nodes) = fleet(2);
    let job = fleet.run_job(
        job_spec("train", Tier::Standard, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Running);
    fleet.clock_ms += 10_000;
    fleet.apply(Command::Tick);
    fleet.succeed(job);
    let done = fleet.state.job(job).unwrap();
    assert_eq!(done.phase, JobPhase::Succeeded);
    assert!(done.assignment.is_empty());
    assert!(done.ledger.delivered_device_ms > 0);
    assert!(done.ledger.delivered_device_ms <= done.ledger.requested_device_ms);
    let node = fleet.state.node(nodes[0]).unwrap();
    assert!(node.devices.iter().all(|d| d.holder.is_none()));
    assert_eq!(fleet.state.active_job_count(), 0);
}

#[test]
fn preempt_checkpoints_releases_and_resume_continues_from_the_checkpoint() {
    let (mut fleet, nodes) = fleet(1);
    let job = fleet.run_job(
        job_spec("basic", Tier::Basic, 4, "h100"),
        devices_of(nodes[0], 0, 4),
    );
    let preempt = fleet.commit(job, ActionOp::Preempt { for_job: None }, "drain");
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Preempting);
    // Devices stay held until the checkpoint is written and the ranks stopped.
    assert_eq!(fleet.state.node(nodes[0]).unwrap().free_device_count(), 4);
    fleet.finish_action(preempt, 1200);
    let waiting = fleet.state.job(job).unwrap();
    assert_eq!(waiting.phase, JobPhase::Pending);
    assert_eq!(waiting.checkpoint.as_ref().unwrap().step, 1200);
    assert_eq!(waiting.preemptions, 1);
    assert_eq!(fleet.state.node(nodes[0]).unwrap().free_device_count(), 8);
    // Place is refused for a job with a checkpoint; resume is accepted.
    let refused = rejection(fleet.apply(plan(
        job,
        ActionOp::Place {
            devices: devices_of(nodes[0], 4, 4),
        },
    )));
    assert_eq!(refused.code(), "plan_rejected");
    let resume = fleet.commit(
        job,
        ActionOp::Resume {
            devices: devices_of(nodes[0], 4, 2),
        },
        "resume spliced on 2 devices",
    );
    fleet.finish_action(resume, 0);
    let running = fleet.state.job(job).unwrap();
    assert_eq!(running.phase, JobPhase::Running);
    assert_eq!(running.ranks_per_device(), 2);
    assert_eq!(running.rank_device(3), Some(DeviceRef::new(nodes[0], 5)));
}

/// Reports one stage of an action on one node; it must be accepted.
fn report(fleet: &mut Fleet, action: ActionId, node: NodeId, progress: Progress) -> Effect {
    match fleet.apply(Command::ReportActionProgress {
        action,
        node,
        progress,
    }) {
        Outcome::Accepted(effect) => effect,
        other => panic!("report refused: {other:?}"),
    }
}

fn checkpointed(step: u64) -> Progress {
    Progress::Checkpointed {
        checkpoint: CheckpointRef {
            location: "/checkpoints/cut".into(),
            step,
        },
    }
}

fn free_on(fleet: &Fleet, node: NodeId) -> usize {
    fleet.state.node(node).unwrap().free_device_count()
}

#[test]
fn migrate_and_resize_hold_both_sets_until_every_node_has_checkpointed() {
    let (mut fleet, nodes) = fleet(2);
    let job = fleet.run_job(
        job_spec("std", Tier::Standard, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    let migrate = fleet.commit(
        job,
        ActionOp::Migrate {
            to: devices_of(nodes[1], 0, 8),
        },
        "defragment",
    );
    assert_eq!(free_on(&fleet, nodes[1]), 0);
    assert_eq!(free_on(&fleet, nodes[0]), 0);
    assert_eq!(fleet.state.action(migrate).unwrap().nodes.len(), 2);
    // The old node has checkpointed, the new one not yet: both sets stay held.
    report(&mut fleet, migrate, nodes[0], Progress::Started);
    let first = report(&mut fleet, migrate, nodes[0], checkpointed(10));
    assert!(matches!(
        first,
        Effect::ProgressRecorded {
            finished: false,
            ..
        }
    ));
    assert_eq!(free_on(&fleet, nodes[0]), 0);
    report(&mut fleet, migrate, nodes[1], Progress::Started);
    // The last checkpoint report frees the old devices, before the restore completes.
    let last = report(&mut fleet, migrate, nodes[1], checkpointed(10));
    assert_eq!(
        last,
        Effect::ActionCheckpointed {
            action: migrate,
            job,
            released: devices_of(nodes[0], 0, 8),
            job_phase: JobPhase::Migrating,
        }
    );
    assert_eq!(free_on(&fleet, nodes[0]), 8);
    assert_eq!(free_on(&fleet, nodes[1]), 0);
    let moving = fleet.state.job(job).unwrap();
    assert_eq!(moving.phase, JobPhase::Migrating);
    assert_eq!(moving.assignment, devices_of(nodes[1], 0, 8));
    assert_eq!(moving.checkpoint.as_ref().unwrap().step, 10);
    // The node it left has done its part and left the action; the new node restores.
    assert_eq!(
        fleet
            .state
            .action(migrate)
            .unwrap()
            .nodes
            .keys()
            .collect::<Vec<_>>(),
        vec![&nodes[1]]
    );
    let gone = rejection(fleet.apply(Command::ReportActionProgress {
        action: migrate,
        node: nodes[0],
        progress: Progress::Completed,
    }));
    assert_eq!(gone.code(), "node_not_involved");
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Migrating);
    report(&mut fleet, migrate, nodes[1], Progress::Completed);
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Running);
    assert!(fleet.state.action(migrate).is_none());

    let shrink = fleet.commit(
        job,
        ActionOp::Resize {
            to: devices_of(nodes[1], 0, 4),
            for_job: None,
        },
        "shrink",
    );
    assert_eq!(free_on(&fleet, nodes[1]), 0);
    let effect = fleet.checkpoint_action(shrink, 20);
    assert_eq!(
        effect,
        Some(Effect::ActionCheckpointed {
            action: shrink,
            job,
            released: devices_of(nodes[1], 4, 4),
            job_phase: JobPhase::Resizing,
        })
    );
    assert_eq!(free_on(&fleet, nodes[1]), 4);
    fleet.finish_action(shrink, 20);
    let job_now = fleet.state.job(job).unwrap();
    assert_eq!(job_now.assignment, devices_of(nodes[1], 0, 4));
    assert_eq!(job_now.phase, JobPhase::Running);
    assert_eq!(free_on(&fleet, nodes[1]), 4);
    // Growing gives nothing up: its checkpoint releases nothing.
    let grow = fleet.commit(
        job,
        ActionOp::Resize {
            to: devices_of(nodes[1], 0, 8),
            for_job: None,
        },
        "grow",
    );
    assert_eq!(
        fleet.checkpoint_action(grow, 30),
        Some(Effect::ActionCheckpointed {
            action: grow,
            job,
            released: Vec::new(),
            job_phase: JobPhase::Resizing,
        })
    );
    assert_eq!(free_on(&fleet, nodes[1]), 0);
    fleet.finish_action(grow, 30);
    // The standard floor is half of 8: shrinking to 2 is refused at apply.
    let refused = rejection(fleet.apply(plan(
        job,
        ActionOp::Resize {
            to: devices_of(nodes[1], 0, 2),
            for_job: None,
        },
    )));
    let text = refused.to_string();
    assert!(text.contains("at least 4"), "{text}");
}

#[test]
fn devices_given_up_at_a_checkpoint_take_another_job_at_once() {
    let (mut fleet, nodes) = fleet(1);
    let basic = fleet.run_job(
        job_spec("basic", Tier::Basic, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    let premium = fleet.submit(job_spec("premium", Tier::Premium, 4, "h100"));
    let shrink = fleet.commit(
        basic,
        ActionOp::Resize {
            to: devices_of(nodes[0], 0, 4),
            for_job: Some(premium),
        },
        "shrunk for the premium job",
    );
    // Before the checkpoint the given-up devices are still the basic job's.
    let early = rejection(fleet.apply(plan(
        premium,
        ActionOp::Place {
            devices: devices_of(nodes[0], 4, 4),
        },
    )));
    assert!(early.to_string().contains("held by"), "{early}");
    fleet.checkpoint_action(shrink, 5);
    // The premium job starts on them while the shrink is still restoring; the kept devices
    // are still the basic job's.
    let place = fleet.commit(
        premium,
        ActionOp::Place {
            devices: devices_of(nodes[0], 4, 4),
        },
        "placed on the devices the shrink gave up",
    );
    let refused = rejection(fleet.apply(plan(
        premium,
        ActionOp::Place {
            devices: devices_of(nodes[0], 0, 1),
        },
    )));
    assert_eq!(refused.code(), "plan_rejected");
    let other = fleet.submit(job_spec("other", Tier::Basic, 1, "h100"));
    let stolen = rejection(fleet.apply(plan(
        other,
        ActionOp::Place {
            devices: devices_of(nodes[0], 0, 1),
        },
    )));
    assert!(
        stolen.to_string().contains(&format!("held by {basic}")),
        "{stolen}"
    );
    fleet.finish_action(place, 0);
    fleet.finish_action(shrink, 5);
    assert_eq!(fleet.state.job(premium).unwrap().phase, JobPhase::Running);
    let shrunk = fleet.state.job(basic).unwrap();
    assert_eq!(shrunk.phase, JobPhase::Running);
    assert_eq!(shrunk.assignment, devices_of(nodes[0], 0, 4));
    assert_eq!(free_on(&fleet, nodes[0]), 0);
}

#[test]
fn a_failure_after_the_checkpoint_releases_the_kept_devices_and_resumes_from_it() {
    let (mut fleet, nodes) = fleet(2);
    let job = fleet.run_job(
        job_spec("basic", Tier::Basic, 8, "h100"),
        [devices_of(nodes[0], 0, 4), devices_of(nodes[1], 0, 4)].concat(),
    );
    let shrink = fleet.commit(
        job,
        ActionOp::Resize {
            to: devices_of(nodes[0], 0, 4),
            for_job: None,
        },
        "shrink",
    );
    fleet.checkpoint_action(shrink, 77);
    assert_eq!(free_on(&fleet, nodes[1]), 8);
    // Another job takes a released device before the restore fails.
    let other = fleet.submit(job_spec("other", Tier::Basic, 2, "h100"));
    let place = fleet.commit(
        other,
        ActionOp::Place {
            devices: devices_of(nodes[1], 0, 2),
        },
        "placed",
    );
    let effect = report(
        &mut fleet,
        shrink,
        nodes[0],
        Progress::Failed {
            reason: "restore failed: checksum mismatch".into(),
        },
    );
    assert!(matches!(
        effect,
        Effect::ProgressRecorded {
            finished: true,
            job_phase: JobPhase::Pending,
            ..
        }
    ));
    let failed = fleet.state.job(job).unwrap();
    assert_eq!(failed.phase, JobPhase::Pending);
    assert!(failed.assignment.is_empty());
    assert!(failed.action.is_none());
    assert_eq!(failed.checkpoint.as_ref().unwrap().step, 77);
    assert_eq!(failed.restarts, 1);
    assert!(fleet.state.action(shrink).is_none());
    // The kept devices are free; the released one the other job took is still its own.
    assert_eq!(free_on(&fleet, nodes[0]), 8);
    assert_eq!(free_on(&fleet, nodes[1]), 6);
    assert_eq!(
        fleet
            .state
            .device(DeviceRef::new(nodes[1], 0))
            .unwrap()
            .holder,
        Some(other)
    );
    // Reports about the failed action are refused; the job resumes from its checkpoint.
    let late = rejection(fleet.apply(Command::ReportActionProgress {
        action: shrink,
        node: nodes[1],
        progress: Progress::Completed,
    }));
    assert_eq!(late.code(), "unknown_action");
    fleet.finish_action(place, 0);
    let resume = fleet.commit(
        job,
        ActionOp::Resume {
            devices: devices_of(nodes[0], 0, 8),
        },
        "resume",
    );
    fleet.finish_action(resume, 0);
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Running);
}

#[test]
fn a_node_a_move_has_left_at_its_checkpoint_is_free_of_it() {
    let (mut fleet, nodes) = fleet(2);
    let job = fleet.run_job(
        job_spec("std", Tier::Standard, 4, "h100"),
        devices_of(nodes[0], 0, 4),
    );
    let migrate = fleet.commit(
        job,
        ActionOp::Migrate {
            to: devices_of(nodes[1], 0, 4),
        },
        "move",
    );
    // Before the checkpoint the old node is busy with the move.
    let busy = rejection(fleet.apply(Command::DeregisterNode {
        name: NodeName::new("gpu-0").unwrap(),
    }));
    assert_eq!(
        busy,
        Rejection::NodeBusy {
            node: "gpu-0".into(),
            jobs: vec![job]
        }
    );
    fleet.checkpoint_action(migrate, 3);
    // Its view no longer lists the job: nothing runs there, nothing is left to do there.
    let view = fleet
        .state
        .node_view(&NodeName::new("gpu-0").unwrap())
        .unwrap();
    assert!(view.jobs.is_empty(), "{view:?}");
    // The new node's view: its ranks start now that every source has stopped.
    let view = fleet
        .state
        .node_view(&NodeName::new("gpu-1").unwrap())
        .unwrap();
    let here = view.jobs[0].action.as_ref().unwrap();
    assert_eq!(here.stage_here, Stage::Checkpointed);
    assert!(here.sources_stopped());
    assert_eq!(here.start_ranks.len(), 4);
    // It going down now loses nothing: the job restores on the other node.
    let outcome = fleet.apply(Command::NodeDown {
        name: NodeName::new("gpu-0").unwrap(),
        reason: "missed 5 heartbeats".into(),
    });
    match outcome {
        Outcome::Accepted(Effect::NodeMarkedDown { jobs_lost, .. }) => {
            assert!(jobs_lost.is_empty())
        }
        other => panic!("unexpected {other:?}"),
    }
    fleet.apply(Command::DeregisterNode {
        name: NodeName::new("gpu-0").unwrap(),
    });
    assert!(fleet.state.node(nodes[0]).is_none());
    fleet.finish_action(migrate, 3);
    let moved = fleet.state.job(job).unwrap();
    assert_eq!(moved.phase, JobPhase::Running);
    assert_eq!(moved.assignment, devices_of(nodes[1], 0, 4));
}

#[test]
fn a_device_is_never_given_to_two_jobs() {
    let (mut fleet, nodes) = fleet(1);
    let a = fleet.submit(job_spec("a", Tier::Basic, 4, "h100"));
    let b = fleet.submit(job_spec("b", Tier::Basic, 4, "h100"));
    let both = Command::ApplyPlan {
        plan: Plan {
            computed_at_index: 0,
            trigger: "race".into(),
            actions: vec![
                PlannedAction {
                    job: a,
                    op: ActionOp::Place {
                        devices: devices_of(nodes[0], 0, 4),
                    },
                    reason: "first".into(),
                },
                PlannedAction {
                    job: b,
                    op: ActionOp::Place {
                        devices: devices_of(nodes[0], 2, 4),
                    },
                    reason: "overlaps the first".into(),
                },
            ],
        },
    };
    match fleet.apply(both) {
        Outcome::Accepted(Effect::PlanApplied {
            committed,
            rejected,
        }) => {
            assert_eq!(committed.len(), 1);
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].index, 1);
            assert_eq!(rejected[0].reason.code(), "device_unavailable");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn tier_rules_are_enforced_at_apply() {
    let (mut fleet, nodes) = fleet(2);
    let premium = fleet.run_job(
        job_spec("p", Tier::Premium, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    let standard = fleet.run_job(
        job_spec("s", Tier::Standard, 8, "h100"),
        devices_of(nodes[1], 0, 8),
    );
    let newcomer = fleet.submit(job_spec("new", Tier::Standard, 8, "h100"));
    let premium_victim = rejection(fleet.apply(plan(
        premium,
        ActionOp::Preempt {
            for_job: Some(newcomer),
        },
    )));
    assert!(premium_victim.to_string().contains("may not be preempted"));
    let standard_victim = rejection(fleet.apply(plan(
        standard,
        ActionOp::Preempt {
            for_job: Some(newcomer),
        },
    )));
    assert!(standard_victim.to_string().contains("tier standard"));
    // Shrinking standard for standard is allowed, down to its floor.
    let digest = fleet.state.digest();
    let shrink = fleet.commit(
        standard,
        ActionOp::Resize {
            to: devices_of(nodes[1], 0, 4),
            for_job: Some(newcomer),
        },
        "shrunk for job 3",
    );
    assert_ne!(fleet.state.digest(), digest);
    assert!(fleet.state.action(shrink).is_some());
}

#[test]
fn stale_plans_are_rejected_and_change_nothing() {
    let (mut fleet, nodes) = fleet(1);
    let job = fleet.submit(job_spec("a", Tier::Basic, 8, "h100"));
    fleet.apply(Command::SetNodeDraining {
        name: NodeName::new("gpu-0").unwrap(),
        draining: true,
    });
    let before = fleet.state.digest();
    let refused = rejection(fleet.apply(plan(
        job,
        ActionOp::Place {
            devices: devices_of(nodes[0], 0, 8),
        },
    )));
    assert!(refused.to_string().contains("draining"), "{refused}");
    assert_eq!(fleet.state.digest(), before);
}

#[test]
fn node_down_releases_jobs_to_resume_elsewhere() {
    let (mut fleet, nodes) = fleet(2);
    let job = fleet.run_job(
        job_spec("a", Tier::Standard, 16, "h100"),
        [devices_of(nodes[0], 0, 8), devices_of(nodes[1], 0, 8)].concat(),
    );
    let outcome = fleet.apply(Command::NodeDown {
        name: NodeName::new("gpu-1").unwrap(),
        reason: "missed 5 heartbeats".into(),
    });
    match outcome {
        Outcome::Accepted(Effect::NodeMarkedDown { jobs_lost, .. }) => {
            assert_eq!(jobs_lost, vec![job])
        }
        other => panic!("unexpected {other:?}"),
    }
    let lost = fleet.state.job(job).unwrap();
    assert_eq!(lost.phase, JobPhase::Pending);
    assert!(lost.last_reason.contains("gpu-1"));
    assert_eq!(fleet.state.node(nodes[0]).unwrap().free_device_count(), 8);
    // Health reports from a down node are refused until it registers again.
    let refused = rejection(fleet.apply(Command::ReportNodeHealth {
        name: NodeName::new("gpu-1").unwrap(),
        devices: vec![],
    }));
    assert_eq!(refused.code(), "node_state");
}

#[test]
fn unhealthy_device_loses_its_job() {
    let (mut fleet, nodes) = fleet(1);
    let job = fleet.run_job(
        job_spec("a", Tier::Basic, 2, "h100"),
        devices_of(nodes[0], 0, 2),
    );
    fleet.apply(Command::ReportNodeHealth {
        name: NodeName::new("gpu-0").unwrap(),
        devices: vec![(
            1,
            DeviceHealth::Unhealthy {
                reason: "XID 79".into(),
            },
        )],
    });
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Pending);
    assert_eq!(fleet.state.node(nodes[0]).unwrap().free_device_count(), 7);
}

#[test]
fn rank_failures_restart_within_the_policy_then_fail() {
    let (mut fleet, nodes) = fleet(1);
    let mut spec = job_spec("flaky", Tier::Basic, 1, "h100");
    spec.max_restarts = 1;
    let job = fleet.run_job(spec, devices_of(nodes[0], 0, 1));
    let crash = |fleet: &mut Fleet| {
        fleet.apply(Command::ReportJobExit {
            job,
            node: nodes[0],
            exit: JobExit::Failed {
                reason: "exit status 1".into(),
            },
        })
    };
    assert!(crash(&mut fleet).is_accepted());
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Pending);
    let again = fleet.commit(
        job,
        ActionOp::Place {
            devices: devices_of(nodes[0], 0, 1),
        },
        "restart",
    );
    fleet.finish_action(again, 0);
    assert!(crash(&mut fleet).is_accepted());
    let failed = fleet.state.job(job).unwrap();
    assert_eq!(failed.phase, JobPhase::Failed);
    assert!(failed.last_reason.contains("gave up after 1 restart"));
}

#[test]
fn cancel_of_a_running_job_waits_for_its_stop() {
    let (mut fleet, nodes) = fleet(1);
    let job = fleet.run_job(
        job_spec("a", Tier::Basic, 2, "h100"),
        devices_of(nodes[0], 0, 2),
    );
    match fleet.apply(Command::CancelJob { job }) {
        Outcome::Accepted(Effect::JobCancelled { immediately, .. }) => assert!(!immediately),
        other => panic!("unexpected {other:?}"),
    }
    let not_allowed = rejection(fleet.apply(plan(job, ActionOp::Preempt { for_job: None })));
    assert!(not_allowed.to_string().contains("only a stop"));
    let stop = fleet.commit(job, ActionOp::Stop, "cancelled by a client");
    fleet.finish_action(stop, 0);
    assert_eq!(fleet.state.job(job).unwrap().phase, JobPhase::Cancelled);
    let pending = fleet.submit(job_spec("b", Tier::Basic, 2, "h100"));
    match fleet.apply(Command::CancelJob { job: pending }) {
        Outcome::Accepted(Effect::JobCancelled { immediately, .. }) => assert!(immediately),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn retried_client_writes_take_effect_once() {
    let (mut fleet, _) = fleet(1);
    let client = ClientId(7);
    let submit = Command::SubmitJob {
        spec: job_spec("a", Tier::Basic, 1, "h100"),
    };
    let first = fleet.apply_as(client, 1, submit.clone());
    let digest = fleet.state.digest();
    let retry = fleet.apply_as(client, 1, submit.clone());
    assert_eq!(retry, Outcome::Duplicate(first.effect().unwrap().clone()));
    assert_eq!(fleet.state.digest(), digest);
    assert_eq!(fleet.state.active_job_count(), 1);
    let next = fleet.apply_as(client, 2, submit.clone());
    assert!(next.is_accepted());
    let stale = rejection(fleet.apply_as(client, 1, submit));
    assert_eq!(stale.code(), "stale_sequence");
}

#[test]
fn metadata_compare_and_set() {
    let (mut fleet, _) = fleet(1);
    let job = fleet.submit(job_spec("a", Tier::Basic, 1, "h100"));
    let update = |expected: Option<u64>, value: &str| Command::UpdateJobMetadata {
        job,
        expected_version: expected,
        set: BTreeMap::from([("k".to_string(), value.to_string())]),
        remove: vec![],
    };
    match fleet.apply(update(Some(1), "x")) {
        Outcome::Accepted(Effect::MetadataUpdated { version, .. }) => assert_eq!(version, 2),
        other => panic!("unexpected {other:?}"),
    }
    let conflict = rejection(fleet.apply(update(Some(1), "y")));
    assert_eq!(
        conflict,
        Rejection::VersionMismatch {
            job,
            expected: 1,
            actual: 2
        }
    );
    assert!(fleet.apply(update(None, "z")).is_accepted());
    assert_eq!(fleet.state.job(job).unwrap().metadata["k"], "z");
}

#[test]
fn bad_submissions_name_the_field_and_change_nothing() {
    let (mut fleet, _) = fleet(1);
    let before = fleet.state.digest();
    type BreakSpec = Box<dyn Fn(&mut JobSpec)>;
    let cases: Vec<(&str, BreakSpec)> = vec![
        ("name", Box::new(|s| s.name = "  ".into())),
        ("world_size", Box::new(|s| s.world_size = 0)),
        (
            "memory_per_rank_bytes",
            Box::new(|s| s.memory_per_rank_bytes = 0),
        ),
        (
            "command",
            Box::new(|s| {
                s.run = RunSpec::Command {
                    argv: vec![],
                    env: BTreeMap::new(),
                }
            }),
        ),
        ("max_restarts", Box::new(|s| s.max_restarts = 1_000)),
    ];
    for (field, break_it) in cases {
        let mut spec = job_spec("ok", Tier::Basic, 1, "h100");
        break_it(&mut spec);
        match rejection(fleet.apply(Command::SubmitJob { spec })) {
            Rejection::InvalidField { field: named, .. } => assert_eq!(named, field),
            other => panic!("{field}: unexpected {other:?}"),
        }
    }
    assert_eq!(fleet.state.digest(), before);
}

#[test]
fn reregistration_after_an_agent_restart_is_idempotent() {
    let (mut fleet, nodes) = fleet(1);
    let node = fleet.state.node(nodes[0]).unwrap().clone();
    let devices: Vec<DeviceSpec> = node
        .devices
        .iter()
        .map(|d| DeviceSpec {
            kind: d.kind.clone(),
            memory_bytes: d.memory_bytes,
            uuid: d.uuid.clone(),
            health: d.health.clone(),
        })
        .collect();
    let again = fleet.apply(Command::RegisterNode {
        name: node.name.clone(),
        domain: node.domain.clone(),
        devices: devices.clone(),
    });
    assert_eq!(
        again,
        Outcome::Accepted(Effect::NodeRegistered {
            node: nodes[0],
            reregistered: true
        })
    );
    let mut changed = devices;
    changed.pop();
    let conflict = rejection(fleet.apply(Command::RegisterNode {
        name: node.name.clone(),
        domain: node.domain,
        devices: changed,
    }));
    assert_eq!(conflict.code(), "node_conflict");
}

#[test]
fn snapshots_round_trip_and_refuse_garbage() {
    let (mut fleet, nodes) = fleet(2);
    fleet.run_job(
        job_spec("a", Tier::Premium, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    let bytes = fleet.state.encode_snapshot().unwrap();
    let restored = ClusterState::decode_snapshot(&bytes).unwrap();
    assert_eq!(restored.digest(), fleet.state.digest());
    assert!(ClusterState::decode_snapshot(&bytes[..bytes.len() / 2]).is_err());
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 99;
    let err = ClusterState::decode_snapshot(&wrong_version).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
    assert!(ClusterState::decode_snapshot(&[]).is_err());
}
