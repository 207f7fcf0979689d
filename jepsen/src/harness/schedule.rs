//! The nemesis schedule: which fault starts when and how long it lasts, drawn from the seed,
//! and the pure geometry of partitions (who drops whose packets).
//!
//! It must not touch processes or the network; the runner's nemesis carries a schedule out.

use crate::harness::rng::Rng;

/// Time before the first fault, so the cluster elects a leader and clients warm up.
pub const WARMUP_MS: u64 = 2_000;
/// Time at the end of the workload with every fault healed.
pub const QUIET_TAIL_MS: u64 = 3_000;

/// Most faults one window combines (each from a different family).
pub const MAX_FAULTS_PER_WINDOW: usize = 2;
/// One window in `COMBINE_ONE_IN` combines two faults when two or more families are enabled.
const COMBINE_ONE_IN: u64 = 3;
/// Largest clock offset the clock nemesis draws, in seconds (either direction).
pub const MAX_CLOCK_OFFSET_S: i64 = 30;

/// A family of faults the nemesis may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NemesisKind {
    /// Network partitions (random halves, majority/minority, isolated leader, bridge, ring).
    Partition,
    /// kill -9 of a replica, restarted when the fault ends.
    Kill,
    /// SIGSTOP of a replica, SIGCONT when the fault ends.
    Pause,
    /// A voter leaves the Raft group (demoted to learner, or removed entirely) through the
    /// public `Control.ChangeMembership`; put back with `AddLearner` and `ChangeMembership`.
    Membership,
    /// Replica wall clocks jump or drift (libfaketime); set back when the fault ends.
    Clock,
    /// The leader hands leadership to another voter through the public
    /// `Control.TransferLeader`; nothing to heal.
    Transfer,
}

impl NemesisKind {
    /// Every family, as `--nemesis all` names them.
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Membership,
        NemesisKind::Clock,
        NemesisKind::Transfer,
    ];

    /// Parses a name as given on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "partition" => Some(NemesisKind::Partition),
            "kill" => Some(NemesisKind::Kill),
            "pause" => Some(NemesisKind::Pause),
            "membership" => Some(NemesisKind::Membership),
            "clock" => Some(NemesisKind::Clock),
            "transfer" => Some(NemesisKind::Transfer),
            _ => None,
        }
    }
}

/// The shape of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// The replicas shuffled and cut into two halves.
    RandomHalves,
    /// A random minority cut off from the majority.
    MajorityMinority,
    /// The current leader alone on one side.
    IsolateLeader,
    /// Two halves that both see one bridge replica.
    Bridge,
    /// Each replica sees only its two neighbours on a random ring.
    Ring,
}

/// Which replica a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A random replica.
    Random,
    /// The current leader.
    Leader,
    /// Every replica (each its own way, for clock skew).
    All,
}

/// How a voter leaves the group during a membership fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// `ChangeMembership` without it, `retain`: it stays as a learner; promoted back at heal.
    Demote,
    /// `ChangeMembership` without it: it leaves the group; at heal `AddLearner`, then promote.
    Remove,
}

/// How a replica's wall clock is skewed (its monotonic clock is left alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSkew {
    /// The clock jumps by this many seconds (negative: back).
    Offset { offset_s: i64 },
    /// The clock runs at `rate_percent` percent of real speed. libfaketime measures the rate
    /// from the process's start, so the change also jumps by (rate - 1) x uptime.
    Rate { rate_percent: u32 },
}

impl ClockSkew {
    /// The line for the replica's libfaketime control file (`FAKETIME_TIMESTAMP_FILE`).
    pub fn faketime_spec(&self) -> String {
        match self {
            ClockSkew::Offset { offset_s } => format!("{offset_s:+}"),
            ClockSkew::Rate { rate_percent } => {
                format!("+0 x{}.{:02}", rate_percent / 100, rate_percent % 100)
            }
        }
    }
}

/// The control-file line of an unskewed clock.
pub const FAKETIME_REAL: &str = "+0";

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A partition of the given shape.
    Partition(PartitionKind),
    /// kill -9, restart at the end.
    Kill(Target),
    /// SIGSTOP, SIGCONT at the end.
    Pause(Target),
    /// A voter leaves the group; the full membership is restored at the end.
    Membership(MembershipChange, Target),
    /// Clock skew on the target; with `Target::All`, each replica gets its own random offset
    /// up to `MAX_CLOCK_OFFSET_S` (the skew here is the first one's). Real time at the end.
    Clock(ClockSkew, Target),
    /// Leadership handed to a random other voter (at the start; the window is its aftermath).
    Transfer,
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Random => "random",
        Target::Leader => "leader",
        Target::All => "all",
    }
}

