//! The scheduler workload's I/O: client operations (mixed-tier job submissions of small world
//! sizes, and cancellations), the recovery window after healing, and the collection of the
//! evidence `sched_check` judges (each replica's status and whole log, after the replicas
//! quiesce).
//!
//! It must stay bounded: every loop has a deadline or a count, every call a timeout.

use crate::harness::client::{CallError, Conn};
use crate::harness::fleet::{RUN_MS_KEY, SIM_DEVICE_KIND};
use crate::harness::recorder::Recorder;
use crate::harness::rng::Rng;
use crate::harness::sched_check::{
    preempted_unresolved, LoggedEntry, ReplicaEvidence, ReplicaStatus,
};
use crate::op::OpType;
use crate::value::Value;
use singularity_proto::query;
use singularity_scheduler::{
    Command, DeviceKind, Effect, Job, JobId, JobSpec, Outcome, RunSpec, TenantName, Tier,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Job names of the scheduler workload.
pub const SCHED_JOB_PREFIX: &str = "jepsen-sched-";
/// World sizes the workload submits.
pub const WORLD_SIZES: [u32; 3] = [1, 2, 4];
/// Shortest and longest simulated run of a job, in milliseconds.
pub const MIN_RUN_MS: u64 = 500;
pub const MAX_RUN_MS: u64 = 2_500;
/// Memory each rank asks for.
const MEMORY_PER_RANK_BYTES: u64 = 1 << 30;
/// Pause of a scheduler client between two operations, so the fleet is loaded but the
/// backlog drains in the recovery window.
pub const SCHEDULER_OP_PAUSE_MS: u64 = 1_000;
/// One operation in `CANCEL_ONE_IN` is a cancellation.
const CANCEL_ONE_IN: u64 = 4;
/// Pause between two looks during recovery and quiescence.
const SETTLE_POLL_MS: u64 = 500;
/// Most pages of `ReadLog` per replica (each up to the server's page size).
const MAX_LOG_PAGES: u32 = 10_000;
/// Time one status or log page may take.
const EVIDENCE_CALL_TIMEOUT_MS: u64 = 5_000;

/// What the scheduler clients share: name counter and acknowledged job ids.
#[derive(Debug, Default)]
pub struct SchedShared {
    names: AtomicU64,
    jobs: Mutex<Vec<u64>>,
}

/// One scheduler operation to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedOp {
    Submit {
        tier: Tier,
        world_size: u32,
        run_ms: u64,
    },
    /// Cancel the `pick`-th acknowledged job (modulo their number).
    Cancel { pick: u64 },
}

/// The next operation: submissions of premium (1/4), standard (1/4) and basic (1/2) jobs of
/// world size 1, 2 or 4, and one in `CANCEL_ONE_IN` a cancellation.
pub fn next_sched_op(rng: &mut Rng) -> SchedOp {
    if rng.below(CANCEL_ONE_IN) == 0 {
        return SchedOp::Cancel {
            pick: rng.next_u64(),
        };
    }
    let tier = match rng.below(4) {
        0 => Tier::Premium,
        1 => Tier::Standard,
        _ => Tier::Basic,
    };
    SchedOp::Submit {
        tier,
        world_size: WORLD_SIZES[rng.below(WORLD_SIZES.len() as u64) as usize],
        run_ms: MIN_RUN_MS + rng.below(MAX_RUN_MS - MIN_RUN_MS + 1),
    }
}

fn tier_name(tier: Tier) -> &'static str {
    tier.as_str()
}

/// The spec of a submission.
pub fn sched_spec(name: String, tier: Tier, world_size: u32, run_ms: u64) -> Option<JobSpec> {
    Some(JobSpec {
        name,
        tenant: TenantName::new(format!("jepsen-{}", tier_name(tier))).ok()?,
        tier,
        world_size,
        device_kind: DeviceKind::new(SIM_DEVICE_KIND).ok()?,
        memory_per_rank_bytes: MEMORY_PER_RANK_BYTES,
        run: RunSpec::Command {
            argv: vec!["sleep".into(), format!("{}", run_ms.div_ceil(1000))],
            env: BTreeMap::new(),
        },
        max_restarts: 3,
        metadata: BTreeMap::from([(RUN_MS_KEY.to_string(), run_ms.to_string())]),
    })
}

