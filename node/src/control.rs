//! The control protocol on the proxy's Unix socket: length-prefixed JSON messages for the
//! worker handshake (attach, then "mapped") and for agent requests (checkpoint a job, stats).
//! Per-call traffic never goes through the socket; it uses the shared-memory channel.
//!
//! It must not do device work; messages are bounded by `MAX_CONTROL_MESSAGE_BYTES`.

use crate::error::{NodeError, Result};
use crate::limits::MAX_CONTROL_MESSAGE_BYTES;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where and how a worker attaches one rank: everything the agent puts in its environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub job: String,
    pub incarnation: String,
    pub rank: u32,
    pub world_size: u32,
    pub proxy_socket: PathBuf,
    pub restore_dir: Option<PathBuf>,
    pub collective_bytes: u64,
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// A worker attaches one rank of a job; with `restore_dir`, the rank's buffers and host
    /// state are loaded (and verified) from that checkpoint.
    Attach(Attachment),
    /// The worker has mapped its channel; the proxy unlinks the file.
    Mapped,
    /// The agent asks for a checkpoint of `job` at the next step boundary every rank reaches.
    Checkpoint {
        job: String,
        dir: PathBuf,
        stop: bool,
    },
    /// Counters of the proxy.
    Stats,
}

/// The proxy's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyStats {
    pub device_index: u32,
    pub ranks_attached: u64,
    pub swaps: u64,
    /// Bytes actually copied between device and host by splicing swaps.
    pub swap_bytes: u64,
    /// Bytes a naive swap (everything out, everything in) would have copied.
    pub naive_swap_bytes: u64,
    /// Time spent swapping (checksums and copies), in nanoseconds.
    #[serde(default)]
    pub swap_ns: u64,
    /// Time ranks spent waiting for the device while another rank held it, in nanoseconds.
    #[serde(default)]
    pub device_wait_ns: u64,
    pub checkpoints_written: u64,
    pub restores: u64,
    /// The highest step boundary any rank has reported (progress, for agents and tests).
    pub last_step: u64,
}

/// A reply on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    Attached {
        channel_path: PathBuf,
        step: u64,
        host_state: Option<Vec<u8>>,
    },
    Ok,
    Stats(ProxyStats),
    Error {
        message: String,
    },
}

/// Writes one framed message.
pub fn send<T: Serialize>(stream: &mut UnixStream, msg: &T) -> Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(|e| NodeError::json("control message", e))?;
    NodeError::check_limit(
        "control message bytes",
        bytes.len() as u64,
        MAX_CONTROL_MESSAGE_BYTES as u64,
    )?;
    stream
        .write_all(&(bytes.len() as u32).to_le_bytes())
        .and_then(|()| stream.write_all(&bytes))
        .map_err(|e| NodeError::io("sending a control message", e))
}

/// Reads one framed message; `Ok(None)` when the peer closed the socket cleanly.
pub fn recv<T: DeserializeOwned>(stream: &mut UnixStream) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(NodeError::io("reading a control message", e)),
        Ok(()) => {}
    }
    let len = u32::from_le_bytes(len) as usize;
    NodeError::check_limit(
        "control message bytes",
        len as u64,
        MAX_CONTROL_MESSAGE_BYTES as u64,
    )?;
    let mut bytes = vec![0u8; len];
    stream
        .read_exact(&mut bytes)
        .map_err(|e| NodeError::io("reading a control message", e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| NodeError::json("control message", e))
}

/// One request/reply exchange on a fresh connection (what the agent uses).
pub fn request(
    socket: &std::path::Path,
    msg: &ControlRequest,
    timeout_ms: u64,
) -> Result<ControlReply> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| NodeError::io(format!("connecting to proxy {}", socket.display()), e))?;
    let timeout = Some(std::time::Duration::from_millis(timeout_ms));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| NodeError::io("socket timeout", e))?;
    send(&mut stream, msg)?;
    match recv(&mut stream)? {
        Some(ControlReply::Error { message }) => Err(NodeError::Proxy(message)),
        Some(reply) => Ok(reply),
        None => Err(NodeError::Disconnected(format!(
            "proxy {}",
            socket.display()
        ))),
    }
}
