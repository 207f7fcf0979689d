//! `singularity operator`: Raft membership and status, snapshots, and the decoded log. Each
//! subcommand is a thin adapter over `singularity_raft`'s client or, offline, its stores.

pub mod log;
pub mod raft;
pub mod snapshot;

use crate::client::ClientOpts;
use clap::{Args, Subcommand};

/// Operate the control plane.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: OperatorCommand,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Raft group status and membership.
    Raft(raft::RaftArgs),
    /// Save or inspect snapshots of the scheduler state.
    Snapshot(snapshot::SnapshotArgs),
    /// Print decoded log entries.
    Log(log::LogArgs),
}

/// Runs `singularity operator ...`.
pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        OperatorCommand::Raft(raft) => raft::run(raft, args.opts),
        OperatorCommand::Snapshot(snapshot) => snapshot::run(snapshot, args.opts),
        OperatorCommand::Log(log) => log::run(log, args.opts),
    }
}