fn completion(result: &Result<Outcome, CallError>) -> OpType {
    match result {
        Ok(Outcome::Accepted(_)) | Ok(Outcome::Duplicate(_)) => OpType::Ok,
        Ok(Outcome::Rejected(_)) | Err(CallError::Definite(_)) => OpType::Fail,
        Err(CallError::Indefinite(_)) => OpType::Info,
    }
}

/// One scheduler operation, recorded; returns its completion type.
pub async fn scheduler_op(
    conn: &mut Conn,
    recorder: &Recorder,
    shared: &SchedShared,
    process: i64,
    op: SchedOp,
    timeout: Duration,
) -> OpType {
    match op {
        SchedOp::Submit {
            tier,
            world_size,
            run_ms,
        } => {
            let n = shared.names.fetch_add(1, Ordering::Relaxed);
            let value = Value::Vector(vec![
                Value::Int(n as i64),
                Value::Str(tier_name(tier).to_string()),
                Value::Int(world_size as i64),
            ]);
            recorder.record(process, OpType::Invoke, "submit", None, value.clone());
            let Some(spec) = sched_spec(format!("{SCHED_JOB_PREFIX}{n}"), tier, world_size, run_ms)
            else {
                recorder.record(process, OpType::Fail, "submit", None, value);
                return OpType::Fail;
            };
            let result = conn.write(Command::SubmitJob { spec }, timeout).await;
            let kind = completion(&result);
            if let Ok(outcome) = &result {
                if let Some(Effect::JobSubmitted { job, .. }) = outcome.effect() {
                    shared
                        .jobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(job.0);
                }
            }
            recorder.record(process, kind, "submit", None, value);
            kind
        }
        SchedOp::Cancel { pick } => {
            let job = {
                let jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
                if jobs.is_empty() {
                    return OpType::Fail;
                }
                jobs[(pick % jobs.len() as u64) as usize]
            };
            let value = Value::Int(job as i64);
            recorder.record(process, OpType::Invoke, "cancel", None, value.clone());
            let result = conn
                .write(Command::CancelJob { job: JobId(job) }, timeout)
                .await;
            let kind = completion(&result);
            recorder.record(process, kind, "cancel", None, value);
            kind
        }
    }
}

/// Reads every job (linearizable).
pub async fn read_jobs(conn: &mut Conn, timeout: Duration) -> Result<Vec<Job>, String> {
    let value = conn
        .read_query(query::JOBS, false, timeout)
        .await
        .map_err(|e| e.message().to_string())?;
    serde_json::from_value(value).map_err(|e| format!("decoding the jobs: {e}"))
}

/// The recovery window: waits (up to `deadline`) until every preempted job was resumed or
/// finished, and returns the last read of the jobs.
pub async fn await_recovery(conn: &mut Conn, deadline: Instant) -> Result<Vec<Job>, String> {
    let timeout = Duration::from_millis(EVIDENCE_CALL_TIMEOUT_MS);
    let mut last = Err("no read of the jobs succeeded".to_string());
    // Bounded by the deadline; each pass waits SETTLE_POLL_MS.
    while Instant::now() < deadline {
        last = read_jobs(conn, timeout).await;
        if let Ok(jobs) = &last {
            if preempted_unresolved(jobs).1.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
    last
}

fn status_of_json(status: &serde_json::Value) -> ReplicaStatus {
    ReplicaStatus {
        applied_index: status["applied_index"].as_u64(),
        committed_index: status["committed_index"].as_u64(),
        digest: status["digest"].as_str().unwrap_or_default().to_string(),
    }
}

/// True when every replica answered and all have the same last, committed and applied index.
pub fn quiescent(statuses: &[Option<serde_json::Value>]) -> bool {
    let mut seen = None;
    for status in statuses {
        let Some(s) = status else {
            return false;
        };
        let key = (
            s["last_log_index"].as_u64(),
            s["committed_index"].as_u64(),
            s["applied_index"].as_u64(),
        );
        if key.0 != key.2 || key.1 != key.2 || key.2.is_none() {
            return false;
        }
        if *seen.get_or_insert(key) != key {
            return false;
        }
    }
    true
}

async fn statuses(conn: &mut Conn, n: usize) -> Vec<Option<serde_json::Value>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            conn.status_of(i, Duration::from_millis(EVIDENCE_CALL_TIMEOUT_MS))
                .await
                .ok(),
        );
    }
    out
}

