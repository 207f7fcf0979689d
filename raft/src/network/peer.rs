//! The client side of replica-to-replica RPCs: `Network` (openraft's `RaftNetworkFactory`)
//! keeps one tonic channel per peer address and reuses it for every RPC; `Peer` sends one
//! RPC with openraft's deadline. Transport failures become `Unreachable`, deadlines `Timeout`,
//! and the remote Raft's own errors `RemoteError`. It must not retry on its own: openraft does.

use super::{channel, decode_payload, encode_payload};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
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
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return Err(
                    Unreachable::new(&AnyError::error(format!("{}: {e}", self.addr))).into(),
                )
            }
        };
        let data = encode_payload("raft request", request)
            .map_err(|e| NetworkError::new(&AnyError::error(e.to_string())))?;
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
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                        Unreachable::new(&error).into()
                    }
                    tonic::Code::DeadlineExceeded => RPCError::Timeout(Timeout {
                        action: kind,
                        id: self.local,
                        target: self.target,
                        timeout: deadline,
                    }),
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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
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
