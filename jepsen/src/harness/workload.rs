//! The workloads' pure parts: which register operation a client does next, and the set
//! workload's checker (every acknowledged submission present exactly once at the end, an
//! indeterminate one at most once, a failed one never).
//!
//! It must not do I/O; `runner` drives the clients.

use crate::harness::rng::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Register values are drawn from `0..REGISTER_VALUES`, so cas often succeeds.
pub const REGISTER_VALUES: u64 = 5;

/// One register operation to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    Read,
    Write(i64),
    Cas(i64, i64),
}

/// The next register operation: half reads, a quarter writes, a quarter cas.
pub fn next_register_op(rng: &mut Rng) -> RegisterOp {
    let value = |rng: &mut Rng| rng.below(REGISTER_VALUES) as i64;
    match rng.below(4) {
        0 | 1 => RegisterOp::Read,
        2 => RegisterOp::Write(value(rng)),
        _ => RegisterOp::Cas(value(rng), value(rng)),
    }
}

/// How one set submission completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Acknowledged: must be present exactly once.
    Ok,
    /// Definitely rejected: must be absent.
    Fail,
    /// Indeterminate: present at most once.
    Info,
}

/// The set checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetReport {
    pub valid: bool,
    pub attempted: usize,
    pub acknowledged: usize,
    /// Indeterminate submissions found in the final read.
    pub indeterminate_present: usize,
    pub indeterminate_absent: usize,
    /// Acknowledged but missing from the final read.
    pub lost: Vec<String>,
    /// Present more than once.
    pub duplicated: Vec<String>,
    /// Definitely failed, yet present.
    pub failed_but_present: Vec<String>,
    /// Present but never submitted by this workload.
    pub unexpected: Vec<String>,
}

/// Checks the final read (`names`, every job name it returned) against the submissions.
/// Names not starting with `prefix` belong to other workloads and are ignored.
pub fn check_set(adds: &BTreeMap<String, AddOutcome>, names: &[String], prefix: &str) -> SetReport {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let mut report = SetReport {
        valid: true,
        attempted: adds.len(),
        acknowledged: 0,
        indeterminate_present: 0,
        indeterminate_absent: 0,
        lost: Vec::new(),
        duplicated: Vec::new(),
        failed_but_present: Vec::new(),
        unexpected: Vec::new(),
    };
    for (name, outcome) in adds {
        let count = counts.get(name.as_str()).copied().unwrap_or(0);
        if count > 1 {
            report.duplicated.push(name.clone());
        }
        match outcome {
            AddOutcome::Ok => {
                report.acknowledged += 1;
                if count == 0 {
                    report.lost.push(name.clone());
                }
            }
            AddOutcome::Fail if count > 0 => report.failed_but_present.push(name.clone()),
            AddOutcome::Fail => {}
            AddOutcome::Info if count > 0 => report.indeterminate_present += 1,
            AddOutcome::Info => report.indeterminate_absent += 1,
        }
    }
    let submitted: BTreeSet<&str> = adds.keys().map(String::as_str).collect();
    report.unexpected = counts
        .keys()
        .filter(|name| !submitted.contains(*name))
        .map(|name| name.to_string())
        .collect();
    report.valid = report.lost.is_empty()
        && report.duplicated.is_empty()
        && report.failed_but_present.is_empty()
        && report.unexpected.is_empty();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds(items: &[(&str, AddOutcome)]) -> BTreeMap<String, AddOutcome> {
        items.iter().map(|(n, o)| (n.to_string(), *o)).collect()
    }

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn acknowledged_present_once_and_info_at_most_once_is_valid() {
        let a = adds(&[
            ("set-1", AddOutcome::Ok),
            ("set-2", AddOutcome::Info),
            ("set-3", AddOutcome::Info),
            ("set-4", AddOutcome::Fail),
        ]);
        let report = check_set(&a, &names(&["set-1", "set-2", "reg-0"]), "set-");
        assert!(report.valid, "{report:?}");
        assert_eq!(report.indeterminate_present, 1);
        assert_eq!(report.indeterminate_absent, 1);
    }

    #[test]
    fn lost_duplicated_failed_and_unexpected_are_anomalies() {
        let a = adds(&[
            ("set-1", AddOutcome::Ok),
            ("set-2", AddOutcome::Info),
            ("set-3", AddOutcome::Fail),
        ]);
        let report = check_set(&a, &names(&["set-2", "set-2", "set-3", "set-9"]), "set-");
        assert!(!report.valid);
        assert_eq!(report.lost, vec!["set-1"]);
        assert_eq!(report.duplicated, vec!["set-2"]);
        assert_eq!(report.failed_but_present, vec!["set-3"]);
        assert_eq!(report.unexpected, vec!["set-9"]);
    }

    #[test]
    fn register_ops_cover_every_kind() {
        let mut rng = Rng::new(5);
        let ops: Vec<RegisterOp> = (0..200).map(|_| next_register_op(&mut rng)).collect();
        assert!(ops.contains(&RegisterOp::Read));
        assert!(ops.iter().any(|o| matches!(o, RegisterOp::Write(_))));
        assert!(ops.iter().any(|o| matches!(o, RegisterOp::Cas(..))));
    }
}
