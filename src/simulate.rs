//! `singularity simulate`: replays a job trace through a scheduling policy and the real
//! `ClusterState::apply` on a simulated clock, and prints the results as a table or JSON.
//!
//! A thin adapter: it reads the trace file, builds the simulator from `singularity_scheduler::sim`,
//! draws a progress bar on stderr and formats the report. It must hold no simulation logic.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use singularity_scheduler::sim::metrics::{JobStats, Report};
use singularity_scheduler::sim::{
    parse_trace, policy_by_name, PremiumBound, SimConfig, Simulator, Stopwatch, TierMix,
};
use std::path::PathBuf;
use std::time::Instant;

/// Largest trace file read, in bytes.
const MAX_TRACE_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Events between progress-bar updates.
const PROGRESS_EVERY_EVENTS: u64 = 2_000;

/// Scheduling policies the simulator can replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyName {
    /// Singularity's tier-aware planner: preempts, shrinks by splicing, grows and migrates.
    Singularity,
    /// First come, first served with gangs; the head of the queue blocks; no preemption.
    Fifo,
    /// EASY backfill (as in Slurm): later jobs start only if they do not delay the head's reservation.
    Backfill,
    /// Tiresias (NSDI'19): discretized 2D least-attained-service with preemption.
    Tiresias,
}

impl PolicyName {
    fn as_str(self) -> &'static str {
        match self {
            PolicyName::Singularity => "singularity",
            PolicyName::Fifo => "fifo",
            PolicyName::Backfill => "backfill",
            PolicyName::Tiresias => "tiresias",
        }
    }
}

/// How to print the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table.
    Table,
    /// One JSON object (the full report).
    Json,
}

/// Replay a job trace through a scheduling policy on a simulated fleet.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Trace file in the ITP format: a header `job_id,submission_time,duration,num_gpu`, then
    /// one job a line (times in seconds).
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,

    /// Devices (GPUs) in the simulated fleet; a multiple of --devices-per-node.
    #[arg(long, value_name = "N")]
    pub devices: u32,

    /// Devices on each simulated node.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub devices_per_node: u32,

    /// Nodes in each locality domain.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub nodes_per_domain: u32,

    /// Scheduling policy to replay.
    #[arg(long, value_enum, default_value_t = PolicyName::Singularity)]
    pub policy: PolicyName,

    /// Shares of jobs per tier, summing to 1; each job's tier comes from a stable hash of its id.
    #[arg(
        long,
        value_name = "MIX",
        default_value = "premium=0.2,standard=0.3,basic=0.5"
    )]
    pub tier_mix: TierMix,

    /// Seed mixed into the tier hash (same trace and seed: same tiers, same results).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Replay only the first N jobs of the trace (by submission time).
    #[arg(long, value_name = "N")]
    pub limit_jobs: Option<usize>,

    /// Seconds of simulated time between periodic Tick evaluations.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub tick_s: u64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Do not draw the progress bar.
    #[arg(long)]
    pub quiet: bool,

    /// Do not replay: print only the premium bound, the fewest premium jobs that miss their SLA
    /// target under any policy on this fleet (from the trace, --devices, --tier-mix, --seed;
    /// also part of every report). Takes seconds where a replay takes minutes.
    #[arg(long)]
    pub premium_bound: bool,
}

/// The real clock, for planner latency.
struct WallStopwatch(Instant);

