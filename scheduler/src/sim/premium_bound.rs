//! A lower bound, from a trace alone, on how many premium jobs miss the premium SLA target under
//! ANY policy on a fleet of a given size: "premium SLA attainment at most X% for any policy".
//!
//! The argument (docs/SIMULATION.md, "Premium demand against the fleet"):
//! - premium jobs are the trace jobs `TierMix::assign` makes premium (the simulator's own tier
//!   hash, mix and seed, from `SimConfig`);
//! - premium runs whole (never spliced), and its ledger counts delivered device-time only while
//!   it runs, so a job of duration d submitted at r reaches the target share t
//!   (`Tier::target_share_ppm`) only if it completes by its deadline D = r + d / t, and it holds
//!   its w devices for at least q = start + d (the cost model's `start_ms`, then its work) within
//!   [r, D]. It may be paused in between;
//! - a job with q > D − r, or with more devices than the fleet, misses alone;
//! - energetic reasoning: in a window [a, b] a job must hold its devices for at least
//!   q − max(0, a − r) − max(0, D − b) (what cannot be done before a or after b). Where the
//!   premium jobs need more device-time in [a, b] than the fleet has, at least the fewest of them
//!   whose removal makes the rest fit (the largest needs first) must miss;
//! - windows whose spans (earliest submission to latest deadline of their contributing jobs) do
//!   not overlap have disjoint sets of jobs, so their counts add up: the bound takes the heaviest
//!   such set (weighted interval scheduling).
//!
//! Windows start at a submission and end at a deadline, at most `max_window_s` long; any window
//! gives a valid bound, so examining fewer (a shorter `max_window_s`, or stopping at
//! `MAX_WINDOW_TERMS`) only weakens it. Checkpoints, restores, planning delays, gang packing and
//! the tier rules are left out, which also only weakens it: 100% means "not ruled out by the
//! demand", not "reachable".
//!
//! Times are exact rationals held as integers (units of 1 ms / (t / gcd(t, 10^6))), so a
//! deadline compares exactly as the ledger's integer attainment does. Pure: no I/O, no clock,
//! no randomness, no hash-map order.

use super::config::SimConfig;
use super::tiers::PPM;
use super::trace::TraceJob;
use crate::tier::Tier;
use serde::Serialize;
use std::collections::BinaryHeap;

/// The longest window examined by default: one day, in seconds.
pub const DEFAULT_MAX_WINDOW_S: u64 = 86_400;
/// Job-in-window terms evaluated at most; past it the remaining windows are skipped (the bound
/// stays valid, only weaker) and `complete` is false. About a few seconds of work; the ITP
/// traces need at most a few percent of it.
pub const MAX_WINDOW_TERMS: u64 = 1_000_000_000;

/// One overloaded window: [start_s, end_s] and the premium jobs that must miss in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OverloadedWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// Premium jobs that need device-time in the window.
    pub jobs: u64,
    /// The fewest of them that must miss for the rest to fit.
    pub must_miss: u64,
}

/// The bound for one trace on one fleet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PremiumBound {
    pub devices: u32,
    pub premium_jobs: u64,
    /// Premium jobs that miss the target under any policy, at least.
    pub must_miss: u64,
    /// Of `must_miss`, jobs that miss alone (too short to absorb their start, or wider than the
    /// fleet).
    pub miss_alone: u64,
    /// The highest share of premium jobs any policy can bring to the target (1 with none).
    pub best_sla_attainment: f64,
    /// The premium tier's target share of requested device-time.
    pub sla_target: f64,
    pub max_window_s: u64,
    /// Overloaded windows found (before choosing disjoint ones).
    pub overloaded_windows: u64,
    /// The window in which the most premium jobs must miss (the earliest of equals).
    pub worst_window: Option<OverloadedWindow>,
    /// False when `MAX_WINDOW_TERMS` stopped the search early (the bound is still valid).
    pub complete: bool,
}

/// A premium job in exact time units.
#[derive(Clone, Copy, Debug)]
struct PremiumJob {
    submission: u64,
    deadline: u64,
    /// Device-holding time it needs within [submission, deadline].
    hold: u64,
    world_size: u32,
}

/// A found window: span of its jobs, and how many must miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    end: u64,
    start: u64,
    must_miss: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Converts seconds and milliseconds to exact units, and back.
#[derive(Clone, Copy, Debug)]
struct Units {
    /// Units per millisecond: target / gcd(target, PPM).
    per_ms: u64,
    /// A duration d at the target takes d × PPM / target: d in ms times this.
    deadline_per_ms: u64,
}

impl Units {
    fn new(target_ppm: u64) -> Units {
        let g = gcd(target_ppm, PPM);
        Units {
            per_ms: target_ppm / g,
            deadline_per_ms: PPM / g,
        }
    }