impl Fault {
    /// The family this fault belongs to.
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Partition(_) => NemesisKind::Partition,
            Fault::Kill(_) => NemesisKind::Kill,
            Fault::Pause(_) => NemesisKind::Pause,
            Fault::Membership(..) => NemesisKind::Membership,
            Fault::Clock(..) => NemesisKind::Clock,
            Fault::Transfer => NemesisKind::Transfer,
        }
    }

    /// A short name for the timeline and the history (`:f`).
    pub fn name(&self) -> String {
        match self {
            Fault::Partition(PartitionKind::RandomHalves) => "partition-random-halves".into(),
            Fault::Partition(PartitionKind::MajorityMinority) => {
                "partition-majority-minority".into()
            }
            Fault::Partition(PartitionKind::IsolateLeader) => "partition-isolate-leader".into(),
            Fault::Partition(PartitionKind::Bridge) => "partition-bridge".into(),
            Fault::Partition(PartitionKind::Ring) => "partition-ring".into(),
            Fault::Kill(t) => format!("kill-{}", target_name(*t)),
            Fault::Pause(t) => format!("pause-{}", target_name(*t)),
            Fault::Membership(MembershipChange::Demote, t) => {
                format!("membership-demote-{}", target_name(*t))
            }
            Fault::Membership(MembershipChange::Remove, t) => {
                format!("membership-remove-{}", target_name(*t))
            }
            Fault::Clock(ClockSkew::Offset { .. }, Target::All) => "clock-scramble-all".into(),
            Fault::Clock(ClockSkew::Offset { offset_s }, t) => {
                let way = if *offset_s < 0 { "back" } else { "forward" };
                format!("clock-{way}-{}", target_name(*t))
            }
            Fault::Clock(ClockSkew::Rate { rate_percent }, t) => {
                let way = if *rate_percent < 100 { "slow" } else { "fast" };
                format!("clock-{way}-{}", target_name(*t))
            }
            Fault::Transfer => "transfer-leader".into(),
        }
    }
}

/// The name of a window's faults together (`kill-leader+clock-fast-random`).
pub fn faults_name(faults: &[Fault]) -> String {
    faults.iter().map(Fault::name).collect::<Vec<_>>().join("+")
}

/// One fault window, in milliseconds since the workload started: one fault, or a combination
/// of faults of different families that start and heal together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    pub faults: Vec<Fault>,
}

/// How the schedule is drawn.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub seed: u64,
    pub time_limit_ms: u64,
    pub replicas: usize,
    pub nemeses: Vec<NemesisKind>,
    /// Typical length of a fault; each lasts between half and one and a half of it.
    pub fault_ms: u64,
    /// Healed time between two faults.
    pub heal_ms: u64,
}

fn random_or_leader(rng: &mut Rng) -> Target {
    if rng.below(2) == 0 {
        Target::Random
    } else {
        Target::Leader
    }
}

fn draw_offset_s(rng: &mut Rng) -> i64 {
    let magnitude = 1 + rng.below(MAX_CLOCK_OFFSET_S as u64) as i64;
    if rng.below(2) == 0 {
        magnitude
    } else {
        -magnitude
    }
}

fn draw_fault(rng: &mut Rng, kind: NemesisKind, replicas: usize) -> Fault {
    match kind {
        NemesisKind::Partition => {
            let mut shapes = vec![
                PartitionKind::RandomHalves,
                PartitionKind::MajorityMinority,
                PartitionKind::IsolateLeader,
            ];
            if replicas >= 3 {
                shapes.push(PartitionKind::Bridge);
            }
            if replicas >= 4 {
                shapes.push(PartitionKind::Ring);
            }
            Fault::Partition(shapes[rng.below(shapes.len() as u64) as usize])
        }
        NemesisKind::Kill => Fault::Kill(random_or_leader(rng)),
        NemesisKind::Pause => Fault::Pause(random_or_leader(rng)),
        NemesisKind::Membership => {
            let change = if rng.below(2) == 0 {
                MembershipChange::Demote
            } else {
                MembershipChange::Remove
            };
            Fault::Membership(change, random_or_leader(rng))
        }
        NemesisKind::Clock => match rng.below(3) {
            0 => Fault::Clock(
                ClockSkew::Offset {
                    offset_s: draw_offset_s(rng),
                },
                random_or_leader(rng),
            ),
            1 => {
                let rate_percent = if rng.below(2) == 0 { 50 } else { 200 };
                Fault::Clock(ClockSkew::Rate { rate_percent }, random_or_leader(rng))
            }
            _ => Fault::Clock(
                ClockSkew::Offset {
                    offset_s: draw_offset_s(rng),
                },
                Target::All,
            ),
        },
        NemesisKind::Transfer => Fault::Transfer,
    }
}