impl Stopwatch for WallStopwatch {
    fn now_ns(&mut self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let trace_path = &args.trace;
    let size = std::fs::metadata(trace_path)
        .with_context(|| format!("cannot read the trace {}", trace_path.display()))?
        .len();
    if size > MAX_TRACE_FILE_BYTES {
        bail!(
            "the trace {} is {size} bytes; the limit is {MAX_TRACE_FILE_BYTES}",
            trace_path.display()
        );
    }
    let text = std::fs::read_to_string(trace_path)
        .with_context(|| format!("cannot read the trace {}", trace_path.display()))?;
    let mut trace =
        parse_trace(&text).with_context(|| format!("in the trace {}", trace_path.display()))?;
    if let Some(limit) = args.limit_jobs {
        if limit == 0 {
            bail!("--limit-jobs must be at least 1");
        }
        trace.truncate(limit);
    }
    let Some(policy) = policy_by_name(args.policy.as_str()) else {
        bail!(
            "the {} policy is not available in this build",
            args.policy.as_str()
        );
    };
    let mut config = SimConfig::new(args.devices);
    config.devices_per_node = args.devices_per_node;
    config.nodes_per_domain = args.nodes_per_domain;
    config.tier_mix = args.tier_mix;
    config.seed = args.seed;
    config.tick_ms = args.tick_s.saturating_mul(1000);
    if args.premium_bound {
        config.validate()?;
        let bound = PremiumBound::of(&trace, &config);
        match args.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&bound)?),
            OutputFormat::Table => print!("{}", bound_text(&bound)),
        }
        return Ok(());
    }
    let jobs = trace.len() as u64;
    let mut sim = Simulator::new(
        config,
        trace,
        policy,
        Box::new(WallStopwatch(Instant::now())),
    )?;
    let bar = progress_bar(jobs, args.quiet);
    sim.run(PROGRESS_EVERY_EVENTS, &mut |p| {
        bar.set_position(p.jobs_finished);
        bar.set_message(format!(
            "day {:.1}, {} submitted",
            p.now_ms as f64 / 86_400_000.0,
            p.jobs_submitted
        ));
    })?;
    bar.finish_and_clear();
    let report = sim.report();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!("{}", table(&report)),
    }
    Ok(())
}

fn progress_bar(jobs: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new(jobs);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} jobs finished, {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn stats_row(name: &str, stats: &JobStats, sla: &str) -> String {
    format!(
        "{name:<9} {:>7} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>8}\n",
        stats.jobs,
        stats.completion.mean_s,
        stats.completion.median_s,
        stats.completion.p99_s,
        stats.queueing.mean_s,
        stats.queueing.p99_s,
        sla
    )
}

/// The premium bound in words, one line (two when the search stopped early).
fn bound_text(bound: &PremiumBound) -> String {
    let mut out = format!(
        "premium SLA under any policy: at most {:.2}% ({} of {} premium jobs must miss the {:.0}% target on {} devices",
        bound.best_sla_attainment * 100.0,
        bound.must_miss,
        bound.premium_jobs,
        bound.sla_target * 100.0,
        bound.devices
    );
    if let Some(w) = &bound.worst_window {
        out.push_str(&format!(
            "; {} in the worst window, seconds {:.0} to {:.0}",
            w.must_miss, w.start_s, w.end_s
        ));
    }
    out.push_str(")\n");
    if !bound.complete {
        out.push_str(
            "  (the window search stopped at its work limit: the true bound may be higher)\n",
        );
    }
    out
}

fn table(report: &Report) -> String {
    let mut out = format!(
        "policy {} on {} devices ({} per node), {} jobs, tiers {}\n\
         utilization {:.1}% while jobs arrive, {:.1}% to the last completion (makespan {:.1} days)\n\n",
        report.policy,
        report.devices,
        report.devices_per_node,
        report.jobs,
        report.tier_mix,
        report.utilization * 100.0,
        report.utilization_makespan * 100.0,
        report.makespan_s / 86_400.0
    );
    out.push_str(&format!(
        "{:<9} {:>7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8}\n",
        "tier",
        "jobs",
        "JCT avg s",
        "JCT p50 s",
        "JCT p99 s",
        "queue avg s",
        "queue p99 s",
        "SLA met"
    ));
    out.push_str(&stats_row("all", &report.overall, "-"));
    for tier in &report.tiers {
        let sla = tier
            .sla_attainment
            .map_or_else(|| "-".to_string(), |s| format!("{:.1}%", s * 100.0));
        out.push_str(&stats_row(&tier.tier, &tier.stats, &sla));
    }
    let c = &report.counts;
    out.push_str(&format!(
        "\npreemptions {}, migrations {}, resizes {}; plans proposed {}, rejected {}; actions committed {}, rejected {}\n",
        c.preemptions, c.migrations, c.resizes, c.plans_proposed, c.plans_rejected, c.actions_committed, c.actions_rejected
    ));
    let p = &report.planner;
    out.push_str(&format!(
        "planner: {} evaluations and {} follow-up plans, {:.0} decisions/s, latency p50 {:.1} us, p99 {:.1} us\n",
        c.evaluations, c.follow_up_plans, p.decisions_per_s, p.latency_p50_us, p.latency_p99_us
    ));
    out.push_str(&bound_text(&report.premium_bound));
    for rejection in &report.first_rejections {
        out.push_str(&format!("rejected: {rejection}\n"));
    }
    out
}
