//! `Reporter`: the agent's one connection for writes to the control plane. A task owns the
//! `Client` (which follows the leader and retries each write with the same sequence number, so
//! it commits once) and serves requests in order from a bounded queue. It also publishes which
//! replica answered last, so the watch can follow the leader.
//!
//! It must not interpret outcomes beyond returning them: callers decide what a rejection means.

use crate::error::{NodeError, Result};
use singularity_proto::client::Client;
use singularity_scheduler::{Command, Outcome};
use tokio::sync::{mpsc, oneshot, watch};

/// Writes waiting for the reporter task.
const REPORT_QUEUE: usize = 256;

type Request = (Command, oneshot::Sender<Result<Outcome>>);

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
            while let Some((command, reply)) = incoming.recv().await {
                let kind = command.kind();
                let result = client
                    .write(command)
                    .await
                    .map(|written| written.outcome)
                    .map_err(|e| NodeError::ControlPlane(format!("writing {kind}: {e}")));
                leader_tx.send_if_modified(|current| {
                    let now = client.current_endpoint();
                    if current != now {
                        *current = now.to_string();
                        true
                    } else {
                        false
                    }
                });
                let _ = reply.send(result);
            }
        });
        Reporter { requests, leader }
    }

    /// Commits `command` and returns its outcome (accepted, rejected with a reason, or a
    /// duplicate of an earlier write).
    pub async fn write(&self, command: Command) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((command, reply))
            .await
            .map_err(|_| NodeError::ControlPlane("the reporter task has stopped".into()))?;
        answer
            .await
            .map_err(|_| NodeError::ControlPlane("the reporter task has stopped".into()))?
    }

    /// The replica that answered the last write (the leader, normally).
    pub fn leader(&self) -> watch::Receiver<String> {
        self.leader.clone()
    }
}
