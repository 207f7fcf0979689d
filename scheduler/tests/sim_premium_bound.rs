//! The premium bound (`sim::premium_bound`): hand-made traces whose bound is known by hand, the
//! real ITP traces against the numbers of the former Python script, and the bound in a report.

use singularity_scheduler::sim::premium_bound::DEFAULT_MAX_WINDOW_S;
use singularity_scheduler::sim::{
    parse_trace, policy_by_name, FakeStopwatch, PremiumBound, SimConfig, Simulator, TierMix,
};
use singularity_scheduler::tier::Tier;

const HEADER: &str = "job_id,submission_time,duration,num_gpu\n";

/// A fleet of `devices` one-device nodes where every job is premium, with `start_s` to start.
fn all_premium(devices: u32, start_s: u64) -> SimConfig {
    let mut config = SimConfig::new(devices);
    config.devices_per_node = 1;
    config.tier_mix = "premium=1".parse().expect("valid mix");
    config.cost.start_ms = start_s * 1000;
    config
}

/// The bound of `rows` (`id,submission,duration,gpus` lines) on `config`.
fn bound(rows: &[&str], config: &SimConfig) -> PremiumBound {
    let trace = parse_trace(&format!("{HEADER}{}\n", rows.join("\n"))).expect("valid trace");
    PremiumBound::of(&trace, config)
}

#[test]
fn two_jobs_that_cannot_both_meet_the_target_on_one_device_give_one() {
    // Each needs 1,010 s (start, then work) before 1,052.6 s: one device holds only one.
    let b = bound(&["a,0,1000,1", "b,0,1000,1"], &all_premium(1, 10));
    assert_eq!((b.premium_jobs, b.must_miss, b.miss_alone), (2, 1, 0));
    assert_eq!(b.best_sla_attainment, 0.5);
    assert_eq!(b.overloaded_windows, 1);
    let worst = b.worst_window.expect("one overloaded window");
    assert_eq!((worst.jobs, worst.must_miss), (2, 1));
    assert_eq!(worst.start_s, 0.0);
    assert!(
        (worst.end_s - 1000.0 / 0.95).abs() < 1e-6,
        "{}",
        worst.end_s
    );
    assert!(b.complete);
    // On two devices both fit.
    assert_eq!(
        bound(&["a,0,1000,1", "b,0,1000,1"], &all_premium(2, 10)).must_miss,
        0
    );
}

#[test]
fn jobs_that_fit_one_after_the_other_give_zero() {
    let b = bound(&["a,0,1000,1", "b,1100,1000,1"], &all_premium(1, 10));
    assert_eq!((b.premium_jobs, b.must_miss), (2, 0));
    assert_eq!(b.best_sla_attainment, 1.0);
    assert_eq!(b.worst_window, None);
}

#[test]
fn three_at_once_on_one_device_give_two() {
    let b = bound(
        &["a,0,1000,1", "b,0,1000,1", "c,0,1000,1"],
        &all_premium(1, 10),
    );
    assert_eq!(b.must_miss, 2);
}

#[test]
fn the_widest_needs_are_dropped_first() {
    // On 4 devices: a 4-device job and two 1-device jobs, all due at once. Dropping the wide
    // one lets both narrow ones fit, so only one must miss.
    let b = bound(
        &["wide,0,1000,4", "n1,0,1000,1", "n2,0,1000,1"],
        &all_premium(4, 10),
    );
    assert_eq!(b.must_miss, 1);
}

#[test]
fn disjoint_overloads_add_up() {
    let rows = [
        "a,0,1000,1",
        "b,0,1000,1",
        "c,100000,1000,1",
        "d,100000,1000,1",
    ];
    assert_eq!(bound(&rows, &all_premium(1, 10)).must_miss, 2);
}

#[test]
fn a_job_may_be_paused_within_its_slack() {
    // The long job (deadline 2,000 s, 100 s of slack) can pause while the short one (arriving
    // at 500 s, deadline 600 s) runs, so nothing must miss.
    let b = bound(&["long,0,1900,1", "short,500,95,1"], &all_premium(1, 0));
    assert_eq!(b.must_miss, 0);
    // A short job of 190 s (deadline 700 s) needs more than the long job's 100 s of slack.
    let b = bound(&["long,0,1900,1", "short,500,190,1"], &all_premium(1, 0));
    assert_eq!(b.must_miss, 1);
}

#[test]
fn deadlines_are_exact_at_the_boundary() {
    // With no start cost: 19 s due at 20 s, and d s due at 20d/19 s. For d = 361 both need
    // exactly the 380 device-seconds the window has: they fit. For d = 360 they do not.
    let config = all_premium(1, 0);
    assert_eq!(bound(&["a,0,19,1", "b,0,361,1"], &config).must_miss, 0);
    assert_eq!(bound(&["a,0,19,1", "b,0,360,1"], &config).must_miss, 1);
}

