//! Named limits of the device proxy, its shared-memory channel and the worker runtime. Every
//! bound the node side enforces lives here, so a reader finds them in one place.
//!
//! It must hold constants only: no logic, no I/O.

/// Bytes of the data area of one worker's shared-memory channel: the largest payload of one
/// request or response. The client splits larger copies into pieces of this size.
pub const CHANNEL_DATA_BYTES: usize = 4 << 20;
/// Bytes of the channel's header page (sequence words, request and response slots).
pub const CHANNEL_HEADER_BYTES: usize = 4096;
/// Kernel launches a worker batches into one request (they need no answer: the batch goes with
/// the next call that does, or when it is this long). 64 bytes each in the data area.
pub const MAX_KERNELS_PER_BATCH: usize = 256;
/// Buffers one rank may hold at once.
pub const MAX_BUFFERS_PER_RANK: usize = 4096;
/// Largest single buffer, in bytes.
pub const MAX_BUFFER_BYTES: u64 = 1 << 30;
/// Largest world size of a job.
pub const MAX_WORLD_SIZE: u32 = 1024;
/// Ranks (of all jobs) one proxy serves at once.
pub const MAX_RANKS_PER_PROXY: usize = 64;
/// Largest allreduce, in bytes per rank (the size of a rank's slot in the collective segment).
pub const MAX_COLLECTIVE_BYTES: u64 = 64 << 20;
/// Largest serialized host state a rank registers (step, RNG, data cursor, buffer names).
pub const MAX_HOST_STATE_BYTES: usize = 1 << 20;
/// Largest control message on the handshake socket.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 2 << 20;
/// How long a rank waits for the rest of its job at a barrier or allreduce before giving up.
pub const COLLECTIVE_TIMEOUT_MS: u64 = 60_000;
/// How long a rank waits for the device while other ranks of its proxy hold it.
pub const DEVICE_WAIT_TIMEOUT_MS: u64 = 60_000;
/// How long a worker waits for the proxy to answer one request.
pub const CALL_TIMEOUT_MS: u64 = 120_000;
/// Busy-spin iterations of a waiter before it starts yielding its core.
pub const SPIN_ITERATIONS: u32 = 30;
/// `sched_yield` rounds of a waiter (after spinning) before it sleeps on its futex: cheap
/// wake-ups when cores are free, and no stolen cores when they are not.
pub const YIELD_ITERATIONS: u32 = 1000;
/// How long a waiter sleeps on a futex before re-checking liveness.
pub const FUTEX_SLICE_MS: u64 = 50;
/// Largest file a checkpoint may contain (one rank's buffers), in bytes.
pub const MAX_CHECKPOINT_FILE_BYTES: u64 = 64 << 30;
/// Largest manifest file, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Unit of checkpoint I/O: buffers are written, read and checksummed in segments of this many
/// bytes, several at once; the segments' CRC32Cs combine into the buffer's.
pub const CHECKPOINT_SEGMENT_BYTES: usize = 8 << 20;
/// Most threads that write one rank's checkpoint segments at once; the proxy uses one per
/// core, at least 2.
pub const MAX_CHECKPOINT_IO_THREADS: usize = 4;
/// Segments done with their I/O that may wait for the checkpoint's checksum thread.
pub const CHECKPOINT_CHECKSUM_QUEUE_SEGMENTS: usize = 8;
