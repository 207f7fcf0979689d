//! `singularity job`: submit (a TOML spec file or flags), list, status, cancel, and metadata
//! updates with compare-and-set on the job's version. Specs are validated here and again by
//! the server before anything is proposed.

use super::{block_on, print_json, print_table, report_write, ClientOpts, Output};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use singularity_proto::query;
use singularity_scheduler::limits::DEFAULT_MAX_RESTARTS;
use singularity_scheduler::{Command, DeviceKind, Job, JobId, JobSpec, RunSpec, TenantName, Tier};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Submit, inspect and cancel jobs.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job from a TOML file or from flags.
    Submit(SubmitArgs),
    /// List jobs.
    List {
        /// Read this replica's state without confirming leadership (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Show one job.
    Status {
        /// The job's id, as `job submit` and `job list` show it.
        id: u64,
        /// Read this replica's state without confirming leadership (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: u64,
    },
    /// Print a rank's output (stdout, or stderr with --stderr) from the agents that ran it;
    /// --follow keeps printing while the rank runs.
    Logs {
        /// The job's id.
        id: u64,
        /// The rank whose output to print.
        #[arg(long, default_value_t = 0)]
        rank: u32,
        /// Keep printing what the rank writes until it stops running.
        #[arg(long, short)]
        follow: bool,
        /// Print the rank's stderr instead of its stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Set or remove metadata keys, optionally only if the job is at a version (CAS).
    Metadata {
        /// The job's id.
        id: u64,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", value_parser = parse_pair)]
        set: Vec<(String, String)>,
        /// KEY to remove (repeatable).
        #[arg(long = "remove")]
        remove: Vec<String>,
        /// Apply only if the job's version is this.
        #[arg(long)]
        expected_version: Option<u64>,
    },
}

/// A job spec from flags or a file.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A TOML job spec; flags are ignored when given. Keys: name, tenant, tier, world_size,
    /// device_kind, memory_per_rank_bytes, and command = ["prog", "arg", ...] (with optional
    /// env = { KEY = "value" }) or worker = "program" (with worker_args); optional
    /// max_restarts and metadata = { key = "value" }.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// The job's name (any text up to 128 characters; needed without --file).
    #[arg(long)]
    pub name: Option<String>,
    /// The tenant the job belongs to (lowercase letters, digits, '-', '_', '.').
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// premium (never preempted or shrunk for a lower tier), standard (may be shrunk to half its
    /// devices, preempted only for premium) or basic (runs on idle capacity, yields first).
    #[arg(long, default_value = "standard")]
    pub tier: String,
    /// Ranks; fixed for the job's life (splicing changes only how many share a device).
    #[arg(long, default_value_t = 1)]
    pub world_size: u32,
    /// The kind of device every rank needs, as nodes report it (e.g. h100, a100, sim).
    #[arg(long, default_value = "h100")]
    pub device_kind: String,
    /// Device memory one rank needs, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub memory_per_rank_bytes: u64,
    /// Restarts after its ranks fail before the job is marked failed.
    #[arg(long, default_value_t = DEFAULT_MAX_RESTARTS)]
    pub max_restarts: u32,
    /// KEY=VALUE metadata (repeatable).
    #[arg(long = "metadata", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// Run the ranks under the device proxies: PROGRAM is a worker built on the worker
    /// runtime (e.g. `singularity` with `-- train-example ...`); the words after `--` are its
    /// arguments. Such a job is checkpointed, moved and spliced transparently.
    #[arg(long, value_name = "PROGRAM")]
    pub worker: Option<String>,
    /// The command each rank runs (or, with --worker, the worker's arguments), after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// The TOML form of a job spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: String,
    pub tenant: String,
    pub tier: String,
    pub world_size: u32,
    pub device_kind: String,
    pub memory_per_rank_bytes: u64,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A device-proxy worker program instead of a command.
    pub worker: Option<String>,
    #[serde(default)]
    pub worker_args: Vec<String>,
    pub max_restarts: Option<u32>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

impl JobFile {
    fn into_spec(self) -> anyhow::Result<JobSpec> {
        let run = match self.worker {
            Some(program) => RunSpec::Worker {
                program,
                args: self.worker_args,
            },
            None => RunSpec::Command {
                argv: self.command,
                env: self.env,
            },
        };
        let spec = JobSpec {
            name: self.name,
            tenant: TenantName::new(self.tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?,
            tier: self
                .tier
                .parse::<Tier>()
                .map_err(|e| anyhow::anyhow!("tier: {e}"))?,
            world_size: self.world_size,
            device_kind: DeviceKind::new(self.device_kind)
                .map_err(|e| anyhow::anyhow!("device_kind: {e}"))?,
            memory_per_rank_bytes: self.memory_per_rank_bytes,
            run,
            max_restarts: self.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
            metadata: self.metadata,
        };
        spec.validate()
            .map_err(|e| anyhow::anyhow!("invalid job spec: {e}"))?;
        Ok(spec)
    }
}

impl SubmitArgs {
    fn spec(self) -> anyhow::Result<JobSpec> {
        let file = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<JobFile>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => {
                let (command, worker_args) = match &self.worker {
                    Some(_) => (Vec::new(), self.command),
                    None => (self.command, Vec::new()),
                };
                JobFile {
                    name: self.name.context("give --name or --file")?,
                    tenant: self.tenant,
                    tier: self.tier,
                    world_size: self.world_size,
                    device_kind: self.device_kind,
                    memory_per_rank_bytes: self.memory_per_rank_bytes,
                    command,
                    env: BTreeMap::new(),
                    worker: self.worker,
                    worker_args,
                    max_restarts: Some(self.max_restarts),
                    metadata: self.metadata.into_iter().collect(),
                }
            }
        };
        file.into_spec()
    }
}

fn job_row(job: &Job) -> Vec<String> {
    vec![
        job.id.0.to_string(),
        job.spec.name.clone(),
        job.spec.tenant.to_string(),
        job.spec.tier.to_string(),
        format!("{:?}", job.phase),
        job.spec.world_size.to_string(),
        job.assignment.len().to_string(),
        job.version.to_string(),
    ]
}

const JOB_HEADER: [&str; 8] = [
    "ID", "NAME", "TENANT", "TIER", "PHASE", "WORLD", "DEVICES", "VERSION",
];

/// Runs `singularity job ...`.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    block_on(async move {
        let mut client = opts.client()?;
        match args.command {
            JobCommand::Submit(submit) => {
                let spec = submit.spec()?;
                let result = client.write(Command::SubmitJob { spec }).await?;
                report_write(&result, opts.output)
            }
            JobCommand::Cancel { id } => {
                let result = client.write(Command::CancelJob { job: JobId(id) }).await?;
                report_write(&result, opts.output)
            }
            JobCommand::Metadata {
                id,
                set,
                remove,
                expected_version,
            } => {
                let command = Command::UpdateJobMetadata {
                    job: JobId(id),
                    expected_version,
                    set: set.into_iter().collect(),
                    remove,
                };
                let result = client.write(command).await?;
                report_write(&result, opts.output)
            }
            JobCommand::Logs {
                id,
                rank,
                follow,
                stderr,
            } => {
                super::logs::print_logs(&mut client, &opts.endpoints, id, rank, follow, stderr)
                    .await
            }
            JobCommand::List { stale } => {
                let reply = client.read(query::JOBS, 0, stale).await?;
                if opts.output == Output::Json {
                    return print_json(&reply.json);
                }
                let jobs: Vec<Job> = serde_json::from_str(&reply.json)?;
                let rows: Vec<Vec<String>> = jobs.iter().map(job_row).collect();
                print_table(&JOB_HEADER, &rows);
                Ok(())
            }
            JobCommand::Status { id, stale } => {
                let reply = client.read(query::JOB, id, stale).await?;
                if opts.output == Output::Json {
                    return print_json(&reply.json);
                }
                let job: Job = serde_json::from_str(&reply.json)?;
                print_table(&JOB_HEADER, &[job_row(&job)]);
                if !job.last_reason.is_empty() {
                    println!("reason: {}", job.last_reason);
                }
                for (key, value) in &job.metadata {
                    println!("metadata {key} = {value}");
                }
                // Why it is where it is, and its SLA attainment against its tier's target.
                let explained = client.read(query::EXPLAIN, id, stale).await?;
                let text: String = serde_json::from_str(&explained.json)?;
                println!("{text}");
                Ok(())
            }
        }
    })
}
