//! A job's collective segment: one slot per rank in a shared file every proxy of the job maps,
//! a barrier on futex words, and allreduce-sum that adds the ranks' slots in rank order
//! 0..W-1, so the bits of the result never depend on which proxy holds which rank.
//!
//! It must not touch device memory or decide scheduling; the proxy copies buffers in and out.
//! A rank that does not arrive makes the others fail after `COLLECTIVE_TIMEOUT_MS`, never hang.

use crate::error::{NodeError, Result};
use crate::limits::{COLLECTIVE_TIMEOUT_MS, MAX_COLLECTIVE_BYTES, MAX_WORLD_SIZE};
use crate::shm::{futex_wake_all, unlink, wait_for, ShmRegion, SHM_DIR};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ARRIVED: usize = 0;
const GENERATION: usize = 4;
const ATTACHED: usize = 8;
const SLOT_HEADERS: usize = 64;
const PAGE: usize = 4096;

/// Checks that a job id or incarnation is safe to use in a file name.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(NodeError::BadRequest(format!(
            "{what} {name:?} must be 1-64 characters of [A-Za-z0-9_-]"
        )));
    }
    Ok(())
}

/// The segment's path for one launch (`incarnation`) of a job.
pub fn segment_path(job: &str, incarnation: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(format!("singularity-coll-{job}-{incarnation}"))
}

/// A mapped collective segment.
pub struct Collective {
    region: ShmRegion,
    world_size: u32,
    slot_bytes: usize,
    data_offset: usize,
    path: PathBuf,
}

impl Collective {
    /// Maps (creating if needed) the job's segment and counts one attached rank; the last rank
    /// to attach unlinks the file, so nothing is left in /dev/shm once the job is up.
    pub fn attach(job: &str, incarnation: &str, world_size: u32, slot_bytes: u64) -> Result<Self> {
        check_name("job", job)?;
        check_name("incarnation", incarnation)?;
        if world_size == 0 {
            return Err(NodeError::BadRequest(
                "world size must be at least 1".into(),
            ));
        }
        NodeError::check_limit("world size", world_size as u64, MAX_WORLD_SIZE as u64)?;
        NodeError::check_limit(
            "collective bytes per rank",
            slot_bytes,
            MAX_COLLECTIVE_BYTES,
        )?;
        let slot_bytes = (slot_bytes as usize).div_ceil(PAGE) * PAGE;
        let data_offset = (SLOT_HEADERS + 16 * world_size as usize).div_ceil(PAGE) * PAGE;
        let total = data_offset + slot_bytes * world_size as usize;
        let path = segment_path(job, incarnation);
        let region = ShmRegion::open(&path, total, true)?;
        let c = Collective {
            region,
            world_size,
            slot_bytes,
            data_offset,
            path,
        };
        c.count_rank()?;
        Ok(c)
    }

    /// Counts one more attached rank (a proxy that already maps the segment calls this for each
    /// further rank it serves); the last of the job's ranks unlinks the file.
    pub fn count_rank(&self) -> Result<()> {
        let attached = self
            .region
            .atomic_u32(ATTACHED)?
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        if attached >= self.world_size {
            unlink(&self.path);
        }
        Ok(())
    }

    /// All ranks of the job arrive before any leaves.
    pub fn barrier(&self, alive: impl FnMut() -> bool) -> Result<()> {
        let arrived = self.region.atomic_u32(ARRIVED)?;
        let generation = self.region.atomic_u32(GENERATION)?;
        let g = generation.load(Ordering::SeqCst);
        if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= self.world_size {
            arrived.store(0, Ordering::SeqCst);
            generation.fetch_add(1, Ordering::SeqCst);
            futex_wake_all(generation);
            return Ok(());
        }
        wait_for(
            generation,
            "the job's other ranks at a barrier",
            Duration::from_millis(COLLECTIVE_TIMEOUT_MS),
            |seen| seen != g,
            alive,
            || {},
        )
    }

