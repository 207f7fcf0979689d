//! `singularity bench-load`: a closed-loop load generator. Each of `--clients` clients sends
//! one write, waits for it to commit, and sends the next, for `--duration-s` seconds. Against
//! Singularity a write is a job-metadata update of `--payload-bytes` (through the leader, which
//! may commit concurrent writes in one log entry); against etcd it is a KV Put of the same size.
//! It prints writes/s, p50/p99 latency and the longest gap between two commits, and can write
//! every commit's time to a file (a failover run finds there when writes resumed after a kill).
//!
//! It must not change what it measures: every client has its own session and connection, and
//! samples are kept in bounded buffers.

use anyhow::Context;
use clap::{Args, ValueEnum};
use singularity_proto::etcd::kv_client::KvClient;
use singularity_proto::etcd::PutRequest;
use singularity_raft::client::Client;
use singularity_scheduler::testkit;
use singularity_scheduler::{Command, Effect, Outcome, Tier};
use std::time::{Duration, Instant};

/// Most clients one run may start.
const MAX_CLIENTS: usize = 4_096;
/// Largest payload (the scheduler's limit on one metadata value).
const MAX_PAYLOAD_BYTES: usize = singularity_scheduler::limits::MAX_METADATA_VALUE_BYTES;
/// Latency samples kept per client; later writes are counted but not sampled.
const MAX_SAMPLES_PER_CLIENT: usize = 1_000_000;
/// Longest run, in seconds.
const MAX_DURATION_S: u64 = 3_600;

/// What to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Singularity,
    Etcd,
}

/// Drive a cluster with a closed loop of writes.
#[derive(Debug, Args)]
pub struct BenchLoadArgs {
    #[arg(long, value_enum, default_value_t = Target::Singularity)]
    pub target: Target,
    /// `HOST:PORT,...` of the cluster (for etcd, its client URLs without scheme).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Also write the time of every sampled commit (Unix time in milliseconds, sorted, one per
    /// line) to this file, so a failover run can take the first commit after the kill.
    #[arg(long)]
    pub commit_times_file: Option<std::path::PathBuf>,
}

/// What one client measured.
#[derive(Default)]
struct ClientRun {
    writes: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    /// Commit times since the start, in microseconds (bounded like the latencies).
    commits_us: Vec<u64>,
}

impl ClientRun {
    fn record(&mut self, start: Instant, sent: Instant) {
        self.writes += 1;
        if self.latencies_us.len() < MAX_SAMPLES_PER_CLIENT {
            let now = Instant::now();
            self.latencies_us.push((now - sent).as_micros() as u64);
            self.commits_us.push((now - start).as_micros() as u64);
        }
    }
}

async fn singularity_client(
    endpoints: Vec<String>,
    index: usize,
    payload: String,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<ClientRun> {
    let mut client = Client::new(endpoints)?;
    let spec = testkit::job_spec(&format!("bench-{index}"), Tier::Basic, 1, "h100");
    let job = match client.write(Command::SubmitJob { spec }).await?.outcome {
        Outcome::Accepted(Effect::JobSubmitted { job }) => job,
        other => anyhow::bail!("setting up client {index}: {other:?}"),
    };
    let mut run = ClientRun::default();
    while Instant::now() < deadline {
        let command = Command::UpdateJobMetadata {
            job,
            expected_version: None,
            set: [("v".to_string(), payload.clone())].into_iter().collect(),
            remove: Vec::new(),
        };
        let sent = Instant::now();
        match client.write(command).await {
            Ok(result) if result.outcome.rejection().is_none() => run.record(start, sent),
            _ => run.errors += 1,
        }
    }
    Ok(run)
}

async fn etcd_client(
    endpoint: String,
    index: usize,
    payload: Vec<u8>,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<ClientRun> {
    let channel = singularity_raft::network::channel(&endpoint, Duration::from_secs(10))?;
    let mut kv = KvClient::new(channel);
    let key = format!("bench/{index}").into_bytes();
    let mut run = ClientRun::default();
    while Instant::now() < deadline {
        let request = PutRequest {
            key: key.clone(),
            value: payload.clone(),
            ..Default::default()
        };
        let sent = Instant::now();
        match kv.put(request).await {
            Ok(_) => run.record(start, sent),
            Err(_) => {
                run.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(run)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1_000.0
}

/// Runs `singularity bench-load`.
pub fn run(args: BenchLoadArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        anyhow::bail!("--clients must be between 1 and {MAX_CLIENTS}");
    }
    if args.payload_bytes == 0 || args.payload_bytes > MAX_PAYLOAD_BYTES {
        anyhow::bail!("--payload-bytes must be between 1 and {MAX_PAYLOAD_BYTES}");
    }
    if args.duration_s == 0 || args.duration_s > MAX_DURATION_S {
        anyhow::bail!("--duration-s must be between 1 and {MAX_DURATION_S}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let start = Instant::now();
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs_f64()
            * 1_000.0;
        let deadline = start + Duration::from_secs(args.duration_s);
        let mut tasks = Vec::with_capacity(args.clients);
        for index in 0..args.clients {
            let endpoints = args.endpoints.clone();
            let task = match args.target {
                Target::Singularity => tokio::spawn(singularity_client(
                    endpoints,
                    index,
                    "x".repeat(args.payload_bytes),
                    start,
                    deadline,
                )),
                Target::Etcd => {
                    let endpoint = endpoints[index % endpoints.len()].clone();
                    tokio::spawn(etcd_client(
                        endpoint,
                        index,
                        vec![b'x'; args.payload_bytes],
                        start,
                        deadline,
                    ))
                }
            };
            tasks.push(task);
        }
        let mut total = ClientRun::default();
        for task in tasks {
            let run = task.await.context("a client task failed")??;
            total.writes += run.writes;
            total.errors += run.errors;
            total.latencies_us.extend(run.latencies_us);
            total.commits_us.extend(run.commits_us);
        }
        let elapsed_s = start.elapsed().as_secs_f64();
        total.latencies_us.sort_unstable();
        total.commits_us.sort_unstable();
        let max_gap_us = total
            .commits_us
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        if let Some(path) = &args.commit_times_file {
            let mut text = String::with_capacity(total.commits_us.len() * 20);
            for us in &total.commits_us {
                text.push_str(&format!("{:.3}\n", start_unix_ms + *us as f64 / 1_000.0));
            }
            std::fs::write(path, text)
                .with_context(|| format!("writing commit times to {}", path.display()))?;
        }
        let report = serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "clients": args.clients,
            "payload_bytes": args.payload_bytes,
            "duration_s": elapsed_s,
            "writes": total.writes,
            "errors": total.errors,
            "writes_per_s": total.writes as f64 / elapsed_s,
            "p50_ms": percentile(&total.latencies_us, 0.50),
            "p99_ms": percentile(&total.latencies_us, 0.99),
            "max_commit_gap_ms": max_gap_us as f64 / 1_000.0,
        });
        println!("{report}");
        Ok(())
    })
}
