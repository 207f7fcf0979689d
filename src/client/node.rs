//! `singularity node list`: the registered nodes and their devices.

use super::{block_on, print_json, print_table, ClientOpts, Output};
use clap::{Args, Subcommand};
use singularity_proto::query;
use singularity_scheduler::Node;

/// Inspect nodes.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List registered nodes.
    List {
        #[arg(long)]
        stale: bool,
    },
}

/// Runs `singularity node ...`.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let NodeCommand::List { stale } = args.command;
    let opts = args.opts;
    block_on(async move {
        let reply = opts.client()?.read(query::NODES, 0, stale).await?;
        if opts.output == Output::Json {
            return print_json(&reply.json);
        }
        let nodes: Vec<Node> = serde_json::from_str(&reply.json)?;
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.0.to_string(),
                    n.name.to_string(),
                    n.domain.to_string(),
                    format!("{:?}", n.status),
                    n.devices.len().to_string(),
                    n.free_device_count().to_string(),
                ]
            })
            .collect();
        print_table(
            &["ID", "NAME", "DOMAIN", "STATUS", "DEVICES", "FREE"],
            &rows,
        );
        Ok(())
    })
}
