//! A minimal client of the `Control` gRPC API for the workloads: follows the leader hint,
//! retries a write with the same client id and sequence number (so it applies at most once)
//! until the operation's deadline, and says whether a failure is definite or indeterminate.
//!
//! It must not invent results: every value comes from a replica's reply.

use singularity_proto::v1::control_client::ControlClient;
use singularity_proto::v1::{
    AddLearnerRequest, ChangeMembershipRequest, LogReply, LogRequest, NodeHeartbeatRequest,
    ReadRequest, StatusRequest, TransferLeaderRequest, WriteRequest,
};
use singularity_proto::{query, LEADER_HEADER};
use singularity_scheduler::{ClientId, Command, Entry, Outcome};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Time to establish a TCP connection to a replica.
const CONNECT_TIMEOUT_MS: u64 = 500;
/// Most attempts of one operation, whatever its deadline.
const MAX_ATTEMPTS_PER_OP: u32 = 40;
/// Pause before retrying on another replica.
const RETRY_PAUSE_MS: u64 = 50;
/// Largest reply the client accepts: the replicas' own gRPC message limit (the final read of
/// a long set run lists every job).
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Time a status query of one replica may take.
const STATUS_TIMEOUT_MS: u64 = 300;

/// Why an operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The request certainly had no effect (refused before it was proposed).
    Definite(String),
    /// The request may or may not have taken effect (timeouts, lost replies).
    Indefinite(String),
}

impl CallError {
    /// The message, whichever kind.
    pub fn message(&self) -> &str {
        match self {
            CallError::Definite(m) | CallError::Indefinite(m) => m,
        }
    }
}

/// A job's register as a read sees it: the value of metadata key `v` and the job's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterRead {
    pub value: Option<i64>,
    pub version: u64,
}

/// One client session.
pub struct Conn {
    endpoints: Vec<String>,
    current: usize,
    clients: HashMap<String, ControlClient<Channel>>,
    client_id: ClientId,
    next_sequence: u64,
}

fn connect(endpoint: &str) -> Result<ControlClient<Channel>, CallError> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| CallError::Definite(format!("{endpoint}: {e}")))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(MAX_REPLY_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES))
}

impl Conn {
    /// A session with its own client id, starting at replica `first`.
    pub fn new(endpoints: Vec<String>, client_id: u128, first: usize) -> Conn {
        let current = first % endpoints.len().max(1);
        Conn {
            endpoints,
            current,
            clients: HashMap::new(),
            client_id: ClientId(client_id),
            next_sequence: 1,
        }
    }

