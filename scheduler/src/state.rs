//! `ClusterState`: the replicated state machine of the scheduler. Every replica feeds it the
//! same log entries in the same order and gets the same state, byte for byte (DESIGN.md rule 1).
//!
//! It must not read a clock, draw random numbers, or let the iteration order of a hash map
//! reach its results: all collections are ordered, and the only time is the leader's, carried
//! in each entry. The command handlers live in the `apply_*` modules; this file holds the data,
//! the read API, the dispatch with exactly-once handling, the digest and the snapshot codec.

use crate::action::Action;
use crate::codec::{decode_versioned, encode_versioned, SNAPSHOT_FORMAT_VERSION};
use crate::command::{Command, Entry, FORMAT_VERSION};
use crate::error::SchedulerError;
use crate::ids::{ActionId, ClientId, DeviceRef, JobId, NodeId};
use crate::job::Job;
use crate::ledger::SlaTotals;
use crate::limits::{MAX_CLIENT_SESSIONS, MAX_SNAPSHOT_BYTES};
use crate::names::{NodeName, TenantName};
use crate::node::{Device, Node};
use crate::node_index::NodeIndex;
use crate::outcome::{Effect, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// What the state remembers of a client for exactly-once retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    pub last_sequence: u64,
    pub last_effect: Effect,
    /// Position in the least-recently-written order (`ClusterState::session_clock`).
    pub last_write: u64,
}

/// Running counts of accepted work; part of the replicated state. Rejections are not counted
/// here (a rejected entry must leave the state unchanged); the server counts them in metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub entries_applied: u64,
    pub plans_committed: u64,
    pub actions_committed: u64,
    pub actions_completed: u64,
    pub actions_failed: u64,
    pub preemptions: u64,
    pub migrations: u64,
    pub resizes: u64,
}

/// A digest of the whole state: equal on two replicas at the same applied index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateDigest({self})")
    }
}

/// The scheduler's replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The latest leader time applied; never goes backwards.
    pub(crate) now_ms: u64,
    pub(crate) next_node_id: u32,
    pub(crate) next_job_id: u64,
    pub(crate) next_action_id: u64,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) node_names: BTreeMap<NodeName, NodeId>,
    pub(crate) jobs: BTreeMap<JobId, Job>,
    /// Active (unfinished) jobs per tenant; a tenant with none is absent.
    pub(crate) tenants: BTreeMap<TenantName, u64>,
    pub(crate) active_jobs: u64,
    /// Finished jobs still kept, oldest first.
    pub(crate) finished: VecDeque<JobId>,
    pub(crate) actions: BTreeMap<ActionId, Action>,
    pub(crate) sessions: BTreeMap<ClientId, ClientSession>,
    /// `last_write` to client, for forgetting the least recently written session first.
    pub(crate) session_lru: BTreeMap<u64, ClientId>,
    pub(crate) session_clock: u64,
    pub(crate) sla: SlaTotals,
    pub(crate) counters: Counters,
    /// Node to the jobs that matter to it: derived from `jobs` and `actions`, kept current by
    /// `reindex_job`, rebuilt on snapshot decode. Not replicated, encoded or digested.
    #[serde(skip)]
    pub(crate) node_index: NodeIndex,
    /// Check every invariant after every accepted entry (debug builds and tests). Not replicated.
    #[serde(skip, default = "default_verify")]
    pub(crate) verify_invariants: bool,
}

fn default_verify() -> bool {
    cfg!(debug_assertions)
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new()
    }
}

impl ClusterState {
    /// An empty cluster: no nodes, no jobs, time zero.
    pub fn new() -> Self {
        ClusterState {
            now_ms: 0,
            next_node_id: 1,
            next_job_id: 1,
            next_action_id: 1,
            nodes: BTreeMap::new(),
            node_names: BTreeMap::new(),
            jobs: BTreeMap::new(),
            tenants: BTreeMap::new(),
            active_jobs: 0,
            finished: VecDeque::new(),
            actions: BTreeMap::new(),
            sessions: BTreeMap::new(),
            session_lru: BTreeMap::new(),
            session_clock: 0,
            sla: SlaTotals::default(),
            counters: Counters::default(),
            node_index: NodeIndex::default(),
            verify_invariants: default_verify(),
        }
    }

    /// Turns the after-every-apply invariant check on or off (on by default in debug builds).
    /// A broken invariant after an accepted entry panics: the replica must stop, not diverge.
    pub fn set_verify_invariants(&mut self, on: bool) {
        self.verify_invariants = on;
    }

