//! Prometheus metrics over plain HTTP (`GET /metrics`): term, log, commit and applied index,
//! leader, proposals and their latency, apply counts and latency, rejected entries and plans,
//! snapshots. It must not block the replica: each scrape reads counters and openraft's
//! metrics only, and a scrape request is bounded in size and time.

use crate::server::control::ApiStats;
use crate::store::state_machine::ApplyStats;
use crate::store::{LogStore, StateMachineStore};
use crate::types::Raft;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest scrape request read, in bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a scrape connection may take.
const SCRAPE_TIMEOUT_MS: u64 = 5_000;

/// What the exporter reads.
#[derive(Clone)]
pub struct MetricsSources {
    pub raft: Raft,
    pub log: LogStore,
    pub sm: StateMachineStore,
    pub api: Arc<ApiStats>,
}

/// Renders the metrics in Prometheus' text format.
pub fn render(sources: &MetricsSources) -> String {
    let metrics = sources.raft.metrics().borrow().clone();
    let apply: &ApplyStats = sources.sm.stats();
    let api = &sources.api;
    let committed = sources
        .log
        .committed()
        .ok()
        .flatten()
        .map(|l| l.index)
        .unwrap_or(0);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP singularity_{name} {help}");
        let _ = writeln!(out, "# TYPE singularity_{name} {kind}");
        let _ = writeln!(out, "singularity_{name} {value}");
    };
    gauge(
        "raft_term",
        "Current Raft term.",
        "gauge",
        metrics.current_term,
    );
    gauge(
        "raft_is_leader",
        "1 if this replica is the leader.",
        "gauge",
        u64::from(metrics.current_leader == Some(metrics.id)),
    );
    gauge(
        "raft_last_log_index",
        "Last log index.",
        "gauge",
        metrics.last_log_index.unwrap_or(0),
    );
    gauge(
        "raft_commit_index",
        "Committed index as last saved.",
        "gauge",
        committed,
    );
    gauge(
        "raft_applied_index",
        "Applied index.",
        "gauge",
        metrics.last_applied.map(|l| l.index).unwrap_or(0),
    );
    gauge(
        "raft_snapshot_index",
        "Index of the last snapshot.",
        "gauge",
        metrics.snapshot.map(|l| l.index).unwrap_or(0),
    );
    gauge(
        "proposals_total",
        "Client writes committed through this replica.",
        "counter",
        api.proposals.load(Ordering::Relaxed),
    );
    gauge(
        "writes_redirected_total",
        "Writes sent back to the client to retry at the leader.",
        "counter",
        api.writes_redirected.load(Ordering::Relaxed),
    );
    gauge(
        "proposals_failed_total",
        "Client writes not committed.",
        "counter",
        api.proposals_failed.load(Ordering::Relaxed),
    );
    gauge(
        "proposal_micros_total",
        "Sum of write latencies on this replica (all outcomes), microseconds.",
        "counter",
        api.proposal_nanos_total.load(Ordering::Relaxed) / 1_000,
    );
    gauge(
        "invalid_requests_total",
        "Requests refused as invalid.",
        "counter",
        api.invalid_requests.load(Ordering::Relaxed),
    );
    gauge(
        "reads_total",
        "Reads served.",
        "counter",
        api.reads.load(Ordering::Relaxed),
    );
    gauge(
        "entries_applied_total",
        "Log entries applied.",
        "counter",
        apply.entries_applied.load(Ordering::Relaxed),
    );
    gauge(
        "entries_rejected_total",
        "Applied entries that changed nothing (rejected).",
        "counter",
        apply.entries_rejected.load(Ordering::Relaxed),
    );
    gauge(
        "plans_rejected_total",
        "Plans rejected at apply.",
        "counter",
        apply.plans_rejected.load(Ordering::Relaxed),
    );
    gauge(
        "apply_micros_total",
        "Time spent applying entries, microseconds.",
        "counter",
        apply.apply_nanos_total.load(Ordering::Relaxed) / 1_000,
    );
    gauge(
        "snapshots_built_total",
        "Snapshots built.",
        "counter",
        apply.snapshots_built.load(Ordering::Relaxed),
    );
    gauge(
        "snapshots_installed_total",
        "Snapshots installed from a leader.",
        "counter",
        apply.snapshots_installed.load(Ordering::Relaxed),
    );
    out
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, sources: MetricsSources) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let work = async {
                let mut buffer = vec![0u8; MAX_REQUEST_BYTES];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..read]);
                let (status, body) = if request.starts_with("GET /metrics") {
                    ("200 OK", render(&sources))
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            };
            let _ = tokio::time::timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS), work).await;
        });
    }
}
