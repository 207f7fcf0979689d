//! Property tests over random command sequences (proptest):
//! - invariants hold after every accepted entry (the state checks itself after each apply);
//! - a rejected entry leaves the digest unchanged;
//! - two states fed the same entries have equal digests at every step;
//! - every entry round-trips through its byte encoding, and snapshots round-trip;
//! - after every entry, every node's view (read through the node index) equals the view a scan
//!   of every job gives, and a decoded snapshot gives the same views.
//!
//! Commands are generated from abstract operations interpreted against the current state, so
//! that most are plausible (placing pending jobs on real devices, advancing actions in flight)
//! while random device picks, stale plans and bad fields exercise every rejection path.

use proptest::prelude::*;
use singularity_scheduler::*;
use std::collections::BTreeMap;

/// A random plan action: job pick, op kind, device picks (node, index), beneficiary pick.
type RandomAction = (u8, u8, Vec<(u8, u8)>, Option<u8>);

#[derive(Clone, Debug)]
enum Op {
    Register {
        node: u8,
        devices: u8,
        kind: u8,
    },
    Deregister {
        node: u8,
    },
    Health {
        node: u8,
        device: u8,
        healthy: bool,
    },
    Drain {
        node: u8,
        draining: bool,
    },
    Down {
        node: u8,
    },
    Submit {
        tier: u8,
        world: u8,
        kind: u8,
        gib: u8,
        client: Option<(u8, u8)>,
    },
    Cancel {
        job: u8,
    },
    Metadata {
        job: u8,
        expected: Option<u8>,
        key: u8,
    },
    Plan {
        actions: Vec<RandomAction>,
    },
    PlaceFree {
        job: u8,
        count: u8,
    },
    Progress {
        action: u8,
        node: u8,
        kind: u8,
        step: u8,
    },
    /// Reports the next correct stage of an in-flight action on one of its nodes.
    Advance {
        action: u8,
        node: u8,
        step: u8,
    },
    /// Migrates, resizes or preempts a running job onto free devices of its kind.
    Move {
        job: u8,
        kind: u8,
        count: u8,
        for_job: Option<u8>,
    },
    /// Reports a failure on one node of an in-flight action that is past its checkpoint (a
    /// restore that failed after a move released what it gave up).
    FailAfterCheckpoint {
        action: u8,
        node: u8,
    },
    Exit {
        job: u8,
        node: u8,
        ok: bool,
    },
    Tick {
        advance_ms: u16,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let small = 0u8..8;
    prop_oneof![
        2 => (small.clone(), 1u8..=8, 0u8..3).prop_map(|(node, devices, kind)| Op::Register { node, devices, kind }),
        1 => small.clone().prop_map(|node| Op::Deregister { node }),
        1 => (small.clone(), 0u8..8, any::<bool>()).prop_map(|(node, device, healthy)| Op::Health { node, device, healthy }),
        1 => (small.clone(), any::<bool>()).prop_map(|(node, draining)| Op::Drain { node, draining }),
        1 => (0u8..16).prop_map(|node| Op::Down { node }),
        4 => (0u8..3, 0u8..17, prop_oneof![6 => Just(0u8), 1 => 0u8..3], 0u8..90, proptest::option::of((0u8..3, 0u8..4)))
            .prop_map(|(tier, world, kind, gib, client)| Op::Submit { tier, world, kind, gib, client }),
        1 => any::<u8>().prop_map(|job| Op::Cancel { job }),
        1 => (any::<u8>(), proptest::option::of(0u8..4), 0u8..3).prop_map(|(job, expected, key)| Op::Metadata { job, expected, key }),
        3 => proptest::collection::vec(
                (any::<u8>(), 0u8..6, proptest::collection::vec((small.clone(), 0u8..9), 0..10), proptest::option::of(any::<u8>())),
                0..4,
            ).prop_map(|actions| Op::Plan { actions }),
        4 => (any::<u8>(), 1u8..9).prop_map(|(job, count)| Op::PlaceFree { job, count }),
        6 => (any::<u8>(), any::<u8>(), 0u8..5, 0u8..3).prop_map(|(action, node, kind, step)| Op::Progress { action, node, kind, step }),
        4 => (any::<u8>(), any::<u8>(), prop_oneof![3 => Just(true), 1 => Just(false)]).prop_map(|(job, node, ok)| Op::Exit { job, node, ok }),
        12 => (any::<u8>(), any::<u8>(), 0u8..4).prop_map(|(action, node, step)| Op::Advance { action, node, step }),
        4 => (any::<u8>(), 0u8..3, 1u8..9, proptest::option::of(any::<u8>())).prop_map(|(job, kind, count, for_job)| Op::Move { job, kind, count, for_job }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(action, node)| Op::FailAfterCheckpoint { action, node }),
        2 => any::<u16>().prop_map(|advance_ms| Op::Tick { advance_ms }),
    ]
}

const KINDS: [&str; 3] = ["h100", "a100", "sim"];

fn node_name(n: u8) -> NodeName {
    NodeName::new(format!("n{n}")).unwrap()
}

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        Some(items[usize::from(i) % items.len()])
    }
}

