//! Checkpoint files: each rank's live buffers and registered host state, written by the proxy
//! at a consistent cut, with a per-rank manifest of checksums and a job manifest that rank 0
//! writes last (its presence marks the checkpoint complete).
//!
//! Layout of a checkpoint directory:
//! `rank-NNNNN.bin` (buffers then host state, back to back), `rank-NNNNN.json` (handles,
//! offsets, lengths, checksums), `manifest.json` (job, world size, step, checksum of every rank
//! manifest). Loading verifies every checksum before returning anything: a damaged checkpoint
//! is refused, never restored. It must not know about proxies, channels or scheduling.
//!
//! Checksums: buffer data, the bulk of a checkpoint, carries a CRC32C per buffer (hardware
//! `crc32` instructions, several times cheaper per byte than BLAKE3; it detects every burst
//! error up to 32 bits and other damage with probability 1 - 2^-32: the file checksum guards
//! against a damaged disk or a torn copy, not against an adversary). The small parts, the host
//! state and the rank manifests, keep BLAKE3. Content identity for splicing is not taken from
//! the file: restored buffers start with no known BLAKE3 digest.
//!
//! Speed: buffers move in segments of `CHECKPOINT_SEGMENT_BYTES`, each with its own CRC32C,
//! combined per buffer with `crc32c_combine` into the CRC32C of the whole buffer. Writes go
//! straight from device memory to the file, on one thread per core (copying into the page cache
//! is CPU-bound), each checksumming its segment and starting its writeback at once. Reads go
//! straight into device memory in file order on one thread, a second checksumming the
//! segments already read and a third faulting in fresh device memory ahead of the reads.
//! The data file is fsynced before its manifest is written, and the job manifest last.
//!
//! Discarded buffers (the rank declared their contents dead, `Kernel::Discard`): the manifest
//! records their handle and size and the file holds no bytes of them; restore recreates them
//! under the same handle, zeroed.

use crate::device::{digest, hex, Handle};
use crate::error::{NodeError, Result};
use crate::limits::{
    CHECKPOINT_CHECKSUM_QUEUE_SEGMENTS, CHECKPOINT_SEGMENT_BYTES, MAX_BUFFERS_PER_RANK,
    MAX_BUFFER_BYTES, MAX_CHECKPOINT_FILE_BYTES, MAX_CHECKPOINT_IO_THREADS, MAX_HOST_STATE_BYTES,
    MAX_MANIFEST_BYTES, MAX_WORLD_SIZE,
};
use crate::shm::{
    advise_sequential, device_vec, f32s_as_bytes, f32s_as_bytes_mut, memory_range, populate_write,
    start_writeback,
};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Version of the on-disk format (2: buffer data checksummed with CRC32C instead of BLAKE3;
/// 3: discarded buffers recorded without data).
pub const FORMAT_VERSION: u32 = 3;
/// Name of the job manifest.
pub const MANIFEST: &str = "manifest.json";

/// One buffer in a rank manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BufferEntry {
    pub handle: Handle,
    pub len_elems: u64,
    pub offset_bytes: u64,
    /// CRC32C of the buffer's bytes, 8 hex digits; empty for a discarded buffer.
    pub crc32c: String,
    /// Discarded: its contents were dead at the cut, the file holds none of its bytes (it
    /// takes no room: the next buffer starts at the same offset).
    #[serde(default)]
    pub discarded: bool,
}

/// A buffer handed to `write_rank`: its bytes, or only its size when discarded.
#[derive(Debug, Clone, Copy)]
pub enum Contents<'a> {
    Live(&'a [f32]),
    Discarded { len_elems: u64 },
}

/// A rank's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankManifest {
    pub format: u32,
    pub job: String,
    pub rank: u32,
    pub step: u64,
    pub next_handle: Handle,
    pub data_file: String,
    pub data_bytes: u64,
    pub buffers: Vec<BufferEntry>,
    pub host_state_offset_bytes: u64,
    pub host_state_len_bytes: u64,
    pub host_state_blake3: String,
}

/// One rank in the job manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankRef {
    pub rank: u32,
    pub manifest_file: String,
    pub blake3: String,
}

