//! The `Control` gRPC service: client writes (validated before anything is proposed, stamped
//! with the leader's clock, exactly once by client id and sequence), linearizable or stale
//! reads, node agents' heartbeats (kept in the leader's memory, not logged), Raft status,
//! membership changes, leadership transfer, snapshot download and log reading. A follower names
//! the leader in the `x-singularity-leader` header. It must not change state except through
//! `Raft::client_write`, and must not propose what fails validation (DESIGN.md rule 9).

use crate::limits::{MAX_CLIENT_ENTRY_BYTES, MAX_LOG_ENTRIES_PER_READ, SNAPSHOT_CHUNK_BYTES};
use crate::oplog;
use crate::server::group_commit::{GroupCommit, WriteFailure};
use crate::server::liveness::NodeLiveness;
use crate::server::status::{leads, RaftStatus};
use crate::server::transfer::{self, ProposalGate};
use crate::store::snapshot::SnapshotEnvelope;
use crate::store::{LogStore, StateMachineStore};
use crate::types::{Metrics, NodeId, Raft};
use openraft::error::{ForwardToLeader, RaftError};
use openraft::BasicNode;
use singularity_proto::v1::control_server::Control;
use singularity_proto::v1::*;
use singularity_proto::{query, LEADER_HEADER, NODE_STATUS_UNKNOWN};
use singularity_scheduler::job::validate_metadata_entry;
use singularity_scheduler::{Command, Entry, JobId, NodeName};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Counters of the client API, for metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    pub proposals: AtomicU64,
    pub proposals_failed: AtomicU64,
    /// Writes refused because this replica is not the leader (the client retries there).
    pub writes_redirected: AtomicU64,
    pub proposal_nanos_total: AtomicU64,
    pub invalid_requests: AtomicU64,
    pub reads: AtomicU64,
    /// Node heartbeats heard while leading.
    pub node_heartbeats: AtomicU64,
}

/// The client and operator API of one replica.
#[derive(Clone)]
pub struct ControlService {
    raft: Raft,
    sm: StateMachineStore,
    log: LogStore,
    stats: Arc<ApiStats>,
    /// Batches concurrent client writes into one log entry.
    group: GroupCommit,
    /// Closed while leadership is handed over: writes and linearizable reads wait at it.
    gate: ProposalGate,
    /// Node heartbeats heard while leading, for the scheduling loop's silence check.
    liveness: NodeLiveness,
}

impl ControlService {
    /// The API of `raft`; starts the write path's group commit on the current runtime.
    pub fn new(
        raft: Raft,
        sm: StateMachineStore,
        log: LogStore,
        stats: Arc<ApiStats>,
        gate: ProposalGate,
        liveness: NodeLiveness,
    ) -> Self {
        ControlService {
            group: GroupCommit::start(raft.clone(), gate.clone()),
            raft,
            sm,
            log,
            stats,
            gate,
            liveness,
        }
    }

    fn invalid(&self, message: String) -> Status {
        self.stats.invalid_requests.fetch_add(1, Ordering::Relaxed);
        Status::invalid_argument(message)
    }

    /// Checks a client write before it is proposed; the error names the problem.
    fn validate(&self, bytes: &[u8]) -> Result<Entry, Status> {
        if bytes.len() > MAX_CLIENT_ENTRY_BYTES {
            return Err(self.invalid(format!(
                "entry is {} bytes; the limit is {MAX_CLIENT_ENTRY_BYTES}",
                bytes.len()
            )));
        }
        let entry = Entry::decode(bytes).map_err(|e| self.invalid(format!("entry: {e}")))?;
        let Some(client) = entry.client else {
            return Err(
                self.invalid("a client write needs a client id and a sequence number".into())
            );
        };
        if client.sequence == 0 {
            return Err(self.invalid("sequence numbers start at 1".into()));
        }
        match &entry.command {
            Command::SubmitJob { spec } => spec
                .validate()
                .map_err(|e| self.invalid(format!("job spec: {e}")))?,
            Command::UpdateJobMetadata { set, remove, .. } => {
                for (key, value) in set {
                    validate_metadata_entry(key, value).map_err(|e| self.invalid(e.to_string()))?;
                }
                for key in remove {
                    validate_metadata_entry(key, "").map_err(|e| self.invalid(e.to_string()))?;
                }
            }
            Command::ApplyPlan { .. } | Command::Tick => {
                return Err(self.invalid(format!(
                    "{} entries are proposed by the leader only",
                    entry.command.kind()
                )))
            }
            _ => {}
        }
        Ok(entry)
    }

    fn leader_status(&self, forward: &ForwardToLeader<NodeId, BasicNode>) -> Status {
        not_leader(forward.leader_id, forward.leader_node.as_ref())
    }

