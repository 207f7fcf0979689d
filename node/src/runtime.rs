//! The worker runtime: what a training program links to. It connects the program's rank to the
//! device proxy the agent assigned (or to an in-process simulated device), hands out buffers by
//! name, keeps the program's registered host state (step, RNG, data cursor: any serde type), and
//! at every step boundary lets the proxy take a transparent checkpoint. On restore the same
//! buffers come back under the same handles and the state and step continue where they were.
//!
//! The program contains no checkpoint code: it asks for its buffers with initializers and loops
//! on `next_step`. The runtime must not decide when to checkpoint (the agent does, through the
//! proxies) and must not touch device memory except through its backend.

use crate::channel::{
    carries_kernels, encode_kernel, op, Channel, CHANNEL_BYTES, DATA, KERNEL_WORDS_BYTES,
    PREFIX_KERNELS_ARG,
};
pub use crate::control::Attachment;
use crate::control::{self, ControlReply, ControlRequest};
use crate::device::{BufferSet, DevBuf, Handle, Kernel};
use crate::error::{NodeError, Result};
use crate::limits::{
    CALL_TIMEOUT_MS, CHANNEL_DATA_BYTES, MAX_COLLECTIVE_BYTES, MAX_HOST_STATE_BYTES,
    MAX_KERNELS_PER_BATCH,
};
use crate::shm::ShmRegion;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code of a worker that was checkpointed and stopped (preempted); EX_TEMPFAIL.
pub const PREEMPTED_EXIT_CODE: i32 = 75;

/// Environment variables through which the agent wires a worker to its proxy.
pub mod env {
    pub const JOB: &str = "SINGULARITY_JOB";
    pub const INCARNATION: &str = "SINGULARITY_INCARNATION";
    pub const RANK: &str = "SINGULARITY_RANK";
    pub const WORLD_SIZE: &str = "SINGULARITY_WORLD_SIZE";
    pub const PROXY_SOCKET: &str = "SINGULARITY_PROXY_SOCKET";
    pub const RESTORE_DIR: &str = "SINGULARITY_RESTORE_DIR";
    pub const COLLECTIVE_BYTES: &str = "SINGULARITY_COLLECTIVE_BYTES";
}

/// Where a worker's device calls go: the proxy, or a simulated device in the same process.
pub trait Backend {
    fn alloc(&mut self, len: usize) -> Result<Handle>;
    fn free(&mut self, h: Handle) -> Result<()>;
    fn copy_in(&mut self, h: Handle, offset: usize, data: &[f32]) -> Result<()>;
    fn copy_out(&mut self, h: Handle, offset: usize, out: &mut [f32]) -> Result<()>;
    fn kernel(&mut self, k: Kernel) -> Result<f32>;
    fn allreduce_sum(&mut self, h: Handle) -> Result<()>;
    fn barrier(&mut self) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
    /// Marks the end of `step` steps; true when the job's ranks agreed on a checkpoint here.
    fn step_boundary(&mut self, step: u64) -> Result<bool>;
    /// Writes this rank's part of the agreed checkpoint; true when the job must stop after it.
    fn checkpoint(&mut self, step: u64, host_state: &[u8]) -> Result<bool>;
    fn detach(&mut self) -> Result<()>;
}

/// A simulated device in the worker's own process (world size 1): the baseline the proxy is
/// measured against.
#[derive(Default)]
pub struct InProcess {
    bufs: BufferSet,
    next_handle: Handle,
}

impl InProcess {
    fn buf(&mut self, h: Handle) -> Result<&mut Vec<f32>> {
        self.bufs.get_mut(h)
    }
}

fn range_err(h: Handle) -> NodeError {
    NodeError::BadRequest(format!("copy range outside buffer {h}"))
}

