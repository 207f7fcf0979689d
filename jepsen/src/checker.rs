//! The checker's entry point: pairs and splits a history, searches every key (on several
//! threads for large histories), stops at the first refuted key or at the time limit, and
//! builds the report.
//!
//! It must never give a verdict the search did not prove: a key that was not searched to the
//! end is `Unknown`, and so is the whole history unless another key is refuted.

use crate::error::{Error, Result};
use crate::format::read_history_file;
use crate::history::History;
use crate::limits::{MAX_CHECK_THREADS, MAX_WINDOW_OPS, PARALLEL_MIN_OPS, STEPS_PER_SLICE};
use crate::model::ModelKind;
use crate::pairing::{build_problems, KeyProblem};
use crate::report::{CheckReport, FailureWindow, Progress, Validity, WindowOp};
use crate::search::{KeySearch, Refutation, SearchOutcome, StopReason};
use crate::value::Value;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to check and how long to try.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// The model.
    pub model: ModelKind,
    /// The initial value of every key; the model's default when `None`.
    pub initial: Option<Value>,
    /// Give up with `Unknown` after this long; no limit when `None`.
    pub time_limit_ms: Option<u64>,
}

impl CheckOptions {
    /// Options for `model` with its default initial value and no time limit.
    pub fn new(model: ModelKind) -> Self {
        CheckOptions {
            model,
            initial: None,
            time_limit_ms: None,
        }
    }
}

/// Reads a history file (format detected) and checks it.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<CheckReport> {
    let history = read_history_file(path, None)?;
    check_history(&history, options).map_err(|e| e.in_file(path))
}