/// The clock offsets of a `Target::All` clock fault: one per replica, drawn from `rng`.
pub fn scrambled_offsets_s(rng: &mut Rng, replicas: usize) -> Vec<i64> {
    (0..replicas).map(|_| draw_offset_s(rng)).collect()
}

/// Non-overlapping fault windows, all ending `QUIET_TAIL_MS` before the time limit. With two
/// or more families, one window in `COMBINE_ONE_IN` combines faults of two families.
pub fn build_schedule(options: &ScheduleOptions) -> Vec<Window> {
    let mut rng = Rng::new(options.seed ^ 0x5EED_FA17);
    let mut windows = Vec::new();
    if options.nemeses.is_empty() || options.fault_ms == 0 {
        return windows;
    }
    let mut families: Vec<NemesisKind> = Vec::new();
    for kind in &options.nemeses {
        if !families.contains(kind) {
            families.push(*kind);
        }
    }
    let last_end_ms = options.time_limit_ms.saturating_sub(QUIET_TAIL_MS);
    let mut at_ms = WARMUP_MS;
    // Bounded: every iteration advances `at_ms` by at least one millisecond.
    while at_ms < last_end_ms {
        let length_ms = options.fault_ms / 2 + rng.below(options.fault_ms.max(1));
        let end_ms = (at_ms + length_ms.max(1)).min(last_end_ms);
        let first = families[rng.below(families.len() as u64) as usize];
        let mut faults = vec![draw_fault(&mut rng, first, options.replicas)];
        if families.len() >= 2 && rng.below(COMBINE_ONE_IN) == 0 {
            let others: Vec<NemesisKind> =
                families.iter().copied().filter(|k| *k != first).collect();
            let second = others[rng.below(others.len() as u64) as usize];
            faults.push(draw_fault(&mut rng, second, options.replicas));
        }
        debug_assert!(faults.len() <= MAX_FAULTS_PER_WINDOW);
        windows.push(Window {
            start_ms: at_ms,
            end_ms,
            faults,
        });
        at_ms = end_ms + options.heal_ms.max(1);
    }
    windows
}

