//! Checkpoint files: each rank's live buffers and registered host state, written by the proxy
//! at a consistent cut, with a per-rank manifest of BLAKE3 checksums and a job manifest that
//! rank 0 writes last (its presence marks the checkpoint complete).
//!
//! Layout of a checkpoint directory:
//! `rank-NNNNN.bin` (buffers then host state, back to back), `rank-NNNNN.json` (handles,
//! offsets, lengths, checksums), `manifest.json` (job, world size, step, checksum of every rank
//! manifest). Loading verifies every checksum before returning anything: a damaged checkpoint
//! is refused, never restored. It must not know about proxies, channels or scheduling.

use crate::device::{digest, hex, Digest, Handle};
use crate::error::{NodeError, Result};
use crate::limits::{
    CHECKPOINT_WRITE_CHUNK_BYTES, MAX_BUFFERS_PER_RANK, MAX_CHECKPOINT_FILE_BYTES,
    MAX_HOST_STATE_BYTES, MAX_MANIFEST_BYTES, MAX_WORLD_SIZE,
};
use crate::shm::{device_vec, f32s_as_bytes, f32s_as_bytes_mut};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};

/// Version of the on-disk format.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the job manifest.
pub const MANIFEST: &str = "manifest.json";

/// One buffer in a rank manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BufferEntry {
    pub handle: Handle,
    pub len_elems: u64,
    pub offset_bytes: u64,
    pub blake3: String,
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
    pub buffers: Vec<(Handle, Vec<f32>, Digest)>,
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

/// Writes one rank's buffers (as `(handle, data, known checksum)`) and host state, fsyncs them,
/// and returns the checksum of the rank manifest for the job manifest.
pub fn write_rank(
    dir: &Path,
    job: &str,
    rank: u32,
    step: u64,
    next_handle: Handle,
    buffers: &mut dyn Iterator<Item = (Handle, &[f32], Option<Digest>)>,
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
    let mut out = BufWriter::with_capacity(CHECKPOINT_WRITE_CHUNK_BYTES, file);
    let mut entries = Vec::new();
    let mut known_digests = Vec::new();
    let mut offset = 0u64;
    // Write on this thread while a helper checksums the buffers whose digest is not known.
    let computed = hashing_alongside(|hasher| {
        for (handle, data, known) in buffers {
            let bytes = f32s_as_bytes(data);
            for chunk in bytes.chunks(CHECKPOINT_WRITE_CHUNK_BYTES) {
                out.write_all(chunk).map_err(io("writing", &data_path))?;
                if known.is_none() && hasher.send(Some(chunk)).is_err() {
                    return Err(NodeError::Proxy("checksum thread stopped".into()));
                }
            }
            if known.is_none() {
                let _ = hasher.send(None);
            }
            known_digests.push(known);
            entries.push(BufferEntry {
                handle,
                len_elems: data.len() as u64,
                offset_bytes: offset,
                blake3: String::new(),
            });
            offset += bytes.len() as u64;
        }
        out.write_all(host_state).map_err(io("writing", &data_path))
    })?;
    let mut computed = computed.into_iter();
    for (entry, known) in entries.iter_mut().zip(known_digests) {
        let sum = known
            .or_else(|| computed.next())
            .ok_or_else(|| NodeError::Proxy("checksum thread returned too few digests".into()))?;
        entry.blake3 = hex(&sum);
    }
    let file = out
        .into_inner()
        .map_err(|e| io("writing", &data_path)(e.into_error()))?;
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
    let mut input = BufReader::with_capacity(CHECKPOINT_WRITE_CHUNK_BYTES, file);
    let mut offset = 0u64;
    for b in &m.buffers {
        let end = b
            .len_elems
            .checked_mul(4)
            .and_then(|n| n.checked_add(offset));
        if b.offset_bytes != offset || end.map_or(true, |e| e > m.host_state_offset_bytes) {
            return Err(bad(
                &manifest_path,
                format!("buffer {} is not laid out back to back", b.handle),
            ));
        }
        offset += b.len_elems * 4;
    }
    let mut datas: Vec<Vec<f32>> = m
        .buffers
        .iter()
        .map(|b| device_vec(b.len_elems as usize))
        .collect();
    // Read on this thread while a helper hashes what has been read.
    let digests = hashing_alongside(|hasher| {
        for data in datas.iter_mut() {
            for chunk in f32s_as_bytes_mut(data).chunks_mut(CHECKPOINT_WRITE_CHUNK_BYTES) {
                input.read_exact(chunk).map_err(io("reading", &data_path))?;
                let chunk: &[u8] = chunk;
                if hasher.send(Some(chunk)).is_err() {
                    return Err(NodeError::Proxy("checksum thread stopped".into()));
                }
            }
            let _ = hasher.send(None);
        }
        Ok(())
    })?;
    let mut buffers = Vec::with_capacity(m.buffers.len());
    for ((b, data), d) in m.buffers.iter().zip(datas).zip(digests) {
        if hex(&d) != b.blake3 {
            return Err(NodeError::ChecksumMismatch {
                path: PathBuf::from(format!("{} (buffer {})", data_path.display(), b.handle)),
                expected: b.blake3.clone(),
                actual: hex(&d),
            });
        }
        buffers.push((b.handle, data, d));
    }
    if offset != m.host_state_offset_bytes || offset + m.host_state_len_bytes != m.data_bytes {
        return Err(bad(
            &manifest_path,
            "host state is not where the manifest says",
        ));
    }
    let mut host_state = vec![0u8; m.host_state_len_bytes as usize];
    input
        .read_exact(&mut host_state)
        .map_err(io("reading", &data_path))?;
    check_sum(&data_path, "host state", &m.host_state_blake3, &host_state)?;
    let mut seen = std::collections::BTreeSet::new();
    if buffers
        .iter()
        .any(|(h, _, _)| !seen.insert(*h) || *h >= m.next_handle)
    {
        return Err(bad(
            &manifest_path,
            "duplicate handle or handle beyond next_handle",
        ));
    }
    Ok(RankImage {
        step: m.step,
        next_handle: m.next_handle,
        buffers,
        host_state,
    })
}

/// Byte slices queued between the reader and the checksum thread.
const HASH_QUEUE: usize = 4;

/// Runs `produce` on this thread while a helper thread hashes the slices it sends (`None` ends
/// one digest); returns the digests in order, so reading and checksumming overlap.
fn hashing_alongside<'a>(
    produce: impl FnOnce(&SyncSender<Option<&'a [u8]>>) -> Result<()>,
) -> Result<Vec<Digest>> {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Option<&'a [u8]>>(HASH_QUEUE);
        let hasher = s.spawn(move || {
            let mut digests = Vec::new();
            let mut h = blake3::Hasher::new();
            for msg in rx {
                match msg {
                    Some(bytes) => {
                        h.update(bytes);
                    }
                    None => {
                        digests.push(*h.finalize().as_bytes());
                        h = blake3::Hasher::new();
                    }
                }
            }
            digests
        });
        let produced = produce(&tx);
        drop(tx);
        let digests = hasher
            .join()
            .map_err(|_| NodeError::Proxy("checksum thread panicked".into()))?;
        produced.map(|()| digests)
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
            let mut it = [(1u64, a.as_slice(), None), (2u64, b.as_slice(), None)].into_iter();
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