/// The job manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobManifest {
    pub format: u32,
    pub job: String,
    pub world_size: u32,
    pub step: u64,
    pub ranks: Vec<RankRef>,
}

/// A rank's state as loaded (and verified) from a checkpoint.
#[derive(Debug, Clone)]
pub struct RankImage {
    pub step: u64,
    pub next_handle: Handle,
    pub buffers: Vec<(Handle, Vec<f32>)>,
    /// Discarded buffers as (handle, length in elements): recreate them with any contents
    /// (the proxy zeroes them).
    pub discarded: Vec<(Handle, u64)>,
    pub host_state: Vec<u8>,
}

fn rank_manifest_name(rank: u32) -> String {
    format!("rank-{rank:05}.json")
}

fn rank_data_name(rank: u32) -> String {
    format!("rank-{rank:05}.bin")
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
    let context = format!("{what} {}", path.display());
    move |e| NodeError::io(context, e)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io("creating", path))?;
    f.write_all(bytes).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Removes a previous job manifest, so a half-written checkpoint is never taken as complete.
pub fn begin(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("creating checkpoint directory", dir))?;
    match std::fs::remove_file(dir.join(MANIFEST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io("removing old manifest in", dir)(e))
        }
        _ => Ok(()),
    }
}

/// The hex form of a buffer's CRC32C in a rank manifest.
fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Writes one rank's buffers (as `(handle, contents)`; of a discarded one only its handle and
/// size) and host state, fsyncs them, and returns the checksum of the rank manifest for the
/// job manifest.
pub fn write_rank<'a>(
    dir: &Path,
    job: &str,
    rank: u32,
    step: u64,
    next_handle: Handle,
    buffers: &mut dyn Iterator<Item = (Handle, Contents<'a>)>,
    host_state: &[u8],
) -> Result<String> {
    NodeError::check_limit(
        "host state bytes",
        host_state.len() as u64,
        MAX_HOST_STATE_BYTES as u64,
    )?;
    std::fs::create_dir_all(dir).map_err(io("creating checkpoint directory", dir))?;
    let data_path = dir.join(rank_data_name(rank));
    let file = File::create(&data_path).map_err(io("creating", &data_path))?;
    let mut entries = Vec::new();
    let mut segments = Vec::new();
    let mut offset = 0u64;
    // Index in `entries` of each live buffer, in order (segments number the live ones).
    let mut live = Vec::new();
    for (handle, contents) in buffers {
        let data = match contents {
            Contents::Live(data) => data,
            Contents::Discarded { len_elems } => {
                entries.push(BufferEntry {
                    handle,
                    len_elems,
                    offset_bytes: offset,
                    crc32c: String::new(),
                    discarded: true,
                });
                continue;
            }
        };
        let bytes = f32s_as_bytes(data);
        let buffer = live.len();
        segments.extend(segments_of(buffer, offset, bytes.len()).map(|seg| {
            let range = seg.range();
            (seg, &bytes[range])
        }));
        live.push(entries.len());
        entries.push(BufferEntry {
            handle,
            len_elems: data.len() as u64,
            offset_bytes: offset,
            crc32c: String::new(),
            discarded: false,
        });
        offset += bytes.len() as u64;
    }
    NodeError::check_limit(
        "buffers per rank",
        entries.len() as u64,
        MAX_BUFFERS_PER_RANK as u64,
    )?;
    // Each segment: checksum it, write it where it belongs, and start its writeback so the
    // disk works while the next ones are copied; several threads at once.
    let sums = in_parallel(segments, |(seg, bytes)| {
        let sum = crc32c::crc32c(bytes);
        file.write_all_at(bytes, seg.file_offset)
            .map_err(io("writing", &data_path))?;
        start_writeback(&file, seg.file_offset, bytes.len() as u64);
        Ok((seg, sum))
    })?;
    file.write_all_at(host_state, offset)
        .map_err(io("writing", &data_path))?;
    let computed = combine(live.len(), sums)?;
    for (i, sum) in live.into_iter().zip(computed) {
        entries[i].crc32c = crc_hex(sum);
    }
    file.sync_all().map_err(io("syncing", &data_path))?;
    let manifest = RankManifest {
        format: FORMAT_VERSION,
        job: job.to_string(),
        rank,
        step,
        next_handle,
        data_file: rank_data_name(rank),
        data_bytes: offset + host_state.len() as u64,
        buffers: entries,
        host_state_offset_bytes: offset,
        host_state_len_bytes: host_state.len() as u64,
        host_state_blake3: hex(&digest(host_state)),
    };
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| NodeError::json("rank manifest", e))?;
    write_synced(&dir.join(rank_manifest_name(rank)), &bytes)?;
    Ok(hex(&digest(&bytes)))
}

