//! The device proxy: one process per device that owns the device's memory and serves the
//! job's workers. Workers attach over a Unix socket, then every call goes through their
//! shared-memory channel. Several ranks on one proxy are time-sliced (replica splicing): one is
//! resident on the device at a time, and the others' buffers wait in host memory; a swap copies
//! only buffers whose contents differ from what is already on the device or in host memory
//! (compared by checksum when both are known, by bytes otherwise, not at all when the proxy
//! knows they are one copy), and no buffer whose contents are dead: discarded by its rank
//! (`Kernel::Discard`, a liveness hint) or being summed in an allreduce (the proxy rewrites
//! all of it afterwards). A discarded buffer comes back under the same handle with
//! unspecified contents: zeros, stale data of its own, or the data of another rank of the same
//! job, never another job's. A rank lets go of the device in collectives and, when others
//! wait, at its step boundaries.
//! At a checkpoint cut (agreed through a flag carried by every allreduce) each rank's buffers
//! and host state are written to the checkpoint directory.
//!
//! It must not run a training loop or decide policy: the agent says when to checkpoint, the
//! worker says where steps end. A misbehaving worker gets an error reply, never a panic.

use crate::channel::{
    carries_kernels, decode_kernel, op, Channel, Request, CHANNEL_BYTES, DATA, KERNEL_WORDS_BYTES,
    PREFIX_KERNELS_ARG,
};
use crate::checkpoint;
use crate::collective::{check_name, Collective};
use crate::control::{self, Attachment, ControlReply, ControlRequest, ProxyStats};
use crate::device::{BufferSet, DevBuf, Digest, Handle};
use crate::error::{NodeError, Result};
use crate::limits::{
    CHANNEL_DATA_BYTES, COLLECTIVE_TIMEOUT_MS, DEVICE_WAIT_TIMEOUT_MS, MAX_BUFFERS_PER_RANK,
    MAX_BUFFER_BYTES, MAX_KERNELS_PER_BATCH, MAX_RANKS_PER_PROXY,
};
use crate::shm::{f32s_as_bytes, unlink, ShmRegion, SHM_DIR};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Flags of `singularity device-proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Unix socket where workers attach and the agent sends requests.
    #[arg(long)]
    pub socket: PathBuf,
    /// Index of the device this proxy owns on its node.
    #[arg(long, default_value_t = 0)]
    pub device_index: u32,
    /// Device memory in bytes (the simulated device allocates it from host memory on demand).
    #[arg(long, default_value_t = 1 << 30)]
    pub memory_bytes: u64,
}

type ConnId = u64;

/// A reply with no values and no payload.
const NONE: ([u64; 4], usize) = ([0; 4], 0);

/// A buffer kept in host memory while its rank is not resident; identical contents share one
/// allocation.
#[derive(Clone)]
struct Stored {
    /// The contents; for a dead buffer, stale bytes or nothing (only `len` counts).
    data: Arc<Vec<f32>>,
    /// Length in elements.
    len: usize,
    /// BLAKE3 of `data` when known (copied from a device buffer whose checksum was known); a
    /// swap never hashes just to fill it in.
    digest: Option<Digest>,
    /// The contents are dead (discarded by the rank): none of them were saved.
    dead: bool,
}

impl Stored {
    fn live(data: Arc<Vec<f32>>, digest: Option<Digest>) -> Self {
        Stored {
            len: data.len(),
            data,
            digest,
            dead: false,
        }
    }

    /// A dead buffer of `len` elements, keeping `old`'s allocation when it has that length.
    fn dead(len: usize, old: Option<Stored>) -> Self {
        let data = old
            .map(|s| s.data)
            .filter(|d| d.len() == len)
            .unwrap_or_default();
        Stored {
            data,
            len,
            digest: None,
            dead: true,
        }
    }
}

/// Whether a device buffer holds exactly the bytes of a stored one: by checksum when both are
/// known, otherwise by comparing the bytes, which is exact and cheaper than hashing (a buffer
/// that differs usually does so in its first bytes). Bytes, not floats: `-0.0 == 0.0` and NaN
/// would fool a float comparison. Dead buffers hold nothing to compare.
fn same_contents(dev: &DevBuf, stored: &Stored) -> bool {
    if dev.dead || stored.dead || dev.data.len() != stored.data.len() {
        return false;
    }
    match (dev.digest, stored.digest) {
        (Some(a), Some(b)) => a == b,
        _ => f32s_as_bytes(&dev.data) == f32s_as_bytes(&stored.data),
    }
}

struct RankSlot {
    job: String,
    stored: BTreeMap<Handle, Stored>,
    next_handle: Handle,
    footprint_bytes: u64,
}

struct DeviceState {
    holder: Option<ConnId>,
    resident: Option<ConnId>,
    bufs: BufferSet,
    ranks: BTreeMap<ConnId, RankSlot>,
    waiters: usize,
    pool: DevicePool,
}

impl DeviceState {
    /// An idle device with no ranks, no buffers and an empty pool of at most `limit_bytes`.
    fn new(limit_bytes: u64) -> DeviceState {
        DeviceState {
            holder: None,
            resident: None,
            bufs: BufferSet::default(),
            ranks: BTreeMap::new(),
            waiters: 0,
            pool: DevicePool {
                free: BTreeMap::new(),
                bytes: 0,
                limit_bytes,
            },
        }
    }
}

/// Device memory that ranks gave back (freed buffers, detached ranks), kept for reuse like a
/// real device's memory pool: creating a buffer from it costs no page faults. Reused memory
/// still holds its last owner's bytes, so every taker overwrites it entirely (`take`) or gets
/// it zeroed (`take_zeroed`); bytes never pass from one rank to another. Only large buffers are
/// kept (small ones are cheap to create), at most the device's memory in all.
struct DevicePool {
    free: BTreeMap<usize, Vec<Vec<f32>>>,
    bytes: u64,
    limit_bytes: u64,
}

impl DevicePool {
    /// A buffer of `len` floats whose every element the caller will overwrite.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let reused = self.free.get_mut(&len).and_then(Vec::pop);
        match reused {
            Some(v) => {
                self.bytes -= v.len() as u64 * 4;
                v
            }
            None => crate::shm::device_vec(len),
        }
    }

    /// A zeroed buffer of `len` floats.
    fn take_zeroed(&mut self, len: usize) -> Vec<f32> {
        let reused = self.free.get(&len).is_some_and(|v| !v.is_empty());
        let mut v = self.take(len);
        if reused {
            v.fill(0.0);
        }
        v
    }

    /// Keeps `v` for reuse, or frees it when it is small or the pool is full.
    fn give(&mut self, v: Vec<f32>) {
        let bytes = v.len() as u64 * 4;
        if bytes < crate::shm::HUGE_PAGE_MIN_BYTES as u64
            || self.bytes.saturating_add(bytes) > self.limit_bytes
        {
            return;
        }
        self.bytes += bytes;
        self.free.entry(v.len()).or_default().push(v);
    }
}

struct Pending {
    dir: PathBuf,
    stop: bool,
    served: BTreeSet<u32>,
}

struct Proxy {
    args: ProxyArgs,
    dev: Mutex<DeviceState>,
    dev_cv: Condvar,
    jobs: Mutex<BTreeMap<(String, String), Arc<Collective>>>,
    pending: Mutex<BTreeMap<String, Pending>>,
    stats: Mutex<ProxyStats>,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a proxy until the process is killed.
pub fn serve(args: ProxyArgs) -> Result<()> {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket)
        .map_err(|e| NodeError::io(format!("binding {}", args.socket.display()), e))?;
    let proxy = Arc::new(Proxy {
        dev: Mutex::new(DeviceState::new(args.memory_bytes)),
        dev_cv: Condvar::new(),
        jobs: Mutex::new(BTreeMap::new()),
        pending: Mutex::new(BTreeMap::new()),
        stats: Mutex::new(ProxyStats {
            device_index: args.device_index,
            ..Default::default()
        }),
        next_conn: AtomicU64::new(1),
        args,
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let proxy = Arc::clone(&proxy);
        std::thread::spawn(move || {
            let mut stream = stream;
            if let Err(e) = proxy.control(&mut stream) {
                let _ = control::send(
                    &mut stream,
                    &ControlReply::Error {
                        message: e.to_string(),
                    },
                );
            }
        });
    }
    Ok(())
}

/// One attached rank, as seen by its serving thread.
struct Conn {
    id: ConnId,
    job: String,
    rank: u32,
    collective: Arc<Collective>,
    closed: Arc<AtomicBool>,
    cut_pending: bool,
}

impl Proxy {
    fn control(self: &Arc<Self>, stream: &mut UnixStream) -> Result<()> {
        let Some(req) = control::recv::<ControlRequest>(stream)? else {
            return Ok(());
        };
        match req {
            ControlRequest::Attach(a) => self.attach(stream, a),
            ControlRequest::Checkpoint { job, dir, stop } => {
                let has_ranks = lock(&self.dev).ranks.values().any(|s| s.job == job);
                if !has_ranks {
                    return Err(NodeError::BadRequest(format!(
                        "job {job} has no rank on device {}",
                        self.args.device_index
                    )));
                }
                lock(&self.pending).insert(
                    job,
                    Pending {
                        dir,
                        stop,
                        served: BTreeSet::new(),
                    },
                );
                control::send(stream, &ControlReply::Ok)
            }
            ControlRequest::Stats => {
                let mut s = lock(&self.stats).clone();
                s.ranks_attached = lock(&self.dev).ranks.len() as u64;
                control::send(stream, &ControlReply::Stats(s))
            }
            ControlRequest::Mapped => Err(NodeError::BadRequest("mapped before attach".into())),
        }
    }

    fn attach(self: &Arc<Self>, stream: &mut UnixStream, a: Attachment) -> Result<()> {
        let Attachment {
            job,
            incarnation,
            rank,
            world_size,
            collective_bytes,
            restore_dir,
            ..
        } = a;
        check_name("job", &job)?;
        if rank >= world_size {
            return Err(NodeError::BadRequest(format!(
                "rank {rank} outside world size {world_size}"
            )));
        }
        if lock(&self.dev).ranks.len() >= MAX_RANKS_PER_PROXY {
            return Err(NodeError::LimitExceeded {
                what: "ranks per proxy",
                value: MAX_RANKS_PER_PROXY as u64 + 1,
                limit: MAX_RANKS_PER_PROXY as u64,
            });
        }
        let image = match &restore_dir {
            Some(dir) => Some(checkpoint::load_rank_into(
                dir,
                &job,
                rank,
                world_size,
                &|len| lock(&self.dev).pool.take(len),
            )?),
            None => None,
        };
        let collective = {
            let mut jobs = lock(&self.jobs);
            let key = (job.clone(), incarnation.clone());
            match jobs.get(&key) {
                Some(c) => {
                    c.count_rank()?;
                    Arc::clone(c)
                }
                None => {
                    let c = Arc::new(Collective::attach(
                        &job,
                        &incarnation,
                        world_size,
                        collective_bytes,
                    )?);
                    jobs.insert(key, Arc::clone(&c));
                    c
                }
            }
        };
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let mut slot = RankSlot {
            job: job.clone(),
            stored: BTreeMap::new(),
            next_handle: 1,
            footprint_bytes: 0,
        };
        let (step, host_state) = match image {
            Some(img) => {
                for (h, data) in img.buffers {
                    slot.footprint_bytes += data.len() as u64 * 4;
                    slot.stored.insert(h, Stored::live(Arc::new(data), None));
                }
                // Discarded at the cut: recreated (zeroed when first made resident).
                for (h, len) in img.discarded {
                    slot.footprint_bytes += len * 4;
                    slot.stored.insert(h, Stored::dead(len as usize, None));
                }
                slot.next_handle = img.next_handle;
                lock(&self.stats).restores += 1;
                (img.step, Some(img.host_state))
            }
            None => (0, None),
        };
        self.check_fits(slot.footprint_bytes, 0)?;
        let channel_path =
            PathBuf::from(SHM_DIR).join(format!("singularity-chan-{}-{id}", std::process::id()));
        let channel = Channel::new(ShmRegion::open(&channel_path, CHANNEL_BYTES, true)?);
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                unlink(&channel_path);
                return Err(e);
            }
        };
        lock(&self.dev).ranks.insert(id, slot);
        let closed = Arc::new(AtomicBool::new(false));
        let conn = Conn {
            id,
            job,
            rank,
            collective,
            closed: Arc::clone(&closed),
            cut_pending: false,
        };
        let handshake = control::send(
            stream,
            &ControlReply::Attached {
                channel_path: channel_path.clone(),
                step,
                host_state,
            },
        )
        .and_then(|()| control::recv::<ControlRequest>(stream));
        unlink(&channel_path);
        if !matches!(handshake, Ok(Some(ControlRequest::Mapped))) {
            self.remove_rank(id);
            return handshake.map(|_| ());
        }
        let proxy = Arc::clone(self);
        let server = std::thread::spawn(move || proxy.serve_channel(channel, conn));
        // The socket stays open for liveness: EOF means the worker is gone.
        let mut byte = [0u8; 1];
        let _ = std::io::Read::read(stream, &mut byte);
        closed.store(true, Ordering::SeqCst);
        let _ = server.join();
        self.remove_rank(id);
        Ok(())
    }

    fn remove_rank(&self, id: ConnId) {
        let mut d = lock(&self.dev);
        if let Some(slot) = d.ranks.remove(&id) {
            for (_, s) in slot.stored {
                if let Ok(v) = Arc::try_unwrap(s.data) {
                    if !v.is_empty() {
                        d.pool.give(v);
                    }
                }
            }
            if d.resident == Some(id) {
                d.resident = None;
                let bufs = std::mem::take(&mut d.bufs.buffers);
                for (_, b) in bufs {
                    d.pool.give(b.data);
                }
            }
            if d.holder == Some(id) {
                d.holder = None;
            }
            let live: BTreeSet<String> = d.ranks.values().map(|s| s.job.clone()).collect();
            drop(d);
            lock(&self.jobs).retain(|(job, _), _| live.contains(job));
            lock(&self.pending).retain(|job, _| live.contains(job));
            self.dev_cv.notify_all();
        }
    }

    fn check_fits(&self, footprint_bytes: u64, extra_bytes: u64) -> Result<()> {
        let want = footprint_bytes.saturating_add(extra_bytes);
        if want > self.args.memory_bytes {
            return Err(NodeError::OutOfDeviceMemory {
                device_index: self.args.device_index,
                requested_bytes: extra_bytes,
                free_bytes: self.args.memory_bytes.saturating_sub(footprint_bytes),
                memory_bytes: self.args.memory_bytes,
            });
        }
        Ok(())
    }

    fn serve_channel(self: Arc<Self>, channel: Channel, mut conn: Conn) {
        let mut last_seq = 0u32;
        loop {
            let closed = Arc::clone(&conn.closed);
            let next =
                channel.next_request(last_seq, Duration::MAX, || !closed.load(Ordering::SeqCst));
            let Ok((seq, req)) = next else { break };
            last_seq = seq;
            let outcome = self.handle(&channel, &mut conn, req);
            let sent = match outcome {
                Ok((vals, len)) => channel.reply_ok(vals, len),
                Err(e) => channel.reply_err(&e.to_string()),
            };
            if sent.is_err() || req.op == op::DETACH {
                break;
            }
        }
        self.release(conn.id);
    }

    /// Takes the device for `id` (swapping its buffers in if another rank is resident).
    fn acquire(&self, id: ConnId) -> Result<MutexGuard<'_, DeviceState>> {
        let mut d = lock(&self.dev);
        let asked = Instant::now();
        let deadline = asked + Duration::from_millis(DEVICE_WAIT_TIMEOUT_MS);
        let contended = d.holder.is_some_and(|h| h != id);
        while d.holder.is_some_and(|h| h != id) {
            let now = Instant::now();
            if now >= deadline {
                return Err(NodeError::Timeout {
                    what: "the device (held by another rank)".into(),
                    timeout_ms: DEVICE_WAIT_TIMEOUT_MS,
                });
            }
            d.waiters += 1;
            d = self
                .dev_cv
                .wait_timeout(d, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            d.waiters -= 1;
        }
        if !d.ranks.contains_key(&id) {
            // Pass on the wake-up this waiter may have taken.
            if d.holder.is_none() {
                self.dev_cv.notify_one();
            }
            return Err(NodeError::Proxy("rank is detached".into()));
        }
        d.holder = Some(id);
        if contended {
            lock(&self.stats).device_wait_ns += asked.elapsed().as_nanos() as u64;
        }
        if d.resident != Some(id) {
            let had_outgoing = d.resident.is_some();
            let started = Instant::now();
            let (copied, naive) = swap(&mut d, id);
            if !had_outgoing {
                return Ok(d);
            }
            let mut s = lock(&self.stats);
            s.swaps += 1;
            s.swap_bytes += copied;
            s.naive_swap_bytes += naive;
            s.swap_ns += started.elapsed().as_nanos() as u64;
        }
        Ok(d)
    }

    /// Lets go of the device. One waiter is woken (any of them may take the device; waking them
    /// all only makes the losers go back to sleep, on cores the winner needs).
    fn release(&self, id: ConnId) {
        let mut d = lock(&self.dev);
        if d.holder == Some(id) {
            d.holder = None;
            drop(d);
            self.dev_cv.notify_one();
        }
    }

    fn handle(&self, ch: &Channel, conn: &mut Conn, req: Request) -> Result<([u64; 4], usize)> {
        let a = req.args;
        let id = conn.id;
        let unknown = |h: Handle| NodeError::UnknownHandle {
            job: conn.job.clone(),
            rank: conn.rank,
            handle: h,
        };
        if carries_kernels(req.op) && a[PREFIX_KERNELS_ARG] != 0 {
            self.run_kernels(ch, id, a[PREFIX_KERNELS_ARG] as usize, req.data_len)?;
        }
        match req.op {
            op::NOOP | op::SYNC => Ok(NONE),
            op::ALLOC => {
                let bytes = a[0]
                    .checked_mul(4)
                    .ok_or_else(|| NodeError::BadRequest("buffer length overflows".into()))?;
                NodeError::check_limit("buffer bytes", bytes, MAX_BUFFER_BYTES)?;
                let mut d = self.acquire(id)?;
                let d = &mut *d;
                let slot = d
                    .ranks
                    .get_mut(&id)
                    .ok_or_else(|| NodeError::Proxy("rank is detached".into()))?;
                NodeError::check_limit(
                    "buffers per rank",
                    d.bufs.buffers.len() as u64 + 1,
                    MAX_BUFFERS_PER_RANK as u64,
                )?;
                self.check_fits(slot.footprint_bytes, bytes)?;
                let h = slot.next_handle;
                slot.next_handle += 1;
                slot.footprint_bytes += bytes;
                d.bufs.buffers.insert(
                    h,
                    DevBuf {
                        data: d.pool.take_zeroed(a[0] as usize),
                        ..Default::default()
                    },
                );
                Ok(([h, 0, 0, 0], 0))
            }
            op::FREE => {
                let mut d = self.acquire(id)?;
                let d = &mut *d;
                let b = d.bufs.buffers.remove(&a[0]).ok_or_else(|| unknown(a[0]))?;
                if let Some(slot) = d.ranks.get_mut(&id) {
                    slot.footprint_bytes = slot.footprint_bytes.saturating_sub(b.len_bytes());
                    slot.stored.remove(&a[0]);
                }
                d.pool.give(b.data);
                Ok(NONE)
            }
            op::COPY_IN | op::COPY_OUT => {
                let (h, offset, count) = (a[0], a[1] as usize, a[2] as usize);
                let bytes = count.checked_mul(4).filter(|b| *b <= CHANNEL_DATA_BYTES).ok_or_else(|| NodeError::BadRequest(format!("copy of {count} elements exceeds the channel's {CHANNEL_DATA_BYTES} bytes")))?;
                let mut d = self.acquire(id)?;
                let range = offset..offset.saturating_add(count);
                if req.op == op::COPY_IN {
                    if req.data_len != bytes {
                        return Err(NodeError::BadRequest(format!(
                            "copy-in carries {} bytes for {count} elements",
                            req.data_len
                        )));
                    }
                    let buf = d.bufs.get_mut(h).map_err(|_| unknown(h))?;
                    let dst = buf.get_mut(range).ok_or_else(|| {
                        NodeError::BadRequest(format!("copy-in range outside buffer {h}"))
                    })?;
                    ch.region.read_f32s(DATA, dst)?;
                    Ok(NONE)
                } else {
                    let buf = d.bufs.buffers.get(&h).ok_or_else(|| unknown(h))?;
                    let src = buf.data.get(range).ok_or_else(|| {
                        NodeError::BadRequest(format!("copy-out range outside buffer {h}"))
                    })?;
                    ch.region.write_f32s(DATA, src)?;
                    Ok(([0; 4], bytes))
                }
            }
            op::KERNELS => {
                let v = self.run_kernels(ch, id, a[0] as usize, req.data_len)?;
                Ok(([v.to_bits() as u64, 0, 0, 0], 0))
            }
            op::BARRIER => {
                self.release(id);
                let closed = Arc::clone(&conn.closed);
                conn.collective.barrier(|| !closed.load(Ordering::SeqCst))?;
                Ok(NONE)
            }
            op::ALLREDUCE if conn.collective.world_size() == 1 => {
                // The sum over one rank is the buffer itself: only the checkpoint flag moves.
                let d = self.acquire(id)?;
                d.bufs.buffers.get(&a[0]).ok_or_else(|| unknown(a[0]))?;
                drop(d);
                let flags = lock(&self.pending).contains_key(&conn.job) as u32;
                conn.cut_pending |= flags != 0;
                Ok(([flags as u64, 0, 0, 0], 0))
            }
            op::ALLREDUCE => {
                let h = a[0];
                let mut data = {
                    let mut d = self.acquire(id)?;
                    let buf = d.bufs.buffers.get_mut(&h).ok_or_else(|| unknown(h))?;
                    // The sum replaces all of it below: until then its contents are dead, and
                    // a rank spliced in meanwhile need not swap them out.
                    buf.dead = true;
                    buf.clean = false;
                    buf.data.clone()
                };
                let flag_in = lock(&self.pending).contains_key(&conn.job) as u32;
                self.release(id);
                let closed = Arc::clone(&conn.closed);
                let flags = conn
                    .collective
                    .allreduce_sum(conn.rank, &mut data, flag_in, || {
                        !closed.load(Ordering::SeqCst)
                    })?;
                let mut d = self.acquire(id)?;
                let buf = d.bufs.get_mut(h).map_err(|_| unknown(h))?;
                if buf.len() != data.len() {
                    return Err(NodeError::BadRequest(format!(
                        "buffer {h} changed size during allreduce"
                    )));
                }
                buf.copy_from_slice(&data);
                conn.cut_pending |= flags != 0;
                Ok(([flags as u64, 0, 0, 0], 0))
            }
            op::STEP_BOUNDARY => {
                {
                    let mut s = lock(&self.stats);
                    s.last_step = s.last_step.max(a[0]);
                }
                if conn.cut_pending {
                    self.wait_for_request(conn)?;
                    return Ok(([1, 0, 0, 0], 0));
                }
                // Other ranks wait: let go here, so one rank's host work (drawing its next
                // batch) overlaps another's kernels. (Keeping the device until the next
                // collective halves the swaps but loses that overlap; measured slower, see
                // BENCHMARKS.md.)
                let contended = lock(&self.dev).waiters > 0;
                if contended {
                    self.release(id);
                }
                Ok(NONE)
            }
            op::CHECKPOINT => self.checkpoint(ch, conn, a[0], req.data_len),
            op::DETACH => {
                self.release(id);
                Ok(NONE)
            }
            other => Err(NodeError::BadRequest(format!("unknown op {other}"))),
        }
    }

    /// Runs the `count` kernels encoded in the data area (`data_len` bytes) in order; returns
    /// the last one's value. The first failure stops the batch.
    fn run_kernels(&self, ch: &Channel, id: ConnId, count: usize, data_len: usize) -> Result<f32> {
        if count == 0 || count > MAX_KERNELS_PER_BATCH || data_len != count * KERNEL_WORDS_BYTES {
            return Err(NodeError::BadRequest(format!(
                "a kernel batch of {count} kernels in {data_len} bytes (1 to {MAX_KERNELS_PER_BATCH} kernels of {KERNEL_WORDS_BYTES} bytes each)"
            )));
        }
        let mut kernels = Vec::with_capacity(count);
        for i in 0..count {
            let mut words = [0u64; 8];
            for (j, w) in words.iter_mut().enumerate() {
                *w = ch.region.read_u64(DATA + i * KERNEL_WORDS_BYTES + 8 * j)?;
            }
            kernels.push(words);
        }
        let mut d = self.acquire(id)?;
        let mut v = 0.0f32;
        for (i, words) in kernels.iter().enumerate() {
            v = decode_kernel(words)
                .and_then(|k| d.bufs.run(k))
                .map_err(|e| {
                    NodeError::BadRequest(format!(
                        "kernel {} of the {count} launched since the last call that waited (the later ones did not run): {e}",
                        i + 1
                    ))
                })?;
        }
        Ok(v)
    }

    /// Another proxy saw the agent's request first; this one's copy is on its way.
    fn wait_for_request(&self, conn: &Conn) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(COLLECTIVE_TIMEOUT_MS);
        while !lock(&self.pending).contains_key(&conn.job) {
            if Instant::now() >= deadline || conn.closed.load(Ordering::SeqCst) {
                return Err(NodeError::Timeout {
                    what: format!(
                        "the agent's checkpoint request for job {} on this proxy",
                        conn.job
                    ),
                    timeout_ms: COLLECTIVE_TIMEOUT_MS,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn checkpoint(
        &self,
        ch: &Channel,
        conn: &mut Conn,
        step: u64,
        host_len: usize,
    ) -> Result<([u64; 4], usize)> {
        if !conn.cut_pending {
            return Err(NodeError::BadRequest(
                "checkpoint outside an agreed cut".into(),
            ));
        }
        let (dir, stop) = {
            let p = lock(&self.pending);
            let p = p
                .get(&conn.job)
                .ok_or_else(|| NodeError::Proxy("checkpoint request vanished".into()))?;
            (p.dir.clone(), p.stop)
        };
        let mut host_state = vec![0u8; host_len];
        ch.region.read_bytes(DATA, &mut host_state)?;
        if conn.rank == 0 {
            checkpoint::begin(&dir)?;
        }
        {
            let mut d = self.acquire(conn.id)?;
            let d = &mut *d;
            let next_handle = d.ranks.get(&conn.id).map_or(1, |s| s.next_handle);
            let mut it = d.bufs.buffers.iter().map(|(h, b)| {
                let contents = if b.dead {
                    checkpoint::Contents::Discarded {
                        len_elems: b.data.len() as u64,
                    }
                } else {
                    checkpoint::Contents::Live(b.data.as_slice())
                };
                (*h, contents)
            });
            checkpoint::write_rank(
                &dir,
                &conn.job,
                conn.rank,
                step,
                next_handle,
                &mut it,
                &host_state,
            )?;
        }
        let world_ranks_here = lock(&self.dev)
            .ranks
            .values()
            .filter(|s| s.job == conn.job)
            .count();
        {
            let mut p = lock(&self.pending);
            if let Some(req) = p.get_mut(&conn.job) {
                req.served.insert(conn.rank);
                if req.served.len() >= world_ranks_here {
                    p.remove(&conn.job);
                }
            }
        }
        self.release(conn.id);
        let closed = Arc::clone(&conn.closed);
        conn.collective.barrier(|| !closed.load(Ordering::SeqCst))?;
        if conn.rank == 0 {
            checkpoint::write_job_manifest(&dir, &conn.job, conn.collective.world_size(), step)?;
        }
        conn.collective.barrier(|| !closed.load(Ordering::SeqCst))?;
        conn.cut_pending = false;
        lock(&self.stats).checkpoints_written += 1;
        Ok(([stop as u64, 0, 0, 0], 0))
    }
}

/// Makes `incoming` the resident rank: the outgoing rank's buffers go to host memory unless an
/// identical copy is already there (its own from the last swap, or the incoming rank's: the
/// parameters after an allreduce), and the incoming rank's buffers are copied to the device
/// unless the device already holds identical contents. Dead buffers move no bytes either way:
/// an incoming dead buffer takes the device memory at its handle as it is when the outgoing
/// rank is of the same job, zeroed otherwise. Host copies are rewritten in place when no one
/// shares them, so a steady swap allocates nothing. Returns (bytes copied, bytes a naive swap
/// would copy).
fn swap(d: &mut DeviceState, incoming: ConnId) -> (u64, u64) {
    let mut copied = 0u64;
    let mut naive = 0u64;
    let mut device = std::mem::take(&mut d.bufs.buffers);
    // Host copies that the device buffer at the same handle is known to equal (it was just
    // saved to, or found identical to, that copy): the incoming rank compares by pointer.
    let mut on_device: BTreeMap<Handle, Arc<Vec<f32>>> = BTreeMap::new();
    let incoming_job = d.ranks.get(&incoming).map(|s| s.job.clone());
    let mut same_job = false;
    if let Some(out) = d.resident.take() {
        let incoming_stored = d
            .ranks
            .get(&incoming)
            .map(|s| s.stored.clone())
            .unwrap_or_default();
        if let Some(slot) = d.ranks.get_mut(&out) {
            same_job = incoming_job.as_deref() == Some(slot.job.as_str());
            let mut old = std::mem::take(&mut slot.stored);
            for (h, b) in device.iter() {
                naive += b.len_bytes();
                if b.dead {
                    slot.stored
                        .insert(*h, Stored::dead(b.data.len(), old.remove(h)));
                    continue;
                }
                // Unwritten since it was made identical to its own host copy: still is.
                let own_clean = old
                    .get(h)
                    .filter(|s| b.clean && !s.dead && s.len == b.data.len());
                let same = own_clean
                    .or_else(|| old.get(h).filter(|s| same_contents(b, s)))
                    .or_else(|| incoming_stored.get(h).filter(|s| same_contents(b, s)));
                let entry = match same {
                    Some(s) => Stored::live(Arc::clone(&s.data), s.digest.or(b.digest)),
                    None => {
                        copied += b.len_bytes();
                        let reused = old.remove(h).and_then(|mut s| {
                            let dst = Arc::get_mut(&mut s.data)?;
                            (dst.len() == b.data.len()).then(|| dst.copy_from_slice(&b.data))?;
                            Some(s.data)
                        });
                        Stored::live(reused.unwrap_or_else(|| Arc::new(b.data.clone())), b.digest)
                    }
                };
                on_device.insert(*h, Arc::clone(&entry.data));
                slot.stored.insert(*h, entry);
            }
        }
    }
    let mut resident = BTreeMap::new();
    if let Some(slot) = d.ranks.get(&incoming) {
        for (h, s) in &slot.stored {
            naive += s.len as u64 * 4;
            let mut buf = match device.remove(h) {
                Some(mut b) if b.data.len() == s.len => {
                    if s.dead {
                        if !same_job {
                            b.data.fill(0.0);
                        }
                    } else if on_device.get(h).is_some_and(|a| Arc::ptr_eq(a, &s.data))
                        || same_contents(&b, s)
                    {
                        b.digest = b.digest.or(s.digest);
                    } else {
                        b.data.copy_from_slice(&s.data);
                        b.digest = s.digest;
                        copied += b.len_bytes();
                    }
                    b
                }
                other => {
                    if let Some(b) = other {
                        d.pool.give(b.data);
                    }
                    let data = if s.dead {
                        d.pool.take_zeroed(s.len)
                    } else {
                        copied += s.len as u64 * 4;
                        let mut data = d.pool.take(s.len);
                        data.copy_from_slice(&s.data);
                        data
                    };
                    DevBuf {
                        data,
                        digest: if s.dead { None } else { s.digest },
                        ..Default::default()
                    }
                }
            };
            buf.dead = s.dead;
            buf.clean = !s.dead;
            if s.dead {
                buf.digest = None;
            }
            resident.insert(*h, buf);
        }
    }
    for (_, b) in device {
        d.pool.give(b.data);
    }
    d.bufs.buffers = resident;
    d.resident = Some(incoming);
    (copied, naive)
}

/// Removes leftovers of a proxy process (its channel files), for tests and agents that kill it.
pub fn cleanup_after(pid: u32) {
    let prefix = format!("singularity-chan-{pid}-");
    if let Ok(entries) = std::fs::read_dir(SHM_DIR) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                unlink(&e.path());
            }
        }
    }
}

/// Whether a path looks like a proxy socket that accepts connections.
pub fn is_listening(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Kernel;

    fn slot(job: &str, bufs: &[(Handle, Stored)]) -> RankSlot {
        RankSlot {
            job: job.into(),
            stored: bufs.iter().cloned().collect(),
            next_handle: 3,
            footprint_bytes: 0,
        }
    }

    #[test]
    fn dead_buffers_move_no_bytes_and_never_reach_another_job() {
        const N: usize = 16;
        let bytes = N as u64 * 4;
        let live = |v: f32| Stored::live(Arc::new(vec![v; N]), None);
        let mut d = DeviceState::new(0);
        d.ranks
            .insert(1, slot("a", &[(1, live(1.0)), (2, Stored::dead(N, None))]));
        d.ranks
            .insert(2, slot("b", &[(1, live(5.0)), (2, Stored::dead(N, None))]));
        d.ranks
            .insert(3, slot("a", &[(1, live(1.0)), (2, Stored::dead(N, None))]));
        // Nothing resident: the live buffer is copied in, the dead one created zeroed.
        assert_eq!(swap(&mut d, 1), (bytes, 2 * bytes));
        assert!(d.bufs.buffers[&2].dead && d.bufs.buffers[&2].data == vec![0.0; N]);
        // Rank 1 writes a secret into buffer 2, then declares it dead.
        d.bufs.get_mut(2).unwrap().fill(9.0);
        d.bufs.run(Kernel::Discard { x: 2 }).unwrap();
        // To a rank of the same job: buffer 1 is identical (one copy, no bytes compared),
        // buffer 2 is dead both ways: nothing moves, and the memory is handed over as it is.
        assert_eq!(swap(&mut d, 3), (0, 4 * bytes));
        assert!(d.bufs.buffers[&1].clean && d.bufs.buffers[&2].dead);
        // To another job: only its live buffer 1 is copied, and its dead buffer 2 is zeroed,
        // not rank 1's secret.
        assert_eq!(swap(&mut d, 2), (bytes, 4 * bytes));
        assert_eq!(d.bufs.buffers[&1].data, vec![5.0; N]);
        assert_eq!(d.bufs.buffers[&2].data, vec![0.0; N]);
        // Rank 2 writes buffer 2: it is live again and swapped out with its bytes.
        d.bufs.get_mut(2).unwrap().fill(7.0);
        assert_eq!(swap(&mut d, 1), (2 * bytes, 4 * bytes));
        let back = &d.ranks[&2].stored[&2];
        assert!(!back.dead && *back.data == vec![7.0; N]);
        assert_eq!(d.bufs.buffers[&1].data, vec![1.0; N]);
        assert_eq!(d.bufs.buffers[&2].data, vec![0.0; N]);
    }

    #[test]
    fn pooled_memory_is_reused_zeroed_and_bounded() {
        let big = crate::shm::HUGE_PAGE_MIN_BYTES / 4;
        let mut pool = DevicePool {
            free: BTreeMap::new(),
            bytes: 0,
            limit_bytes: 2 * big as u64 * 4,
        };
        pool.give(vec![7.0; big]);
        pool.give(vec![7.0; 16]); // small: freed, not kept
        assert_eq!(pool.bytes, big as u64 * 4);
        // Another rank's bytes never come back: an allocation gets zeroes.
        assert!(pool.take_zeroed(big).iter().all(|v| *v == 0.0));
        assert_eq!(pool.bytes, 0);
        for _ in 0..3 {
            pool.give(vec![1.0; big]);
        }
        assert_eq!(
            pool.bytes,
            2 * big as u64 * 4,
            "the pool stays within its limit"
        );
        assert_eq!(pool.take(big).len(), big);
        assert_eq!(
            pool.take(big + 1).len(),
            big + 1,
            "other sizes are created fresh"
        );
    }
}