    fn of_s(&self, seconds: u64) -> u64 {
        seconds.saturating_mul(1000).saturating_mul(self.per_ms)
    }

    fn to_s(self, units: u64) -> f64 {
        units as f64 / self.per_ms as f64 / 1000.0
    }
}

impl PremiumBound {
    /// The bound for `trace` on `config`'s fleet, tiers and cost model, examining windows up to
    /// `DEFAULT_MAX_WINDOW_S` long.
    pub fn of(trace: &[TraceJob], config: &SimConfig) -> PremiumBound {
        PremiumBound::with_max_window(trace, config, DEFAULT_MAX_WINDOW_S)
    }

    /// The bound examining windows up to `max_window_s` long.
    pub fn with_max_window(
        trace: &[TraceJob],
        config: &SimConfig,
        max_window_s: u64,
    ) -> PremiumBound {
        let target_ppm = Tier::Premium.target_share_ppm().map_or(0, u64::from);
        let premium: Vec<&TraceJob> = trace
            .iter()
            .filter(|job| config.tier_mix.assign(config.seed, &job.id) == Tier::Premium)
            .collect();
        let mut bound = PremiumBound {
            devices: config.devices,
            premium_jobs: premium.len() as u64,
            must_miss: 0,
            miss_alone: 0,
            best_sla_attainment: 1.0,
            sla_target: target_ppm as f64 / PPM as f64,
            max_window_s,
            overloaded_windows: 0,
            worst_window: None,
            complete: true,
        };
        if target_ppm == 0 || premium.is_empty() {
            return bound;
        }
        let units = Units::new(target_ppm);
        let start_ms = config.cost.start_ms;
        let mut jobs = Vec::with_capacity(premium.len());
        for job in premium {
            let submission = units.of_s(job.submission_s);
            let duration_ms = job.duration_s.saturating_mul(1000);
            let deadline =
                submission.saturating_add(duration_ms.saturating_mul(units.deadline_per_ms));
            let hold = duration_ms
                .saturating_add(start_ms)
                .saturating_mul(units.per_ms);
            if hold > deadline - submission || job.num_gpu > config.devices {
                bound.miss_alone += 1;
            } else {
                jobs.push(PremiumJob {
                    submission,
                    deadline,
                    hold,
                    world_size: job.num_gpu,
                });
            }
        }
        jobs.sort_by_key(|job| (job.submission, job.deadline, job.hold, job.world_size));
        let search = Search::new(&jobs, config.devices, units.of_s(max_window_s));
        let (spans, worst, complete) = search.run();
        bound.overloaded_windows = spans.len() as u64;
        bound.worst_window = worst.map(|w| OverloadedWindow {
            start_s: units.to_s(w.0),
            end_s: units.to_s(w.1),
            jobs: w.2,
            must_miss: w.3,
        });
        bound.complete = complete;
        bound.must_miss = bound.miss_alone + heaviest_disjoint(spans);
        let total = bound.premium_jobs;
        assert!(bound.must_miss <= total, "more misses than premium jobs");
        bound.best_sla_attainment = (total - bound.must_miss) as f64 / total as f64;
        bound
    }
}

/// (window start, window end, contributing jobs, must miss) of the worst window.
type Worst = (u64, u64, u64, u64);

/// The window search over jobs sorted by submission.
struct Search<'a> {
    jobs: &'a [PremiumJob],
    devices: u128,
    max_window: u64,
}