/// Writes the job manifest (after every rank has written its files) atomically.
pub fn write_job_manifest(dir: &Path, job: &str, world_size: u32, step: u64) -> Result<()> {
    let mut ranks = Vec::new();
    for rank in 0..world_size {
        let name = rank_manifest_name(rank);
        let bytes = read_bounded(&dir.join(&name), MAX_MANIFEST_BYTES)?;
        ranks.push(RankRef {
            rank,
            manifest_file: name,
            blake3: hex(&digest(&bytes)),
        });
    }
    let manifest = JobManifest {
        format: FORMAT_VERSION,
        job: job.to_string(),
        world_size,
        step,
        ranks,
    };
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| NodeError::json("job manifest", e))?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    write_synced(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io("renaming manifest in", dir))?;
    sync_dir(dir)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(io("reading", path))?.len();
    NodeError::check_limit("checkpoint file bytes", len, limit)?;
    std::fs::read(path).map_err(io("reading", path))
}

fn bad(path: &Path, detail: impl Into<String>) -> NodeError {
    NodeError::BadCheckpoint {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn check_sum(path: &Path, what: &str, expected: &str, bytes: &[u8]) -> Result<()> {
    let actual = hex(&digest(bytes));
    if actual != expected {
        return Err(NodeError::ChecksumMismatch {
            path: PathBuf::from(format!("{} ({what})", path.display())),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Reads and checks the job manifest.
pub fn read_job_manifest(dir: &Path) -> Result<JobManifest> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Err(bad(
            dir,
            "no manifest.json: the checkpoint is missing or incomplete",
        ));
    }
    let bytes = read_bounded(&path, MAX_MANIFEST_BYTES)?;
    let m: JobManifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&path, format!("unreadable manifest: {e}")))?;
    if m.format != FORMAT_VERSION {
        return Err(bad(
            &path,
            format!("format {} is not {FORMAT_VERSION}", m.format),
        ));
    }
    NodeError::check_limit("world size", m.world_size as u64, MAX_WORLD_SIZE as u64)?;
    if m.ranks.len() != m.world_size as usize
        || m.ranks.iter().enumerate().any(|(i, r)| r.rank != i as u32)
    {
        return Err(bad(&path, "rank list does not cover 0..world_size"));
    }
    Ok(m)
}

/// Loads rank `rank` of the checkpoint in `dir`, verifying every checksum on the way.
pub fn load_rank(dir: &Path, job: &str, rank: u32, world_size: u32) -> Result<RankImage> {
    load_rank_into(dir, job, rank, world_size, &device_vec)
}

/// `load_rank`, with the buffers' memory from `alloc(len)` (the proxy's device memory pool):
/// every element of what `alloc` returns is overwritten by the checkpoint's bytes, or the
/// whole image is dropped with the error.
pub fn load_rank_into(
    dir: &Path,
    job: &str,
    rank: u32,
    world_size: u32,
    alloc: &dyn Fn(usize) -> Vec<f32>,
) -> Result<RankImage> {
    let job_manifest = read_job_manifest(dir)?;
    if job_manifest.job != job || job_manifest.world_size != world_size {
        return Err(bad(
            dir,
            format!(
                "checkpoint is of job {} with world size {}, not job {job} with {world_size}",
                job_manifest.job, job_manifest.world_size
            ),
        ));
    }
    let entry = job_manifest
        .ranks
        .get(rank as usize)
        .ok_or_else(|| bad(dir, format!("no rank {rank}")))?;
    if entry.manifest_file != rank_manifest_name(rank) {
        return Err(bad(
            dir,
            format!("unexpected rank manifest name {:?}", entry.manifest_file),
        ));
    }
    let manifest_path = dir.join(&entry.manifest_file);
    let bytes = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)?;
    check_sum(&manifest_path, "rank manifest", &entry.blake3, &bytes)?;
    let m: RankManifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&manifest_path, format!("unreadable: {e}")))?;
    if m.rank != rank || m.step != job_manifest.step || m.data_file != rank_data_name(rank) {
        return Err(bad(
            &manifest_path,
            "rank, step or data file disagrees with manifest.json",
        ));
    }
    NodeError::check_limit(
        "buffers per rank",
        m.buffers.len() as u64,
        MAX_BUFFERS_PER_RANK as u64,
    )?;
    NodeError::check_limit(
        "host state bytes",
        m.host_state_len_bytes,
        MAX_HOST_STATE_BYTES as u64,
    )?;
    let data_path = dir.join(&m.data_file);
    let file = File::open(&data_path).map_err(io("opening", &data_path))?;
    let len = file.metadata().map_err(io("reading", &data_path))?.len();
    NodeError::check_limit("checkpoint file bytes", len, MAX_CHECKPOINT_FILE_BYTES)?;
    if len != m.data_bytes {
        return Err(bad(
            &data_path,
            format!("has {len} bytes, manifest says {}", m.data_bytes),
        ));
    }
    let mut offset = 0u64;
    for b in &m.buffers {
        let size = if b.discarded {
            Some(0)
        } else {
            b.len_elems.checked_mul(4)
        };
        let end = size.and_then(|n| n.checked_add(offset));
        if b.offset_bytes != offset || end.map_or(true, |e| e > m.host_state_offset_bytes) {
            return Err(bad(
                &manifest_path,
                format!("buffer {} is not laid out back to back", b.handle),
            ));
        }
        if b.discarded {
            NodeError::check_limit(
                "discarded buffer bytes",
                b.len_elems.saturating_mul(4),
                MAX_BUFFER_BYTES,
            )?;
        }
        offset = end.unwrap_or(offset);
    }
    // The whole layout is checked before any buffer is allocated or read.
    if offset != m.host_state_offset_bytes || offset + m.host_state_len_bytes != m.data_bytes {
        return Err(bad(
            &manifest_path,
            "host state is not where the manifest says",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if m.buffers
        .iter()
        .any(|b| !seen.insert(b.handle) || b.handle >= m.next_handle)
    {
        return Err(bad(
            &manifest_path,
            "duplicate handle or handle beyond next_handle",
        ));
    }
    let (dead, live): (Vec<&BufferEntry>, Vec<&BufferEntry>) =
        m.buffers.iter().partition(|b| b.discarded);
    let mut datas: Vec<Vec<f32>> = live
        .iter()
        .map(|b| {
            let v = alloc(b.len_elems as usize);
            assert_eq!(
                v.len() as u64,
                b.len_elems,
                "allocator gave the wrong length"
            );
            v
        })
        .collect();
    advise_sequential(&file);
    // Each segment, in file order: read it straight into its device buffer; a second thread
    // checksums the segments already read.
    let mut segments = Vec::new();
    for ((i, b), data) in live.iter().enumerate().zip(datas.iter_mut()) {
        let mut rest = f32s_as_bytes_mut(data);
        for seg in segments_of(i, b.offset_bytes, rest.len()) {
            let (head, tail) = rest.split_at_mut(seg.len_bytes);
            segments.push((seg, head));
            rest = tail;
        }
    }
    // Meanwhile a third thread faults in the device memory ahead of the reads (new memory
    // costs a page fault and zeroing per page, as much as the read itself; pooled memory is
    // already present and costs nothing here).
    let ranges: Vec<(usize, usize)> = segments.iter().map(|(_, b)| memory_range(b)).collect();
    let reading = AtomicBool::new(true);
    let sums = std::thread::scope(|s| {
        s.spawn(|| {
            for (addr, len) in ranges {
                if !reading.load(Ordering::Relaxed) {
                    break;
                }
                populate_write(addr, len);
            }
        });
        let sums = io_then_checksum(segments, |seg, bytes| {
            file.read_exact_at(bytes, seg.file_offset)
                .map_err(io("reading", &data_path))
        });
        reading.store(false, Ordering::Relaxed);
        sums
    })?;
    let computed = combine(live.len(), sums)?;
    let mut buffers = Vec::with_capacity(live.len());
    for ((b, data), crc) in live.iter().zip(datas).zip(computed) {
        let actual = crc_hex(crc);
        if actual != b.crc32c {
            return Err(NodeError::ChecksumMismatch {
                path: PathBuf::from(format!("{} (buffer {})", data_path.display(), b.handle)),
                expected: b.crc32c.clone(),
                actual,
            });
        }
        buffers.push((b.handle, data));
    }
    let mut host_state = vec![0u8; m.host_state_len_bytes as usize];
    file.read_exact_at(&mut host_state, m.host_state_offset_bytes)
        .map_err(io("reading", &data_path))?;
    check_sum(&data_path, "host state", &m.host_state_blake3, &host_state)?;
    let discarded: Vec<(Handle, u64)> = dead.iter().map(|b| (b.handle, b.len_elems)).collect();
    Ok(RankImage {
        step: m.step,
        next_handle: m.next_handle,
        buffers,
        discarded,
        host_state,
    })
}

/// One segment of a buffer: the unit that is checksummed and written or read at once.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Index of the buffer in the rank's list.
    buffer: usize,
    /// Index of the segment in its buffer, and how many the buffer has.
    index: usize,
    count: usize,
    /// Where the segment starts in its buffer and in the data file, and its length.
    start: u64,
    file_offset: u64,
    len_bytes: usize,
}

/// The segments of a buffer of `len_bytes` that starts at `file_offset`; none when it is empty.
fn segments_of(buffer: usize, file_offset: u64, len_bytes: usize) -> impl Iterator<Item = Segment> {
    let count = len_bytes.div_ceil(CHECKPOINT_SEGMENT_BYTES);
    (0..count).map(move |index| {
        let start = index * CHECKPOINT_SEGMENT_BYTES;
        Segment {
            buffer,
            index,
            count,
            start: start as u64,
            file_offset: file_offset + start as u64,
            len_bytes: CHECKPOINT_SEGMENT_BYTES.min(len_bytes - start),
        }
    })
}

impl Segment {
    /// The segment's byte range within its buffer.
    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len_bytes
    }
}

