//! The scheduler workload's checker, pure: given every replica's log (from `ReadLog`, with the
//! raw scheduler entries), each replica's status (applied index and state digest) and the final
//! jobs, it checks that
//!
//! - every replica's log is a prefix of the longest one (term, kind, summary and entry bytes
//!   agree at every index both hold);
//! - replaying the committed log from index 1 through `ClusterState::apply` keeps every
//!   invariant after every entry (`check_invariants`), and an independent count finds no device
//!   held by two jobs in any committed state;
//! - each replica's digest equals the replay's digest at that replica's applied index, so
//!   replicas at equal indexes agree;
//! - no preempted job starves: one still waiting at the end must have another waiting job of
//!   its device kind ahead of it in the policy's order (tier, then least attained service,
//!   then submission). Under sustained overload a preempted basic job rightly waits behind
//!   premium and standard work; the first in line must not wait out the recovery window. (Every
//!   preempted job not resumed or finished is still listed, for diagnosis.)
//!
//! It must not do I/O; the runner collects the evidence.

use serde::Serialize;
use singularity_scheduler::{ClusterState, DeviceKind, DeviceRef, Entry, Job, JobId, JobPhase};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Most problems of one kind listed in the report (the count is always exact).
const MAX_LISTED: usize = 20;

/// One log entry as `ReadLog` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEntry {
    pub index: u64,
    pub term: u64,
    pub kind: String,
    pub summary: String,
    /// `Entry::encode` bytes; empty for blank and membership entries.
    /// The scheduler entries the log entry carries, encoded, in apply order.
    pub entries: Vec<Vec<u8>>,
}

/// What one replica said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub applied_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub digest: String,
}

/// One replica's evidence; `log` is ascending and contiguous.
#[derive(Debug, Clone, Default)]
pub struct ReplicaEvidence {
    pub log: Vec<LoggedEntry>,
    pub status: Option<ReplicaStatus>,
    /// Why the log or status could not be read, if it could not.
    pub error: Option<String>,
}

/// One replica's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaLine {
    pub replica: String,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub digest: Option<String>,
    /// Whether the digest equals the replay's at the applied index (None: not comparable).
    pub digest_matches_replay: Option<bool>,
    pub error: Option<String>,
}

/// The verdict of the scheduler workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchedulerReport {
    pub valid: bool,
    pub replicas: Vec<ReplicaLine>,
    /// Highest committed index any replica reported; the replay covers `1..=` it.
    pub committed_index: u64,
    pub entries_replayed: u64,
    pub entries_rejected_in_replay: u64,
    /// Why the replay could not be done (no replica holds the log from index 1).
    pub replay_unavailable: Option<String>,
    pub log_prefix_violations: Vec<String>,
    pub log_prefix_violation_count: usize,
    pub invariant_violation: Option<String>,
    pub double_assignments: Vec<String>,
    pub digest_mismatches: Vec<String>,
    pub digests_compared: usize,
    pub jobs: usize,
    /// The final read's jobs by phase (for diagnosis).
    pub jobs_by_phase: BTreeMap<String, usize>,
    pub preempted_jobs: usize,
    /// Preempted jobs neither resumed nor finished (waiting behind others is allowed).
    pub preempted_unresolved: Vec<String>,
    /// Of those, the ones first in line for their device kind: these fail the run.
    pub preempted_starved: Vec<String>,
    pub final_read_error: Option<String>,
}

fn push_limited(list: &mut Vec<String>, count: &mut usize, item: String) {
    *count += 1;
    if list.len() < MAX_LISTED {
        list.push(item);
    }
}

fn describe(e: &LoggedEntry) -> String {
    format!("term {} {}: {}", e.term, e.kind, e.summary)
}

