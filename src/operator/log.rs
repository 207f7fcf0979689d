//! `singularity operator log [--from N] [--to M] [--follow] [--output json] [--data-dir DIR]`:
//! each entry decoded with its index, term, leader time, command kind and summary. With
//! `--data-dir` it reads a stopped replica's RocksDB directly (offline).

use crate::client::{block_on, ClientOpts, Output};
use clap::Args;
use singularity_raft::limits::MAX_LOG_ENTRIES_PER_READ;
use singularity_raft::oplog::{describe, LogLine};
use singularity_raft::store::{Db, LogStore};
use std::path::PathBuf;
use std::time::Duration;

/// Pause between polls of `--follow`, in milliseconds.
const FOLLOW_POLL_MS: u64 = 500;

#[derive(Debug, Args)]
pub struct LogArgs {
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    #[arg(long, default_value_t = u64::MAX)]
    pub to: u64,
    /// Keep printing new entries as they are appended (online only).
    #[arg(long, conflicts_with = "data_dir")]
    pub follow: bool,
    /// Read a stopped replica's data dir instead of asking a server.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn print(line: &LogLine, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(line)?),
        Output::Table => println!(
            "{:>8} t{:<4} {:>14} {:<16} {}",
            line.index, line.term, line.leader_time_ms, line.kind, line.summary
        ),
    }
    Ok(())
}

/// Runs `singularity operator log`.
pub fn run(args: LogArgs, opts: ClientOpts) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        if !dir.join("CURRENT").exists() {
            anyhow::bail!("{} is not a replica's data dir", dir.display());
        }
        let log = LogStore::new(Db::open(dir)?)?;
        let mut from = args.from.max(log.first_index()?.unwrap_or(0));
        while from <= args.to {
            let to = args
                .to
                .min(from.saturating_add(MAX_LOG_ENTRIES_PER_READ - 1));
            let entries = log.entries(from, to.saturating_add(1))?;
            if entries.is_empty() {
                break;
            }
            for entry in &entries {
                print(&describe(entry), opts.output)?;
            }
            from = entries
                .last()
                .map(|e| e.log_id.index + 1)
                .unwrap_or(to.saturating_add(1));
        }
        return Ok(());
    }
    block_on(async move {
        let mut client = opts.client()?;
        let mut from = args.from;
        loop {
            let reply = client.read_log(from, args.to).await?;
            for entry in &reply.entries {
                let line = LogLine {
                    index: entry.index,
                    term: entry.term,
                    leader_time_ms: entry.leader_time_ms,
                    kind: entry.kind.clone(),
                    summary: entry.summary.clone(),
                };
                print(&line, opts.output)?;
            }
            if let Some(last) = reply.entries.last() {
                from = last.index + 1;
                if from > args.to {
                    return Ok(());
                }
                continue;
            }
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_MS)).await;
        }
    })
}
