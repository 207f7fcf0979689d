//! Builders for tests, benchmarks and the simulator: a fleet of nodes, job specs, and helpers
//! that drive jobs through their lifecycle by applying real entries to a `ClusterState`.
//!
//! Everything goes through `ClusterState::apply`; nothing here reaches into the state's
//! fields. Helpers panic when an entry they expect to be accepted is rejected, because they
//! are for tests and fixtures, never for production paths.

use crate::action::{ActionOp, Plan, PlannedAction, Progress, Stage};
use crate::command::{ClientRequest, Command, Entry, JobExit};
use crate::ids::{ActionId, ClientId, DeviceRef, JobId, NodeId};
use crate::job::{CheckpointRef, JobSpec, RunSpec};
use crate::names::{DeviceKind, LocalityDomain, NodeName, TenantName};
use crate::node::{DeviceHealth, DeviceSpec};
use crate::outcome::{Effect, Outcome};
use crate::state::ClusterState;
use crate::tier::Tier;
use std::collections::BTreeMap;

/// 80 GiB, the memory of an H100.
pub const H100_MEMORY_BYTES: u64 = 80 << 30;

/// A job spec with sensible defaults: a command job of `world_size` ranks of 1 GiB each.
pub fn job_spec(name: &str, tier: Tier, world_size: u32, kind: &str) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        tenant: TenantName::new("team-a").expect("valid"),
        tier,
        world_size,
        device_kind: DeviceKind::new(kind).expect("valid device kind"),
        memory_per_rank_bytes: 1 << 30,
        run: RunSpec::Command {
            argv: vec!["python3".into(), "train.py".into()],
            env: BTreeMap::new(),
        },
        max_restarts: 3,
        metadata: BTreeMap::new(),
    }
}

