//! What a simulation run reports: utilisation, job completion time and queueing delay (overall
//! and per tier), SLA attainment per tier, counts of actions and rejections, and planner speed.
//!
//! Plain data and arithmetic over per-job records the engine collected; no I/O, no clock.
//! Percentiles use the nearest-rank method on the sorted values.

use super::premium_bound::PremiumBound;
use crate::tier::Tier;
use serde::Serialize;

/// What the engine keeps of one finished job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// Position of the job in the (sorted) trace.
    pub trace_index: usize,
    pub tier: Tier,
    /// Submission to the moment the last rank exited.
    pub completion_ms: u64,
    /// Time spent pending: before the first placement, and between a preemption and its resume.
    pub queueing_ms: u64,
    /// Delivered over requested device-time, from the job's SLA ledger in the state.
    pub attainment_ppm: u32,
    pub delivered_device_ms: u64,
    pub preemptions: u32,
}

/// Mean, median and p99 of a set of durations, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub mean_s: f64,
    pub median_s: f64,
    pub p99_s: f64,
}

/// Nearest-rank percentile (`per_mille` of 1000) of sorted values; 0 for none.
fn percentile(sorted: &[u64], per_mille: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (per_mille * n).div_ceil(1000).clamp(1, n);
    sorted[(rank - 1) as usize]
}

/// Sorts `values` and returns their mean, median and p99 in units of `per_second` (`None`
/// for no values).
fn mean_median_p99(values: &mut [u64], per_second: f64) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
    Some((
        sum as f64 / values.len() as f64 / per_second,
        percentile(values, 500) as f64 / per_second,
        percentile(values, 990) as f64 / per_second,
    ))
}

impl Summary {
    /// Summarises millisecond values.
    pub fn of_ms(values: &mut [u64]) -> Summary {
        mean_median_p99(values, 1000.0).map_or_else(
            Summary::default,
            |(mean_s, median_s, p99_s)| Summary {
                mean_s,
                median_s,
                p99_s,
            },
        )
    }
}

/// Completion and queueing statistics of one group of jobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobStats {
    pub jobs: u64,
    pub completion: Summary,
    pub queueing: Summary,
}

impl JobStats {
    pub fn of<'a>(records: impl Iterator<Item = &'a JobRecord>) -> JobStats {
        let (mut completion, mut queueing): (Vec<u64>, Vec<u64>) =
            records.map(|r| (r.completion_ms, r.queueing_ms)).unzip();
        JobStats {
            jobs: completion.len() as u64,
            completion: Summary::of_ms(&mut completion),
            queueing: Summary::of_ms(&mut queueing),
        }
    }
}

/// One tier's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierReport {
    pub tier: String,
    pub stats: JobStats,
    /// The tier's target share of requested device-time (`None`: best effort).
    pub sla_target: Option<f64>,
    /// Share of the tier's jobs whose delivered/requested device-time reached the target.
    pub sla_attainment: Option<f64>,
    /// Mean over the tier's jobs of delivered/requested device-time.
    pub mean_delivered_share: f64,
    pub preemptions: u64,
}

impl TierReport {
    pub fn of(tier: Tier, records: &[JobRecord]) -> TierReport {
        let mine: Vec<&JobRecord> = records.iter().filter(|r| r.tier == tier).collect();
        let target_ppm = tier.target_share_ppm();
        let share = |count: usize| {
            if mine.is_empty() {
                1.0
            } else {
                count as f64 / mine.len() as f64
            }
        };
        let met = target_ppm.map(|t| share(mine.iter().filter(|r| r.attainment_ppm >= t).count()));
        let mean = if mine.is_empty() {
            1.0
        } else {
            mine.iter()
                .map(|r| f64::from(r.attainment_ppm))
                .sum::<f64>()
                / mine.len() as f64
                / 1e6
        };
        TierReport {
            tier: tier.as_str().to_string(),
            stats: JobStats::of(mine.iter().copied()),
            sla_target: target_ppm.map(|t| f64::from(t) / 1e6),
            sla_attainment: met,
            mean_delivered_share: mean,
            preemptions: mine.iter().map(|r| u64::from(r.preemptions)).sum(),
        }
    }
}

