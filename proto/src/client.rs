//! `Client`: the client side of the `Control` API used by the CLI, the node agent and tests. It keeps one
//! channel per endpoint, follows the leader hint a follower returns, retries a write with the
//! same client id and sequence number (so it takes effect once, DESIGN.md rule 5), and gives
//! up after a bounded number of attempts. It must not invent results: every answer comes from
//! a replica.

use crate::channel::channel;
use crate::error::ClientError;
use crate::limits::{
    CLIENT_RPC_TIMEOUT_MS, MAX_CLIENT_ATTEMPTS, MAX_CLIENT_BACKOFF_MS, MAX_CLIENT_RETRY_MS,
    MAX_GRPC_MESSAGE_BYTES, MIN_CLIENT_BACKOFF_MS,
};
use crate::v1::control_client::ControlClient;
use crate::v1::*;
use crate::LEADER_HEADER;
use singularity_scheduler::{ClientId, Command, Entry, Outcome};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// The result of a committed write.
#[derive(Clone, Debug)]
pub struct WriteResult {
    pub outcome: Outcome,
    pub log_index: u64,
}

/// A client of a Singularity cluster.
pub struct Client {
    endpoints: Vec<String>,
    /// Index into `endpoints` of the replica to try next.
    current: usize,
    channels: HashMap<String, ControlClient<Channel>>,
    client_id: ClientId,
    next_sequence: u64,
    rpc_timeout: Duration,
}

/// Clients created by this process so far; part of each new client id.
static CLIENTS_CREATED: AtomicU64 = AtomicU64::new(0);

/// A client id unlikely to collide with another client's: a hash of the time, the process id
/// and a per-process counter.
fn fresh_client_id() -> ClientId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(
        &CLIENTS_CREATED
            .fetch_add(1, Ordering::Relaxed)
            .to_le_bytes(),
    );
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    ClientId(u128::from_le_bytes(bytes))
}