/// A state plus a leader clock that moves forward by `step_ms` per applied entry.
#[derive(Clone)]
pub struct Fleet {
    pub state: ClusterState,
    pub clock_ms: u64,
    pub step_ms: u64,
    /// Applied entries so far: stands in for the log index.
    pub applied: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl Fleet {
    pub fn new() -> Self {
        Fleet {
            state: ClusterState::new(),
            clock_ms: 1_000,
            step_ms: 1,
            applied: 0,
        }
    }

    /// Applies a leader entry at the fleet's clock, then advances the clock.
    pub fn apply(&mut self, command: Command) -> Outcome {
        let entry = Entry::system(self.clock_ms, command);
        self.apply_entry(entry)
    }

    /// Applies a client entry at the fleet's clock.
    pub fn apply_as(&mut self, client: ClientId, sequence: u64, command: Command) -> Outcome {
        let request = ClientRequest {
            client_id: client,
            sequence,
        };
        let entry = Entry::new(Some(request), self.clock_ms, command);
        self.apply_entry(entry)
    }

    pub fn apply_entry(&mut self, entry: Entry) -> Outcome {
        self.clock_ms += self.step_ms;
        self.applied += 1;
        self.state.apply(entry)
    }

    fn expect(&mut self, command: Command) -> Effect {
        let summary = command.summary();
        match self.apply(command) {
            Outcome::Accepted(effect) => effect,
            other => panic!("expected `{summary}` to be accepted, got {other:?}"),
        }
    }

    /// Registers `count` nodes of `devices_per_node` devices, `nodes_per_domain` to a domain.
    /// Node names are `{prefix}-{n}` and domains `{prefix}-d{n / nodes_per_domain}`.
    pub fn add_nodes(
        &mut self,
        prefix: &str,
        count: usize,
        devices_per_node: usize,
        kind: &str,
        memory_bytes: u64,
        nodes_per_domain: usize,
    ) -> Vec<NodeId> {
        let kind = DeviceKind::new(kind).expect("valid device kind");
        (0..count)
            .map(|n| {
                let devices = (0..devices_per_node)
                    .map(|_| DeviceSpec {
                        kind: kind.clone(),
                        memory_bytes,
                        uuid: String::new(),
                        health: DeviceHealth::Healthy,
                    })
                    .collect();
                let effect = self.expect(Command::RegisterNode {
                    name: NodeName::new(format!("{prefix}-{n}")).expect("valid node name"),
                    domain: LocalityDomain::new(format!(
                        "{prefix}-d{}",
                        n / nodes_per_domain.max(1)
                    ))
                    .expect("valid domain"),
                    devices,
                });
                match effect {
                    Effect::NodeRegistered { node, .. } => node,
                    other => panic!("unexpected effect {other:?}"),
                }
            })
            .collect()
    }

    pub fn submit(&mut self, spec: JobSpec) -> JobId {
        match self.expect(Command::SubmitJob { spec }) {
            Effect::JobSubmitted { job } => job,
            other => panic!("unexpected effect {other:?}"),
        }
    }

    /// Commits a one-action plan and returns the action's id.
    pub fn commit(&mut self, job: JobId, op: ActionOp, reason: &str) -> ActionId {
        let plan = Plan {
            computed_at_index: self.applied,
            trigger: "test".into(),
            actions: vec![PlannedAction {
                job,
                op,
                reason: reason.into(),
            }],
        };
        match self.expect(Command::ApplyPlan { plan }) {
            Effect::PlanApplied { committed, .. } => committed[0].action,
            other => panic!("unexpected effect {other:?}"),
        }
    }

    /// Reports Started (where missing), then the checkpoint at `step`, on every node of a
    /// checkpointing action, so that it is `Checkpointed` everywhere. Returns the effect of the
    /// last report (for a migrate or resize, the one that released the devices it gives up).
    pub fn checkpoint_action(&mut self, action: ActionId, step: u64) -> Option<Effect> {
        let record = self.state.action(action).expect("action in flight").clone();
        let checkpoints = matches!(
            record.op,
            ActionOp::Preempt { .. } | ActionOp::Migrate { .. } | ActionOp::Resize { .. }
        );
        let mut last = None;
        for (&node, &stage) in &record.nodes {
            if stage < Stage::Started {
                last = Some(self.expect(Command::ReportActionProgress {
                    action,
                    node,
                    progress: Progress::Started,
                }));
            }
            if checkpoints && stage < Stage::Checkpointed {
                last = Some(self.expect(Command::ReportActionProgress {
                    action,
                    node,
                    progress: Progress::Checkpointed {
                        checkpoint: CheckpointRef {
                            location: format!("/checkpoints/job-{}", record.job.0),
                            step,
                        },
                    },
                }));
            }
        }
        last
    }

    /// Reports every remaining stage of an action on every node it involves, so it completes.
    /// Checkpointing actions report a checkpoint at `step`.
    pub fn finish_action(&mut self, action: ActionId, step: u64) {
        self.checkpoint_action(action, step);
        let nodes: Vec<NodeId> = self
            .state
            .action(action)
            .expect("action in flight")
            .nodes
            .keys()
            .copied()
            .collect();
        for node in nodes {
            self.expect(Command::ReportActionProgress {
                action,
                node,
                progress: Progress::Completed,
            });
        }
    }

    /// Submits a job, places it on `devices` and completes the placement: it is running.
    pub fn run_job(&mut self, spec: JobSpec, devices: Vec<DeviceRef>) -> JobId {
        let job = self.submit(spec);
        let action = self.commit(job, ActionOp::Place { devices }, "test placement");
        self.finish_action(action, 0);
        job
    }

    /// Reports that every node of a running job saw its ranks exit successfully.
    pub fn succeed(&mut self, job: JobId) {
        let nodes = self.state.job(job).expect("job exists").nodes();
        for node in nodes {
            self.expect(Command::ReportJobExit {
                job,
                node,
                exit: JobExit::Succeeded,
            });
        }
    }
}

/// One node of 8 devices (`gpu-0`) running an 8-rank basic job on all of them, with a shrink
/// to its first 4 devices committed and not yet started: the fleet, the job, the shrink and the
/// node.
pub fn shrink_in_flight() -> (Fleet, JobId, ActionId, NodeId) {
    let mut fleet = Fleet::new();
    let nodes = fleet.add_nodes("gpu", 1, 8, "h100", H100_MEMORY_BYTES, 1);
    let job = fleet.run_job(
        job_spec("b", Tier::Basic, 8, "h100"),
        devices_of(nodes[0], 0, 8),
    );
    let shrink = fleet.commit(
        job,
        ActionOp::Resize {
            to: devices_of(nodes[0], 0, 4),
            for_job: None,
        },
        "shrink",
    );
    (fleet, job, shrink, nodes[0])
}

/// The devices `first..first + count` of one node.
pub fn devices_of(node: NodeId, first: u16, count: u16) -> Vec<DeviceRef> {
    (first..first + count)
        .map(|index| DeviceRef::new(node, index))
        .collect()
}
