//! `GroupCommit`: the client write path's batching. openraft 0.9 appends, fsyncs and
//! replicates each proposal on its own, one after another, so one log entry per client write
//! costs one fsync per write on the leader. Here validated client writes wait in a bounded
//! queue; a task takes everything waiting (up to `MAX_WRITES_PER_BATCH` writes and
//! `MAX_BATCH_BYTES`) and proposes it as one `Proposal::Batch`, with at most
//! `MAX_BATCHES_IN_FLIGHT` proposals not yet committed. A lone write is proposed at once, with
//! no timer, so a single client waits for nothing. Each writer gets its own outcome, in the
//! batch's order, once the batch is committed and applied. While a leadership transfer holds
//! the `ProposalGate` closed, the next batch waits at it.
//!
//! It must not validate, reorder, drop or answer a write before its batch is applied, and must
//! not batch anything but client writes (the leader's plans are proposed on their own).

use crate::limits::{
    MAX_BATCHES_IN_FLIGHT, MAX_BATCH_BYTES, MAX_QUEUED_WRITES, MAX_WRITES_PER_BATCH,
};
use crate::proposal::Proposal;
use crate::server::transfer::ProposalGate;
use crate::types::{NodeId, Raft};
use openraft::error::ClientWriteError;
use openraft::BasicNode;
use singularity_scheduler::{Entry, Outcome};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// openraft's error for a write that did not commit.
pub type ClientWriteFailure =
    openraft::error::RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// A committed client write.
#[derive(Clone, Debug)]
pub struct Committed {
    pub outcome: Outcome,
    /// The log entry that carries the write (shared by the writes of one batch).
    pub log_index: u64,
}

/// Why a write has no outcome.
#[derive(Clone, Debug)]
pub enum WriteFailure {
    /// openraft refused or lost it (not the leader, leadership lost, stopped).
    Raft(ClientWriteFailure),
    /// The replica is shutting down.
    Stopped,
    /// The state machine answered a batch with the wrong number of outcomes (a bug).
    Internal(String),
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteFailure::Raft(e) => write!(f, "{e}"),
            WriteFailure::Stopped => write!(f, "the replica is shutting down"),
            WriteFailure::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

type Reply = oneshot::Sender<Result<Committed, WriteFailure>>;

/// One validated client write waiting for its batch.
struct Waiting {
    entry: Entry,
    bytes: usize,
    reply: Reply,
}

/// The sending side; cheap to clone. The batching task ends when every clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Waiting>,
}

impl GroupCommit {
    /// Starts the batching task for `raft` on the current tokio runtime.
    pub fn start(raft: Raft, gate: ProposalGate) -> GroupCommit {
        let (queue, waiting) = mpsc::channel(MAX_QUEUED_WRITES);
        tokio::spawn(run(raft, gate, waiting));
        GroupCommit { queue }
    }

    /// Proposes `entry` (already validated; `bytes` is its encoded size) in the next batch
    /// and waits until that batch is committed and applied.
    pub async fn write(&self, entry: Entry, bytes: usize) -> Result<Committed, WriteFailure> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting {
                entry,
                bytes,
                reply,
            })
            .await
            .map_err(|_| WriteFailure::Stopped)?;
        answer.await.map_err(|_| WriteFailure::Stopped)?
    }
}

/// Takes waiting writes into batches and proposes them, at most `MAX_BATCHES_IN_FLIGHT` at a
/// time.
async fn run(raft: Raft, gate: ProposalGate, mut waiting: mpsc::Receiver<Waiting>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // A write that did not fit the previous batch's byte limit starts the next one.
    let mut held: Option<Waiting> = None;
    loop {
        let first = match held.take() {
            Some(write) => write,
            None => match waiting.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        // Wait for room first, so everything that arrives meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_BATCH {
            match waiting.try_recv() {
                Ok(next) if bytes.saturating_add(next.bytes) <= MAX_BATCH_BYTES => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Ok(next) => {
                    held = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        debug_assert!(batch.len() <= MAX_WRITES_PER_BATCH);
        let (entries, replies): (Vec<Entry>, Vec<Reply>) = batch
            .into_iter()
            .map(|write| (write.entry, write.reply))
            .unzip();
        gate.wait_open().await;
        let answer = match raft.client_write_ff(Proposal::of(entries)).await {
            Ok(answer) => answer,
            Err(fatal) => {
                answer_all(
                    replies,
                    WriteFailure::Raft(openraft::error::RaftError::Fatal(fatal)),
                );
                continue;
            }
        };
        // The permit is held until the batch is committed and applied.
        tokio::spawn(async move {
            let result = answer.await;
            drop(permit);
            deliver(result, replies);
        });
    }
}

/// Answers every writer of a batch with the same failure.
fn answer_all(replies: Vec<Reply>, failure: WriteFailure) {
    for reply in replies {
        let _ = reply.send(Err(failure.clone()));
    }
}

/// Answers each writer of one batch from openraft's answer.
fn deliver(
    result: Result<
        Result<
            openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
            ClientWriteError<NodeId, BasicNode>,
        >,
        oneshot::error::RecvError,
    >,
    replies: Vec<Reply>,
) {
    let count = replies.len();
    match result {
        Ok(Ok(response)) if response.data.len() == count => {
            let log_index = response.log_id.index;
            for (reply, outcome) in replies.into_iter().zip(response.data) {
                let _ = reply.send(Ok(Committed { outcome, log_index }));
            }
        }
        Ok(Ok(response)) => {
            let failure = WriteFailure::Internal(format!(
                "{} outcomes for a batch of {count} writes at index {}",
                response.data.len(),
                response.log_id.index
            ));
            tracing::error!(%failure, "group commit");
            answer_all(replies, failure);
        }
        Ok(Err(e)) => answer_all(
            replies,
            WriteFailure::Raft(openraft::error::RaftError::APIError(e)),
        ),
        Err(_) => answer_all(replies, WriteFailure::Stopped),
    }
}