    /// Waits for the read index (DESIGN.md rule 6) unless a stale read is asked for.
    async fn linearize(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        // A read index renews the followers' leader lease, which a transfer lets run out.
        self.gate.wait_open().await;
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.leader_status(&f))
            }
            Err(e) => Err(Status::unavailable(format!(
                "cannot confirm leadership: {e}"
            ))),
        }
    }

    fn status_json(&self) -> Result<String, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let committed = self.log.committed().ok().flatten().map(|l| l.index);
        let digest = self.sm.read().state.digest().to_string();
        let status = RaftStatus::from_metrics(&metrics, committed, digest);
        serde_json::to_string(&status).map_err(|e| Status::internal(e.to_string()))
    }
}

/// UNAVAILABLE naming the leader, with its address in the leader header when known.
pub fn not_leader(leader: Option<NodeId>, node: Option<&BasicNode>) -> Status {
    let message = match (leader, node) {
        (Some(id), Some(node)) => {
            format!("not the leader; the leader is node {id} at {}", node.addr)
        }
        (Some(id), None) => format!("not the leader; the leader is node {id}"),
        _ => "not the leader, and no leader is known yet; retry".to_string(),
    };
    let mut status = Status::unavailable(message);
    if let Some(node) = node {
        if let Ok(value) = node.addr.parse() {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
    }
    status
}

/// `Ok` when the replica these metrics describe leads; otherwise UNAVAILABLE naming the leader
/// it knows (`not_leader`).
pub fn ensure_leads(metrics: &Metrics) -> Result<(), Status> {
    if leads(metrics, metrics.id) {
        return Ok(());
    }
    let leader = metrics.current_leader;
    let node = leader.and_then(|id| metrics.membership_config.membership().get_node(&id));
    Err(not_leader(leader, node))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Status> {
    serde_json::to_string(value).map_err(|e| Status::internal(e.to_string()))
}

/// A summary of the cluster's scheduler state for `cluster status`.
#[derive(serde::Serialize)]
struct ClusterSummary<'a> {
    now_ms: u64,
    nodes: usize,
    active_jobs: u64,
    next_job_id: u64,
    counters: &'a singularity_scheduler::Counters,
    sla: &'a singularity_scheduler::SlaTotals,
    digest: String,
    applied_index: Option<u64>,
}

type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let bytes = request.into_inner().entry;
        let mut entry = self.validate(&bytes)?;
        entry.leader_time_ms = now_ms();
        let started = Instant::now();
        // Concurrent writes share one log entry, one fsync and one replication round.
        let result = self.group.write(entry, bytes.len()).await;
        self.stats
            .proposal_nanos_total
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(committed) => {
                self.stats.proposals.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(WriteReply {
                    outcome_json: json(&committed.outcome)?,
                    log_index: committed.log_index,
                }))
            }
            Err(WriteFailure::Raft(RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            ))) => {
                self.stats.writes_redirected.fetch_add(1, Ordering::Relaxed);
                Err(self.leader_status(&f))
            }
            Err(other) => {
                self.stats.proposals_failed.fetch_add(1, Ordering::Relaxed);
                Err(Status::unavailable(format!("write not committed: {other}")))
            }
        }
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let request = request.into_inner();
        if ![
            query::JOBS,
            query::JOB,
            query::NODES,
            query::CLUSTER,
            query::EXPLAIN,
        ]
        .contains(&request.query.as_str())
        {
            return Err(self.invalid(format!(
                "unknown query {:?}; use jobs, job, nodes, cluster or explain",
                request.query
            )));
        }
        self.linearize(request.stale).await?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let applied = self.sm.read();
        let state = &applied.state;
        let json = match request.query.as_str() {
            query::JOBS => json(&state.jobs().collect::<Vec<_>>())?,
            query::JOB => match state.job(JobId(request.job_id)) {
                Some(job) => json(job)?,
                None => {
                    return Err(Status::not_found(format!(
                        "no job {}",
                        JobId(request.job_id)
                    )))
                }
            },
            query::NODES => json(&state.nodes().collect::<Vec<_>>())?,
            query::EXPLAIN => {
                let job = JobId(request.job_id);
                if state.job(job).is_none() {
                    return Err(Status::not_found(format!("no job {job}")));
                }
                json(&singularity_scheduler::planner::explain(state, job).to_string())?
            }
            _ => json(&ClusterSummary {
                now_ms: state.now_ms(),
                nodes: state.nodes().count(),
                active_jobs: state.active_job_count(),
                next_job_id: state.next_job_id().0,
                counters: state.counters(),
                sla: state.sla(),
                digest: state.digest().to_string(),
                applied_index: applied.last_applied.map(|l| l.index),
            })?,
        };
        Ok(Response::new(ReadReply {
            json,
            applied_index: applied.last_applied.map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        Ok(Response::new(JsonReply {
            json: self.status_json()?,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let request = request.into_inner();
        if request.addr.is_empty() || !request.addr.contains(':') {
            return Err(self.invalid(format!(
                "learner address {:?} is not HOST:PORT",
                request.addr
            )));
        }
        let node = BasicNode::new(request.addr);
        match self.raft.add_learner(request.node_id, node, true).await {
            Ok(response) => Ok(Response::new(JsonReply {
                json: json(&response.log_id)?,
            })),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(self.leader_status(&f))
            }
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn change_membership(
        &self,
        request: Request<ChangeMembershipRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let request = request.into_inner();
        let voters: BTreeSet<NodeId> = request.voters.iter().copied().collect();
        if voters.is_empty() {
            return Err(self.invalid("a membership needs at least one voter".into()));
        }
        match self.raft.change_membership(voters, request.retain).await {
            Ok(response) => Ok(Response::new(JsonReply {
                json: json(&response.log_id)?,
            })),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(self.leader_status(&f))
            }
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn node_heartbeat(
        &self,
        request: Request<NodeHeartbeatRequest>,
    ) -> Result<Response<NodeHeartbeatReply>, Status> {
        let node = NodeName::new(request.into_inner().node)
            .map_err(|e| self.invalid(format!("node: {e}; give the node's registered name")))?;
        let (leader, quorum_ack_ms) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            ensure_leads(&metrics)?;
            (metrics.id, metrics.millis_since_quorum_ack)
        };
        // Only a leader a quorum heard from within the shortest election timeout is sure no
        // other leader exists; otherwise the agent tries the other replicas. (openraft reports
        // this age on every turn of its core, at least once per tick; a follower refuses other
        // candidates for the longest election timeout after its leader's last message, so the
        // answer stays on the safe side even with that lag.)
        let lease_ms = self.raft.config().election_timeout_min;
        if !quorum_ack_ms.is_some_and(|ms| ms < lease_ms) {
            return Err(Status::unavailable(format!(
                "node {leader} leads but no quorum answered it in the last {lease_ms} ms; retry"
            )));
        }
        // The state's lock is released before the liveness lock is taken.
        let status = self
            .sm
            .read()
            .state
            .node_by_name(&node)
            .map(|registered| registered.status);
        let Some(status) = status else {
            return Ok(Response::new(NodeHeartbeatReply {
                status: NODE_STATUS_UNKNOWN.to_string(),
            }));
        };
        self.liveness.heartbeat(&node);
        self.stats.node_heartbeats.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(NodeHeartbeatReply {
            status: status.to_string(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let target = request.into_inner().target;
        if target == 0 {
            return Err(self.invalid("a transfer needs a target node id (ids start at 1)".into()));
        }
        let outcome = transfer::transfer_leadership(&self.raft, &self.gate, target).await?;
        Ok(Response::new(JsonReply {
            json: json(&outcome)?,
        }))
    }

    type SnapshotSaveStream = ChunkStream;

    async fn snapshot_save(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let applied = self.sm.read().clone();
        let bytes = SnapshotEnvelope::of(&applied)
            .and_then(|e| e.encode())
            .map_err(|e| Status::internal(e.to_string()))?;
        let chunks: Vec<Result<SnapshotChunk, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK_BYTES as usize)
            .map(|c| Ok(SnapshotChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn read_log(&self, request: Request<LogRequest>) -> Result<Response<LogReply>, Status> {
        let request = request.into_inner();
        let first = self
            .log
            .first_index()
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or(0);
        let from = request.from.max(first);
        let to = request
            .to
            .min(from.saturating_add(MAX_LOG_ENTRIES_PER_READ - 1));
        let entries = self
            .log
            .entries(from, to.saturating_add(1))
            .map_err(|e| Status::internal(e.to_string()))?;
        let last_index = self
            .log
            .log_state()
            .map_err(|e| Status::internal(e.to_string()))?
            .last_log_id
            .map(|l| l.index)
            .unwrap_or(0);
        let entries = entries
            .iter()
            .map(|entry| {
                let line = oplog::describe(entry);
                let bytes =
                    oplog::entries_bytes(entry).map_err(|e| Status::internal(e.to_string()))?;
                Ok(LogEntry {
                    index: line.index,
                    term: line.term,
                    leader_time_ms: line.leader_time_ms,
                    kind: line.kind,
                    summary: line.summary,
                    entries: bytes,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(LogReply {
            entries,
            last_index,
        }))
    }
}