/// Checks a history for linearizability. An empty history is an error, not a verdict.
pub fn check_history(history: &History, options: &CheckOptions) -> Result<CheckReport> {
    let started = Instant::now();
    if history.is_empty() {
        return Err(Error::EmptyHistory);
    }
    // A limit too far away to represent is no limit.
    let deadline = options
        .time_limit_ms
        .and_then(|ms| started.checked_add(Duration::from_millis(ms)));
    let initial = options
        .initial
        .clone()
        .unwrap_or_else(|| options.model.default_initial());
    let mut problems = build_problems(history, options.model, &initial)?;
    let ops_searched: usize = problems.keys.iter().map(|k| k.ops.len()).sum();
    let outcomes = run_searches(
        &mut problems.keys,
        deadline,
        ops_searched >= PARALLEL_MIN_OPS,
    );

    let decided = |o: &Option<SearchOutcome>| {
        matches!(
            o,
            Some(SearchOutcome::Linearizable | SearchOutcome::NotLinearizable(_))
        )
    };
    let keys_decided = outcomes.iter().filter(|o| decided(o)).count();
    let refuted = outcomes.iter().enumerate().find_map(|(i, o)| match o {
        Some(SearchOutcome::NotLinearizable(r)) => Some((i, r)),
        _ => None,
    });
    let mut report = CheckReport {
        valid: Validity::Linearizable,
        model: options.model.name().to_string(),
        ops: problems.ops_total,
        ops_searched,
        keys: problems.keys.len(),
        keys_decided,
        nemesis_records_skipped: history.nemesis_records_skipped,
        elapsed_ms: 0.0,
        time_limit_ms: options.time_limit_ms,
        failure: None,
        unknown: None,
    };
    if let Some((index, refutation)) = refuted {
        report.valid = Validity::NotLinearizable;
        report.failure = Some(failure_window(
            history,
            problems.independent,
            &problems.keys[index],
            refutation,
        ));
    } else if let Some(index) = outcomes.iter().position(|o| !decided(o)) {
        let (reason, max_linearized) = match &outcomes[index] {
            Some(SearchOutcome::Unknown {
                reason,
                max_linearized,
            }) => (*reason, *max_linearized),
            _ => (StopReason::TimeLimit, 0),
        };
        let key = &problems.keys[index];
        report.valid = Validity::Unknown;
        report.unknown = Some(Progress {
            reason: reason.describe().to_string(),
            keys_decided,
            key: Some(key.key.to_string()),
            ops_in_key: key.ops.len(),
            max_linearized,
        });
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Searches every key, interleaving them in slices of `STEPS_PER_SLICE` steps (on several
/// threads when `parallel`); `None` for a key that was not decided because another was
/// refuted first.
fn run_searches(
    keys: &mut [KeyProblem],
    deadline: Option<Instant>,
    parallel: bool,
) -> Vec<Option<SearchOutcome>> {
    let count = keys.len();
    let stop = AtomicBool::new(false);
    let queue: Mutex<VecDeque<(usize, KeySearch<'_>)>> = Mutex::new(
        keys.iter_mut()
            .enumerate()
            .map(|(i, key)| (i, KeySearch::new(key)))
            .collect(),
    );
    let results: Mutex<Vec<Option<SearchOutcome>>> = Mutex::new(vec![None; count]);
    let worker = || loop {
        let Some((index, mut key)) = lock(&queue).pop_front() else {
            break;
        };
        if stop.load(Ordering::Relaxed) {
            continue;
        }
        match key.run(STEPS_PER_SLICE, deadline, &stop) {
            Some(outcome) => {
                if matches!(outcome, SearchOutcome::NotLinearizable(_)) {
                    stop.store(true, Ordering::Relaxed);
                }
                lock(&results)[index] = Some(outcome.clone());
            }
            None => lock(&queue).push_back((index, key)),
        }
    };
    // Asking for the parallelism reads cgroup files: only when it may be used.
    let threads = if parallel && count > 1 {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_CHECK_THREADS)
            .min(count)
    } else {
        1
    };
    if threads > 1 {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(worker);
            }
        });
    } else {
        worker();
    }
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The failing op, the ops concurrent with it and the last ops linearized before it.
fn failure_window(
    history: &History,
    independent: bool,
    key: &KeyProblem,
    refutation: &Refutation,
) -> FailureWindow {
    let view = |pair, role| WindowOp::from_paired(history, independent, pair, role);
    let ops = &key.ops;
    let mut linearized = vec![false; ops.len()];
    for &i in &refutation.linearized {
        if let Some(flag) = linearized.get_mut(i) {
            *flag = true;
        }
    }
    let role = |i: usize| {
        if i == refutation.failing_op {
            "failing"
        } else if linearized.get(i).copied().unwrap_or(false) {
            "linearized"
        } else {
            "open"
        }
    };
    let Some(failing) = ops.get(refutation.failing_op) else {
        return FailureWindow {
            key: key.key.to_string(),
            ops_in_key: ops.len(),
            linearized_before: refutation.linearized.len(),
            state_before: key.stepper.state_text(refutation.state),
            failing_op: view(&ops[0], "failing"),
            window: Vec::new(),
        };
    };
    let mut members: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            i == refutation.failing_op
                || (ops[i].call_pos() < failing.ret_pos && ops[i].ret_pos > failing.call_pos())
        })
        .collect();
    for &i in refutation.linearized.iter().rev().take(3) {
        if !members.contains(&i) {
            members.push(i);
        }
    }
    if members.len() > MAX_WINDOW_OPS {
        members.sort_by_key(|&i| ops[i].call_pos().abs_diff(failing.call_pos()));
        members.truncate(MAX_WINDOW_OPS);
    }
    members.sort_by_key(|&i| ops[i].call_pos());
    FailureWindow {
        key: key.key.to_string(),
        ops_in_key: ops.len(),
        linearized_before: refutation.linearized.len(),
        state_before: key.stepper.state_text(refutation.state),
        failing_op: view(failing, "failing"),
        window: members
            .into_iter()
            .map(|i| view(&ops[i], role(i)))
            .collect(),
    }
}
