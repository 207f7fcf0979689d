//! Replica-to-replica transport over tonic: the `RaftNetworkFactory` openraft uses to reach
//! peers (one reused HTTP/2 channel per peer, per-RPC deadlines from openraft, bounded message
//! sizes) and the `RaftService` server that hands incoming RPCs to the local `Raft`. Payloads
//! are versioned bincode encodings of openraft's messages. It must not interpret entries.

pub mod peer;
pub mod service;

pub use peer::Network;
pub use service::RaftGrpc;

use crate::limits::{CONNECT_TIMEOUT_MS, MAX_GRPC_MESSAGE_BYTES};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A lazily connecting channel to `addr` (`host:port`), reconnecting on failure.
pub fn channel(addr: &str, rpc_timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(rpc_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

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
