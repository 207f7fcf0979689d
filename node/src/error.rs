//! The one error type of the node crate: every failure of the proxy, its channel, the runtime
//! and checkpoints, with the facts an operator needs.
//!
//! It must not hide a cause: variants carry the limit, path or peer that failed.

use std::path::PathBuf;

/// Everything that can go wrong on the node side.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what} is {value}, above the limit {limit}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("device {device_index} is out of memory: {requested_bytes} bytes requested, {free_bytes} free of {memory_bytes}")]
    OutOfDeviceMemory {
        device_index: u32,
        requested_bytes: u64,
        free_bytes: u64,
        memory_bytes: u64,
    },
    #[error("unknown buffer handle {handle} for job {job} rank {rank}")]
    UnknownHandle { job: String, rank: u32, handle: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("shape mismatch in {kernel}: {detail}")]
    Shape {
        kernel: &'static str,
        detail: String,
    },
    #[error("proxy error: {0}")]
    Proxy(String),
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("peer {0} disconnected")]
    Disconnected(String),
    #[error("checkpoint {path} is invalid: {detail}")]
    BadCheckpoint { path: PathBuf, detail: String },
    #[error("checkpoint {path}: checksum mismatch (expected {expected}, found {actual}); refusing to restore")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("preempted: checkpointed at step {step} and stopped")]
    Preempted { step: u64 },
    #[error("configuration: {0}")]
    Config(String),
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("--devices {input:?}: {problem}; use sim:COUNT[:MEMORY[:KIND]] or nvml")]
    BadDeviceSource { input: String, problem: String },
    #[error("NVML is not available on this machine ({detail}). Install the NVIDIA driver, or use --devices sim:COUNT[:MEMORY] for simulated devices.")]
    NvmlUnavailable { detail: String },
    #[error("NVML {what}: {detail}")]
    Nvml { what: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The node crate's result type.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

impl NodeError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NodeError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a JSON error with what was being encoded or decoded.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        NodeError::Json {
            context: context.into(),
            source,
        }
    }

    /// Checks `value <= limit`, naming the bound when it is exceeded.
    pub fn check_limit(what: &'static str, value: u64, limit: u64) -> Result<()> {
        if value > limit {
            return Err(NodeError::LimitExceeded { what, value, limit });
        }
        Ok(())
    }
}
