//! The worker↔proxy channel: one request slot and one response slot in a shared segment, with
//! sequence words the peers spin on and then sleep on with futexes. A call is: the worker
//! writes the request and bumps `req_seq`; the proxy serves it, writes the response and bumps
//! `resp_seq`. Calls are synchronous, so the ring has one slot each way (`RING_SLOTS`).
//!
//! It must not decide what a request means (that is the proxy's job) and must not trust the
//! peer: lengths and op codes read back from the segment are validated before use.

use crate::error::{NodeError, Result};
use crate::limits::{CHANNEL_DATA_BYTES, CHANNEL_HEADER_BYTES};
use crate::shm::{futex_wake_all, wait_for, ShmRegion};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Request (and response) slots of a channel: calls are synchronous, one in flight.
pub const RING_SLOTS: usize = 1;
/// Total bytes of a channel segment.
pub const CHANNEL_BYTES: usize = CHANNEL_HEADER_BYTES + CHANNEL_DATA_BYTES;

const REQ_SEQ: usize = 0;
const RESP_SEQ: usize = 4;
const SERVER_WAITING: usize = 8;
const CLIENT_WAITING: usize = 12;
const CLOSED: usize = 16;
const REQ_OP: usize = 64;
const REQ_LEN: usize = 68;
const REQ_ARGS: usize = 72;
const RESP_STATUS: usize = 256;
const RESP_LEN: usize = 260;
const RESP_VALS: usize = 264;
/// Offset of the data area.
pub const DATA: usize = CHANNEL_HEADER_BYTES;

/// Operation codes of requests.
pub mod op {
    pub const ALLOC: u32 = 1;
    pub const FREE: u32 = 2;
    pub const COPY_IN: u32 = 3;
    pub const COPY_OUT: u32 = 4;
    // 5 was a single kernel per request; kernels now always travel in batches (`KERNELS`, or
    // ahead of a request that `carries_kernels`). An old worker's single kernel is refused as
    // an unknown op.
    pub const SYNC: u32 = 6;
    pub const BARRIER: u32 = 7;
    pub const ALLREDUCE: u32 = 8;
    pub const STEP_BOUNDARY: u32 = 9;
    pub const CHECKPOINT: u32 = 10;
    pub const DETACH: u32 = 11;
    pub const NOOP: u32 = 12;
    /// `args[0]` kernels, each as 8 words of `encode_kernel` in the data area, run in order;
    /// the reply carries the last one's value. The first failure stops the batch.
    pub const KERNELS: u32 = 13;
}

/// Bytes of one encoded kernel in a `KERNELS` batch.
pub const KERNEL_WORDS_BYTES: usize = 64;

/// Argument word that, in a request whose op `carries_kernels`, counts the kernels queued ahead
/// of it and sent in its data area (same layout as `KERNELS`): the proxy runs them first, and
/// a failed one fails the request, which then does not run. Saves the batch its own round trip.
pub const PREFIX_KERNELS_ARG: usize = 7;

/// Whether requests of `op` leave the data area and `PREFIX_KERNELS_ARG` free for queued
/// kernels (no request payload, at most 7 argument words).
pub fn carries_kernels(op: u32) -> bool {
    matches!(
        op,
        op::ALLOC
            | op::FREE
            | op::COPY_OUT
            | op::SYNC
            | op::BARRIER
            | op::ALLREDUCE
            | op::STEP_BOUNDARY
            | op::DETACH
            | op::NOOP
    )
}

const STATUS_OK: u32 = 0;
const STATUS_ERR: u32 = 1;

/// A decoded request header.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub op: u32,
    pub args: [u64; 8],
    pub data_len: usize,
}

/// A decoded response header.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub vals: [u64; 4],
    pub data_len: usize,
}

/// One side of a channel over a mapped segment.
pub struct Channel {
    pub region: ShmRegion,
}