impl Client {
    /// A client of the replicas at `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().trim_start_matches("http://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::Config(
                "no endpoints; give --endpoints HOST:PORT[,HOST:PORT...] or SINGULARITY_ENDPOINTS"
                    .into(),
            ));
        }
        Ok(Client {
            endpoints,
            current: 0,
            channels: HashMap::new(),
            client_id: fresh_client_id(),
            next_sequence: 1,
            rpc_timeout: Duration::from_millis(CLIENT_RPC_TIMEOUT_MS),
        })
    }

    /// Uses a given client id and first sequence number (to resume a session).
    pub fn with_session(mut self, client_id: ClientId, next_sequence: u64) -> Client {
        self.client_id = client_id;
        self.next_sequence = next_sequence.max(1);
        self
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    fn connect(&mut self, endpoint: &str) -> Result<ControlClient<Channel>, ClientError> {
        if let Some(client) = self.channels.get(endpoint) {
            return Ok(client.clone());
        }
        let channel = channel(endpoint, self.rpc_timeout)
            .map_err(|e| ClientError::Transport(format!("{endpoint}: {e}")))?;
        let client = ControlClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        self.channels.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    /// Runs `call` against the current endpoint, following leader hints and moving to the next
    /// endpoint on errors. Hints are followed at once, except to an endpoint that could not be
    /// reached in this round; after as many failed attempts as there are endpoints the client
    /// pauses (`MIN_CLIENT_BACKOFF_MS`, doubling up to `MAX_CLIENT_BACKOFF_MS`). It gives up
    /// after `MAX_CLIENT_ATTEMPTS` attempts or `MAX_CLIENT_RETRY_MS` of retrying.
    async fn with_retries<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut last_error = String::new();
        let mut backoff_ms = MIN_CLIENT_BACKOFF_MS;
        // Endpoints no replica answered from since the last pause, and failures since then.
        let mut unreachable: Vec<String> = Vec::new();
        let mut failures_since_pause = 0usize;
        let mut attempts = 0;
        while attempts < MAX_CLIENT_ATTEMPTS {
            attempts += 1;
            let endpoint = self.endpoints[self.current].clone();
            let client = self.connect(&endpoint)?;
            let status = match call(client).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            let retryable = matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
            );
            if !retryable {
                return Err(ClientError::Rpc {
                    endpoint,
                    code: format!("{:?}", status.code()),
                    message: status.message().to_string(),
                });
            }
            last_error = format!("{endpoint}: {}", status.message());
            if started.elapsed() >= Duration::from_millis(MAX_CLIENT_RETRY_MS) {
                break;
            }
            // A transport failure carries its cause; an answer from a replica does not.
            if std::error::Error::source(&status).is_some() && !unreachable.contains(&endpoint) {
                unreachable.push(endpoint.clone());
            }
            failures_since_pause += 1;
            let hint = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            self.current = match hint {
                Some(leader) if leader != endpoint && !unreachable.contains(&leader) => {
                    if !self.endpoints.contains(&leader) {
                        self.endpoints.push(leader.clone());
                    }
                    self.endpoints
                        .iter()
                        .position(|e| e == &leader)
                        .unwrap_or(0)
                }
                _ => (self.current + 1) % self.endpoints.len(),
            };
            if failures_since_pause >= self.endpoints.len() {
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(MAX_CLIENT_BACKOFF_MS);
                failures_since_pause = 0;
                unreachable.clear();
            }
        }
        Err(ClientError::Exhausted {
            attempts,
            last: last_error,
        })
    }

    /// Proposes `command` once, retrying with the same sequence number until it commits.
    pub async fn write(&mut self, command: Command) -> Result<WriteResult, ClientError> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let entry = Entry::from_client(self.client_id, sequence, command);
        self.write_entry(&entry).await
    }

    /// Sends an already built entry (a retry of an earlier write keeps its sequence).
    pub async fn write_entry(&mut self, entry: &Entry) -> Result<WriteResult, ClientError> {
        let bytes = entry.encode()?;
        let reply = self
            .with_retries(|mut client| {
                let request = WriteRequest {
                    entry: bytes.clone(),
                };
                async move { client.write(request).await }
            })
            .await?;
        let outcome: Outcome =
            serde_json::from_str(&reply.outcome_json).map_err(|e| ClientError::Decode {
                what: "write outcome",
                detail: e.to_string(),
            })?;
        Ok(WriteResult {
            outcome,
            log_index: reply.log_index,
        })
    }

    /// A read of `query` (see `singularity_proto::query`); linearizable unless `stale`.
    pub async fn read(
        &mut self,
        query: &str,
        job_id: u64,
        stale: bool,
    ) -> Result<ReadReply, ClientError> {
        let request = ReadRequest {
            query: query.to_string(),
            job_id,
            stale,
        };
        self.with_retries(|mut client| {
            let request = request.clone();
            async move { client.read(request).await }
        })
        .await
    }

    /// The status of the replica at the current endpoint (no leader following).
    pub async fn status_of(&mut self, endpoint: &str) -> Result<String, ClientError> {
        let mut client = self.connect(endpoint)?;
        client
            .status(StatusRequest {})
            .await
            .map(|r| r.into_inner().json)
            .map_err(|status| ClientError::Rpc {
                endpoint: endpoint.to_string(),
                code: format!("{:?}", status.code()),
                message: status.message().to_string(),
            })
    }

    /// The endpoint the next call goes to: the leader, after a write that followed its hint.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// The endpoints this client knows.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Adds a learner through the leader.
    pub async fn add_learner(&mut self, node_id: u64, addr: &str) -> Result<String, ClientError> {
        let request = AddLearnerRequest {
            node_id,
            addr: addr.to_string(),
        };
        let reply = self
            .with_retries(|mut client| {
                let request = request.clone();
                async move { client.add_learner(request).await }
            })
            .await?;
        Ok(reply.json)
    }

    /// Changes the voters through the leader.
    pub async fn change_membership(
        &mut self,
        voters: Vec<u64>,
        retain: bool,
    ) -> Result<String, ClientError> {
        let request = ChangeMembershipRequest { voters, retain };
        let reply = self
            .with_retries(|mut client| {
                let request = request.clone();
                async move { client.change_membership(request).await }
            })
            .await?;
        Ok(reply.json)
    }

    /// Asks the leader to hand its leadership to voter `target`; answers the outcome's JSON
    /// once `target` leads.
    pub async fn transfer_leader(&mut self, target: u64) -> Result<String, ClientError> {
        let request = TransferLeaderRequest { target };
        let reply = self
            .with_retries(|mut client| async move { client.transfer_leader(request).await })
            .await?;
        Ok(reply.json)
    }

    /// Tells the leader that `node`'s agent is alive; returns the node's status there ("up",
    /// "draining", "down" or "unknown").
    pub async fn node_heartbeat(&mut self, node: &str) -> Result<String, ClientError> {
        let request = NodeHeartbeatRequest {
            node: node.to_string(),
        };
        let reply = self
            .with_retries(|mut client| {
                let request = request.clone();
                async move { client.node_heartbeat(request).await }
            })
            .await?;
        Ok(reply.status)
    }

    /// Downloads a snapshot of the current endpoint's applied state.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, ClientError> {
        let endpoint = self.endpoints[self.current].clone();
        let mut client = self.connect(&endpoint)?;
        let rpc = |status: tonic::Status| ClientError::Rpc {
            endpoint: endpoint.clone(),
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        };
        let mut stream = client
            .snapshot_save(SnapshotRequest {})
            .await
            .map_err(rpc)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(rpc)? {
            if bytes.len() + chunk.data.len() > singularity_scheduler::limits::MAX_SNAPSHOT_BYTES {
                return Err(ClientError::Decode {
                    what: "snapshot",
                    detail: "larger than the snapshot limit".into(),
                });
            }
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }

    /// Log entries in `[from, to]` from the current endpoint (at most one bounded page).
    pub async fn read_log(&mut self, from: u64, to: u64) -> Result<LogReply, ClientError> {
        self.with_retries(
            |mut client| async move { client.read_log(LogRequest { from, to }).await },
        )
        .await
    }
}
