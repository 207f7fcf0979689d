//! Turns a finished (or stopped) simulation into its `Report`: the per-job records and the
//! engine's integrals become the statistics of `metrics`, with the trace's premium bound.
//!
//! Read-only over the simulator; no I/O, no clock.

use super::engine::Simulator;
use super::metrics::{Counts, DeviceTime, JobStats, PlannerSpeed, Report, TierReport};
use super::premium_bound::PremiumBound;
use crate::tier::Tier;

impl Simulator {
    /// The report of the run so far (complete once `step` has returned `Done`).
    pub fn report(&self) -> Report {
        let devices = u64::from(self.config.devices);
        let (window_start, window_end) = self.window_ms();
        let window_capacity = devices as f64 * (window_end - window_start) as f64;
        let makespan_ms = self.now_ms.saturating_sub(window_start);
        let makespan_capacity = devices as f64 * makespan_ms as f64;
        let ratio = |busy: u128, capacity: f64| {
            if capacity > 0.0 {
                busy as f64 / capacity
            } else {
                0.0
            }
        };
        let counters = self.state.counters();
        let counts = Counts {
            preemptions: counters.preemptions,
            migrations: counters.migrations,
            resizes: counters.resizes,
            ..self.counts.clone()
        };
        let mut latencies = self.latencies_ns.clone();
        let requested_work_ms: u128 = self
            .trace
            .iter()
            .map(|j| u128::from(j.duration_s) * 1000 * u128::from(j.num_gpu))
            .sum();
        let delivered_ms: u128 = self
            .records
            .iter()
            .map(|r| u128::from(r.delivered_device_ms))
            .sum();
        Report {
            policy: self.policy.name().to_string(),
            devices: self.config.devices,
            devices_per_node: self.config.devices_per_node,
            tier_mix: self.config.tier_mix.to_string(),
            seed: self.config.seed,
            jobs: self.records.len() as u64,
            utilization: ratio(self.window_busy_device_ms, window_capacity),
            utilization_makespan: ratio(self.busy_device_ms, makespan_capacity),
            makespan_s: makespan_ms as f64 / 1000.0,
            overall: JobStats::of(self.records.iter()),
            tiers: Tier::ALL
                .iter()
                .map(|&tier| TierReport::of(tier, &self.records))
                .collect(),
            counts,
            planner: PlannerSpeed::of_ns(&mut latencies),
            device_time: DeviceTime {
                requested_work_device_s: requested_work_ms as f64 / 1000.0,
                busy_device_s: self.busy_device_ms as f64 / 1000.0,
                delivered_device_s: delivered_ms as f64 / 1000.0,
                capacity_device_s: makespan_capacity / 1000.0,
            },
            events: self.events,
            first_rejections: self.rejections.clone(),
            final_state_digest: self.state.digest().to_string(),
            premium_bound: PremiumBound::of(&self.trace, &self.config),
        }
    }
}
