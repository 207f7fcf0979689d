//! `Reporter`: the agent's one connection for writes and heartbeats to the control plane. A
//! task owns the `Client` (which follows the leader and retries each write with the same
//! sequence number, so it commits once) and serves requests in order from a bounded queue. It
//! also publishes which replica answered last, so the watch can follow the leader.
//!
//! It must not interpret outcomes beyond returning them: callers decide what a rejection means.

use crate::error::{NodeError, Result};
use singularity_proto::client::Client;
use singularity_scheduler::{Command, Outcome};
use tokio::sync::{mpsc, oneshot, watch};

/// Writes waiting for the reporter task.
const REPORT_QUEUE: usize = 256;

/// What the reporter task is asked to send.
enum Request {
    /// A write to the log, answered with its outcome.
    Write(Command, oneshot::Sender<Result<Outcome>>),
    /// A heartbeat for the named node, answered with the node's status at the leader.
    Heartbeat(String, oneshot::Sender<Result<String>>),
}

/// A handle to the reporter task; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    requests: mpsc::Sender<Request>,
    leader: watch::Receiver<String>,
}

impl Reporter {
    /// Starts the task that owns `client`.
    pub fn start(mut client: Client) -> Reporter {
        let (requests, mut incoming) = mpsc::channel::<Request>(REPORT_QUEUE);
        let (leader_tx, leader) = watch::channel(client.current_endpoint().to_string());
        tokio::spawn(async move {
            while let Some(request) = incoming.recv().await {
                match request {
                    Request::Write(command, reply) => {
                        let kind = command.kind();
                        let result = client
                            .write(command)
                            .await
                            .map(|written| written.outcome)
                            .map_err(|e| NodeError::ControlPlane(format!("writing {kind}: {e}")));
                        let _ = reply.send(result);
                    }
                    Request::Heartbeat(node, reply) => {
                        let result = client
                            .node_heartbeat(&node)
                            .await
                            .map_err(|e| NodeError::ControlPlane(format!("heartbeat: {e}")));
                        let _ = reply.send(result);
                    }
                }
                leader_tx.send_if_modified(|current| {
                    let now = client.current_endpoint();
                    if current != now {
                        *current = now.to_string();
                        true
                    } else {
                        false
                    }
                });
            }
        });
        Reporter { requests, leader }
    }

    /// Commits `command` and returns its outcome (accepted, rejected with a reason, or a
    /// duplicate of an earlier write).
    pub async fn write(&self, command: Command) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write(command, reply)).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Tells the leader that `node`'s agent is alive (kept in its memory, not logged);
    /// returns the node's status there: "up", "draining", "down" or "unknown".
    pub async fn heartbeat(&self, node: &str) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Heartbeat(node.to_string(), reply))
            .await?;
        answer.await.map_err(|_| stopped())?
    }

    async fn send(&self, request: Request) -> Result<()> {
        self.requests.send(request).await.map_err(|_| stopped())
    }

    /// The replica that answered the last write (the leader, normally).
    pub fn leader(&self) -> watch::Receiver<String> {
        self.leader.clone()
    }
}

fn stopped() -> NodeError {
    NodeError::ControlPlane("the reporter task has stopped".into())
}
