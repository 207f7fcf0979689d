//! Replica-to-replica transport over tonic: the `RaftNetworkFactory` openraft uses to reach
//! peers (one reused HTTP/2 channel per peer, append-entries on one long-lived stream per
//! peer, per-RPC deadlines from openraft, bounded message sizes) and the `RaftService` server
//! that hands incoming RPCs to the local `Raft`. Payloads
//! are versioned bincode encodings of openraft's messages. It must not interpret entries.

pub mod peer;
pub mod service;
mod stream;

pub use peer::{Network, NetworkStats};
pub use service::RaftGrpc;

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
pub use singularity_proto::channel::channel;

/// Encodes a wire payload.
pub(crate) fn encode_payload<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, crate::RaftError> {
    crate::store::codec::encode(what, value)
}

/// Decodes a wire payload, bounded by the gRPC message limit.
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, crate::RaftError> {
    crate::store::codec::decode_bounded(what, bytes, MAX_GRPC_MESSAGE_BYTES)
}