/// Combines each buffer's segment CRCs (`(segment, CRC32C of its bytes)`, in any order) into
/// the CRC32C of the whole buffer; `buffers` is the number of buffers. An empty buffer (no
/// segments) has the CRC32C of no bytes. A segment missing from the list is an error.
fn combine(buffers: usize, sums: impl IntoIterator<Item = (Segment, u32)>) -> Result<Vec<u32>> {
    let mut parts: Vec<Vec<Option<(u32, usize)>>> = vec![Vec::new(); buffers];
    for (seg, crc) in sums {
        let p = &mut parts[seg.buffer];
        if p.is_empty() {
            p.resize(seg.count, None);
        }
        p[seg.index] = Some((crc, seg.len_bytes));
    }
    parts
        .into_iter()
        .map(|p| {
            p.into_iter().try_fold(crc32c::crc32c(&[]), |acc, part| {
                let (crc, len) = part.ok_or_else(|| {
                    NodeError::Proxy("a checkpoint segment's checksum is missing".into())
                })?;
                Ok(crc32c::crc32c_combine(acc, crc, len))
            })
        })
        .collect()
}

/// Threads that write one rank's checkpoint segments: one per core, at least 2 (copying into
/// the page cache is CPU-bound: two writers measured faster than one), at most the limit.
fn io_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_CHECKPOINT_IO_THREADS)
}

