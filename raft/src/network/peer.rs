//! The client side of replica-to-replica RPCs: `Network` (openraft's `RaftNetworkFactory`)
//! keeps one tonic channel per peer address for vote and install-snapshot, and keeps the idle
//! append-entries links of dropped `Peer`s for the next `Peer` to that address; `Peer` sends
//! each append-entries request on its one open link (plain TCP, see `frame`; opened on first
//! use, and a fresh one after any failure) and vote and install-snapshot as unary gRPC calls,
//! all with openraft's deadline. A peer that does not answer the link's preface (an older
//! replica) is sent unary gRPC append-entries for a while. An address no client was made for
//! in `UNUSED_LINK_TTL_MS` (a member removed from the cluster) loses its channel and idle
//! links, so they do not stay open until the peer goes away. Transport failures become
//! `Unreachable`, deadlines `Timeout`, and the remote Raft's own errors `RemoteError`. It must
//! not retry on its own: openraft does.

use super::link::{AppendLink, LinkFailure};
use super::{channel, decode_payload, encode_payload};
use crate::limits::{
    MAX_APPEND_ENTRIES_BYTES, MAX_GRPC_MESSAGE_BYTES, MAX_IDLE_LINKS_PER_PEER, UNARY_FALLBACK_MS,
    UNUSED_LINK_TTL_MS,
};
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Longest any single replica RPC may take (openraft's own deadline is usually shorter).
const MAX_RPC_MS: u64 = 30_000;
/// Pause of replication to a peer that could not be reached, in milliseconds.
const UNREACHABLE_PEER_BACKOFF_MS: u64 = 100;
// One log record alone must always fit a request, or replication could never make progress.
const _: () = assert!(crate::store::codec::MAX_RECORD_BYTES + 64 * 1024 < MAX_GRPC_MESSAGE_BYTES);

/// Counts of the transport's append-entries link events, for tests and operators.
#[derive(Debug, Default)]
pub struct NetworkStats {
    /// Append-entries links opened.
    pub links_opened: AtomicU64,
    /// Links dropped because a call on them failed or timed out, or the peer had closed
    /// them (a fresh one is opened for the next call).
    pub links_dropped: AtomicU64,
    /// Append-entries requests sent as unary calls because the peer lacks the link.
    pub unary_appends: AtomicU64,
}

/// What the network keeps per peer address.
struct PeerLink {
    channel: Channel,
    /// Open links no `Peer` holds now, for the next one to this address.
    idle_links: Vec<AppendLink>,
    /// Until when append-entries go unary (the peer did not answer the link's preface).
    unary_until: Option<Instant>,
    /// When a client for this address was last made or handed back its link.
    last_used: Instant,
}

/// openraft's network factory: one reused channel per peer address.
#[derive(Clone)]
pub struct Network {
    local: NodeId,
    links: Arc<Mutex<HashMap<String, PeerLink>>>,
    stats: Arc<NetworkStats>,
}

impl Network {
    pub fn new(local: NodeId) -> Network {
        Network {
            local,
            links: Arc::new(Mutex::new(HashMap::new())),
            stats: Arc::new(NetworkStats::default()),
        }
    }

    /// This network's append-entries link counters.
    pub fn stats(&self) -> Arc<NetworkStats> {
        self.stats.clone()
    }

    /// The addresses this network keeps a channel to, sorted.
    #[cfg(test)]
    fn linked_addresses(&self) -> Vec<String> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut addresses: Vec<String> = links.keys().cloned().collect();
        addresses.sort();
        addresses
    }

    fn channel_to(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // A `Peer` still using a forgotten link keeps its own channel; only the shared copy
        // and the idle links go.
        links.retain(|_, link| {
            now.duration_since(link.last_used) < Duration::from_millis(UNUSED_LINK_TTL_MS)
        });
        if let Some(existing) = links.get_mut(addr) {
            existing.last_used = now;
            return Ok(existing.channel.clone());
        }
        let created = channel(addr, Duration::from_millis(MAX_RPC_MS))?;
        links.insert(
            addr.to_string(),
            PeerLink {
                channel: created.clone(),
                idle_links: Vec::new(),
                unary_until: None,
                last_used: now,
            },
        );
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
            append_link: None,
            links: self.links.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// A connection to one peer.
pub struct Peer {
    local: NodeId,
    target: NodeId,
    addr: String,
    client: Result<RaftServiceClient<Channel>, String>,
    /// The open append-entries link, between calls. During a call it is moved into the
    /// call, so a call that openraft abandons (its deadline) drops it with its unread reply.
    append_link: Option<AppendLink>,
    links: Arc<Mutex<HashMap<String, PeerLink>>>,
    stats: Arc<NetworkStats>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;
type RpcError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl Drop for Peer {
    fn drop(&mut self) {
        let Some(append_link) = self.append_link.take() else {
            return;
        };
        if append_link.is_closed() {
            return;
        }
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get_mut(&self.addr) {
            link.last_used = Instant::now();
            if link.idle_links.len() < MAX_IDLE_LINKS_PER_PEER {
                link.idle_links.push(append_link);
            }
        }
    }
}

impl Peer {
    fn timeout<E: std::error::Error>(&self, kind: RPCTypes, deadline: Duration) -> RpcError<E> {
        RPCError::Timeout(Timeout {
            action: kind,
            id: self.local,
            target: self.target,
            timeout: deadline,
        })
    }

    /// openraft's error for a gRPC status.
    fn status_error<E: std::error::Error>(
        &self,
        kind: RPCTypes,
        status: &tonic::Status,
        deadline: Duration,
    ) -> RpcError<E> {
        let error = AnyError::error(format!("{} ({}): {status}", self.target, self.addr));
        match status.code() {
            // The peer cannot be reached: openraft backs off before it tries again.
            tonic::Code::Unavailable | tonic::Code::Unknown => Unreachable::new(&error).into(),
            // The deadline passed (tonic's own timeout answers Cancelled): a slow peer, not a
            // missing one, so openraft retries without backing off.
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => self.timeout(kind, deadline),
            _ => NetworkError::new(&error).into(),
        }
    }

    /// openraft's error for a failed call on the append-entries link.
    fn link_error<E: std::error::Error>(&self, failure: &LinkFailure) -> RpcError<E> {
        let error = AnyError::error(format!("{} ({}): {failure}", self.target, self.addr));
        match failure {
            // The peer cannot be reached or went away: openraft backs off before it tries
            // again.
            LinkFailure::Io(_) | LinkFailure::Closed(_) | LinkFailure::Unsupported => {
                Unreachable::new(&error).into()
            }
            LinkFailure::Frame(_) | LinkFailure::Mismatch { .. } | LinkFailure::Refused(_) => {
                NetworkError::new(&error).into()
            }
        }
    }

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

    /// Decodes a reply: openraft's result, or its error as the remote's.
    // The error type is openraft's `RaftNetwork` contract, large or not.
    #[allow(clippy::result_large_err)]
    fn decode_reply<Resp, E>(&self, data: &[u8]) -> RpcResult<Resp, E>
    where
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> = decode_payload("raft reply", data)
            .map_err(|e| NetworkError::new(&AnyError::error(e.to_string())))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends one encoded request as a unary call and decodes the reply.
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
            Err(_) => return Err(self.timeout(kind, deadline)),
            Ok(Err(status)) => return Err(self.status_error(kind, &status, deadline)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.decode_reply(&reply.data)
    }

    /// Whether append-entries go unary to this peer now (it lacked the link lately).
    fn unary_appends(&self) -> bool {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .get(&self.addr)
            .and_then(|link| link.unary_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Remembers that this peer lacks the link, for `UNARY_FALLBACK_MS`.
    fn fall_back_to_unary(&self) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get_mut(&self.addr) {
            link.unary_until = Some(Instant::now() + Duration::from_millis(UNARY_FALLBACK_MS));
            link.idle_links.clear();
        }
        tracing::info!(
            target = self.target,
            addr = %self.addr,
            "the peer does not serve append-entries links; sending unary append-entries"
        );
    }

    /// An open link: this peer's own, an idle one of the network's, or a new one.
    async fn checkout_link(&mut self) -> Result<AppendLink, LinkFailure> {
        if let Some(append_link) = self.append_link.take() {
            if !append_link.is_closed() {
                return Ok(append_link);
            }
            self.stats.links_dropped.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(link) = links.get_mut(&self.addr) {
                while let Some(append_link) = link.idle_links.pop() {
                    if !append_link.is_closed() {
                        return Ok(append_link);
                    }
                }
            }
        }
        AppendLink::open(&self.addr, self.stats.clone()).await
    }

    /// Sends one encoded append-entries request as a unary call (to a peer without the link).
    async fn send_unary_append(
        &mut self,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.stats.unary_appends.fetch_add(1, Ordering::Relaxed);
        self.send(RPCTypes::AppendEntries, data, option).await
    }

    /// Sends one encoded append-entries request on the link (unary to a peer without it).
    async fn send_append(
        &mut self,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        if self.unary_appends() {
            return self.send_unary_append(data, option).await;
        }
        let deadline = option.hard_ttl();
        let until = Instant::now() + deadline;
        let mut append_link = match tokio::time::timeout_at(until, self.checkout_link()).await {
            Err(_) => return Err(self.timeout(RPCTypes::AppendEntries, deadline)),
            Ok(Ok(append_link)) => append_link,
            Ok(Err(LinkFailure::Unsupported)) => {
                self.fall_back_to_unary();
                return self.send_unary_append(data, option).await;
            }
            Ok(Err(failure)) => return Err(self.link_error(&failure)),
        };
        // Unless answered, the link is dropped here (or with this future, if openraft's own
        // deadline cancels it first) with its request, and counted as dropped.
        match tokio::time::timeout_at(until, append_link.call(data)).await {
            Err(_) => Err(self.timeout(RPCTypes::AppendEntries, deadline)),
            Ok(Ok(reply)) => {
                self.append_link = Some(append_link);
                self.decode_reply(&reply)
            }
            Ok(Err(failure)) => {
                tracing::debug!(target = self.target, addr = %self.addr, %failure, "append-entries link dropped");
                Err(self.link_error(&failure))
            }
        }
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
        self.send_append(data, &option).await
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
    async fn a_link_unused_for_its_ttl_is_forgotten_at_the_next_client_and_made_again_on_use() {
        let mut network = Network::new(1);
        let removed = BasicNode::new("127.0.0.1:1");
        let member = BasicNode::new("127.0.0.1:2");
        drop(network.new_client(2, &removed).await);
        let _held = network.new_client(3, &member).await;
        let both = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        assert_eq!(network.linked_addresses(), both);
        let ttl = Duration::from_millis(UNUSED_LINK_TTL_MS);
        {
            let mut links = network.links.lock().unwrap();
            let link = links.get_mut("127.0.0.1:1").unwrap();
            link.last_used = Instant::now()
                .checked_sub(ttl + Duration::from_millis(1))
                .expect("the clock is past the TTL");
        }
        drop(network.new_client(3, &member).await);
        assert_eq!(
            network.linked_addresses(),
            vec!["127.0.0.1:2".to_string()],
            "the address unused for longer than the TTL is forgotten; the one in use is kept"
        );
        drop(network.new_client(2, &removed).await);
        assert_eq!(network.linked_addresses(), both, "and linked again on use");
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
