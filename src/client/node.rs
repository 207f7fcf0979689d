//! `singularity node list|drain|undrain`: the registered nodes and their devices, and taking a
//! node out of service (its jobs are moved away by the leader's scheduler) or back in.

use super::{block_on, print_json, print_table, report_write, ClientOpts, Output};
use clap::{Args, Subcommand};
use singularity_proto::query;
use singularity_scheduler::{Command, Node, NodeName};

/// Inspect nodes, drain them and return them to service.
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
        /// Read this replica's state without confirming leadership (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Take a node out of service: nothing new is placed on it, and the scheduler migrates its
    /// jobs elsewhere (or preempts them to resume later from their checkpoint).
    Drain {
        /// The node's name, as `node list` shows it.
        name: String,
    },
    /// Return a drained node to service.
    Undrain {
        /// The node's name, as `node list` shows it.
        name: String,
    },
}

/// Runs `singularity node ...`.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    let (name, draining) = match args.command {
        NodeCommand::List { stale } => return list(opts, stale),
        NodeCommand::Drain { name } => (name, true),
        NodeCommand::Undrain { name } => (name, false),
    };
    let name = NodeName::new(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(async move {
        let result = opts
            .client()?
            .write(Command::SetNodeDraining { name, draining })
            .await?;
        report_write(&result, opts.output)
    })
}

fn list(opts: ClientOpts, stale: bool) -> anyhow::Result<()> {
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
