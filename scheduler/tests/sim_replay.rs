//! Replays through the simulator: each baseline's defining behaviour on tiny hand-made traces,
//! determinism, conservation of work and device-time, the state's invariants after every
//! entry in small runs of every policy, and follow-up plans at one instant past a plan's cap.

use singularity_scheduler::sim::metrics::Report;
use singularity_scheduler::sim::{
    parse_trace, policy_by_name, CostModel, FakeStopwatch, SimConfig, SimError, Simulator, TierMix,
    POLICY_NAMES,
};
use singularity_scheduler::Tier;

const HEADER: &str = "job_id,submission_time,duration,num_gpu\n";

fn simulator(trace: &str, devices: u32, policy: &str) -> Simulator {
    let trace = parse_trace(trace).expect("valid trace");
    let policy = policy_by_name(policy).expect("known policy");
    let mut sim = Simulator::new(
        SimConfig::new(devices),
        trace,
        policy,
        Box::new(FakeStopwatch::new(1_000)),
    )
    .expect("valid simulation");
    sim.set_verify_invariants(true);
    sim
}

fn run(trace: &str, devices: u32, policy: &str) -> Simulator {
    let mut sim = simulator(trace, devices, policy);
    sim.run(0, &mut |_| {}).expect("the run finishes");
    sim
}

/// Completion time in seconds of the job with trace id `id`.
fn completion_s(sim: &Simulator, id: &str) -> u64 {
    let index = sim
        .trace()
        .iter()
        .position(|j| j.id == id)
        .expect("job in trace");
    let record = sim
        .records()
        .iter()
        .find(|r| r.trace_index == index)
        .expect("job finished");
    record.completion_ms / 1000
}

/// A deterministic synthetic trace: `jobs` jobs of 1 to 8 GPUs arriving over a few hours.
fn synthetic_trace(jobs: u64) -> String {
    let mut text = HEADER.to_string();
    for n in 0..jobs {
        let gpus = [1, 1, 2, 1, 4, 8, 1, 2][(n % 8) as usize];
        let duration = 600 + (n * 7_919) % 20_000;
        text.push_str(&format!("job-{n},{},{duration},{gpus}\n", n * 97));
    }
    text
}

fn available_policies() -> Vec<&'static str> {
    POLICY_NAMES
        .into_iter()
        .filter(|name| policy_by_name(name).is_some())
        .collect()
}

// A 4-GPU job runs; an 8-GPU job is next; a short 2-GPU job and a long 2-GPU job come after.
const BLOCKING: &str = "job_id,submission_time,duration,num_gpu\n\
a,0,1000,4\n\
b,10,1000,8\n\
c,20,100,2\n\
d,30,5000,2\n";

#[test]
fn fifo_the_head_of_the_queue_blocks() {
    let sim = run(BLOCKING, 8, "fifo");
    // b waits for a (ends at 1010 s) and runs 1020..2020; c and d wait behind b.
    assert_eq!(completion_s(&sim, "b"), 2020 - 10);
    assert!(
        completion_s(&sim, "c") >= 2020 - 20,
        "c ran before the head"
    );
    assert_eq!(sim.report().counts.preemptions, 0);
}

#[test]
fn backfill_fills_without_delaying_the_head() {
    let fifo = run(BLOCKING, 8, "fifo");
    let backfill = run(BLOCKING, 8, "backfill");
    // c ends (by its estimate) before b's reservation at a's end: it starts at once.
    assert_eq!(completion_s(&backfill, "c"), 110);
    // d would still run at b's reservation: it waits, and b is not delayed.
    assert_eq!(completion_s(&backfill, "b"), completion_s(&fifo, "b"));
    assert!(
        completion_s(&backfill, "d") + 30 >= 2020,
        "d delayed the head"
    );
    assert_eq!(backfill.report().counts.preemptions, 0);
}

#[test]
fn tiresias_preempts_a_long_running_job_for_a_new_one() {
    // The new job stays below the first queue threshold (1 device-hour) for its whole run.
    let trace = format!("{HEADER}long,0,100000,8\nnew,1000,600,1\n");
    let tiresias = run(&trace, 8, "tiresias");
    let report = tiresias.report();
    assert!(report.counts.preemptions >= 1, "{report:#?}");
    // The new job waits only for the checkpoint (10 s + 4 GiB / 2 GB/s) and its start.
    assert!(
        completion_s(&tiresias, "new") < 640,
        "{}",
        completion_s(&tiresias, "new")
    );
    let fifo = run(&trace, 8, "fifo");
    assert!(completion_s(&fifo, "new") > 90_000);
    // The long job still does all of its work: device-time is conserved.
    assert_eq!(
        report.device_time.delivered_device_s,
        report.device_time.requested_work_device_s
    );
}