/// Indexes where a replica's log disagrees with the longest log.
pub fn log_prefix_violations(names: &[String], logs: &[&[LoggedEntry]]) -> (Vec<String>, usize) {
    let mut listed = Vec::new();
    let mut count = 0;
    let Some((longest_at, longest)) = logs
        .iter()
        .enumerate()
        .max_by_key(|(i, log)| (log.last().map(|e| e.index).unwrap_or(0), usize::MAX - i))
    else {
        return (listed, count);
    };
    let by_index: BTreeMap<u64, &LoggedEntry> = longest.iter().map(|e| (e.index, e)).collect();
    for (r, log) in logs.iter().enumerate() {
        if r == longest_at {
            continue;
        }
        for entry in log.iter() {
            match by_index.get(&entry.index) {
                Some(other) if *other == entry => {}
                Some(other) => push_limited(
                    &mut listed,
                    &mut count,
                    format!(
                        "index {}: {} has {}, {} has {}",
                        entry.index,
                        names[r],
                        describe(entry),
                        names[longest_at],
                        describe(other)
                    ),
                ),
                // The longest log was purged below this index: nothing to compare with.
                None => {}
            }
        }
    }
    (listed, count)
}

/// Devices held by more than one job (assignments and in-flight action targets), computed
/// from the read API only, independently of `check_invariants`.
pub fn double_assignments(state: &ClusterState) -> Vec<String> {
    let mut holder: BTreeMap<DeviceRef, JobId> = BTreeMap::new();
    let mut problems = Vec::new();
    for job in state.jobs() {
        let mut held: BTreeSet<DeviceRef> = job.assignment.iter().copied().collect();
        if let Some(action) = job.action.and_then(|a| state.action(a)) {
            if let Some(targets) = action.op.target_devices() {
                held.extend(targets.iter().copied());
            }
        }
        for device in held {
            if let Some(other) = holder.insert(device, job.id) {
                problems.push(format!(
                    "device {}:{} held by {} and {}",
                    device.node.0, device.index, other, job.id
                ));
            }
        }
    }
    problems
}

/// The result of replaying a log.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub entries_replayed: u64,
    pub entries_rejected: u64,
    /// The replay's digest after each index asked for.
    pub digests: BTreeMap<u64, String>,
    pub invariant_violation: Option<String>,
    pub double_assignments: Vec<String>,
    pub unavailable: Option<String>,
}

/// Replays `log` (which must start at index 1) up to `up_to`, checking invariants and device
/// exclusivity after every applied entry, and recording the digest at each of `digest_at`.
pub fn replay(log: &[LoggedEntry], up_to: u64, digest_at: &BTreeSet<u64>) -> Replay {
    let mut result = Replay::default();
    match log.first() {
        Some(first) if first.index == 1 => {}
        Some(first) => {
            result.unavailable = Some(format!(
                "the longest log starts at index {} (purged); nothing to replay from index 1",
                first.index
            ));
            return result;
        }
        None => {
            result.unavailable = Some("no log entries were read".into());
            return result;
        }
    }
    let mut state = ClusterState::new();
    state.set_verify_invariants(false);
    if digest_at.contains(&0) {
        result.digests.insert(0, state.digest().to_string());
    }
    for (expected, logged) in (1u64..).zip(log.iter()) {
        if logged.index > up_to {
            break;
        }
        if logged.index != expected {
            result.unavailable = Some(format!(
                "the log jumps from index {} to {}",
                expected - 1,
                logged.index
            ));
            return result;
        }
        for (position, bytes) in logged.entries.iter().enumerate() {
            let entry = match Entry::decode(bytes) {
                Ok(entry) => entry,
                Err(e) => {
                    result.unavailable = Some(format!(
                        "entry {} (write {position}) does not decode: {e}",
                        logged.index
                    ));
                    return result;
                }
            };
            if !state.apply(entry).is_accepted() {
                result.entries_rejected += 1;
            }
            if let Err(violation) = state.check_invariants() {
                result.invariant_violation =
                    Some(format!("after index {}: {violation}", logged.index));
                return result;
            }
            let doubles = double_assignments(&state);
            if !doubles.is_empty() {
                result.double_assignments = doubles
                    .into_iter()
                    .map(|d| format!("after index {}: {d}", logged.index))
                    .collect();
                return result;
            }
        }
        result.entries_replayed = logged.index;
        if digest_at.contains(&logged.index) {
            result
                .digests
                .insert(logged.index, state.digest().to_string());
        }
    }
    result
}

/// Preempted jobs that neither hold devices again nor finished.
pub fn preempted_unresolved(jobs: &[Job]) -> (usize, Vec<String>) {
    let mut preempted = 0;
    let mut unresolved = Vec::new();
    for job in jobs.iter().filter(|j| j.preemptions > 0) {
        preempted += 1;
        let resumed = job.phase.holds_devices() && job.phase != JobPhase::Preempting;
        if !(resumed || job.phase.is_terminal()) {
            unresolved.push(format!(
                "{} ({}, {} preemption(s)) is {}: {}",
                job.id, job.spec.tier, job.preemptions, job.phase, job.last_reason
            ));
        }
    }
    (preempted, unresolved)
}