/// Free, healthy devices of `kind` on nodes that take work, in order.
fn free_devices(state: &ClusterState, kind: Option<&DeviceKind>) -> Vec<DeviceRef> {
    state
        .nodes()
        .filter(|n| n.status == NodeStatus::Up)
        .flat_map(|n| {
            n.devices
                .iter()
                .enumerate()
                .filter(move |(_, d)| {
                    d.holder.is_none() && d.health.is_healthy() && Some(&d.kind) == kind
                })
                .map(move |(i, _)| DeviceRef::new(n.id, i as u16))
        })
        .collect()
}

fn one_action_plan(job: JobId, op: ActionOp, reason: &str) -> Command {
    Command::ApplyPlan {
        plan: Plan {
            computed_at_index: 0,
            trigger: "generated".into(),
            actions: vec![PlannedAction {
                job,
                op,
                reason: reason.into(),
            }],
        },
    }
}

/// Turns an abstract operation into an entry, looking at the state for plausible targets.
fn interpret(state: &ClusterState, op: &Op, now_ms: u64) -> Entry {
    let jobs: Vec<JobId> = state.jobs().map(|j| j.id).collect();
    let nodes: Vec<NodeId> = state.nodes().map(|n| n.id).collect();
    let missing_job = JobId(9_999);
    let mut client = None;
    let command = match op.clone() {
        Op::Register {
            node,
            devices,
            kind,
        } => Command::RegisterNode {
            name: node_name(node),
            domain: LocalityDomain::new(format!("d{}", node / 2)).unwrap(),
            // The first four nodes always come back with the same inventory (agent restarts).
            devices: (0..if node < 4 { 8 } else { devices })
                .map(|_| DeviceSpec {
                    kind: DeviceKind::new(KINDS[if node < 4 { 0 } else { usize::from(kind) }])
                        .unwrap(),
                    memory_bytes: 80 << 30,
                    uuid: String::new(),
                    health: DeviceHealth::Healthy,
                })
                .collect(),
        },
        Op::Deregister { node } => Command::DeregisterNode {
            name: node_name(node),
        },
        Op::Health {
            node,
            device,
            healthy,
        } => Command::ReportNodeHealth {
            name: node_name(node),
            devices: vec![(
                u16::from(device),
                if healthy {
                    DeviceHealth::Healthy
                } else {
                    DeviceHealth::Unhealthy {
                        reason: "ecc".into(),
                    }
                },
            )],
        },
        Op::Drain { node, draining } => Command::SetNodeDraining {
            name: node_name(node),
            draining,
        },
        Op::Down { node } => Command::NodeDown {
            name: node_name(node),
            reason: "test".into(),
        },
        Op::Submit {
            tier,
            world,
            kind,
            gib,
            client: who,
        } => {
            client = who.map(|(c, seq)| ClientRequest {
                client_id: ClientId(u128::from(c)),
                sequence: u64::from(seq),
            });
            let mut spec = singularity_scheduler::testkit::job_spec(
                "job",
                [Tier::Basic, Tier::Standard, Tier::Premium][usize::from(tier)],
                u32::from(world),
                KINDS[usize::from(kind)],
            );
            spec.memory_per_rank_bytes = u64::from(gib) << 30;
            Command::SubmitJob { spec }
        }
        Op::Cancel { job } => Command::CancelJob {
            job: pick(&jobs, job).unwrap_or(missing_job),
        },
        Op::Metadata { job, expected, key } => Command::UpdateJobMetadata {
            job: pick(&jobs, job).unwrap_or(missing_job),
            expected_version: expected.map(u64::from),
            set: BTreeMap::from([(format!("k{key}"), format!("v{now_ms}"))]),
            remove: vec![],
        },
        Op::Plan { actions } => Command::ApplyPlan {
            plan: Plan {
                computed_at_index: 0,
                trigger: "random".into(),
                actions: actions
                    .into_iter()
                    .map(|(job, kind, devices, for_job)| {
                        let devices: Vec<DeviceRef> = devices
                            .into_iter()
                            .map(|(n, i)| {
                                DeviceRef::new(pick(&nodes, n).unwrap_or(NodeId(77)), u16::from(i))
                            })
                            .collect();
                        let for_job = for_job.map(|j| pick(&jobs, j).unwrap_or(missing_job));
                        let op = match kind {
                            0 => ActionOp::Place { devices },
                            1 => ActionOp::Resume { devices },
                            2 => ActionOp::Preempt { for_job },
                            3 => ActionOp::Migrate { to: devices },
                            4 => ActionOp::Resize {
                                to: devices,
                                for_job,
                            },
                            _ => ActionOp::Stop,
                        };
                        PlannedAction {
                            job: pick(&jobs, job).unwrap_or(missing_job),
                            op,
                            reason: "random".into(),
                        }
                    })
                    .collect(),
            },
        },
        Op::PlaceFree { job, count } => {
            let pending: Vec<JobId> = state
                .jobs()
                .filter(|j| j.phase == JobPhase::Pending)
                .map(|j| j.id)
                .collect();
            // Mostly pending jobs; sometimes any job, to exercise wrong-phase refusals.
            let job = if count % 4 == 0 {
                pick(&jobs, job)
            } else {
                pick(&pending, job)
            }
            .unwrap_or(missing_job);
            let kind = state.job(job).map(|j| j.spec.device_kind.clone());
            let free = free_devices(state, kind.as_ref());
            // A device count that divides the world size and respects the tier floor, if any fits.
            let fitting = state.job(job).and_then(|j| {
                let world = j.spec.world_size as usize;
                let floor = j.spec.tier.min_devices(j.spec.world_size) as usize;
                (floor..=world)
                    .rev()
                    .find(|d| world % d == 0 && *d <= free.len())
            });
            let take = if count % 3 == 0 {
                usize::from(count)
            } else {
                fitting.unwrap_or(usize::from(count))
            };
            let free: Vec<DeviceRef> = free.into_iter().take(take).collect();
            let resume = state.job(job).is_some_and(|j| j.checkpoint.is_some());
            let op = if resume {
                ActionOp::Resume { devices: free }
            } else {
                ActionOp::Place { devices: free }
            };
            one_action_plan(job, op, "fits")
        }
        Op::Advance { action, node, step } => {
            let actions: Vec<&Action> = state.actions().collect();
            match actions.get(usize::from(action) % actions.len().max(1)) {
                Some(a) => {
                    let nodes: Vec<(NodeId, Stage)> =
                        a.nodes.iter().map(|(n, s)| (*n, *s)).collect();
                    let (node, stage) = nodes[usize::from(node) % nodes.len()];
                    let checkpoints = matches!(
                        a.op,
                        ActionOp::Preempt { .. }
                            | ActionOp::Migrate { .. }
                            | ActionOp::Resize { .. }
                    );
                    let progress = match stage {
                        Stage::Committed => Progress::Started,
                        Stage::Started if checkpoints => Progress::Checkpointed {
                            checkpoint: a.checkpoint.clone().unwrap_or(CheckpointRef {
                                location: format!("/ckpt/{}", a.job.0),
                                step: u64::from(step),
                            }),
                        },
                        _ => Progress::Completed,
                    };
                    Command::ReportActionProgress {
                        action: a.id,
                        node,
                        progress,
                    }
                }
                None => Command::Tick,
            }
        }
        Op::Move {
            job,
            kind,
            count,
            for_job,
        } => {
            let running: Vec<JobId> = state
                .jobs()
                .filter(|j| j.phase == JobPhase::Running)
                .map(|j| j.id)
                .collect();
            let job = pick(&running, job).unwrap_or(missing_job);
            let for_job = for_job.map(|j| pick(&jobs, j).unwrap_or(missing_job));
            let Some(current) = state.job(job) else {
                return Entry::new(None, now_ms, Command::Tick);
            };
            let mut free = free_devices(state, Some(&current.spec.device_kind));
            let op = match kind {
                0 => {
                    free.truncate(current.assignment.len());
                    ActionOp::Migrate { to: free }
                }
                1 => {
                    let world = current.spec.world_size as usize;
                    let divisors: Vec<usize> = (1..=world)
                        .filter(|d| world % d == 0 && *d != current.assignment.len())
                        .collect();
                    let count = pick(&divisors, count).unwrap_or(1);
                    let mut to = current.assignment.clone();
                    to.truncate(count);
                    to.extend(free.into_iter().take(count.saturating_sub(to.len())));
                    ActionOp::Resize { to, for_job }
                }
                _ => ActionOp::Preempt { for_job },
            };
            one_action_plan(job, op, "generated move")
        }
        Op::Progress {
            action,
            node,
            kind,
            step,
        } => {
            let actions: Vec<&Action> = state.actions().collect();
            let (id, node) = match actions.get(usize::from(action) % actions.len().max(1)) {
                Some(a) => {
                    let nodes: Vec<NodeId> = a.nodes.keys().copied().collect();
                    (a.id, pick(&nodes, node).unwrap_or(NodeId(77)))
                }
                None => (ActionId(5_555), NodeId(77)),
            };
            let progress = match kind {
                0 => Progress::Started,
                1 => Progress::Checkpointed {
                    checkpoint: CheckpointRef {
                        location: "/ckpt".into(),
                        step: u64::from(step),
                    },
                },
                2 | 3 => Progress::Completed,
                _ => Progress::Failed {
                    reason: "boom".into(),
                },
            };
            Command::ReportActionProgress {
                action: id,
                node,
                progress,
            }
        }
        Op::FailAfterCheckpoint { action, node } => {
            let past: Vec<&Action> = state
                .actions()
                .filter(|a| a.stage() >= Stage::Checkpointed)
                .collect();
            match past.get(usize::from(action) % past.len().max(1)) {
                Some(a) => {
                    let nodes: Vec<NodeId> = a.nodes.keys().copied().collect();
                    Command::ReportActionProgress {
                        action: a.id,
                        node: nodes[usize::from(node) % nodes.len()],
                        progress: Progress::Failed {
                            reason: "restore failed".into(),
                        },
                    }
                }
                None => Command::Tick,
            }
        }
        Op::Exit { job, node, ok } => {
            let running: Vec<JobId> = state
                .jobs()
                .filter(|j| j.phase == JobPhase::Running)
                .map(|j| j.id)
                .collect();
            let job = pick(&running, job).unwrap_or(missing_job);
            let job_nodes: Vec<NodeId> = state
                .job(job)
                .map(|j| j.nodes().into_iter().collect())
                .unwrap_or_default();
            Command::ReportJobExit {
                job,
                node: pick(&job_nodes, node).unwrap_or(NodeId(77)),
                exit: if ok {
                    JobExit::Succeeded
                } else {
                    JobExit::Failed {
                        reason: "crash".into(),
                    }
                },
            }
        }
        Op::Tick { .. } => Command::Tick,
    };
    Entry::new(client, now_ms, command)
}