    /// Applies one log entry. Deterministic: the same state and entry give the same result.
    /// A rejected entry changes nothing; a retried client write returns its first effect.
    pub fn apply(&mut self, entry: Entry) -> Outcome {
        if entry.format_version != FORMAT_VERSION {
            return Outcome::Rejected(Rejection::UnsupportedFormatVersion {
                found: entry.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if let Some(request) = entry.client {
            if let Some(session) = self.sessions.get(&request.client_id) {
                if request.sequence == session.last_sequence {
                    return Outcome::Duplicate(session.last_effect.clone());
                }
                if request.sequence < session.last_sequence {
                    return Outcome::Rejected(Rejection::StaleSequence {
                        client: request.client_id,
                        sequence: request.sequence,
                        last: session.last_sequence,
                    });
                }
            }
        }
        let now_ms = self.now_ms.max(entry.leader_time_ms);
        let result = match entry.command {
            Command::RegisterNode {
                name,
                domain,
                devices,
            } => self.register_node(name, domain, devices, now_ms),
            Command::DeregisterNode { name } => self.deregister_node(&name),
            Command::ReportNodeHealth { name, devices } => {
                self.report_node_health(&name, devices, now_ms)
            }
            Command::SetNodeDraining { name, draining } => self.set_node_draining(&name, draining),
            Command::NodeDown { name, reason } => self.node_down(&name, &reason, now_ms),
            Command::SubmitJob { spec } => self.submit_job(spec, now_ms),
            Command::CancelJob { job } => self.cancel_job(job, now_ms),
            Command::UpdateJobMetadata {
                job,
                expected_version,
                set,
                remove,
            } => self.update_metadata(job, expected_version, set, remove),
            Command::ApplyPlan { plan } => self.apply_plan(plan, now_ms),
            Command::ReportActionProgress {
                action,
                node,
                progress,
            } => self.report_progress(action, node, progress, now_ms),
            Command::ReportJobExit { job, node, exit } => {
                self.report_job_exit(job, node, exit, now_ms)
            }
            Command::Tick => Ok(self.tick(now_ms)),
        };
        match result {
            Ok(effect) => {
                self.now_ms = now_ms;
                self.counters.entries_applied += 1;
                if let Some(request) = entry.client {
                    self.remember_session(request.client_id, request.sequence, &effect);
                }
                if self.verify_invariants {
                    if let Err(violation) = self.check_invariants() {
                        panic!("invariant broken after an accepted entry: {violation}");
                    }
                }
                Outcome::Accepted(effect)
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn remember_session(&mut self, client: ClientId, sequence: u64, effect: &Effect) {
        self.session_clock += 1;
        let last_write = self.session_clock;
        if let Some(old) = self.sessions.insert(
            client,
            ClientSession {
                last_sequence: sequence,
                last_effect: effect.clone(),
                last_write,
            },
        ) {
            self.session_lru.remove(&old.last_write);
        }
        self.session_lru.insert(last_write, client);
        while self.sessions.len() > MAX_CLIENT_SESSIONS {
            let Some((_, oldest)) = self.session_lru.pop_first() else {
                break;
            };
            self.sessions.remove(&oldest);
        }
    }

    /// A digest of everything replicated: BLAKE3 of the snapshot encoding.
    pub fn digest(&self) -> StateDigest {
        // Encoding into memory and hashing once is several times faster than streaming
        // bincode's many small writes into the hasher.
        let bytes = self.encode_snapshot().expect("the state always encodes");
        StateDigest(*blake3::hash(&bytes).as_bytes())
    }

    /// The whole state as snapshot bytes (versioned).
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, SchedulerError> {
        encode_versioned("snapshot", SNAPSHOT_FORMAT_VERSION, self)
    }

    /// Reads a snapshot, rebuilds the derived node index, brings a move written by the previous
    /// release up to today's rule (`release_given_up_of_checkpointed_moves`) and checks every
    /// invariant before handing the state out.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterState, SchedulerError> {
        let mut state: ClusterState = decode_versioned(
            "snapshot",
            SNAPSHOT_FORMAT_VERSION,
            MAX_SNAPSHOT_BYTES,
            bytes,
        )?;
        state.node_index = state.scanned_node_index();
        state.release_given_up_of_checkpointed_moves();
        state.check_invariants()?;
        Ok(state)
    }

    // ---- read API -------------------------------------------------------------------------

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn node_id(&self, name: &NodeName) -> Option<NodeId> {
        self.node_names.get(name).copied()
    }

    pub fn node_by_name(&self, name: &NodeName) -> Option<&Node> {
        self.node_id(name).and_then(|id| self.nodes.get(&id))
    }

    /// Nodes in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn device(&self, device: DeviceRef) -> Option<&Device> {
        self.nodes
            .get(&device.node)
            .and_then(|node| node.devices.get(usize::from(device.index)))
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Jobs in id order (submission order), finished ones still kept included.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub fn action(&self, id: ActionId) -> Option<&Action> {
        self.actions.get(&id)
    }

    /// Actions in flight, in commit order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.actions.values()
    }

    /// Unfinished jobs of a tenant.
    pub fn tenant_active_jobs(&self, tenant: &TenantName) -> u64 {
        self.tenants.get(tenant).copied().unwrap_or(0)
    }

    pub fn active_job_count(&self) -> u64 {
        self.active_jobs
    }

    pub fn sla(&self) -> &SlaTotals {
        &self.sla
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn session(&self, client: ClientId) -> Option<&ClientSession> {
        self.sessions.get(&client)
    }

    /// The id the next submitted job will get.
    pub fn next_job_id(&self) -> JobId {
        JobId(self.next_job_id)
    }
}