/// For each replica (0-based), the replicas whose packets it drops under `kind`. `leader`
/// is the current leader's index, if known (otherwise a random replica stands in).
pub fn grudges(
    kind: PartitionKind,
    n: usize,
    leader: Option<usize>,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let order = rng.permutation(n);
    let mut can_talk = vec![vec![false; n]; n];
    let connect_group = |group: &[usize], can_talk: &mut Vec<Vec<bool>>| {
        for &a in group {
            for &b in group {
                can_talk[a][b] = true;
            }
        }
    };
    match kind {
        PartitionKind::RandomHalves => {
            let (a, b) = order.split_at(n / 2);
            connect_group(a, &mut can_talk);
            connect_group(b, &mut can_talk);
        }
        PartitionKind::MajorityMinority => {
            let minority = (n - 1) / 2;
            let (a, b) = order.split_at(minority.max(1).min(n));
            connect_group(a, &mut can_talk);
            connect_group(b, &mut can_talk);
        }
        PartitionKind::IsolateLeader => {
            let leader = leader.unwrap_or(order[0]).min(n.saturating_sub(1));
            let rest: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
            connect_group(&[leader], &mut can_talk);
            connect_group(&rest, &mut can_talk);
        }
        PartitionKind::Bridge => {
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            let mut side_a = a.to_vec();
            side_a.push(bridge);
            let mut side_b = b.to_vec();
            side_b.push(bridge);
            connect_group(&side_a, &mut can_talk);
            connect_group(&side_b, &mut can_talk);
        }
        PartitionKind::Ring => {
            for (i, &a) in order.iter().enumerate() {
                let next = order[(i + 1) % n];
                let prev = order[(i + n - 1) % n];
                for b in [a, next, prev] {
                    can_talk[a][b] = true;
                    can_talk[b][a] = true;
                }
            }
        }
    }
    (0..n)
        .map(|a| (0..n).filter(|&b| !can_talk[a][b]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> ScheduleOptions {
        ScheduleOptions {
            seed,
            time_limit_ms: 60_000,
            replicas: 5,
            nemeses: NemesisKind::ALL.to_vec(),
            fault_ms: 4_000,
            heal_ms: 3_000,
        }
    }

    #[test]
    fn schedule_is_deterministic_ordered_and_ends_healed() {
        let a = build_schedule(&options(42));
        assert_eq!(a, build_schedule(&options(42)));
        assert!(a.len() >= 4, "{a:?}");
        let mut previous_end_ms = 0;
        for window in &a {
            assert!(window.start_ms >= WARMUP_MS);
            assert!(window.start_ms < window.end_ms);
            assert!(window.start_ms > previous_end_ms || previous_end_ms == 0);
            assert!(window.end_ms <= 60_000 - QUIET_TAIL_MS);
            previous_end_ms = window.end_ms;
        }
    }

    #[test]
    fn every_family_appears_and_combinations_mix_families() {
        let mut seen = std::collections::BTreeSet::new();
        let mut combined = 0;
        for seed in 0..20 {
            for window in build_schedule(&options(seed)) {
                assert!(!window.faults.is_empty());
                assert!(window.faults.len() <= MAX_FAULTS_PER_WINDOW);
                if window.faults.len() == 2 {
                    combined += 1;
                    assert_ne!(window.faults[0].kind(), window.faults[1].kind());
                }
                for fault in &window.faults {
                    seen.insert(format!("{:?}", fault.kind()));
                    if let Fault::Clock(ClockSkew::Offset { offset_s }, _) = fault {
                        assert!(*offset_s != 0 && offset_s.abs() <= MAX_CLOCK_OFFSET_S);
                    }
                }
            }
        }
        assert_eq!(seen.len(), NemesisKind::ALL.len(), "{seen:?}");
        assert!(combined > 0);
    }

    #[test]
    fn one_family_never_combines() {
        let mut o = options(9);
        o.nemeses = vec![NemesisKind::Membership];
        for window in build_schedule(&o) {
            assert_eq!(window.faults.len(), 1);
            assert!(matches!(window.faults[0], Fault::Membership(..)));
        }
    }

    #[test]
    fn faketime_specs_and_names() {
        assert_eq!(ClockSkew::Offset { offset_s: 5 }.faketime_spec(), "+5");
        assert_eq!(ClockSkew::Offset { offset_s: -12 }.faketime_spec(), "-12");
        assert_eq!(
            ClockSkew::Rate { rate_percent: 200 }.faketime_spec(),
            "+0 x2.00"
        );
        assert_eq!(
            ClockSkew::Rate { rate_percent: 50 }.faketime_spec(),
            "+0 x0.50"
        );
        let faults = [
            Fault::Kill(Target::Leader),
            Fault::Clock(ClockSkew::Rate { rate_percent: 50 }, Target::Random),
        ];
        assert_eq!(faults_name(&faults), "kill-leader+clock-slow-random");
        assert_eq!(
            Fault::Membership(MembershipChange::Remove, Target::Random).name(),
            "membership-remove-random"
        );
        assert_eq!(NemesisKind::from_name("clock"), Some(NemesisKind::Clock));
        assert_eq!(NemesisKind::from_name("skew"), None);
        let mut rng = Rng::new(1);
        let offsets = scrambled_offsets_s(&mut rng, 5);
        assert_eq!(offsets.len(), 5);
        assert!(offsets
            .iter()
            .all(|o| *o != 0 && o.abs() <= MAX_CLOCK_OFFSET_S));
    }

    #[test]
    fn no_nemesis_means_no_fault() {
        let mut o = options(1);
        o.nemeses.clear();
        assert!(build_schedule(&o).is_empty());
    }

    #[test]
    fn grudges_are_symmetric_and_shaped() {
        let mut rng = Rng::new(3);
        for kind in [
            PartitionKind::RandomHalves,
            PartitionKind::MajorityMinority,
            PartitionKind::IsolateLeader,
            PartitionKind::Bridge,
            PartitionKind::Ring,
        ] {
            for n in [3usize, 5] {
                let g = grudges(kind, n, Some(1), &mut rng);
                for a in 0..n {
                    assert!(!g[a].contains(&a));
                    for &b in &g[a] {
                        assert!(g[b].contains(&a), "{kind:?} {n} not symmetric");
                    }
                }
                let cut = g.iter().filter(|d| !d.is_empty()).count();
                match kind {
                    PartitionKind::IsolateLeader => {
                        assert_eq!(g[1].len(), n - 1);
                    }
                    PartitionKind::Ring if n == 3 => assert_eq!(cut, 0),
                    _ => assert!(cut >= 2, "{kind:?} {n} cut nothing"),
                }
            }
        }
        // Majority/minority on 5: one side has 2, the other 3.
        let g = grudges(PartitionKind::MajorityMinority, 5, None, &mut rng);
        let mut sizes: Vec<usize> = g.iter().map(|d| 5 - d.len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![2, 2, 3, 3, 3]);
    }
}
