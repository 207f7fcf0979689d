//! Leadership transfer (Raft thesis 3.10) on openraft 0.9, which has none of its own. The
//! leader closes the `ProposalGate` (client writes, the scheduling loop's plans and
//! linearizable reads wait at it), waits until the target holds its whole log and everything
//! is applied, stops its heartbeats so every follower's leader lease runs out, and sends the
//! target `TimeoutNow`; the target campaigns at once with the longest log and a higher term,
//! before any other follower's election timer fires. The old leader grants that vote and steps
//! down; the gate opens again and what waited at it is redirected to the new leader.
//!
//! It must not bypass openraft's election: the target wins by votes or not at all. Whatever
//! happens (error, timeout, the caller gone), heartbeats come back on and the gate opens when
//! the transfer ends (`PausedForTransfer`'s drop).

use crate::limits::{
    MIN_TRANSFER_ELECTION_WAIT_MS, TIMEOUT_NOW_RPC_MS, TRANSFER_CATCH_UP_TIMEOUT_MS,
};
use crate::server::control::ensure_leads;
use crate::server::status::leads;
use crate::types::{Metrics, NodeId, Raft};
use singularity_proto::channel::channel;
use singularity_proto::v1::raft_service_client::RaftServiceClient;
use singularity_proto::v1::{TimeoutNowReply, TimeoutNowRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::Status;

/// Where proposals wait while leadership is handed over. Cheap to clone; open by default.
#[derive(Clone, Debug)]
pub struct ProposalGate {
    paused: Arc<watch::Sender<bool>>,
}

impl Default for ProposalGate {
    fn default() -> Self {
        ProposalGate {
            paused: Arc::new(watch::channel(false).0),
        }
    }
}

impl ProposalGate {
    /// Returns at once while the gate is open; waits while a transfer holds it closed (a
    /// transfer is bounded in time, so the wait is too).
    pub async fn wait_open(&self) {
        if !*self.paused.borrow() {
            return;
        }
        let mut paused = self.paused.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = paused.wait_for(|paused| !*paused).await;
    }

    /// Closes the gate for one transfer, or `None` when another transfer holds it.
    fn close(&self, raft: &Raft) -> Option<PausedForTransfer> {
        let closed = self.paused.send_if_modified(|paused| {
            let was_open = !*paused;
            *paused = true;
            was_open
        });
        closed.then(|| PausedForTransfer {
            gate: self.clone(),
            raft: raft.clone(),
        })
    }
}

/// One transfer's hold on the gate; dropping it turns heartbeats back on and opens the gate.
struct PausedForTransfer {
    gate: ProposalGate,
    raft: Raft,
}

impl Drop for PausedForTransfer {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
        self.gate.paused.send_replace(false);
    }
}

/// What a finished transfer reports.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TransferOutcome {
    pub from: NodeId,
    pub to: NodeId,
    /// The term the new leader leads in.
    pub term: u64,
    /// How long proposals waited at the gate.
    pub paused_ms: u64,
}

/// Hands leadership from this replica (which must lead) to voter `target`; see the module
/// header. Errors say what stopped it; proposals resume either way.
pub async fn transfer_leadership(
    raft: &Raft,
    gate: &ProposalGate,
    target: NodeId,
) -> Result<TransferOutcome, Status> {
    let metrics = raft.metrics().borrow().clone();
    ensure_leads(&metrics)?;
    let me = metrics.id;
    if target == me {
        return Ok(TransferOutcome {
            from: me,
            to: me,
            term: metrics.current_term,
            paused_ms: 0,
        });
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&target) {
        return Err(Status::invalid_argument(format!(
            "node {target} is not a voter; the voters are {voters:?}"
        )));
    }
    let Some(target_addr) = membership.get_node(&target).map(|n| n.addr.clone()) else {
        return Err(Status::internal(format!(
            "voter {target} has no address in the membership"
        )));
    };
    let Some(paused) = gate.close(raft) else {
        return Err(Status::failed_precondition(
            "a leadership transfer is already in progress; wait for it to end",
        ));
    };
    let started = Instant::now();
    let last_index = wait_caught_up(raft, me, target).await?;
    let mut request = TimeoutNowRequest {
        leader_id: me,
        term: metrics.current_term,
        last_log_index: last_index,
        dry_run: true,
    };
    // The target must answer (and be fit) before the leader goes quiet.
    send_timeout_now(&target_addr, target, request).await?;

    // Followers renew their leader lease on every message from the leader; with proposals
    // paused and heartbeats off, it runs out after `election_timeout_max`. The target then
    // campaigns before the others' own timers (lease plus at least `election_timeout_min`).
    let config = raft.config();
    raft.runtime_config().heartbeat(false);
    let quiet_ms =
        config.election_timeout_max + config.heartbeat_interval + config.election_timeout_min / 4;
    tokio::time::sleep(Duration::from_millis(quiet_ms)).await;

    request.dry_run = false;
    send_timeout_now(&target_addr, target, request).await?;

    let election_wait_ms = (config.election_timeout_max * 10).max(MIN_TRANSFER_ELECTION_WAIT_MS);
    let new_leader = wait_new_leader(raft, me, election_wait_ms).await?;
    let paused_ms = started.elapsed().as_millis() as u64;
    drop(paused);
    let (leader, term) = new_leader;
    if leader != target {
        return Err(Status::failed_precondition(format!(
            "node {leader} won the election (term {term}) before node {target} did; run the transfer again on node {leader}"
        )));
    }
    tracing::info!(
        from = me,
        to = target,
        term,
        paused_ms,
        "leadership transferred"
    );
    Ok(TransferOutcome {
        from: me,
        to: target,
        term,
        paused_ms,
    })
}