#[test]
fn same_trace_and_seed_give_the_same_report() {
    let trace = synthetic_trace(120);
    for policy in available_policies() {
        let first = run(&trace, 16, policy).report();
        let second = run(&trace, 16, policy).report();
        assert_eq!(first, second, "{policy}");
    }
}

fn check_conservation(report: &Report, jobs: u64) {
    assert_eq!(report.jobs, jobs, "{}: every job finishes", report.policy);
    let time = &report.device_time;
    assert_eq!(
        time.busy_device_s, time.delivered_device_s,
        "{}: the engine's busy device-time is apply's delivered device-time",
        report.policy
    );
    assert!(time.busy_device_s <= time.capacity_device_s);
    assert!(report.utilization <= 1.0 && report.utilization_makespan <= 1.0);
    assert_eq!(report.counts.agent_reports_rejected, 0, "{}", report.policy);
    assert_eq!(
        report.counts.plans_rejected, 0,
        "{}: {:?}",
        report.policy, report.first_rejections
    );
}

#[test]
fn every_job_finishes_and_device_time_adds_up() {
    let trace = synthetic_trace(150);
    for policy in available_policies() {
        let sim = run(&trace, 16, policy);
        let report = sim.report();
        check_conservation(&report, 150);
        let last_finish_ms = sim
            .records()
            .iter()
            .map(|r| sim.trace()[r.trace_index].submission_s * 1000 + r.completion_ms)
            .max()
            .expect("jobs finished");
        assert_eq!(
            report.makespan_s,
            last_finish_ms as f64 / 1000.0,
            "{policy}: the makespan ends at the last completion"
        );
        if policy != "singularity" {
            // No splicing: the devices ran exactly the work the trace asked for.
            assert_eq!(
                report.device_time.delivered_device_s, report.device_time.requested_work_device_s,
                "{policy}"
            );
        }
        let per_tier: u64 = report.tiers.iter().map(|t| t.stats.jobs).sum();
        assert_eq!(per_tier, 150);
    }
}

#[test]
fn the_step_api_reports_progress() {
    let trace = synthetic_trace(20);
    let mut sim = simulator(&trace, 16, "fifo");
    let mut last = 0;
    let mut calls = 0;
    sim.run(5, &mut |p| {
        assert!(p.jobs_finished >= last);
        last = p.jobs_finished;
        calls += 1;
    })
    .expect("finishes");
    assert_eq!(last, 20);
    assert!(calls > 2);
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let trace = parse_trace(&format!("{HEADER}big,0,600,64\n")).expect("valid");
    let make = |config: SimConfig| {
        Simulator::new(
            config,
            trace.clone(),
            policy_by_name("fifo").expect("fifo"),
            Box::new(FakeStopwatch::new(1)),
        )
        .err()
    };
    match make(SimConfig::new(16)) {
        Some(SimError::JobTooLarge { num_gpu: 64, .. }) => {}
        other => panic!("expected JobTooLarge, got {other:?}"),
    }
    let error = make(SimConfig::new(12)).expect("12 is not whole nodes of 8");
    assert!(error.to_string().contains("multiple of 8"), "{error}");
    let mut config = SimConfig::new(64);
    config.max_events = 3;
    let mut sim = Simulator::new(
        config,
        trace.clone(),
        policy_by_name("fifo").expect("fifo"),
        Box::new(FakeStopwatch::new(1)),
    )
    .expect("valid");
    let error = sim.run(0, &mut |_| {}).expect_err("event limit");
    assert_eq!(error, SimError::EventLimit { max_events: 3 });
}