/// Runs `work` on every item, several threads taking the items in order; returns the results in
/// item order, or the first error (the other threads stop taking items then).
fn in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let total = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let failed = AtomicBool::new(false);
    let threads = io_threads().min(total);
    let outcomes: Vec<Result<Vec<(usize, R)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some((i, item)) = next else { break };
                        match work(item) {
                            Ok(r) => done.push((i, r)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(NodeError::Proxy("checkpoint I/O thread panicked".into()))
                })
            })
            .collect()
    });
    let mut slots: Vec<Option<R>> = (0..total).map(|_| None).collect();
    for outcome in outcomes {
        for (i, r) in outcome? {
            slots[i] = Some(r);
        }
    }
    slots
        .into_iter()
        .map(|r| r.ok_or_else(|| NodeError::Proxy("checkpoint I/O skipped a segment".into())))
        .collect()
}

/// Runs `io` on every segment in order on this thread (one sequential stream, which the
/// kernel's readahead handles best), and hands each segment, once its I/O is done, to a
/// second thread that computes its CRC32C. Returns the CRCs, or the first error (the checksum
/// thread then stops with the segments it got).
fn io_then_checksum<B: AsRef<[u8]> + Send>(
    segments: Vec<(Segment, B)>,
    mut io: impl FnMut(&Segment, &mut B) -> Result<()>,
) -> Result<Vec<(Segment, u32)>> {
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<(Segment, B)>(CHECKPOINT_CHECKSUM_QUEUE_SEGMENTS);
    std::thread::scope(|s| {
        let summer = s.spawn(move || {
            rx.into_iter()
                .map(|(seg, bytes)| (seg, crc32c::crc32c(bytes.as_ref())))
                .collect::<Vec<_>>()
        });
        let mut outcome = Ok(());
        for (seg, mut bytes) in segments {
            if let Err(e) = io(&seg, &mut bytes) {
                outcome = Err(e);
                break;
            }
            if tx.send((seg, bytes)).is_err() {
                break;
            }
        }
        drop(tx);
        let sums = summer
            .join()
            .map_err(|_| NodeError::Proxy("checkpoint checksum thread panicked".into()))?;
        outcome.map(|()| sums)
    })
}

