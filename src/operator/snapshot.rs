//! `singularity operator snapshot save FILE` (download a consistent snapshot of a replica's
//! applied state) and `inspect FILE` (check its digest and print what it holds, offline).

use crate::client::{block_on, ClientOpts, Output};
use anyhow::Context;
use clap::{Args, Subcommand};
use singularity_raft::store::snapshot::SnapshotEnvelope;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save the first endpoint's applied state to FILE.
    Save { file: PathBuf },
    /// Check and describe a saved snapshot.
    Inspect { file: PathBuf },
}

/// Runs `singularity operator snapshot ...`.
pub fn run(args: SnapshotArgs, opts: ClientOpts) -> anyhow::Result<()> {
    match args.command {
        SnapshotCommand::Save { file } => block_on(async move {
            let bytes = opts.client()?.snapshot().await?;
            let envelope = SnapshotEnvelope::decode(&bytes)?;
            envelope
                .state()
                .context("the downloaded snapshot does not check out")?;
            std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            println!(
                "saved {} ({} bytes) at index {} digest {}",
                file.display(),
                bytes.len(),
                envelope.meta.last_log_id.map(|l| l.index).unwrap_or(0),
                envelope.digest
            );
            Ok(())
        }),
        SnapshotCommand::Inspect { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let envelope = SnapshotEnvelope::decode(&bytes)?;
            let state = envelope.state()?;
            let membership = envelope.meta.last_membership.membership();
            let summary = serde_json::json!({
                "file": file.display().to_string(),
                "bytes": bytes.len(),
                "snapshot_id": envelope.meta.snapshot_id,
                "last_index": envelope.meta.last_log_id.map(|l| l.index),
                "last_term": envelope.meta.last_log_id.map(|l| l.leader_id.term),
                "voters": membership.voter_ids().collect::<Vec<_>>(),
                "digest": envelope.digest.to_string(),
                "digest_ok": true,
                "nodes": state.nodes().count(),
                "jobs": state.jobs().count(),
                "active_jobs": state.active_job_count(),
                "now_ms": state.now_ms(),
            });
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
                Output::Table => {
                    if let Some(map) = summary.as_object() {
                        for (key, value) in map {
                            println!("{key:<12} {value}");
                        }
                    }
                }
            }
            Ok(())
        }
    }
}
