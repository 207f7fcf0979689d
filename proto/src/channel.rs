//! `channel`: how every gRPC connection of the project is opened (client to replica, replica to
//! replica, agent to replica): lazily, with a connect timeout, per-RPC deadlines, TCP_NODELAY
//! and HTTP/2 keep-alives. It must not retry or interpret anything; callers do.

use crate::limits::CONNECT_TIMEOUT_MS;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A lazily connecting channel to `addr` (`host:port`), reconnecting on failure.
pub fn channel(addr: &str, rpc_timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri_of(addr))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(rpc_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A lazily connecting channel for long-lived server streams (an agent's watch, `job logs
/// --follow`): no per-RPC deadline, keep-alives detect a dead peer instead.
pub fn streaming_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri_of(addr))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(4))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// `http://host:port` for a `host:port` (an address with a scheme stays as it is).
fn uri_of(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}