/// Verifies a whole checkpoint (every rank, every checksum); returns its manifest.
pub fn verify(dir: &Path) -> Result<JobManifest> {
    let m = read_job_manifest(dir)?;
    for rank in 0..m.world_size {
        load_rank(dir, &m.job, rank, m.world_size)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_two_ranks(dir: &Path) {
        begin(dir).unwrap();
        for rank in 0..2u32 {
            let a = vec![rank as f32; 5];
            let b = vec![1.5f32; 3];
            let mut it = [
                (1u64, Contents::Live(a.as_slice())),
                (2u64, Contents::Live(b.as_slice())),
            ]
            .into_iter();
            write_rank(dir, "j", rank, 7, 3, &mut it, b"state").unwrap();
        }
        write_job_manifest(dir, "j", 2, 7).unwrap();
    }

    #[test]
    fn round_trip_and_refuse_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_two_ranks(dir.path());
        let img = load_rank(dir.path(), "j", 1, 2).unwrap();
        assert_eq!(img.step, 7);
        assert_eq!(img.buffers[0].1, vec![1.0; 5]);
        assert_eq!(img.host_state, b"state");
        verify(dir.path()).unwrap();
        // Flip one byte of rank 1's data: refused with a checksum error.
        let path = dir.path().join("rank-00001.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = load_rank(dir.path(), "j", 1, 2).unwrap_err();
        assert!(matches!(err, NodeError::ChecksumMismatch { .. }), "{err}");
        assert!(verify(dir.path()).is_err());
        assert!(load_rank(dir.path(), "j", 0, 2).is_ok());
    }

    #[test]
    fn segment_checksums_combine_into_the_whole_buffers_crc32c() {
        const SEG: usize = CHECKPOINT_SEGMENT_BYTES;
        let bytes: Vec<u8> = (0..5 * SEG + 3000)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect();
        for len in [
            1,
            1024,
            SEG - 4,
            SEG,
            SEG + 4,
            2 * SEG,
            2 * SEG + 1024,
            3 * SEG,
            3 * SEG + 1,
            4 * SEG,
            5 * SEG + 3000,
        ] {
            let input = &bytes[..len];
            // In reverse order: threads finish segments in any order.
            let mut sums: Vec<_> = segments_of(0, 77, len)
                .map(|seg| (seg, crc32c::crc32c(&input[seg.range()])))
                .collect();
            sums.reverse();
            assert_eq!(sums.len(), len.div_ceil(SEG));
            assert_eq!(
                combine(1, sums).unwrap(),
                vec![crc32c::crc32c(input)],
                "{len} bytes in segments of {SEG}"
            );
        }
        assert_eq!(segments_of(0, 0, 0).count(), 0);
        assert_eq!(
            combine(1, std::iter::empty()).unwrap(),
            vec![crc32c::crc32c(&[])]
        );
        let mut partial: Vec<_> = segments_of(0, 0, 2 * SEG).map(|s| (s, 0)).collect();
        partial.pop();
        assert!(
            combine(1, partial).is_err(),
            "a missing segment is an error"
        );
    }

    #[test]
    fn multi_segment_buffers_round_trip_and_damage_in_any_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elems = CHECKPOINT_SEGMENT_BYTES / 4 * 5 / 2 + 3;
        let big: Vec<f32> = (0..elems).map(|i| i as f32 * 0.5).collect();
        let small = vec![2.0f32; 7];
        let empty: Vec<f32> = Vec::new();
        begin(dir.path()).unwrap();
        let mut it = [
            (3u64, Contents::Discarded { len_elems: 1 << 20 }),
            (4u64, Contents::Live(small.as_slice())),
            (5u64, Contents::Live(big.as_slice())),
            (6u64, Contents::Live(empty.as_slice())),
        ]
        .into_iter();
        write_rank(dir.path(), "j", 0, 3, 7, &mut it, b"host").unwrap();
        write_job_manifest(dir.path(), "j", 1, 3).unwrap();
        let img = load_rank(dir.path(), "j", 0, 1).unwrap();
        assert_eq!(img.buffers.len(), 3);
        assert_eq!(img.buffers[0].1, small);
        assert_eq!(img.buffers[1].1, big);
        assert!(img.buffers[2].1.is_empty());
        assert_eq!(img.discarded, vec![(3, 1 << 20)]);
        assert_eq!(img.host_state, b"host");
        // Damage one byte in the big buffer's second segment: refused.
        let path = dir.path().join("rank-00000.bin");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let at = 7 * 4 + CHECKPOINT_SEGMENT_BYTES as u64 + 12_345;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 1], at).unwrap();
        let err = load_rank(dir.path(), "j", 0, 1).unwrap_err();
        assert!(matches!(err, NodeError::ChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn discarded_buffers_are_recorded_without_data() {
        let dir = tempfile::tempdir().unwrap();
        let live = vec![3.25f32; 100];
        begin(dir.path()).unwrap();
        let mut it = [
            (1u64, Contents::Discarded { len_elems: 4096 }),
            (2u64, Contents::Live(live.as_slice())),
            (3u64, Contents::Discarded { len_elems: 8 }),
        ]
        .into_iter();
        write_rank(dir.path(), "j", 0, 5, 4, &mut it, b"hs").unwrap();
        write_job_manifest(dir.path(), "j", 1, 5).unwrap();
        let file_len = std::fs::metadata(dir.path().join("rank-00000.bin"))
            .unwrap()
            .len();
        assert_eq!(
            file_len,
            100 * 4 + 2,
            "only the live buffer and the host state"
        );
        let img = load_rank(dir.path(), "j", 0, 1).unwrap();
        assert_eq!(img.buffers, vec![(2, live.clone())]);
        assert_eq!(img.discarded, vec![(1, 4096), (3, 8)]);
        assert_eq!(img.next_handle, 4);
        // A discarded entry that claims room in the file is refused.
        let mpath = dir.path().join("rank-00000.json");
        let mut m: RankManifest = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        m.buffers[1].offset_bytes = 4;
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        write_job_manifest(dir.path(), "j", 1, 5).unwrap();
        let err = load_rank(dir.path(), "j", 0, 1).unwrap_err();
        assert!(
            matches!(&err, NodeError::BadCheckpoint { detail, .. } if detail.contains("back to back")),
            "{err}"
        );
    }

    #[test]
    fn incomplete_or_foreign_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_two_ranks(dir.path());
        assert!(load_rank(dir.path(), "other", 0, 2).is_err());
        assert!(load_rank(dir.path(), "j", 0, 3).is_err());
        begin(dir.path()).unwrap();
        assert!(matches!(
            load_rank(dir.path(), "j", 0, 2),
            Err(NodeError::BadCheckpoint { .. })
        ));
    }
}