impl Channel {
    /// Wraps a mapped segment of `CHANNEL_BYTES`.
    pub fn new(region: ShmRegion) -> Result<Self> {
        if region.len_bytes() != CHANNEL_BYTES {
            return Err(NodeError::Proxy(format!(
                "channel segment has {} bytes, expected {CHANNEL_BYTES}",
                region.len_bytes()
            )));
        }
        Ok(Channel { region })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        // Offsets are constants inside the header page: `atomic_u32` cannot fail on them.
        self.region
            .atomic_u32(offset)
            .expect("channel header offsets are in bounds")
    }

    fn u32_at(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.region.read_bytes(offset, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// A payload length from the header, refused when above the data area.
    fn data_len_at(&self, offset: usize, what: &str) -> Result<usize> {
        let len = self.u32_at(offset)? as usize;
        if len > CHANNEL_DATA_BYTES {
            return Err(NodeError::BadRequest(format!(
                "{what} claims {len} bytes, above {CHANNEL_DATA_BYTES}"
            )));
        }
        Ok(len)
    }

    /// `N` consecutive u64 words from the header.
    fn words<const N: usize>(&self, offset: usize) -> Result<[u64; N]> {
        let mut out = [0u64; N];
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.region.read_u64(offset + 8 * i)?;
        }
        Ok(out)
    }

    fn put_u32(&self, offset: usize, v: u32) -> Result<()> {
        self.region.write_bytes(offset, &v.to_ne_bytes())
    }

    fn publish(&self, seq: usize, waiting: usize) {
        self.word(seq).fetch_add(1, Ordering::SeqCst);
        if self.word(waiting).load(Ordering::SeqCst) != 0 {
            futex_wake_all(self.word(seq));
        }
    }

    fn await_change(
        &self,
        seq: usize,
        waiting: usize,
        from: u32,
        what: &str,
        timeout: Duration,
        alive: impl FnMut() -> bool,
    ) -> Result<()> {
        let word = self.word(seq);
        let flag = self.word(waiting);
        let outcome = wait_for(
            word,
            what,
            timeout,
            |seen| seen != from,
            alive,
            || flag.store(1, Ordering::SeqCst),
        );
        flag.store(0, Ordering::SeqCst);
        outcome
    }

    /// Marks the channel closed (the proxy is going away) and wakes the worker.
    pub fn close(&self) {
        self.word(CLOSED).store(1, Ordering::SeqCst);
        futex_wake_all(self.word(RESP_SEQ));
    }

    /// Whether the proxy closed the channel.
    pub fn is_closed(&self) -> bool {
        self.word(CLOSED).load(Ordering::SeqCst) != 0
    }

    // ---- worker side ----

    /// Sends a request whose payload `fill` writes into the data area (returning its length),
    /// and waits for the reply.
    pub fn call(
        &self,
        op: u32,
        args: [u64; 8],
        fill: impl FnOnce(&ShmRegion) -> Result<usize>,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<Reply> {
        let data_len = fill(&self.region)?;
        NodeError::check_limit("request bytes", data_len as u64, CHANNEL_DATA_BYTES as u64)?;
        self.put_u32(REQ_OP, op)?;
        self.put_u32(REQ_LEN, data_len as u32)?;
        for (i, a) in args.iter().enumerate() {
            self.region.write_u64(REQ_ARGS + 8 * i, *a)?;
        }
        let before = self.word(RESP_SEQ).load(Ordering::SeqCst);
        self.publish(REQ_SEQ, SERVER_WAITING);
        let closed = || self.is_closed();
        self.await_change(
            RESP_SEQ,
            CLIENT_WAITING,
            before,
            "the device proxy's reply",
            timeout,
            || !closed() && alive(),
        )?;
        let status = self.u32_at(RESP_STATUS)?;
        let len = self.data_len_at(RESP_LEN, "reply")?;
        let vals = self.words(RESP_VALS)?;
        if status != STATUS_OK {
            let mut msg = vec![0u8; len];
            self.region.read_bytes(DATA, &mut msg)?;
            return Err(NodeError::Proxy(String::from_utf8_lossy(&msg).into_owned()));
        }
        Ok(Reply {
            vals,
            data_len: len,
        })
    }

    // ---- proxy side ----

    /// Waits for the next request after `last_seq`; returns it with its sequence number.
    pub fn next_request(
        &self,
        last_seq: u32,
        timeout: Duration,
        alive: impl FnMut() -> bool,
    ) -> Result<(u32, Request)> {
        self.await_change(
            REQ_SEQ,
            SERVER_WAITING,
            last_seq,
            "the worker's next request",
            timeout,
            alive,
        )?;
        let seq = self.word(REQ_SEQ).load(Ordering::SeqCst);
        let op = self.u32_at(REQ_OP)?;
        let data_len = self.data_len_at(REQ_LEN, "request")?;
        let args = self.words(REQ_ARGS)?;
        Ok((seq, Request { op, args, data_len }))
    }

    /// Publishes a successful reply whose payload (already in the data area) has `data_len`.
    pub fn reply_ok(&self, vals: [u64; 4], data_len: usize) -> Result<()> {
        self.finish(STATUS_OK, vals, data_len)
    }

    /// Publishes an error reply carrying `message`.
    pub fn reply_err(&self, message: &str) -> Result<()> {
        let bytes = &message.as_bytes()[..message.len().min(CHANNEL_DATA_BYTES)];
        self.region.write_bytes(DATA, bytes)?;
        self.finish(STATUS_ERR, [0; 4], bytes.len())
    }

    fn finish(&self, status: u32, vals: [u64; 4], data_len: usize) -> Result<()> {
        self.put_u32(RESP_STATUS, status)?;
        self.put_u32(RESP_LEN, data_len as u32)?;
        for (i, v) in vals.iter().enumerate() {
            self.region.write_u64(RESP_VALS + 8 * i, *v)?;
        }
        self.publish(RESP_SEQ, CLIENT_WAITING);
        Ok(())
    }
}

/// Encodes a kernel into request arguments.
pub fn encode_kernel(k: &crate::device::Kernel) -> [u64; 8] {
    use crate::device::Kernel::*;
    let bits = |a: f32| a.to_bits() as u64;
    match *k {
        Axpy { a, x, y } => [1, x, y, 0, 0, 0, 0, bits(a)],
        Scale { a, x } => [2, x, 0, 0, 0, 0, 0, bits(a)],
        Dot { x, y } => [3, x, y, 0, 0, 0, 0, 0],
        Matmul {
            a,
            b,
            c,
            m,
            k,
            n,
            trans_a,
            trans_b,
        } => [
            4,
            a,
            b,
            c,
            m as u64,
            k as u64,
            n as u64,
            trans_a as u64 | (trans_b as u64) << 1,
        ],
        Add { x, y, out } => [5, x, y, out, 0, 0, 0, 0],
        Mul { x, y, out } => [6, x, y, out, 0, 0, 0, 0],
        Discard { x } => [7, x, 0, 0, 0, 0, 0, 0],
    }
}

/// Decodes request arguments into a kernel, refusing unknown kinds and oversized shapes.
pub fn decode_kernel(a: &[u64; 8]) -> Result<crate::device::Kernel> {
    use crate::device::Kernel::*;
    let f = |v: u64| f32::from_bits(v as u32);
    let dim = |v: u64| {
        u32::try_from(v)
            .map_err(|_| NodeError::BadRequest(format!("matmul dimension {v} too large")))
    };
    Ok(match a[0] {
        1 => Axpy {
            a: f(a[7]),
            x: a[1],
            y: a[2],
        },
        2 => Scale {
            a: f(a[7]),
            x: a[1],
        },
        3 => Dot { x: a[1], y: a[2] },
        4 => Matmul {
            a: a[1],
            b: a[2],
            c: a[3],
            m: dim(a[4])?,
            k: dim(a[5])?,
            n: dim(a[6])?,
            trans_a: a[7] & 1 != 0,
            trans_b: a[7] & 2 != 0,
        },
        5 => Add {
            x: a[1],
            y: a[2],
            out: a[3],
        },
        6 => Mul {
            x: a[1],
            y: a[2],
            out: a[3],
        },
        7 => Discard { x: a[1] },
        other => return Err(NodeError::BadRequest(format!("unknown kernel {other}"))),
    })
}