/// Counts of what the policy did and what apply refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Evaluations the engine raised (each planned once, then followed up while its plans are
    /// full and commit actions: `follows_up`).
    pub evaluations: u64,
    /// Extra `Policy::plan` calls for an evaluation, at the same instant, after a full plan
    /// that committed actions (`MAX_FOLLOW_UP_PLANS` at most in a row); the planner's calls are
    /// `evaluations + follow_up_plans`.
    pub follow_up_plans: u64,
    /// Follow-up plans that had actions: work that one plan per event would have left for a
    /// later event.
    pub follow_up_plans_with_actions: u64,
    /// Times an evaluation's plans were still full and committing actions after
    /// `MAX_FOLLOW_UP_PLANS` follow-ups (the rest then waited for the next event).
    pub follow_up_limits_reached: u64,
    /// Plans with at least one action (follow-ups included).
    pub plans_proposed: u64,
    pub plans_rejected: u64,
    pub actions_committed: u64,
    pub actions_rejected: u64,
    pub preemptions: u64,
    pub migrations: u64,
    pub resizes: u64,
    /// Agent reports apply refused: always 0 unless the engine and apply disagree.
    pub agent_reports_rejected: u64,
}

/// How fast the policy planned, measured with the injected stopwatch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PlannerSpeed {
    pub decisions_per_s: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub total_planner_s: f64,
}

impl PlannerSpeed {
    pub fn of_ns(latencies_ns: &mut [u64]) -> PlannerSpeed {
        let count = latencies_ns.len() as f64;
        let Some((mean_us, p50_us, p99_us)) = mean_median_p99(latencies_ns, 1e3) else {
            return PlannerSpeed::default();
        };
        let total_s = mean_us * count / 1e6;
        PlannerSpeed {
            decisions_per_s: if total_s > 0.0 { count / total_s } else { 0.0 },
            latency_p50_us: p50_us,
            latency_p99_us: p99_us,
            total_planner_s: total_s,
        }
    }
}

/// Device-time totals, in device-seconds, for conservation checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DeviceTime {
    /// Σ over jobs of duration × world size: the work the trace asks for at full speed.
    pub requested_work_device_s: f64,
    /// Device-time in which devices ran a job's ranks, integrated by the engine.
    pub busy_device_s: f64,
    /// Σ over jobs of the delivered device-time in their SLA ledgers (apply's accounting).
    pub delivered_device_s: f64,
    /// Devices × (last finish − first submission).
    pub capacity_device_s: f64,
}

/// The whole result of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub policy: String,
    pub devices: u32,
    pub devices_per_node: u32,
    pub tier_mix: String,
    pub seed: u64,
    pub jobs: u64,
    /// Busy device-time over capacity while jobs arrive (first to last submission).
    pub utilization: f64,
    /// Busy device-time over capacity from the first submission to the last completion.
    pub utilization_makespan: f64,
    pub makespan_s: f64,
    pub overall: JobStats,
    pub tiers: Vec<TierReport>,
    pub counts: Counts,
    pub planner: PlannerSpeed,
    pub device_time: DeviceTime,
    pub events: u64,
    /// The first few refusals apply gave, in words (for diagnosing a policy).
    pub first_rejections: Vec<String>,
    /// Digest of the final replicated state (equal runs, equal digests).
    pub final_state_digest: String,
    /// How many premium jobs miss their target under any policy, at least (from the trace
    /// and the fleet alone; see `premium_bound`).
    pub premium_bound: PremiumBound,
}

impl Report {
    /// The report of one tier.
    pub fn tier(&self, tier: Tier) -> Option<&TierReport> {
        self.tiers.iter().find(|t| t.tier == tier.as_str())
    }
}
