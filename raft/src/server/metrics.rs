//! Prometheus metrics over plain HTTP (`GET /metrics`): term, log, commit and applied index,
//! leader, proposals and their latency, apply counts and latency, rejected entries and plans,
//! snapshots, and the append-entries links to peers. It must not block the replica: each scrape reads counters and openraft's
//! metrics only, and a scrape request is bounded in size and time.

use crate::network::NetworkStats;
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
    pub network: Arc<NetworkStats>,
}

/// Renders the metrics in Prometheus' text format.
pub fn render(sources: &MetricsSources) -> String {
    let metrics = sources.raft.metrics().borrow().clone();
    let apply: &ApplyStats = sources.sm.stats();
    let api = &sources.api;
    let network = &sources.network;
    let committed = sources
        .log
        .committed()
        .ok()
        .flatten()
        .map(|l| l.index)
        .unwrap_or(0);
    let applied = metrics.last_applied.map(|l| l.index).unwrap_or(0);
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    #[rustfmt::skip]
    let rows: [(&str, &str, &str, u64); 24] = [
        ("raft_term", "gauge", "Current Raft term.", metrics.current_term),
        ("raft_is_leader", "gauge", "1 if this replica is the leader.", u64::from(metrics.current_leader == Some(metrics.id))),
        ("raft_last_log_index", "gauge", "Last log index.", metrics.last_log_index.unwrap_or(0)),
        ("raft_commit_index", "gauge", "Committed index as last saved.", committed),
        ("raft_applied_index", "gauge", "Applied index.", applied),
        ("raft_snapshot_index", "gauge", "Index of the last snapshot.", metrics.snapshot.map(|l| l.index).unwrap_or(0)),
        ("proposals_total", "counter", "Client writes committed through this replica.", load(&api.proposals)),
        ("writes_redirected_total", "counter", "Writes sent back to the client to retry at the leader.", load(&api.writes_redirected)),
        ("proposals_failed_total", "counter", "Client writes not committed.", load(&api.proposals_failed)),
        ("proposal_micros_total", "counter", "Sum of write latencies on this replica (all outcomes), microseconds.", load(&api.proposal_nanos_total) / 1_000),
        ("invalid_requests_total", "counter", "Requests refused as invalid.", load(&api.invalid_requests)),
        ("reads_total", "counter", "Reads served.", load(&api.reads)),
        ("node_heartbeats_total", "counter", "Node agent heartbeats heard while leading (kept in memory, not logged).", load(&api.node_heartbeats)),
        ("entries_applied_total", "counter", "Log entries applied.", load(&apply.entries_applied)),
        ("entries_rejected_total", "counter", "Applied entries that changed nothing (rejected).", load(&apply.entries_rejected)),
        ("plans_rejected_total", "counter", "Plans rejected at apply.", load(&apply.plans_rejected)),
        ("apply_micros_total", "counter", "Time spent applying entries, microseconds.", load(&apply.apply_nanos_total) / 1_000),
        ("snapshots_built_total", "counter", "Snapshots built.", load(&apply.snapshots_built)),
        ("snapshots_installed_total", "counter", "Snapshots installed from a leader.", load(&apply.snapshots_installed)),
        ("raft_purged_index", "gauge", "Last purged log index.", metrics.purged.map(|l| l.index).unwrap_or(0)),
        ("raft_members", "gauge", "Members (voters and learners) in the membership.", metrics.membership_config.membership().nodes().count() as u64),
        ("raft_append_links_opened_total", "counter", "Append-entries links this replica opened to peers (as leader).", load(&network.links_opened)),
        ("raft_append_links_dropped_total", "counter", "Append-entries links dropped after a failed, timed-out or closed call.", load(&network.links_dropped)),
        ("raft_unary_appends_total", "counter", "Append-entries sent unary to peers without the link.", load(&network.unary_appends)),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP singularity_{name} {help}");
        let _ = writeln!(out, "# TYPE singularity_{name} {kind}");
        let _ = writeln!(out, "singularity_{name} {value}");
    }
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
