//! Replica-to-replica transport: the `RaftNetworkFactory` openraft uses to reach peers
//! (append-entries on one long-lived plain TCP link per peer, vote and install-snapshot as
//! unary gRPC calls on one reused HTTP/2 channel per peer, per-RPC deadlines from openraft,
//! bounded message sizes), the server ends that hand incoming RPCs to the local `Raft` (the
//! tonic `RaftService`, and `link_server` for links), and the routing of each accepted
//! connection to one or the other. Payloads are versioned bincode encodings of openraft's
//! messages. It must not interpret entries.

pub mod frame;
mod link;
pub mod link_server;
pub mod peer;
pub mod service;

pub use link_server::route_connections;
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
