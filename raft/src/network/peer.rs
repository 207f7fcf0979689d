//! The client side of replica-to-replica RPCs: `Network` (openraft's `RaftNetworkFactory`)
//! keeps one tonic channel per peer address and reuses it for every RPC; `Peer` sends one
//! RPC with openraft's deadline. Transport failures become `Unreachable`, deadlines `Timeout`,
//! and the remote Raft's own errors `RemoteError`. It must not retry on its own: openraft does.

use super::{channel, decode_payload, encode_payload};
use crate::limits::{MAX_APPEND_ENTRIES_BYTES, MAX_GRPC_MESSAGE_BYTES};
use crate::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use singularity_proto::v1::raft_service_client::RaftServiceClient;
use singularity_proto::v1::RaftPayload;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Longest any single replica RPC may take (openraft's own deadline is usually shorter).
const MAX_RPC_MS: u64 = 30_000;
/// Pause of replication to a peer that could not be reached, in milliseconds.
const UNREACHABLE_PEER_BACKOFF_MS: u64 = 100;
// One log record alone must always fit a request, or replication could never make progress.
const _: () = assert!(crate::store::codec::MAX_RECORD_BYTES + 64 * 1024 < MAX_GRPC_MESSAGE_BYTES);

/// openraft's network factory: one reused channel per peer address.
#[derive(Clone)]
pub struct Network {
    local: NodeId,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    pub fn new(local: NodeId) -> Network {
        Network {
            local,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn channel_to(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = channels.get(addr) {
            return Ok(existing.clone());
        }
        let created = channel(addr, Duration::from_millis(MAX_RPC_MS))?;
        channels.insert(addr.to_string(), created.clone());
        Ok(created)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = self.channel_to(&node.addr).map(|channel| {
            RaftServiceClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        });
        Peer {
            local: self.local,
            target,
            addr: node.addr.clone(),
            client: client.map_err(|e| e.to_string()),
        }
    }
}

/// A connection to one peer.
pub struct Peer {
    local: NodeId,
    target: NodeId,
    addr: String,
    client: Result<RaftServiceClient<Channel>, String>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let data = encode_payload("raft request", request)
            .map_err(|e| NetworkError::new(&AnyError::error(e.to_string())))?;
        self.send(kind, data, option).await
    }

    /// Sends one encoded request and decodes the reply.
    async fn send<Resp, E>(
        &mut self,
        kind: RPCTypes,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return Err(
                    Unreachable::new(&AnyError::error(format!("{}: {e}", self.addr))).into(),
                )
            }
        };
        let deadline = option.hard_ttl();
        let mut grpc = tonic::Request::new(RaftPayload { data });
        grpc.set_timeout(deadline);
        let mut client = client;
        let call = async move {
            match kind {
                RPCTypes::Vote => client.vote(grpc).await,
                RPCTypes::AppendEntries => client.append_entries(grpc).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(grpc).await,
            }
        };
        let reply = match tokio::time::timeout(deadline, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.local,
                    target: self.target,
                    timeout: deadline,
                }))
            }
            Ok(Err(status)) => {
                let error = AnyError::error(format!("{} ({}): {status}", self.target, self.addr));
                return Err(match status.code() {
                    // The peer cannot be reached: openraft backs off before it tries again.
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        Unreachable::new(&error).into()
                    }
                    // The deadline passed (tonic's own timeout answers Cancelled): a slow
                    // peer, not a missing one, so openraft retries without backing off.
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                        RPCError::Timeout(Timeout {
                            action: kind,
                            id: self.local,
                            target: self.target,
                            timeout: deadline,
                        })
                    }
                    _ => NetworkError::new(&error).into(),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode_payload("raft reply", &reply.data)
            .map_err(|e| NetworkError::new(&AnyError::error(e.to_string())))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// How long replication to an unreachable peer pauses between tries (openraft's default
    /// is 500 ms; a restarted peer is picked up sooner this way).
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            UNREACHABLE_PEER_BACKOFF_MS,
        )))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let data = encode_payload("raft request", &rpc)
            .map_err(|e| NetworkError::new(&AnyError::error(e.to_string())))?;
        // openraft 0.9 sends up to `max_payload_entries` entries whatever their size, within a
        // deadline of one heartbeat interval; batch entries can be large, so a bigger request
        // is refused here and openraft retries with as many entries as fit (an entry alone is
        // always sent).
        if data.len() > MAX_APPEND_ENTRIES_BYTES && rpc.entries.len() > 1 {
            // Entries differ in size: aim at three quarters of the limit so the retry fits.
            let fit = (rpc.entries.len() as u64).saturating_mul(MAX_APPEND_ENTRIES_BYTES as u64)
                / data.len() as u64
                * 3
                / 4;
            return Err(PayloadTooLarge::new_entries_hint(fit.max(1)).into());
        }
        self.send(RPCTypes::AppendEntries, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::Proposal;
    use crate::types::LogEntry;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    use singularity_scheduler::{Command, Entry, JobId};

    /// A log entry carrying a batch of `writes` metadata updates of `value_bytes` each.
    fn batch_entry(index: u64, writes: usize, value_bytes: usize) -> LogEntry {
        let entries = (0..writes)
            .map(|_| {
                Entry::system(
                    0,
                    Command::UpdateJobMetadata {
                        job: JobId(1),
                        expected_version: None,
                        set: [("v".to_string(), "x".repeat(value_bytes))]
                            .into_iter()
                            .collect(),
                        remove: Vec::new(),
                    },
                )
            })
            .collect();
        LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::of(entries)),
        }
    }

    fn request(entries: Vec<LogEntry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[tokio::test]
    async fn an_oversized_append_asks_openraft_for_fewer_entries_but_one_entry_is_sent() {
        // Port 1 on loopback refuses connections: anything actually sent is Unreachable.
        let mut network = Network::new(1);
        let mut peer = network.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let option = RPCOption::new(Duration::from_millis(1_000));
        let big: Vec<LogEntry> = (1..=3).map(|i| batch_entry(i, 1_000, 600)).collect();
        match peer
            .append_entries(request(big.clone()), option.clone())
            .await
        {
            Err(RPCError::PayloadTooLarge(too_large)) => {
                assert_eq!(too_large.entries_hint(), 1, "{too_large}")
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        match peer
            .append_entries(request(big[..1].to_vec()), option)
            .await
        {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("one entry must be sent whatever its size, got {other:?}"),
        }
    }
}