#[test]
fn the_cost_model_matches_its_documentation() {
    use singularity_scheduler::ActionOp;
    let cost = CostModel::default();
    // 10 s + 4 GiB / 2 GB/s = 12.148 s per checkpoint or restore of one rank per device.
    assert_eq!(cost.transfer_ms(1), 12_148);
    assert_eq!(cost.transfer_ms(2), 14_295);
    let preempt = cost.timing(&ActionOp::Preempt { for_job: None }, 8, 8);
    assert_eq!(
        (preempt.checkpoint_ms, preempt.complete_ms),
        (12_148, 12_148)
    );
    // Splicing 8 ranks onto 4 devices: half speed, less 3%.
    assert_eq!(cost.rate_ppm(8, 4), 485_000);
    assert_eq!(cost.rate_ppm(8, 8), 1_000_000);
}

#[test]
fn tiers_come_from_the_mix() {
    let trace = synthetic_trace(200);
    let mut config = SimConfig::new(16);
    config.tier_mix = "premium=0.5,basic=0.5".parse::<TierMix>().expect("valid");
    let mut sim = Simulator::new(
        config,
        parse_trace(&trace).expect("valid"),
        policy_by_name("fifo").expect("fifo"),
        Box::new(FakeStopwatch::new(1)),
    )
    .expect("valid");
    sim.run(0, &mut |_| {}).expect("finishes");
    let report = sim.report();
    let jobs = |i: usize| report.tiers[i].stats.jobs;
    assert_eq!(jobs(1), 0, "no standard jobs in this mix");
    assert!(
        jobs(0) > 60 && jobs(2) > 60,
        "{} premium, {} basic",
        jobs(0),
        jobs(2)
    );
}

/// The first trace id `job-N` the default tier mix (seed 0) gives `tier`.
fn id_of_tier(tier: Tier) -> String {
    let mix = TierMix::default();
    (0..1_000)
        .map(|n| format!("job-{n}"))
        .find(|id| mix.assign(0, id) == tier)
        .expect("the default mix gives every tier")
}

#[test]
fn a_premium_job_starts_when_the_shrink_for_it_has_checkpointed() {
    let (basic, premium) = (id_of_tier(Tier::Basic), id_of_tier(Tier::Premium));
    // A long basic gang fills the node; a short premium job arrives and the basic job shrinks
    // to half for it.
    let trace = format!("{HEADER}{basic},0,100000,8\n{premium},100,600,4\n");
    let sim = run(&trace, 8, "singularity");
    let record = |id: &str| {
        let index = sim
            .trace()
            .iter()
            .position(|j| j.id == id)
            .expect("job in trace");
        sim.records()
            .iter()
            .find(|r| r.trace_index == index)
            .copied()
            .expect("job finished")
    };
    let cost = CostModel::default();
    // The shrink checkpoints 1 rank per device, then restores 2 per device on the kept half.
    let checkpoint_ms = cost.transfer_ms(1);
    assert_eq!(checkpoint_ms, 12_148);
    assert!(cost.transfer_ms(2) > 0);
    // The premium job is placed the moment the checkpoint frees the half given up (not at the
    // next tick 20 s later, nor when the restore completes after another 14.3 s).
    let p = record(&premium);
    assert_eq!(p.queueing_ms, checkpoint_ms);
    assert_eq!(p.completion_ms, checkpoint_ms + cost.start_ms + 600_000);
    assert_eq!(p.preemptions, 0);
    let report = sim.report();
    assert_eq!(report.counts.resizes, 2, "one shrink, one growth back");
    assert_eq!(report.counts.preemptions, 0);
}

/// A Singularity simulation of `trace` on `devices`, every job basic, with at most
/// `max_actions_per_plan` actions per plan and no least-attained-service queues (so the jobs
/// that wait never preempt the one that blocks them).
fn capped_singularity(trace: &str, devices: u32, max_actions_per_plan: usize) -> Simulator {
    use singularity_scheduler::planner::{PolicyConfig, SingularityPolicy};
    let mut config = SimConfig::new(devices);
    config.tier_mix = "basic=1".parse::<TierMix>().expect("valid mix");
    let policy = SingularityPolicy::with_config(PolicyConfig {
        max_actions_per_plan,
        basic_queue_thresholds_device_ms: Vec::new(),
        ..PolicyConfig::default()
    });
    Simulator::new(
        config,
        parse_trace(trace).expect("valid trace"),
        Box::new(policy),
        Box::new(FakeStopwatch::new(1_000)),
    )
    .expect("valid simulation")
}

