//! The simulator's input side: the trace parser's errors (line and column), the stable tier
//! hash, and the `--tier-mix` parser.

use singularity_scheduler::sim::tiers::fnv1a_64;
use singularity_scheduler::sim::{parse_trace, TierMix};
use singularity_scheduler::Tier;

const HEADER: &str = "job_id,submission_time,duration,num_gpu\n";

fn error_of(text: &str) -> (usize, Option<usize>, String) {
    let e = parse_trace(text).expect_err("the trace should be refused");
    (e.line, e.column, e.to_string())
}

#[test]
fn a_good_trace_parses_and_is_sorted_by_submission() {
    let text = format!("{HEADER}b,20,600,8\r\na,10,700,1\n\nc,20,800,2\n");
    let jobs = parse_trace(&text).expect("valid");
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(jobs[0].line, 3);
    assert_eq!(
        (jobs[1].submission_s, jobs[1].duration_s, jobs[1].num_gpu),
        (20, 600, 8)
    );
}

#[test]
fn errors_name_the_line_and_the_column() {
    assert_eq!(error_of("").0, 0);
    let (line, column, text) = error_of("id,when,how_long,gpus\n");
    assert_eq!((line, column), (1, None));
    assert!(text.contains("expected the header"), "{text}");
    let (line, column, text) = error_of(&format!("{HEADER}a,10,600,1\nb,ten,600,1\n"));
    assert_eq!((line, column), (3, Some(2)));
    assert!(
        text.contains("line 3, column 2 (submission_time)"),
        "{text}"
    );
    assert_eq!(error_of(&format!("{HEADER}a,1,0,1\n")).1, Some(3));
    assert_eq!(error_of(&format!("{HEADER}a,1,600,0\n")).1, Some(4));
    assert_eq!(error_of(&format!("{HEADER}a,1,600,-2\n")).1, Some(4));
    assert_eq!(error_of(&format!("{HEADER},1,600,1\n")).1, Some(1));
    let (line, column, _) = error_of(&format!("{HEADER}a,1,600\n"));
    assert_eq!((line, column), (2, None));
    let (line, _, text) = error_of(&format!("{HEADER}a,1,600,1\na,2,600,1\n"));
    assert_eq!(line, 3);
    assert!(text.contains("already used on line 2"), "{text}");
    assert!(error_of(HEADER).2.contains("no jobs"));
}

#[test]
fn the_real_itp_traces_parse() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/traces/microsoft-itp-2021"
    );
    for n in 1..=10 {
        let path = format!("{dir}/cluster{n:02}.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {path} is not here");
            return;
        };
        let jobs = parse_trace(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!jobs.is_empty());
    }
}

#[test]
fn fnv1a_matches_the_reference_values() {
    // Test vectors from the FNV reference (draft-eastlake-fnv).
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn tiers_are_stable_and_follow_the_mix() {
    let mix = TierMix::default();
    let id = "965d744f-0445-c1a8-12af-97e4c536c66e";
    let first = mix.assign(0, id);
    for _ in 0..3 {
        assert_eq!(mix.assign(0, id), first);
    }
    let mut counts = [0u32; 3];
    let total = 20_000;
    for n in 0..total {
        counts[mix.assign(7, &format!("job-{n}")).index()] += 1;
    }
    let share = |i: usize| f64::from(counts[i]) / f64::from(total);
    assert!((share(0) - 0.2).abs() < 0.02, "premium {}", share(0));
    assert!((share(1) - 0.3).abs() < 0.02, "standard {}", share(1));
    assert!((share(2) - 0.5).abs() < 0.02, "basic {}", share(2));
    let all_premium: TierMix = "premium=1".parse().expect("valid");
    assert_eq!(all_premium.assign(3, id), Tier::Premium);
    let differs = (0..200).any(|n| {
        let id = format!("job-{n}");
        mix.assign(1, &id) != mix.assign(2, &id)
    });
    assert!(differs, "the seed changes the draw");
}

#[test]
fn the_tier_mix_parser_explains_its_errors() {
    let mix: TierMix = "premium=0.2,standard=0.3,basic=0.5".parse().expect("valid");
    assert_eq!(mix, TierMix::default());
    let mix: TierMix = " basic = .5 , premium=0.5".parse().expect("valid");
    assert_eq!(
        (mix.premium_ppm, mix.standard_ppm, mix.basic_ppm),
        (500_000, 0, 500_000)
    );
    let err = |s: &str| s.parse::<TierMix>().expect_err(s);
    assert!(err("premium=0.2,standard=0.3").contains("sum to 0.5"));
    assert!(err("gold=1").contains("unknown tier"));
    assert!(err("premium").contains("TIER=SHARE"));
    assert!(err("premium=1.5").contains("between 0 and 1"));
    assert!(err("premium=-0.1,basic=1.1").contains("between 0 and 1"));
    assert!(err("premium=0.5,premium=0.5").contains("twice"));
    assert!(err("premium=abc,basic=1").contains("between 0 and 1"));
}