/// Preempted jobs stuck: still stopping (an action that never finished), or waiting with no
/// other waiting job of their device kind ahead of them in the policy's order (premium first,
/// then least attained service, then submission order).
pub fn preempted_starved(jobs: &[Job]) -> Vec<String> {
    let mut starved: Vec<String> = jobs
        .iter()
        .filter(|j| j.preemptions > 0 && j.phase == JobPhase::Preempting)
        .map(|j| {
            format!(
                "{} ({}) is still {}: {}",
                j.id, j.spec.tier, j.phase, j.last_reason
            )
        })
        .collect();
    let order = |j: &Job| (Reverse(j.spec.tier), j.ledger.delivered_device_ms, j.id);
    let mut first_waiting: BTreeMap<&DeviceKind, &Job> = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.phase == JobPhase::Pending) {
        let first = first_waiting.entry(&job.spec.device_kind).or_insert(job);
        if order(job) < order(first) {
            *first = job;
        }
    }
    starved.extend(
        first_waiting
            .values()
            .filter(|j| j.preemptions > 0)
            .map(|j| {
                format!(
                    "{} ({}, {} preemption(s)) is first in line for {} devices and still {}: {}",
                    j.id, j.spec.tier, j.preemptions, j.spec.device_kind, j.phase, j.last_reason
                )
            }),
    );
    starved
}