impl<'a> Search<'a> {
    fn new(jobs: &'a [PremiumJob], devices: u32, max_window: u64) -> Search<'a> {
        Search {
            jobs,
            devices: u128::from(devices),
            max_window,
        }
    }

    /// Every overloaded window's span, the worst window, and whether the search finished.
    fn run(&self) -> (Vec<Span>, Option<Worst>, bool) {
        let mut starts: Vec<u64> = self.jobs.iter().map(|j| j.submission).collect();
        starts.dedup();
        let mut deadlines: Vec<u64> = self.jobs.iter().map(|j| j.deadline).collect();
        deadlines.sort_unstable();
        deadlines.dedup();
        let mut spans = Vec::new();
        let mut worst: Option<Worst> = None;
        let mut terms: u64 = 0;
        // Per window start: (submission, deadline, hold left after a, world size) of the jobs
        // that may need time in a window starting there; and the needs of one window.
        let mut live: Vec<(u64, u64, u64, u32)> = Vec::new();
        let mut needs: Vec<u128> = Vec::new();
        // Jobs submitted before the current window start's last end and due after it, in
        // submission order (both bounds only grow with the window start).
        let mut active: Vec<PremiumJob> = Vec::new();
        let mut next_job = 0;
        for &a in &starts {
            let last_end = a.saturating_add(self.max_window);
            while let Some(job) = self.jobs.get(next_job) {
                if job.submission >= last_end {
                    break;
                }
                active.push(*job);
                next_job += 1;
            }
            active.retain(|job| job.deadline > a);
            terms += active.len() as u64;
            live.clear();
            for job in &active {
                let left = job.hold.saturating_sub(a.saturating_sub(job.submission));
                if left > 0 {
                    live.push((job.submission, job.deadline, left, job.world_size));
                }
            }
            let first_b = deadlines.partition_point(|&d| d <= a);
            let last_b = deadlines.partition_point(|&d| d <= last_end);
            for &b in &deadlines[first_b..last_b] {
                let capacity = self.devices * u128::from(b - a);
                let mut total: u128 = 0;
                let (mut span_start, mut span_end) = (u64::MAX, 0u64);
                needs.clear();
                for &(submission, deadline, left, world_size) in &live {
                    if submission >= b {
                        break;
                    }
                    terms += 1;
                    let mandatory = left.saturating_sub(deadline.saturating_sub(b));
                    if mandatory > 0 {
                        let need = u128::from(world_size) * u128::from(mandatory);
                        total += need;
                        needs.push(need);
                        span_start = span_start.min(submission);
                        span_end = span_end.max(deadline);
                    }
                }
                if total > capacity {
                    terms += needs.len() as u64;
                    let contributing = needs.len() as u64;
                    let must_miss = fewest_to_remove(&mut needs, total, capacity);
                    spans.push(Span {
                        end: span_end,
                        start: span_start,
                        must_miss,
                    });
                    let worse = match worst {
                        Some(w) => must_miss > w.3,
                        None => true,
                    };
                    if worse {
                        worst = Some((a, b, contributing, must_miss));
                    }
                }
                if terms > MAX_WINDOW_TERMS {
                    return (spans, worst, false);
                }
            }
        }
        (spans, worst, true)
    }
}

/// The fewest needs whose removal brings `total` to at most `capacity`: the largest first
/// (a heap, so that removing m of k needs costs O(k + m log k), not a full sort).
fn fewest_to_remove(needs: &mut Vec<u128>, mut total: u128, capacity: u128) -> u64 {
    let mut heap = BinaryHeap::from(std::mem::take(needs));
    let mut removed = 0;
    while total > capacity {
        let Some(need) = heap.pop() else { break };
        total -= need;
        removed += 1;
    }
    *needs = heap.into_vec();
    removed
}

/// The largest sum of `must_miss` over windows whose spans do not overlap (a window ending
/// strictly before the next one starts): weighted interval scheduling.
fn heaviest_disjoint(mut spans: Vec<Span>) -> u64 {
    spans.sort_unstable();
    spans.dedup();
    let mut best: Vec<u64> = vec![0; spans.len() + 1];
    for (i, span) in spans.iter().enumerate() {
        let before = spans[..i].partition_point(|s| s.end < span.start);
        best[i + 1] = best[i].max(best[before] + span.must_miss);
    }
    best[spans.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, end: u64, must_miss: u64) -> Span {
        Span {
            end,
            start,
            must_miss,
        }
    }

    #[test]
    fn disjoint_windows_add_up_and_overlapping_ones_do_not() {
        assert_eq!(heaviest_disjoint(vec![]), 0);
        assert_eq!(heaviest_disjoint(vec![span(0, 10, 2), span(11, 20, 3)]), 5);
        assert_eq!(heaviest_disjoint(vec![span(0, 10, 2), span(10, 20, 3)]), 3);
        assert_eq!(
            heaviest_disjoint(vec![span(0, 10, 2), span(5, 15, 4), span(11, 20, 3)]),
            5
        );
        assert_eq!(
            heaviest_disjoint(vec![span(0, 10, 2), span(5, 15, 6), span(11, 20, 3)]),
            6
        );
    }

    #[test]
    fn the_largest_needs_go_first() {
        assert_eq!(fewest_to_remove(&mut vec![1, 5, 2], 8, 7), 1);
        assert_eq!(fewest_to_remove(&mut vec![1, 5, 2], 8, 2), 2);
        assert_eq!(fewest_to_remove(&mut vec![1, 5, 2], 8, 0), 3);
        assert_eq!(fewest_to_remove(&mut vec![4, 4], 8, 8), 0);
    }

    #[test]
    fn units_make_the_deadline_exact() {
        let units = Units::new(950_000);
        assert_eq!((units.per_ms, units.deadline_per_ms), (19, 20));
        // 19 s at 95% may take 20 s.
        assert_eq!(19_000 * units.deadline_per_ms, units.of_s(20));
    }
}