/// Waits until this replica still leads, has applied its whole log, and `target` has matched
/// it; returns that last index.
async fn wait_caught_up(raft: &Raft, me: NodeId, target: NodeId) -> Result<u64, Status> {
    let seen = wait_metrics(raft, TRANSFER_CATCH_UP_TIMEOUT_MS, |m| {
        !leads(m, me) || caught_up(m, target).is_some()
    })
    .await?;
    match seen {
        Some(m) => match caught_up(&m, target) {
            Some(last) if leads(&m, me) => Ok(last),
            _ => Err(Status::unavailable(match m.current_leader {
                Some(leader) => {
                    format!("leadership was lost during the transfer; node {leader} leads now")
                }
                None => "leadership was lost during the transfer; no leader is known yet".into(),
            })),
        },
        None => {
            let m = raft.metrics().borrow().clone();
            let matched = matched_index(&m, target);
            Err(Status::failed_precondition(format!(
                "node {target} did not catch up within {TRANSFER_CATCH_UP_TIMEOUT_MS} ms (it has the log to index {matched:?} of {:?}); nothing changed, proposals resumed",
                m.last_log_index
            )))
        }
    }
}

/// The first metrics that satisfy `ready` within `wait_ms`, or `None` when none did.
async fn wait_metrics(
    raft: &Raft,
    wait_ms: u64,
    ready: impl FnMut(&Metrics) -> bool,
) -> Result<Option<Metrics>, Status> {
    let mut metrics = raft.metrics();
    let wait = metrics.wait_for(ready);
    // The metrics are copied out at once: the borrow holds the channel's read lock.
    let waited = tokio::time::timeout(Duration::from_millis(wait_ms), wait)
        .await
        .map(|seen| seen.map(|m| m.clone()));
    match waited {
        Ok(Ok(seen)) => Ok(Some(seen)),
        Ok(Err(_)) => Err(Status::unavailable("this replica is shutting down")),
        Err(_) => Ok(None),
    }
}

fn matched_index(m: &Metrics, target: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&target).copied().flatten())
        .map(|l| l.index)
}

/// The leader's last index when it has applied it and `target` has matched it.
fn caught_up(m: &Metrics, target: NodeId) -> Option<u64> {
    let last = m.last_log_index?;
    let applied = m.last_applied.map(|l| l.index)?;
    (applied == last && matched_index(m, target) == Some(last)).then_some(last)
}

async fn send_timeout_now(
    addr: &str,
    target: NodeId,
    request: TimeoutNowRequest,
) -> Result<TimeoutNowReply, Status> {
    let channel = channel(addr, Duration::from_millis(TIMEOUT_NOW_RPC_MS)).map_err(|e| {
        Status::internal(format!(
            "node {target}'s address {addr:?} is not usable: {e}"
        ))
    })?;
    RaftServiceClient::new(channel)
        .timeout_now(request)
        .await
        .map(|reply| reply.into_inner())
        .map_err(|status| {
            Status::failed_precondition(format!(
                "node {target} cannot take over: {}; this replica still leads, proposals resumed",
                status.message()
            ))
        })
}

/// Waits until some other replica leads; returns it and its term.
async fn wait_new_leader(raft: &Raft, me: NodeId, wait_ms: u64) -> Result<(NodeId, u64), Status> {
    let seen = wait_metrics(
        raft,
        wait_ms,
        |m| matches!(m.current_leader, Some(l) if l != me),
    )
    .await?;
    match seen {
        Some(m) => Ok((m.current_leader.unwrap_or(me), m.current_term)),
        None => Err(Status::failed_precondition(format!(
            "no other replica won an election within {wait_ms} ms; proposals resumed"
        ))),
    }
}

/// The target's side of `TimeoutNow`: campaigns at once if it follows `leader_id` in `term`,
/// holds the log to `last_log_index` and is a voter (a dry run only checks).
pub async fn campaign_on_request(raft: &Raft, request: &TimeoutNowRequest) -> Result<(), Status> {
    let m = raft.metrics().borrow().clone();
    let me = m.id;
    if m.current_leader != Some(request.leader_id) || m.current_term != request.term {
        let follows = m
            .current_leader
            .map_or_else(|| "no leader".to_string(), |l| format!("node {l}"));
        return Err(Status::failed_precondition(format!(
            "node {me} follows {follows} in term {}, not node {} in term {}",
            m.current_term, request.leader_id, request.term
        )));
    }
    let last = m.last_log_index.unwrap_or(0);
    if last < request.last_log_index {
        return Err(Status::failed_precondition(format!(
            "node {me} holds the log to index {last}, behind the leader's {}",
            request.last_log_index
        )));
    }
    if !m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == me)
    {
        return Err(Status::failed_precondition(format!(
            "node {me} is not a voter"
        )));
    }
    if request.dry_run {
        return Ok(());
    }
    tracing::info!(
        leader = request.leader_id,
        term = request.term,
        "campaigning: asked by the leader to take over"
    );
    raft.trigger()
        .elect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot campaign: {e}")))
}