/// Checks all of it. `names` are the replicas' names (`n1`...), parallel to `evidence`;
/// `jobs` is the final linearizable read of every job (`Err`: why it failed).
pub fn check_scheduler(
    names: &[String],
    evidence: &[ReplicaEvidence],
    jobs: Result<&[Job], String>,
) -> SchedulerReport {
    let logs: Vec<&[LoggedEntry]> = evidence.iter().map(|e| e.log.as_slice()).collect();
    let (log_prefix_violations, log_prefix_violation_count) = log_prefix_violations(names, &logs);
    let committed_index = evidence
        .iter()
        .filter_map(|e| e.status.as_ref().and_then(|s| s.committed_index))
        .max()
        .unwrap_or(0);
    let applied: BTreeSet<u64> = evidence
        .iter()
        .filter_map(|e| e.status.as_ref().and_then(|s| s.applied_index))
        .collect();
    let up_to = committed_index.max(applied.iter().copied().max().unwrap_or(0));
    // The longest log that starts at index 1 is the one to replay.
    let source = evidence
        .iter()
        .filter(|e| e.log.first().map(|f| f.index) == Some(1))
        .max_by_key(|e| e.log.last().map(|l| l.index).unwrap_or(0))
        .map(|e| e.log.as_slice())
        .unwrap_or_else(|| logs.first().copied().unwrap_or(&[]));
    let replay = replay(source, up_to, &applied);
    let mut digest_mismatches = Vec::new();
    let mut digests_compared = 0;
    let replicas: Vec<ReplicaLine> = evidence
        .iter()
        .zip(names)
        .map(|(e, name)| {
            let status = e.status.as_ref();
            let applied_index = status.and_then(|s| s.applied_index);
            let digest = status.map(|s| s.digest.clone());
            let matches = match (applied_index.or(Some(0)), &digest) {
                (Some(a), Some(d)) => replay.digests.get(&a).map(|r| r == d),
                _ => None,
            };
            if let Some(m) = matches {
                digests_compared += 1;
                if !m {
                    digest_mismatches.push(format!(
                        "{name} at applied index {}: digest {} but the replay gives {}",
                        applied_index.unwrap_or(0),
                        digest.clone().unwrap_or_default(),
                        replay
                            .digests
                            .get(&applied_index.unwrap_or(0))
                            .cloned()
                            .unwrap_or_default()
                    ));
                }
            }
            ReplicaLine {
                replica: name.clone(),
                first_index: e.log.first().map(|l| l.index),
                last_index: e.log.last().map(|l| l.index),
                applied_index,
                digest,
                digest_matches_replay: matches,
                error: e.error.clone(),
            }
        })
        .collect();
    let mut jobs_by_phase: BTreeMap<String, usize> = BTreeMap::new();
    let (job_count, preempted_jobs, preempted_unresolved, preempted_starved, final_read_error) =
        match jobs {
            Ok(jobs) => {
                for job in jobs {
                    *jobs_by_phase.entry(job.phase.to_string()).or_default() += 1;
                }
                let (p, u) = preempted_unresolved(jobs);
                (jobs.len(), p, u, preempted_starved(jobs), None)
            }
            Err(e) => (0, 0, Vec::new(), Vec::new(), Some(e)),
        };
    let valid = log_prefix_violation_count == 0
        && replay.unavailable.is_none()
        && replay.invariant_violation.is_none()
        && replay.double_assignments.is_empty()
        && digest_mismatches.is_empty()
        && digests_compared == evidence.len()
        && preempted_starved.is_empty()
        && final_read_error.is_none();
    SchedulerReport {
        valid,
        replicas,
        committed_index,
        entries_replayed: replay.entries_replayed,
        entries_rejected_in_replay: replay.entries_rejected,
        replay_unavailable: replay.unavailable,
        log_prefix_violations,
        log_prefix_violation_count,
        invariant_violation: replay.invariant_violation,
        double_assignments: replay.double_assignments,
        digest_mismatches,
        digests_compared,
        jobs: job_count,
        jobs_by_phase,
        preempted_jobs,
        preempted_unresolved,
        preempted_starved,
        final_read_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use singularity_scheduler::testkit::{job_spec, Fleet};
    use singularity_scheduler::{
        ActionOp, Command, DeviceHealth, DeviceKind, DeviceSpec, LocalityDomain, NodeName, Tier,
    };

    fn logged(index: u64, term: u64, entry: &Entry) -> LoggedEntry {
        LoggedEntry {
            index,
            term,
            kind: entry.command.kind().to_string(),
            summary: entry.command.summary(),
            entries: vec![entry.encode().expect("encodes")],
        }
    }

    fn blank(index: u64, term: u64) -> LoggedEntry {
        LoggedEntry {
            index,
            term,
            kind: "blank".into(),
            summary: "leader elected".into(),
            entries: Vec::new(),
        }
    }

    /// A short real log: a blank, a node, two jobs; and the digest after each index.
    fn sample_log() -> (Vec<LoggedEntry>, Vec<String>) {
        let node = Command::RegisterNode {
            name: NodeName::new("sim-1").unwrap(),
            domain: LocalityDomain::new("d0").unwrap(),
            devices: vec![
                DeviceSpec {
                    kind: DeviceKind::new("sim").unwrap(),
                    memory_bytes: 16 << 30,
                    uuid: String::new(),
                    health: DeviceHealth::Healthy,
                };
                2
            ],
        };
        let entries = [
            Entry::system(1_000, node),
            Entry::system(
                1_001,
                Command::SubmitJob {
                    spec: job_spec("a", Tier::Premium, 2, "sim"),
                },
            ),
            Entry::system(
                1_002,
                Command::SubmitJob {
                    spec: job_spec("b", Tier::Basic, 1, "sim"),
                },
            ),
        ];
        let mut state = ClusterState::new();
        let mut log = vec![blank(1, 1)];
        let mut digests = vec![state.digest().to_string(), state.digest().to_string()];
        for (i, entry) in entries.iter().enumerate() {
            assert!(state.apply(entry.clone()).is_accepted());
            log.push(logged(i as u64 + 2, 1, entry));
            digests.push(state.digest().to_string());
        }
        (log, digests)
    }

    fn evidence(log: &[LoggedEntry], applied: u64, digest: &str) -> ReplicaEvidence {
        ReplicaEvidence {
            log: log.to_vec(),
            status: Some(ReplicaStatus {
                applied_index: Some(applied),
                committed_index: Some(applied),
                digest: digest.to_string(),
            }),
            error: None,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn agreeing_replicas_with_a_lagging_prefix_are_valid() {
        let (log, digests) = sample_log();
        let full = evidence(&log, 4, &digests[4]);
        let lagging = evidence(&log[..3], 3, &digests[3]);
        let report = check_scheduler(&names(3), &[full.clone(), lagging, full], Ok(&[]));
        assert!(report.valid, "{report:#?}");
        assert_eq!(report.entries_replayed, 4);
        assert_eq!(report.digests_compared, 3);
    }

    #[test]
    fn a_diverging_entry_and_a_wrong_digest_are_anomalies() {
        let (log, digests) = sample_log();
        let mut other = log.clone();
        other[2].term = 2;
        let report = check_scheduler(
            &names(2),
            &[
                evidence(&log, 4, &digests[4]),
                evidence(&other[..3], 3, &digests[2]),
            ],
            Ok(&[]),
        );
        assert!(!report.valid);
        assert_eq!(report.log_prefix_violation_count, 1, "{report:#?}");
        assert!(report.log_prefix_violations[0].starts_with("index 3"));
        assert_eq!(report.digest_mismatches.len(), 1, "{report:#?}");
        assert!(report.digest_mismatches[0].starts_with("n2"));
    }

    #[test]
    fn a_purged_log_cannot_be_replayed_and_is_not_valid() {
        let (log, digests) = sample_log();
        let report = check_scheduler(&names(1), &[evidence(&log[1..], 4, &digests[4])], Ok(&[]));
        assert!(!report.valid);
        assert!(report.replay_unavailable.is_some());
    }

    #[test]
    fn devices_held_twice_are_found_from_the_read_api() {
        let mut fleet = Fleet::new();
        let nodes = fleet.add_nodes("n", 1, 2, "sim", 16 << 30, 1);
        let a = fleet.run_job(
            job_spec("a", Tier::Basic, 1, "sim"),
            vec![DeviceRef::new(nodes[0], 0)],
        );
        assert!(double_assignments(&fleet.state).is_empty());
        // A migration in flight holds its target too: still one job per device.
        fleet.commit(
            a,
            ActionOp::Migrate {
                to: vec![DeviceRef::new(nodes[0], 1)],
            },
            "test",
        );
        assert!(double_assignments(&fleet.state).is_empty());
    }

    #[test]
    fn preempted_jobs_must_run_again_or_finish() {
        let mut fleet = Fleet::new();
        let nodes = fleet.add_nodes("n", 1, 1, "sim", 16 << 30, 1);
        let job = fleet.run_job(
            job_spec("a", Tier::Basic, 1, "sim"),
            vec![DeviceRef::new(nodes[0], 0)],
        );
        let action = fleet.commit(job, ActionOp::Preempt { for_job: None }, "test");
        fleet.finish_action(action, 7);
        let jobs: Vec<Job> = fleet.state.jobs().cloned().collect();
        let (preempted, unresolved) = preempted_unresolved(&jobs);
        assert_eq!(preempted, 1);
        assert_eq!(unresolved.len(), 1, "{unresolved:?}");
        // First in line for its kind and still waiting: it starves (and fails the run).
        assert_eq!(preempted_starved(&jobs).len(), 1);
        let report = check_scheduler(&[], &[], Ok(&jobs));
        assert_eq!(report.preempted_starved.len(), 1, "{report:?}");
        // A waiting job of another kind is not ahead of it.
        fleet.submit(job_spec("other-kind", Tier::Premium, 1, "h100"));
        let jobs: Vec<Job> = fleet.state.jobs().cloned().collect();
        assert_eq!(preempted_starved(&jobs).len(), 1);
        // A waiting premium job of its kind is: the preempted job may wait behind it.
        fleet.submit(job_spec("premium", Tier::Premium, 1, "sim"));
        let jobs: Vec<Job> = fleet.state.jobs().cloned().collect();
        assert_eq!(preempted_unresolved(&jobs).1.len(), 1);
        let report = check_scheduler(&[], &[], Ok(&jobs));
        assert!(report.preempted_starved.is_empty(), "{report:?}");
        assert_eq!(report.preempted_unresolved.len(), 1, "{report:?}");
        let action = fleet.commit(
            job,
            ActionOp::Resume {
                devices: vec![DeviceRef::new(nodes[0], 0)],
            },
            "test",
        );
        fleet.finish_action(action, 0);
        let jobs: Vec<Job> = fleet.state.jobs().cloned().collect();
        assert_eq!(preempted_unresolved(&jobs), (1, Vec::new()));
        let report = check_scheduler(&[], &[], Ok(&jobs));
        assert_eq!(report.jobs_by_phase.get("running"), Some(&1), "{report:?}");
    }
}