    /// Sums `data` over all ranks in rank order; also ORs the ranks' `flag`s. `data` is replaced
    /// by the sum, identical on every rank.
    pub fn allreduce_sum(
        &self,
        rank: u32,
        data: &mut [f32],
        flag: u32,
        mut alive: impl FnMut() -> bool,
    ) -> Result<u32> {
        let len_bytes = data.len() * 4;
        NodeError::check_limit("allreduce bytes", len_bytes as u64, self.slot_bytes as u64)?;
        if rank >= self.world_size {
            return Err(NodeError::BadRequest(format!(
                "rank {rank} outside world size {}",
                self.world_size
            )));
        }
        let header = SLOT_HEADERS + 16 * rank as usize;
        self.region.write_u64(header, flag as u64)?;
        self.region.write_u64(header + 8, data.len() as u64)?;
        self.region.write_f32s(self.slot(rank), data)?;
        self.barrier(&mut alive)?;
        let mut flags = 0u32;
        let mut mismatch = None;
        for r in 0..self.world_size {
            let h = SLOT_HEADERS + 16 * r as usize;
            flags |= self.region.read_u64(h)? as u32;
            if self.region.read_u64(h + 8)? != data.len() as u64 {
                mismatch = Some(r);
            }
        }
        if mismatch.is_none() {
            self.region.read_f32s(self.slot(0), data)?;
            for r in 1..self.world_size {
                self.region.add_f32s_into(self.slot(r), data)?;
            }
        }
        // Nobody may overwrite a slot before everyone has read all of them.
        self.barrier(&mut alive)?;
        if let Some(r) = mismatch {
            return Err(NodeError::BadRequest(format!(
                "allreduce length differs between ranks (rank {r} vs rank {rank})"
            )));
        }
        Ok(flags)
    }

    /// The job's world size.
    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    fn slot(&self, rank: u32) -> usize {
        self.data_offset + self.slot_bytes * rank as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allreduce_sums_in_rank_order_from_threads() {
        let job = format!("unit-{}", std::process::id());
        let world = 3u32;
        let handles: Vec<_> = (0..world)
            .map(|r| {
                let job = job.clone();
                std::thread::spawn(move || {
                    let c = Collective::attach(&job, "a", world, 4096).unwrap();
                    let mut v = vec![1e8f32, 1.0, -(r as f32)];
                    if r == 1 {
                        v[0] = -1e8;
                    }
                    let flags = c
                        .allreduce_sum(r, &mut v, (r == 2) as u32, || true)
                        .unwrap();
                    (v, flags)
                })
            })
            .collect();
        for h in handles {
            let (v, flags) = h.join().unwrap();
            // ((1e8 + -1e8) + 1e8) in rank order, then 1+1+1, then 0-1-2.
            assert_eq!(v, vec![1e8, 3.0, -3.0]);
            assert_eq!(flags, 1);
        }
        assert!(
            !segment_path(&job, "a").exists(),
            "the last rank to attach unlinks the segment"
        );
    }

    #[test]
    fn back_to_back_allreduces_never_mix_rounds() {
        let job = format!("rounds-{}", std::process::id());
        let world = 4u32;
        let c = std::sync::Arc::new(Collective::attach(&job, "a", world, 4096).unwrap());
        for _ in 1..world {
            c.count_rank().unwrap();
        }
        let handles: Vec<_> = (0..world)
            .map(|r| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for round in 0..200u32 {
                        // Rank r contributes round * 10 + r: a slot read a round late or early
                        // changes the sum.
                        let mut v = vec![(round * 10 + r) as f32; 300];
                        c.allreduce_sum(r, &mut v, 0, || true).unwrap();
                        let want = (round * 10 * world + world * (world - 1) / 2) as f32;
                        assert!(v.iter().all(|x| *x == want), "round {round}: {}", v[0]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(check_name("job", "../x").is_err());
        assert!(check_name("job", "").is_err());
        assert!(check_name("job", "train-1_a").is_ok());
    }
}