    fn client(&mut self, endpoint: &str) -> Result<ControlClient<Channel>, CallError> {
        if let Some(client) = self.clients.get(endpoint) {
            return Ok(client.clone());
        }
        let client = connect(endpoint)?;
        self.clients.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    async fn call<T, F, Fut>(&mut self, timeout: Duration, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt made");
        for _ in 0..MAX_ATTEMPTS_PER_OP {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let endpoint = self.endpoints[self.current].clone();
            let client = self.client(&endpoint)?;
            let status = match tokio::time::timeout(deadline - now, call(client)).await {
                Err(_) => {
                    last = format!("{endpoint}: timed out");
                    break;
                }
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
            };
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::OutOfRange
            ) {
                return Err(CallError::Definite(format!(
                    "{endpoint}: {}",
                    status.message()
                )));
            }
            last = format!("{endpoint}: {:?} {}", status.code(), status.message());
            let hint = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|leader| self.endpoints.iter().position(|e| e == leader));
            match hint {
                Some(leader) if leader != self.current => self.current = leader,
                _ => {
                    self.current = (self.current + 1) % self.endpoints.len();
                    let pause = Duration::from_millis(RETRY_PAUSE_MS)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(CallError::Indefinite(last))
    }

    /// Proposes `command` with a fresh sequence number, retried (same number) until `timeout`.
    pub async fn write(
        &mut self,
        command: Command,
        timeout: Duration,
    ) -> Result<Outcome, CallError> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let entry = Entry::from_client(self.client_id, sequence, command);
        let bytes = entry
            .encode()
            .map_err(|e| CallError::Definite(format!("encoding the entry: {e}")))?;
        let reply = self
            .call(timeout, |mut client| {
                let request = WriteRequest {
                    entry: bytes.clone(),
                };
                async move { client.write(request).await }
            })
            .await?;
        // The write committed; a reply we cannot decode leaves its effect unknown.
        serde_json::from_str(&reply.outcome_json)
            .map_err(|e| CallError::Indefinite(format!("decoding the outcome: {e}")))
    }

    /// A read of `query` (linearizable unless `stale`), decoded as JSON.
    pub async fn read_query(
        &mut self,
        query: &str,
        stale: bool,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        self.read(query, 0, stale, timeout).await
    }

    /// `Control.AddLearner` on the leader: replica `node_id` at `addr` receives the log.
    pub async fn add_learner(
        &mut self,
        node_id: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let request = AddLearnerRequest {
            node_id,
            addr: addr.to_string(),
        };
        self.call(timeout, |mut client| {
            let request = request.clone();
            async move { client.add_learner(request).await }
        })
        .await
        .map(|_| ())
    }

    /// `Control.ChangeMembership` on the leader: `voters` vote from now on; with `retain`,
    /// removed voters stay as learners.
    pub async fn change_membership(
        &mut self,
        voters: Vec<u64>,
        retain: bool,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let request = ChangeMembershipRequest { voters, retain };
        self.call(timeout, |mut client| {
            let request = request.clone();
            async move { client.change_membership(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Asks the leader to hand leadership to replica id `target`.
    pub async fn transfer_leader(
        &mut self,
        target: u64,
        timeout: Duration,
    ) -> Result<(), CallError> {
        self.call(timeout, |mut client| async move {
            client
                .transfer_leader(TransferLeaderRequest { target })
                .await
        })
        .await
        .map(|_| ())
    }

    /// Tells the leader that node `node` is alive; returns its status there ("up",
    /// "draining", "down" or "unknown").
    pub async fn node_heartbeat(
        &mut self,
        node: &str,
        timeout: Duration,
    ) -> Result<String, CallError> {
        let request = NodeHeartbeatRequest {
            node: node.to_string(),
        };
        self.call(timeout, |mut client| {
            let request = request.clone();
            async move { client.node_heartbeat(request).await }
        })
        .await
        .map(|reply| reply.status)
    }

    /// Replica `i`'s own Raft status (no failover to another replica).
    pub async fn status_of(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let endpoint = self.endpoints[i].clone();
        let mut client = self.client(&endpoint)?;
        let reply = tokio::time::timeout(timeout, client.status(StatusRequest {}))
            .await
            .map_err(|_| CallError::Indefinite(format!("{endpoint}: status timed out")))?
            .map_err(|s| CallError::Indefinite(format!("{endpoint}: {}", s.message())))?;
        serde_json::from_str(&reply.into_inner().json)
            .map_err(|e| CallError::Definite(format!("{endpoint}: decoding the status: {e}")))
    }

    /// Entries `from..=to` of replica `i`'s own log, one bounded page (no failover).
    pub async fn read_log_of(
        &mut self,
        i: usize,
        from: u64,
        to: u64,
        timeout: Duration,
    ) -> Result<LogReply, CallError> {
        let endpoint = self.endpoints[i].clone();
        let mut client = self.client(&endpoint)?;
        let reply = tokio::time::timeout(timeout, client.read_log(LogRequest { from, to }))
            .await
            .map_err(|_| CallError::Indefinite(format!("{endpoint}: log read timed out")))?
            .map_err(|s| CallError::Indefinite(format!("{endpoint}: {}", s.message())))?;
        Ok(reply.into_inner())
    }

    /// A linearizable read of `query` (for job `job_id` where it names one), decoded as JSON.
    async fn read_json(
        &mut self,
        query: &str,
        job_id: u64,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        self.read(query, job_id, false, timeout).await
    }

    async fn read(
        &mut self,
        query: &str,
        job_id: u64,
        stale: bool,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let request = ReadRequest {
            query: query.to_string(),
            job_id,
            stale,
        };
        let reply = self
            .call(timeout, |mut client| {
                let request = request.clone();
                async move { client.read(request).await }
            })
            .await?;
        serde_json::from_str(&reply.json)
            .map_err(|e| CallError::Definite(format!("decoding the {query} read: {e}")))
    }

    /// A linearizable read of job `job_id`'s register.
    pub async fn read_register(
        &mut self,
        job_id: u64,
        timeout: Duration,
    ) -> Result<RegisterRead, CallError> {
        let job = self.read_json(query::JOB, job_id, timeout).await?;
        register_from_job(&job)
    }

    /// A linearizable read of every job's name.
    pub async fn read_job_names(&mut self, timeout: Duration) -> Result<Vec<String>, CallError> {
        let jobs = self.read_json(query::JOBS, 0, timeout).await?;
        let jobs = jobs
            .as_array()
            .ok_or_else(|| CallError::Definite("the jobs read is not a list".into()))?;
        Ok(jobs
            .iter()
            .filter_map(|job| job["spec"]["name"].as_str().map(str::to_string))
            .collect())
    }

    /// The index of the replica a majority of answering replicas calls leader, if any.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for i in 0..self.endpoints.len() {
            let endpoint = self.endpoints[i].clone();
            let Ok(mut client) = self.client(&endpoint) else {
                continue;
            };
            let reply = tokio::time::timeout(
                Duration::from_millis(STATUS_TIMEOUT_MS),
                client.status(StatusRequest {}),
            )
            .await;
            if let Ok(Ok(reply)) = reply {
                let status: serde_json::Value =
                    serde_json::from_str(&reply.into_inner().json).unwrap_or_default();
                if let Some(leader) = status["leader"].as_u64() {
                    *votes.entry(leader).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|&(id, count)| (count, id))
            .and_then(|(id, _)| (id as usize).checked_sub(1))
            .filter(|&i| i < self.endpoints.len())
    }
}

/// The register in a job's JSON: metadata `v` (an integer) and `version`.
pub fn register_from_job(job: &serde_json::Value) -> Result<RegisterRead, CallError> {
    let version = job["version"]
        .as_u64()
        .ok_or_else(|| CallError::Definite("the job has no version".into()))?;
    let value = match job["metadata"]["v"].as_str() {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|e| CallError::Definite(format!("metadata v {text:?}: {e}")))?,
        ),
    };
    Ok(RegisterRead { value, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_is_read_from_the_job_json() {
        let job = serde_json::json!({"version": 3, "metadata": {"v": "4", "other": "x"}});
        assert_eq!(
            register_from_job(&job),
            Ok(RegisterRead {
                value: Some(4),
                version: 3
            })
        );
        let empty = serde_json::json!({"version": 0, "metadata": {}});
        assert_eq!(register_from_job(&empty).unwrap().value, None);
        assert!(register_from_job(&serde_json::json!({})).is_err());
    }
}