/// Queueing time in seconds of every job but the first (the blocker), in trace order.
fn queueing_after_the_blocker_s(sim: &Simulator) -> Vec<u64> {
    let mut by_index: Vec<(usize, u64)> = sim
        .records()
        .iter()
        .map(|r| (r.trace_index, r.queueing_ms))
        .collect();
    by_index.sort_unstable();
    assert_eq!(by_index.len(), sim.trace().len(), "every job finished");
    by_index.iter().skip(1).map(|&(_, q)| q / 1000).collect()
}

/// An 8-GPU job holds the node from 0 s (its start takes 10 s, so it exits at 1010 s) and five
/// one-GPU jobs arriving at 100..104 s wait for it, with `max_actions_per_plan`: runs it,
/// checking invariants after every entry, and asserts that all five start at that exit.
fn blocker_then_five_waiting(max_actions_per_plan: usize) -> Simulator {
    let mut trace = format!("{HEADER}blocker,0,1000,8\n");
    for n in 0..5 {
        trace.push_str(&format!("small-{n},{},500,1\n", 100 + n));
    }
    let mut sim = capped_singularity(&trace, 8, max_actions_per_plan);
    sim.set_verify_invariants(true);
    sim.run(0, &mut |_| {}).expect("the run finishes");
    let exit_s = 1010;
    assert_eq!(
        queueing_after_the_blocker_s(&sim),
        (0..5).map(|n| exit_s - (100 + n)).collect::<Vec<u64>>()
    );
    sim
}

#[test]
fn jobs_one_event_makes_room_for_all_start_at_that_instant_past_the_plan_cap() {
    // With two actions per plan, the exit's plan starts two of the waiting jobs and follow-up
    // plans at the same instant start the other three (a single plan per event would leave
    // them for the next event, 10 s later).
    let sim = blocker_then_five_waiting(2);
    let counts = sim.report().counts;
    // Plans with actions: the blocker's placement (1 action, not full: no follow-up), then
    // 2 + 2 + 1 at its exit: two full plans, each followed up, and the last one not full.
    assert_eq!(counts.plans_proposed, 4, "{counts:?}");
    assert_eq!(counts.follow_up_plans, 2, "{counts:?}");
    assert_eq!(counts.follow_up_plans_with_actions, 2, "{counts:?}");
    assert_eq!(counts.follow_up_limits_reached, 0, "{counts:?}");
    assert_eq!(counts.actions_committed, 6, "{counts:?}");
}

#[test]
fn a_plan_that_is_not_full_is_not_followed_up() {
    // The same jobs, with room in one plan for all of them: the exit's plan starts the five,
    // and nothing plans again at that instant (the policy paces making room and growth per
    // plan; only a full plan may have left work behind).
    let sim = blocker_then_five_waiting(6);
    let counts = sim.report().counts;
    assert_eq!(counts.plans_proposed, 2, "{counts:?}");
    assert_eq!(counts.follow_up_plans, 0, "{counts:?}");
}

#[test]
fn follow_up_plans_stop_at_their_limit_and_the_rest_waits_for_the_next_event() {
    use singularity_scheduler::planner::MAX_FOLLOW_UP_PLANS;
    // One action per plan: the exit's plan and MAX_FOLLOW_UP_PLANS follow-ups start that many
    // + 1 of the waiting jobs; the others start at the next event, when those starts complete
    // 10 s later.
    let chain = MAX_FOLLOW_UP_PLANS as usize + 1;
    let (waiting, devices) = (chain + 7, 1_040);
    assert!(devices >= waiting && devices % 8 == 0);
    let mut trace = format!("{HEADER}blocker,0,1000,{devices}\n");
    for n in 0..waiting {
        trace.push_str(&format!("small-{n},100,500,1\n"));
    }
    let mut sim = capped_singularity(&trace, devices as u32, 1);
    sim.run(0, &mut |_| {}).expect("the run finishes");
    let queued_s = queueing_after_the_blocker_s(&sim);
    let at_exit = queued_s.iter().filter(|&&q| q == 1010 - 100).count();
    let after_start = queued_s.iter().filter(|&&q| q == 1020 - 100).count();
    assert_eq!((at_exit, after_start), (chain, waiting - chain));
    let counts = sim.report().counts;
    assert_eq!(counts.follow_up_limits_reached, 1, "{counts:?}");
}
