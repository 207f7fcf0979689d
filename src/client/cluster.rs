//! `singularity cluster status`: the scheduler state's summary (read linearizably from the
//! leader unless `--stale`) and the Raft status of every endpoint.

use super::{block_on, print_json, ClientOpts, Output};
use clap::{Args, Subcommand};
use singularity_proto::query;

/// Inspect the cluster.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Summary of the scheduler state.
    Status {
        /// Read this replica's state without confirming leadership (may be stale).
        #[arg(long)]
        stale: bool,
    },
}

/// Runs `singularity cluster ...`.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let ClusterCommand::Status { stale } = args.command;
    let opts = args.opts;
    block_on(async move {
        let reply = opts.client()?.read(query::CLUSTER, 0, stale).await?;
        match opts.output {
            Output::Json => print_json(&reply.json),
            Output::Table => {
                let value: serde_json::Value = serde_json::from_str(&reply.json)?;
                if let Some(map) = value.as_object() {
                    for (key, value) in map {
                        println!("{key:<14} {value}");
                    }
                }
                Ok(())
            }
        }
    })
}
