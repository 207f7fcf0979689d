//! The simulator's cost model: how long the node agents take to carry out each action, and how
//! fast a spliced job runs. All times are in milliseconds of simulated time.
//!
//! - place: `start_s` (launch the ranks; no state to load);
//! - checkpoint (preempt, and the first half of migrate and resize): `fixed_s` plus the state of
//!   the ranks on one device (`ranks_per_device × state_bytes_per_rank`) over
//!   `bandwidth_bytes_per_s`; devices write in parallel;
//! - restore (resume, and the second half of migrate and resize): the same formula with the
//!   ranks per device of the target assignment;
//! - migrate and resize: checkpoint on the old devices, then restore on the new ones;
//! - stop: `start_s`;
//! - splicing: a job of world size W on D devices (factor f = W/D) runs at throughput
//!   `(1/f) × (1 − splice_overhead)` of its full-size speed; f = 1 runs at full speed.
//!
//! Checkpoints are taken at a step boundary, so no work is lost; the job makes no progress from
//! the moment a preempt, migrate or resize commits until it runs again. Pure arithmetic: no I/O.

use crate::action::ActionOp;

/// Parts per million.
pub const PPM: u64 = 1_000_000;

/// The cost model's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostModel {
    /// Fixed part of a checkpoint or a restore, in milliseconds.
    pub fixed_ms: u64,
    /// Time to launch a job's ranks from scratch (place) or stop them, in milliseconds.
    pub start_ms: u64,
    /// Device and host state of one rank, in bytes.
    pub state_bytes_per_rank: u64,
    /// Checkpoint storage bandwidth available to one device, in bytes per second.
    pub bandwidth_bytes_per_s: u64,
    /// Throughput lost to time-slicing when a device holds more than one rank, in ppm.
    pub splice_overhead_ppm: u64,
}

impl Default for CostModel {
    /// 10 s fixed, 4 GiB per rank at 2 GB/s (about 2.1 s per rank), 10 s to start, 3% splicing
    /// overhead.
    fn default() -> Self {
        CostModel {
            fixed_ms: 10_000,
            start_ms: 10_000,
            state_bytes_per_rank: 4 << 30,
            bandwidth_bytes_per_s: 2_000_000_000,
            splice_overhead_ppm: 30_000,
        }
    }
}

/// How long an action takes: until every node has checkpointed (zero for actions without a
/// checkpoint), and until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionTiming {
    pub checkpoint_ms: u64,
    pub complete_ms: u64,
}

impl CostModel {
    /// Checkpointing or restoring `ranks_per_device` ranks on each device, in milliseconds.
    pub fn transfer_ms(&self, ranks_per_device: u64) -> u64 {
        let bytes = u128::from(ranks_per_device) * u128::from(self.state_bytes_per_rank);
        let bandwidth = u128::from(self.bandwidth_bytes_per_s.max(1));
        let ms = (bytes * 1_000).div_ceil(bandwidth);
        self.fixed_ms
            .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The timing of `op` for a job of `world_size` ranks that now holds `held_devices`.
    pub fn timing(&self, op: &ActionOp, world_size: u32, held_devices: usize) -> ActionTiming {
        let per_device = |devices: usize| u64::from(world_size) / (devices.max(1) as u64);
        match op {
            ActionOp::Place { .. } | ActionOp::Stop => ActionTiming {
                checkpoint_ms: 0,
                complete_ms: self.start_ms,
            },
            ActionOp::Resume { devices } => ActionTiming {
                checkpoint_ms: 0,
                complete_ms: self.transfer_ms(per_device(devices.len())),
            },
            ActionOp::Preempt { .. } => {
                let checkpoint_ms = self.transfer_ms(per_device(held_devices));
                ActionTiming {
                    checkpoint_ms,
                    complete_ms: checkpoint_ms,
                }
            }
            ActionOp::Migrate { to } | ActionOp::Resize { to, .. } => {
                let checkpoint_ms = self.transfer_ms(per_device(held_devices));
                ActionTiming {
                    checkpoint_ms,
                    complete_ms: checkpoint_ms + self.transfer_ms(per_device(to.len())),
                }
            }
        }
    }

    /// Progress rate of a job of `world_size` ranks on `devices` devices, in ppm of full speed.
    pub fn rate_ppm(&self, world_size: u32, devices: usize) -> u64 {
        let devices = devices as u64;
        let world = u64::from(world_size).max(1);
        if devices >= world {
            return PPM;
        }
        let overhead = self.splice_overhead_ppm.min(PPM);
        // (D / W) × (1 − overhead), rounded down, at least 1 so that every job finishes.
        (devices * (PPM - overhead) / world).max(1)
    }
}