#[test]
fn a_job_too_short_for_its_start_or_wider_than_the_fleet_misses_alone() {
    // 100 s of work may take 105.3 s, but the start alone takes 10 s.
    let b = bound(&["short,0,100,1", "ok,0,1000,1"], &all_premium(8, 10));
    assert_eq!((b.must_miss, b.miss_alone), (1, 1));
    let b = bound(&["wide,0,1000,16"], &all_premium(8, 10));
    assert_eq!((b.must_miss, b.miss_alone), (1, 1));
}

#[test]
fn only_premium_jobs_count() {
    let mix = TierMix::default();
    let ids: Vec<String> = (0..200).map(|n| format!("job-{n}")).collect();
    let of_tier = |tier: Tier| ids.iter().filter(move |id| mix.assign(0, id) == tier);
    let premium: Vec<&String> = of_tier(Tier::Premium).take(2).collect();
    let basic = of_tier(Tier::Basic).next().expect("a basic id");
    let mut config = SimConfig::new(1);
    config.devices_per_node = 1;
    let rows = |a: &str, b: &str| [format!("{a},0,1000,1"), format!("{b},0,1000,1")];
    let two_premium = rows(premium[0], premium[1]);
    let b = bound(&[&two_premium[0], &two_premium[1]], &config);
    assert_eq!((b.premium_jobs, b.must_miss), (2, 1));
    let with_basic = rows(premium[0], basic);
    let b = bound(&[&with_basic[0], &with_basic[1]], &config);
    assert_eq!((b.premium_jobs, b.must_miss), (1, 0));
    // Another seed, another draw: the bound follows the simulator's tiers.
    let seed = (1..1000u64)
        .find(|&seed| mix.assign(seed, premium[0]) != Tier::Premium)
        .expect("a seed that makes it not premium");
    config.seed = seed;
    let b = bound(&[&two_premium[0], &two_premium[1]], &config);
    let expected = u64::from(mix.assign(seed, premium[1]) == Tier::Premium);
    assert_eq!((b.premium_jobs, b.must_miss), (expected, 0));
}

#[test]
fn a_shorter_window_search_only_weakens_the_bound() {
    let trace = parse_trace(&format!("{HEADER}a,0,1000,1\nb,0,1000,1\n")).expect("valid trace");
    let config = all_premium(1, 10);
    assert_eq!(
        PremiumBound::with_max_window(&trace, &config, 100).must_miss,
        0
    );
    assert_eq!(
        PremiumBound::with_max_window(&trace, &config, DEFAULT_MAX_WINDOW_S).must_miss,
        1
    );
}

#[test]
fn a_report_carries_the_bound_of_its_trace() {
    let text = format!("{HEADER}a,0,1000,1\nb,0,1000,1\nc,5000,600,1\n");
    let config = all_premium(1, 10);
    let trace = parse_trace(&text).expect("valid trace");
    let expected = PremiumBound::of(&trace, &config);
    let mut sim = Simulator::new(
        config,
        trace,
        policy_by_name("fifo").expect("fifo"),
        Box::new(FakeStopwatch::new(1_000)),
    )
    .expect("valid simulation");
    sim.run(0, &mut |_| {}).expect("the run finishes");
    let report = sim.report();
    assert_eq!(report.premium_bound, expected);
    assert_eq!(report.premium_bound.must_miss, 1);
    let premium = report.tier(Tier::Premium).expect("premium row");
    let attained = premium.sla_attainment.expect("premium has a target");
    assert!(attained <= report.premium_bound.best_sla_attainment);
}

/// What `docs/simulation-premium-bound.py` (the Python version this module replaced) printed
/// for the ten ITP clusters at their contended sizes, default tier mix, seed 0, one-day windows:
/// (cluster, devices, premium jobs, must miss).
const PYTHON_RESULTS: [(u32, u32, u64, u64); 10] = [
    (1, 64, 313, 1),
    (2, 112, 1106, 0),
    (3, 176, 596, 3),
    (4, 624, 3148, 0),
    (5, 16, 730, 98),
    (6, 112, 509, 0),
    (7, 328, 2558, 0),
    (8, 88, 2550, 0),
    (9, 40, 2233, 0),
    (10, 16, 48, 0),
];

#[test]
fn the_real_itp_traces_give_the_python_scripts_numbers() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/traces/microsoft-itp-2021"
    );
    for (cluster, devices, premium_jobs, must_miss) in PYTHON_RESULTS {
        let path = format!("{dir}/cluster{cluster:02}.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {path} is not here");
            return;
        };
        let trace = parse_trace(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let b = PremiumBound::of(&trace, &SimConfig::new(devices));
        assert_eq!(
            (b.premium_jobs, b.must_miss, b.miss_alone, b.complete),
            (premium_jobs, must_miss, 0, true),
            "cluster{cluster:02}"
        );
    }
    let text = std::fs::read_to_string(format!("{dir}/cluster05.csv")).expect("cluster05");
    let b = PremiumBound::of(&parse_trace(&text).expect("parses"), &SimConfig::new(16));
    assert_eq!(format!("{:.2}%", b.best_sla_attainment * 100.0), "86.58%");
    assert_eq!(b.worst_window.map(|w| w.must_miss), Some(20));
}