async fn read_whole_log(conn: &mut Conn, i: usize) -> Result<Vec<LoggedEntry>, String> {
    let timeout = Duration::from_millis(EVIDENCE_CALL_TIMEOUT_MS);
    let mut entries: Vec<LoggedEntry> = Vec::new();
    let mut from = 1;
    for _ in 0..MAX_LOG_PAGES {
        let reply = conn
            .read_log_of(i, from, u64::MAX, timeout)
            .await
            .map_err(|e| e.message().to_string())?;
        let Some(last) = reply.entries.last().map(|e| e.index) else {
            return Ok(entries);
        };
        for e in reply.entries {
            if let Some(prev) = entries.last() {
                if e.index != prev.index + 1 {
                    return Err(format!(
                        "ReadLog skipped from index {} to {}",
                        prev.index, e.index
                    ));
                }
            }
            entries.push(LoggedEntry {
                index: e.index,
                term: e.term,
                kind: e.kind,
                summary: e.summary,
                entries: e.entries,
            });
        }
        if last >= reply.last_index {
            return Ok(entries);
        }
        from = last + 1;
    }
    Err(format!("more than {MAX_LOG_PAGES} pages of log"))
}

/// Waits (up to `deadline`) for the replicas to quiesce, then takes each one's status and its
/// whole log. Returns the evidence and whether they had quiesced.
pub async fn collect_evidence(
    conn: &mut Conn,
    n: usize,
    deadline: Instant,
) -> (Vec<ReplicaEvidence>, bool) {
    let mut last = statuses(conn, n).await;
    let mut quiesced = quiescent(&last);
    // Bounded by the deadline; each pass waits SETTLE_POLL_MS / 5.
    while !quiesced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS / 5)).await;
        last = statuses(conn, n).await;
        quiesced = quiescent(&last);
    }
    let mut evidence = Vec::with_capacity(n);
    for (i, status) in last.iter().enumerate() {
        let mut e = ReplicaEvidence {
            status: status.as_ref().map(status_of_json),
            ..ReplicaEvidence::default()
        };
        if status.is_none() {
            e.error = Some("no status".into());
        }
        match read_whole_log(conn, i).await {
            Ok(log) => e.log = log,
            Err(error) => e.error = Some(error),
        }
        evidence.push(e);
    }
    (evidence, quiesced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_mix_tiers_world_sizes_and_cancels() {
        let mut rng = Rng::new(11);
        let ops: Vec<SchedOp> = (0..400).map(|_| next_sched_op(&mut rng)).collect();
        let cancels = ops
            .iter()
            .filter(|o| matches!(o, SchedOp::Cancel { .. }))
            .count();
        assert!(cancels > 50 && cancels < 150, "{cancels}");
        for tier in [Tier::Premium, Tier::Standard, Tier::Basic] {
            assert!(ops
                .iter()
                .any(|o| matches!(o, SchedOp::Submit { tier: t, .. } if *t == tier)));
        }
        for op in &ops {
            if let SchedOp::Submit {
                world_size, run_ms, ..
            } = op
            {
                assert!(WORLD_SIZES.contains(world_size));
                assert!((MIN_RUN_MS..=MAX_RUN_MS).contains(run_ms));
            }
        }
        let spec = sched_spec("x".into(), Tier::Premium, 4, 700).expect("valid");
        spec.validate()
            .expect("the spec passes the server's validation");
        assert_eq!(spec.metadata[RUN_MS_KEY], "700");
    }

    #[test]
    fn quiescence_needs_every_replica_at_one_index() {
        let s = |last: u64, committed: u64, applied: u64| {
            Some(serde_json::json!({
                "last_log_index": last, "committed_index": committed, "applied_index": applied
            }))
        };
        assert!(quiescent(&[s(5, 5, 5), s(5, 5, 5)]));
        assert!(!quiescent(&[s(5, 5, 5), s(6, 5, 5)]));
        assert!(!quiescent(&[s(5, 5, 5), s(4, 4, 4)]));
        assert!(!quiescent(&[s(5, 5, 5), None]));
    }
}