impl Backend for InProcess {
    fn alloc(&mut self, len: usize) -> Result<Handle> {
        self.next_handle += 1;
        self.bufs.buffers.insert(
            self.next_handle,
            DevBuf {
                data: vec![0.0; len],
                ..Default::default()
            },
        );
        Ok(self.next_handle)
    }
    fn free(&mut self, h: Handle) -> Result<()> {
        self.bufs
            .buffers
            .remove(&h)
            .map(|_| ())
            .ok_or_else(|| range_err(h))
    }
    fn copy_in(&mut self, h: Handle, offset: usize, data: &[f32]) -> Result<()> {
        let b = self.buf(h)?;
        b.get_mut(offset..offset + data.len())
            .ok_or_else(|| range_err(h))?
            .copy_from_slice(data);
        Ok(())
    }
    fn copy_out(&mut self, h: Handle, offset: usize, out: &mut [f32]) -> Result<()> {
        let b = self.buf(h)?;
        out.copy_from_slice(
            b.get(offset..offset + out.len())
                .ok_or_else(|| range_err(h))?,
        );
        Ok(())
    }
    fn kernel(&mut self, k: Kernel) -> Result<f32> {
        self.bufs.run(k)
    }
    fn allreduce_sum(&mut self, h: Handle) -> Result<()> {
        self.buf(h).map(|_| ())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    fn step_boundary(&mut self, _step: u64) -> Result<bool> {
        Ok(false)
    }
    fn checkpoint(&mut self, _step: u64, _host_state: &[u8]) -> Result<bool> {
        Err(NodeError::BadRequest(
            "the in-process device does not checkpoint".into(),
        ))
    }
    fn detach(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Attachment {
    /// Reads the attachment from the `SINGULARITY_*` environment variables.
    pub fn from_env() -> Result<Self> {
        let var =
            |k: &str| std::env::var(k).map_err(|_| NodeError::Config(format!("{k} is not set")));
        let num = |k: &str| {
            var(k)?
                .parse::<u64>()
                .map_err(|_| NodeError::Config(format!("{k} is not a number")))
        };
        Ok(Attachment {
            job: var(env::JOB)?,
            incarnation: var(env::INCARNATION)?,
            rank: num(env::RANK)? as u32,
            world_size: num(env::WORLD_SIZE)? as u32,
            proxy_socket: PathBuf::from(var(env::PROXY_SOCKET)?),
            restore_dir: std::env::var(env::RESTORE_DIR)
                .ok()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            collective_bytes: std::env::var(env::COLLECTIVE_BYTES)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4 << 20),
        })
    }
}

/// A rank attached to a device proxy over shared memory.
///
/// Kernel launches are asynchronous, as on a GPU stream: a kernel that returns nothing the
/// program reads (all but `Dot`) is queued and sent, with the others queued since, in one
/// request ahead of the next call that waits for the proxy (any other call, or a `Dot`, whose
/// value is the batch's answer). A failed kernel is reported by that call, and the kernels
/// queued after it do not run. A call without a payload carries the batch in its own request
/// (`carries_kernels`); the others send it first. Fewer round trips per step is most of the
/// proxy's overhead saved: each costs two wake-ups when the worker and the proxy share a core.
pub struct ProxyClient {
    stream: UnixStream,
    channel: Channel,
    eof: bool,
    /// Encoded kernels launched and not yet sent, at most `MAX_KERNELS_PER_BATCH`.
    queued: Vec<[u64; 8]>,
}

impl ProxyClient {
    /// Attaches; returns the client and, on restore, the step and host state of the checkpoint.
    pub fn attach(a: &Attachment) -> Result<(Self, u64, Option<Vec<u8>>)> {
        NodeError::check_limit("collective bytes", a.collective_bytes, MAX_COLLECTIVE_BYTES)?;
        let mut stream = UnixStream::connect(&a.proxy_socket).map_err(|e| {
            NodeError::io(
                format!("connecting to proxy {}", a.proxy_socket.display()),
                e,
            )
        })?;
        let req = ControlRequest::Attach(a.clone());
        control::send(&mut stream, &req)?;
        let (path, step, host_state) = match control::recv(&mut stream)? {
            Some(ControlReply::Attached {
                channel_path,
                step,
                host_state,
            }) => (channel_path, step, host_state),
            Some(ControlReply::Error { message }) => return Err(NodeError::Proxy(message)),
            other => {
                return Err(NodeError::Proxy(format!(
                    "unexpected attach reply {other:?}"
                )))
            }
        };
        let channel = Channel::new(ShmRegion::open(&path, CHANNEL_BYTES, false)?)?;
        control::send(&mut stream, &ControlRequest::Mapped)?;
        stream
            .set_nonblocking(true)
            .map_err(|e| NodeError::io("socket mode", e))?;
        Ok((
            ProxyClient {
                stream,
                channel,
                eof: false,
                queued: Vec::new(),
            },
            step,
            host_state,
        ))
    }

    /// An empty round trip through the channel (what the latency benchmark measures).
    pub fn noop(&mut self) -> Result<()> {
        self.call(op::NOOP, [0; 8], |_| Ok(0)).map(|_| ())
    }

    /// Sends the queued kernels (in the request itself when `op` can carry them, otherwise
    /// first, as a batch), then the request, and waits for its reply.
    fn call(
        &mut self,
        op: u32,
        mut args: [u64; 8],
        fill: impl FnOnce(&ShmRegion) -> Result<usize>,
    ) -> Result<crate::channel::Reply> {
        if self.queued.is_empty() {
            return self.send(op, args, fill);
        }
        if !carries_kernels(op) {
            self.flush_kernels()?;
            return self.send(op, args, fill);
        }
        assert_eq!(
            args[PREFIX_KERNELS_ARG], 0,
            "the kernel count's word is free"
        );
        let batch = std::mem::take(&mut self.queued);
        args[PREFIX_KERNELS_ARG] = batch.len() as u64;
        self.send(op, args, |r| {
            let own = fill(r)?;
            assert_eq!(
                own, 0,
                "ops that carry kernels have no payload of their own"
            );
            write_kernels(r, &batch)
        })
    }

    /// Sends the queued kernels as one batch, if any; returns the last one's value.
    fn flush_kernels(&mut self) -> Result<f32> {
        if self.queued.is_empty() {
            return Ok(0.0);
        }
        let batch = std::mem::take(&mut self.queued);
        assert!(
            batch.len() <= MAX_KERNELS_PER_BATCH,
            "the kernel queue is flushed when full"
        );
        let reply = self.send(
            op::KERNELS,
            [batch.len() as u64, 0, 0, 0, 0, 0, 0, 0],
            |r| write_kernels(r, &batch),
        )?;
        Ok(f32::from_bits(reply.vals[0] as u32))
    }

    fn send(
        &mut self,
        op: u32,
        args: [u64; 8],
        fill: impl FnOnce(&ShmRegion) -> Result<usize>,
    ) -> Result<crate::channel::Reply> {
        let stream = &mut self.stream;
        let eof = &mut self.eof;
        let alive = || {
            let mut b = [0u8; 1];
            match stream.read(&mut b) {
                Ok(0) => *eof = true,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => *eof = true,
                _ => {}
            }
            !*eof
        };
        self.channel.call(
            op,
            args,
            fill,
            Duration::from_millis(CALL_TIMEOUT_MS),
            alive,
        )
    }
}

/// Writes encoded kernels into the data area; returns their bytes.
fn write_kernels(r: &ShmRegion, batch: &[[u64; 8]]) -> Result<usize> {
    for (i, words) in batch.iter().enumerate() {
        for (j, w) in words.iter().enumerate() {
            r.write_u64(DATA + i * KERNEL_WORDS_BYTES + 8 * j, *w)?;
        }
    }
    Ok(batch.len() * KERNEL_WORDS_BYTES)
}

const CHUNK_ELEMS: usize = CHANNEL_DATA_BYTES / 4;

impl Backend for ProxyClient {
    fn alloc(&mut self, len: usize) -> Result<Handle> {
        Ok(self
            .call(op::ALLOC, [len as u64, 0, 0, 0, 0, 0, 0, 0], |_| Ok(0))?
            .vals[0])
    }
    fn free(&mut self, h: Handle) -> Result<()> {
        self.call(op::FREE, [h, 0, 0, 0, 0, 0, 0, 0], |_| Ok(0))
            .map(|_| ())
    }
    fn copy_in(&mut self, h: Handle, offset: usize, data: &[f32]) -> Result<()> {
        for (i, chunk) in data.chunks(CHUNK_ELEMS).enumerate() {
            let args = [
                h,
                (offset + i * CHUNK_ELEMS) as u64,
                chunk.len() as u64,
                0,
                0,
                0,
                0,
                0,
            ];
            self.call(op::COPY_IN, args, |r| {
                r.write_f32s(DATA, chunk).map(|()| chunk.len() * 4)
            })?;
        }
        Ok(())
    }
    fn copy_out(&mut self, h: Handle, offset: usize, out: &mut [f32]) -> Result<()> {
        for (i, chunk) in out.chunks_mut(CHUNK_ELEMS).enumerate() {
            let args = [
                h,
                (offset + i * CHUNK_ELEMS) as u64,
                chunk.len() as u64,
                0,
                0,
                0,
                0,
                0,
            ];
            let reply = self.call(op::COPY_OUT, args, |_| Ok(0))?;
            if reply.data_len != chunk.len() * 4 {
                return Err(NodeError::Proxy(format!(
                    "copy-out returned {} bytes for {} elements",
                    reply.data_len,
                    chunk.len()
                )));
            }
            self.channel.region.read_f32s(DATA, chunk)?;
        }
        Ok(())
    }
    fn kernel(&mut self, k: Kernel) -> Result<f32> {
        self.queued.push(encode_kernel(&k));
        if matches!(k, Kernel::Dot { .. }) || self.queued.len() >= MAX_KERNELS_PER_BATCH {
            return self.flush_kernels();
        }
        Ok(0.0)
    }
    fn allreduce_sum(&mut self, h: Handle) -> Result<()> {
        self.call(op::ALLREDUCE, [h, 0, 0, 0, 0, 0, 0, 0], |_| Ok(0))
            .map(|_| ())
    }
    fn barrier(&mut self) -> Result<()> {
        self.call(op::BARRIER, [0; 8], |_| Ok(0)).map(|_| ())
    }
    fn sync(&mut self) -> Result<()> {
        self.call(op::SYNC, [0; 8], |_| Ok(0)).map(|_| ())
    }
    fn step_boundary(&mut self, step: u64) -> Result<bool> {
        Ok(self
            .call(op::STEP_BOUNDARY, [step, 0, 0, 0, 0, 0, 0, 0], |_| Ok(0))?
            .vals[0]
            != 0)
    }
    fn checkpoint(&mut self, step: u64, host_state: &[u8]) -> Result<bool> {
        NodeError::check_limit(
            "host state bytes",
            host_state.len() as u64,
            MAX_HOST_STATE_BYTES.min(CHANNEL_DATA_BYTES) as u64,
        )?;
        let reply = self.call(op::CHECKPOINT, [step, 0, 0, 0, 0, 0, 0, 0], |r| {
            r.write_bytes(DATA, host_state).map(|()| host_state.len())
        })?;
        Ok(reply.vals[0] != 0)
    }
    fn detach(&mut self) -> Result<()> {
        self.call(op::DETACH, [0; 8], |_| Ok(0)).map(|_| ())
    }
}

/// What the runtime saves for a rank besides its buffers.
#[derive(Serialize, Deserialize)]
struct HostImage<S> {
    step: u64,
    names: BTreeMap<String, (Handle, u64)>,
    state: S,
}

/// The runtime a training program uses; `S` is the program's registered host state.
pub struct Runtime<S> {
    backend: Box<dyn Backend>,
    rank: u32,
    world_size: u32,
    step: u64,
    started: bool,
    names: BTreeMap<String, (Handle, u64)>,
    state: S,
}

impl<S: Serialize + DeserializeOwned> Runtime<S> {
    /// Attaches as the agent's environment says; `init` gives the host state of a fresh start
    /// (it is not called on restore: the checkpoint's state is used).
    pub fn from_env(init: impl FnOnce(u32, u32) -> S) -> Result<Self> {
        Self::attach(&Attachment::from_env()?, init)
    }

    /// Attaches to a proxy as `a` says.
    pub fn attach(a: &Attachment, init: impl FnOnce(u32, u32) -> S) -> Result<Self> {
        let (client, step, host_state) = ProxyClient::attach(a)?;
        let mut rt = Runtime {
            backend: Box::new(client),
            rank: a.rank,
            world_size: a.world_size,
            step: 0,
            started: false,
            names: BTreeMap::new(),
            state: init(a.rank, a.world_size),
        };
        if let Some(bytes) = host_state {
            let image: HostImage<S> = serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::json("restored host state", e))?;
            if image.step != step {
                return Err(NodeError::Proxy(format!(
                    "host state is at step {}, checkpoint at {step}",
                    image.step
                )));
            }
            rt.step = image.step;
            rt.names = image.names;
            rt.state = image.state;
        }
        Ok(rt)
    }

    /// A single rank on a simulated device in this process.
    pub fn in_process(init: impl FnOnce(u32, u32) -> S) -> Self {
        Runtime {
            backend: Box::<InProcess>::default(),
            rank: 0,
            world_size: 1,
            step: 0,
            started: false,
            names: BTreeMap::new(),
            state: init(0, 1),
        }
    }

    pub fn rank(&self) -> u32 {
        self.rank
    }
    pub fn world_size(&self) -> u32 {
        self.world_size
    }
    /// The registered host state.
    pub fn state(&self) -> &S {
        &self.state
    }
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// The buffer called `name`, of `len` floats: allocated and filled by `init` on a fresh
    /// start, or the restored buffer (same handle, saved contents) after a restore.
    pub fn buffer(
        &mut self,
        name: &str,
        len: usize,
        init: impl FnOnce() -> Vec<f32>,
    ) -> Result<Handle> {
        if let Some((h, n)) = self.names.get(name) {
            if *n != len as u64 {
                return Err(NodeError::BadRequest(format!(
                    "buffer {name} restored with {n} elements, program asks for {len}"
                )));
            }
            return Ok(*h);
        }
        let h = self.backend.alloc(len)?;
        let data = init();
        if data.len() != len {
            return Err(NodeError::BadRequest(format!(
                "initializer of {name} gave {} elements, not {len}",
                data.len()
            )));
        }
        self.backend.copy_in(h, 0, &data)?;
        self.names.insert(name.to_string(), (h, len as u64));
        Ok(h)
    }

    pub fn copy_in(&mut self, h: Handle, data: &[f32]) -> Result<()> {
        self.backend.copy_in(h, 0, data)
    }
    pub fn copy_out(&mut self, h: Handle, out: &mut [f32]) -> Result<()> {
        self.backend.copy_out(h, 0, out)
    }
    pub fn kernel(&mut self, k: Kernel) -> Result<f32> {
        self.backend.kernel(k)
    }
    /// Liveness hint: the contents of `h` are dead until this rank next writes it (see
    /// `Kernel::Discard` for the contract). Queued with the kernels, in order, at no round
    /// trip of its own. A splicing swap then moves none of its bytes, and a checkpoint records
    /// its handle and size but writes no data; a restored discarded buffer holds zeros.
    /// Only for a buffer the program rewrites entirely before reading it again: reading it
    /// first gives unspecified values.
    pub fn discard(&mut self, h: Handle) -> Result<()> {
        self.backend.kernel(Kernel::Discard { x: h }).map(|_| ())
    }
    /// Sums `h` over the job's ranks in rank order; every rank gets the same bits.
    pub fn allreduce_sum(&mut self, h: Handle) -> Result<()> {
        self.backend.allreduce_sum(h)
    }
    pub fn barrier(&mut self) -> Result<()> {
        self.backend.barrier()
    }
    pub fn sync(&mut self) -> Result<()> {
        self.backend.sync()
    }

    /// Ends the previous step (if any) and returns the index of the next one, or None once
    /// `total_steps` are done. This is the step boundary: when the agent asked for a checkpoint,
    /// it is taken here, and a stopping checkpoint returns `NodeError::Preempted`.
    pub fn next_step(&mut self, total_steps: u64) -> Result<Option<u64>> {
        if self.started {
            self.step += 1;
            if self.backend.step_boundary(self.step)? {
                let image = HostImage {
                    step: self.step,
                    names: self.names.clone(),
                    state: &self.state,
                };
                let bytes =
                    serde_json::to_vec(&image).map_err(|e| NodeError::json("host state", e))?;
                if self.backend.checkpoint(self.step, &bytes)? {
                    let _ = self.backend.detach();
                    return Err(NodeError::Preempted { step: self.step });
                }
            }
        }
        // After the last step the boundary is taken; a later call (a program that trains on)
        // starts the next step without ending a step that never ran.
        self.started = self.step < total_steps;
        Ok(self.started.then_some(self.step))
    }

    /// Detaches from the device; the proxy frees this rank's buffers.
    pub fn finish(mut self) -> Result<()> {
        self.backend.detach()
    }
}

/// The process exit code for a worker's outcome: 0, `PREEMPTED_EXIT_CODE`, or 1.
pub fn exit_code<T>(outcome: &Result<T>) -> i32 {
    match outcome {
        Ok(_) => 0,
        Err(NodeError::Preempted { .. }) => PREEMPTED_EXIT_CODE,
        Err(_) => 1,
    }
}
