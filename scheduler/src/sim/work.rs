//! What the simulated node agents know about each job: how much of its work is left, and the
//! running segment it is in (since when, on how many devices, at what rate).
//!
//! Work is counted in full-speed milliseconds scaled by one million (`ms × ppm`), so a spliced
//! job's progress is exact integer arithmetic. Pure bookkeeping: it never touches the state.

use super::cost::PPM;
use crate::tier::Tier;

/// A running segment: the job makes progress at `rate_ppm` on `devices` devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub since_ms: u64,
    pub devices: u32,
    pub rate_ppm: u64,
}

/// The engine's view of one job of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimJob {
    pub trace_index: usize,
    pub tier: Tier,
    pub world_size: u32,
    pub submitted_ms: u64,
    /// Work left, in full-speed ms × ppm.
    pub remaining_work: u128,
    pub segment: Option<Segment>,
    /// Bumped whenever the segment ends, so a scheduled finish for an old segment is ignored.
    pub generation: u64,
    /// Since when the job waits for devices, when it does.
    pub pending_since_ms: Option<u64>,
    pub queueing_ms: u64,
}

impl SimJob {
    pub fn new(
        trace_index: usize,
        tier: Tier,
        world_size: u32,
        duration_ms: u64,
        now_ms: u64,
    ) -> Self {
        SimJob {
            trace_index,
            tier,
            world_size,
            submitted_ms: now_ms,
            remaining_work: u128::from(duration_ms) * u128::from(PPM),
            segment: None,
            generation: 0,
            pending_since_ms: Some(now_ms),
            queueing_ms: 0,
        }
    }

    /// Starts a running segment at `now_ms`; returns when the work will be done at this rate.
    pub fn start(&mut self, now_ms: u64, devices: u32, rate_ppm: u64) -> u64 {
        let rate = u128::from(rate_ppm.max(1));
        self.segment = Some(Segment {
            since_ms: now_ms,
            devices,
            rate_ppm,
        });
        let left_ms = self.remaining_work.div_ceil(rate);
        now_ms.saturating_add(u64::try_from(left_ms).unwrap_or(u64::MAX))
    }

    /// Ends the running segment at `now_ms` (an action committed, or the job exited), keeping
    /// the work it did; returns the devices it ran on (0 when it was not running).
    pub fn stop(&mut self, now_ms: u64) -> u32 {
        self.generation += 1;
        let Some(segment) = self.segment.take() else {
            return 0;
        };
        let elapsed = u128::from(now_ms.saturating_sub(segment.since_ms));
        let done = elapsed * u128::from(segment.rate_ppm);
        self.remaining_work = self.remaining_work.saturating_sub(done);
        segment.devices
    }

    /// Full-speed milliseconds of work done so far, given the trace duration.
    pub fn done_ms(&self, duration_ms: u64) -> u64 {
        let left_ms = u64::try_from(self.remaining_work / u128::from(PPM)).unwrap_or(u64::MAX);
        duration_ms.saturating_sub(left_ms)
    }

    /// The job starts waiting at `now_ms`.
    pub fn wait(&mut self, now_ms: u64) {
        self.pending_since_ms.get_or_insert(now_ms);
    }

    /// The job stops waiting at `now_ms` (a place or resume committed).
    pub fn unwait(&mut self, now_ms: u64) {
        if let Some(since) = self.pending_since_ms.take() {
            self.queueing_ms += now_ms.saturating_sub(since);
        }
    }
}
