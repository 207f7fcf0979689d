//! The nemesis schedule: which fault starts when and how long it lasts, drawn from the seed,
//! and the pure geometry of partitions (who drops whose packets).
//!
//! It must not touch processes or the network; `nemesis` carries a schedule out.

use crate::harness::rng::Rng;

/// Time before the first fault, so the cluster elects a leader and clients warm up.
pub const WARMUP_MS: u64 = 2_000;
/// Time at the end of the workload with every fault healed.
pub const QUIET_TAIL_MS: u64 = 3_000;

/// A family of faults the nemesis may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NemesisKind {
    /// Network partitions (random halves, majority/minority, isolated leader, bridge, ring).
    Partition,
    /// kill -9 of a replica, restarted when the fault ends.
    Kill,
    /// SIGSTOP of a replica, SIGCONT when the fault ends.
    Pause,
}

impl NemesisKind {
    /// Parses a name as given on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "partition" => Some(NemesisKind::Partition),
            "kill" => Some(NemesisKind::Kill),
            "pause" => Some(NemesisKind::Pause),
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

/// Which replica a process fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A random replica.
    Random,
    /// The current leader.
    Leader,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A partition of the given shape.
    Partition(PartitionKind),
    /// kill -9, restart at the end.
    Kill(Target),
    /// SIGSTOP, SIGCONT at the end.
    Pause(Target),
}

impl Fault {
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
            Fault::Kill(Target::Random) => "kill-random".into(),
            Fault::Kill(Target::Leader) => "kill-leader".into(),
            Fault::Pause(Target::Random) => "pause-random".into(),
            Fault::Pause(Target::Leader) => "pause-leader".into(),
        }
    }
}

/// One fault window, in milliseconds since the workload started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
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
        NemesisKind::Kill => Fault::Kill(if rng.below(2) == 0 {
            Target::Random
        } else {
            Target::Leader
        }),
        NemesisKind::Pause => Fault::Pause(if rng.below(2) == 0 {
            Target::Random
        } else {
            Target::Leader
        }),
    }
}

/// Non-overlapping fault windows, all ending `QUIET_TAIL_MS` before the time limit.
pub fn build_schedule(options: &ScheduleOptions) -> Vec<Window> {
    let mut rng = Rng::new(options.seed ^ 0x5EED_FA17);
    let mut windows = Vec::new();
    if options.nemeses.is_empty() || options.fault_ms == 0 {
        return windows;
    }
    let last_end_ms = options.time_limit_ms.saturating_sub(QUIET_TAIL_MS);
    let mut at_ms = WARMUP_MS;
    // Bounded: every iteration advances `at_ms` by at least one millisecond.
    while at_ms < last_end_ms {
        let length_ms = options.fault_ms / 2 + rng.below(options.fault_ms.max(1));
        let end_ms = (at_ms + length_ms.max(1)).min(last_end_ms);
        let kind = options.nemeses[rng.below(options.nemeses.len() as u64) as usize];
        windows.push(Window {
            start_ms: at_ms,
            end_ms,
            fault: draw_fault(&mut rng, kind, options.replicas),
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
            nemeses: vec![
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause,
            ],
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