/// Every sequence starts on a fleet of four 8-device h100 nodes in two domains.
fn setup() -> Vec<Op> {
    (0..4)
        .map(|node| Op::Register {
            node,
            devices: 8,
            kind: 0,
        })
        .collect()
}

/// Every node's view, read through the node index, equals the view a scan of every job gives.
fn assert_views_match_full_scan(state: &ClusterState) -> Result<(), TestCaseError> {
    for node in state.nodes() {
        let indexed = state.node_view(&node.name);
        prop_assert!(indexed.is_some(), "{} has no view", node.name);
        prop_assert_eq!(indexed, state.node_view_by_full_scan(&node.name));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants_determinism_and_encodings(
        ops in proptest::collection::vec(op_strategy(), 1..160)
    ) {
        let mut state = ClusterState::new();
        state.set_verify_invariants(true);
        let mut twin = ClusterState::new();
        let mut now_ms = 1_000u64;
        for op in setup().iter().chain(&ops) {
            if let Op::Tick { advance_ms } = op {
                now_ms += u64::from(*advance_ms);
            } else {
                now_ms += 7;
            }
            let entry = interpret(&state, op, now_ms);
            let bytes = entry.encode().expect("every generated entry encodes");
            let decoded = Entry::decode(&bytes).expect("and decodes");
            prop_assert_eq!(&decoded, &entry);
            let before = state.digest();
            let outcome = state.apply(entry);
            let twin_outcome = twin.apply(decoded);
            prop_assert_eq!(&outcome, &twin_outcome);
            match &outcome {
                Outcome::Rejected(_) | Outcome::Duplicate(_) => {
                    prop_assert_eq!(state.digest(), before, "a rejected or duplicate entry changed the state");
                }
                Outcome::Accepted(_) => {}
            }
            prop_assert_eq!(state.digest(), twin.digest());
            state.check_invariants().map_err(|v| TestCaseError::fail(v.to_string()))?;
            assert_views_match_full_scan(&state)?;
        }
        let snapshot = state.encode_snapshot().unwrap();
        let restored = ClusterState::decode_snapshot(&snapshot).unwrap();
        prop_assert_eq!(restored.digest(), state.digest());
        assert_views_match_full_scan(&restored)?;
        for node in state.nodes() {
            prop_assert_eq!(restored.node_view(&node.name), state.node_view(&node.name));
        }
    }
}

/// The generator must reach deep states, or the properties above prove little: over a fixed set
/// of generated sequences, jobs are placed, run, checkpointed, moved and finished.
#[test]
fn generated_sequences_reach_every_part_of_the_lifecycle() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = proptest::collection::vec(op_strategy(), 150..160);
    let mut totals = Counters::default();
    let mut succeeded = 0;
    // Moves that released devices at their checkpoint; of those, released devices another job
    // took while the move was still in flight; and moves that failed after their checkpoint.
    let (mut released_at_checkpoint, mut reused_in_flight, mut failed_after_checkpoint) = (0, 0, 0);
    for _ in 0..120 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut state = ClusterState::new();
        let mut now_ms = 1_000;
        // Released devices per move still in flight, and whether another job took one yet.
        let mut released: BTreeMap<ActionId, (Vec<DeviceRef>, bool)> = BTreeMap::new();
        for op in setup().iter().chain(&ops) {
            now_ms += 11;
            let entry = interpret(&state, op, now_ms);
            let failing_after_checkpoint = match &entry.command {
                Command::ReportActionProgress {
                    action,
                    progress: Progress::Failed { .. },
                    ..
                } => released.contains_key(action),
                _ => false,
            };
            let outcome = state.apply(entry);
            if let Outcome::Accepted(Effect::ActionCheckpointed {
                action,
                released: devices,
                ..
            }) = &outcome
            {
                if !devices.is_empty() {
                    released_at_checkpoint += 1;
                    released.insert(*action, (devices.clone(), false));
                }
            }
            if failing_after_checkpoint && outcome.is_accepted() {
                failed_after_checkpoint += 1;
            }
            released.retain(|action, (devices, counted)| {
                let Some(in_flight) = state.action(*action) else {
                    return false;
                };
                let taken = devices.iter().any(|d| {
                    state
                        .device(*d)
                        .and_then(|d| d.holder)
                        .is_some_and(|holder| holder != in_flight.job)
                });
                if taken && !*counted {
                    reused_in_flight += 1;
                    *counted = true;
                }
                true
            });
        }
        let c = state.counters();
        totals.plans_committed += c.plans_committed;
        totals.actions_completed += c.actions_completed;
        totals.actions_failed += c.actions_failed;
        totals.preemptions += c.preemptions;
        totals.migrations += c.migrations;
        totals.resizes += c.resizes;
        succeeded += state
            .jobs()
            .filter(|j| j.phase == JobPhase::Succeeded)
            .count();
    }
    assert!(totals.plans_committed > 100, "{totals:?}");
    assert!(totals.actions_completed > 50, "{totals:?}");
    assert!(totals.actions_failed > 5, "{totals:?}");
    assert!(totals.preemptions > 10, "{totals:?}");
    assert!(totals.migrations > 10, "{totals:?}");
    assert!(totals.resizes > 10, "{totals:?}");
    assert!(succeeded > 5, "only {succeeded} jobs succeeded");
    assert!(
        released_at_checkpoint > 10,
        "{released_at_checkpoint} moves released devices at their checkpoint"
    );
    assert!(
        reused_in_flight > 0,
        "{reused_in_flight} released devices were taken while their move was in flight"
    );
    assert!(
        failed_after_checkpoint > 1,
        "{failed_after_checkpoint} moves failed after their checkpoint"
    );
}
