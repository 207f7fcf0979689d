//! `singularity operator raft status|add-learner|change-membership|transfer-leader`. Status
//! asks every endpoint for its own view (members, leader, term, commit and applied index, lag);
//! membership changes and leadership transfers go to the leader.

use crate::client::{block_on, print_table, ClientOpts, Output};
use clap::{Args, Subcommand};
use singularity_raft::server::{RaftStatus, TransferOutcome};

#[derive(Debug, Args)]
pub struct RaftArgs {
    #[command(subcommand)]
    pub command: RaftCommand,
}

#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// Every endpoint's view of the group.
    Status,
    /// Add a replica as a learner (it receives the log but does not vote).
    AddLearner {
        #[arg(long)]
        node_id: u64,
        /// Its advertised `HOST:PORT`.
        #[arg(long)]
        addr: String,
    },
    /// Set the voters (e.g. grow 3 to 5 after adding learners, or shrink back).
    ChangeMembership {
        /// Voter ids, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        voters: Vec<u64>,
        /// Keep removed voters as learners.
        #[arg(long)]
        retain: bool,
    },
    /// Hand leadership to another voter (before restarting the leader's machine, say).
    /// Proposals pause for a few hundred milliseconds; no election timeout is waited out.
    TransferLeader {
        /// The voter that should lead.
        #[arg(long = "to", value_name = "NODE_ID")]
        to: u64,
    },
}

/// Runs `singularity operator raft ...`.
pub fn run(args: RaftArgs, opts: ClientOpts) -> anyhow::Result<()> {
    block_on(async move {
        let mut client = opts.client()?;
        match args.command {
            RaftCommand::Status => {
                let mut statuses = Vec::new();
                for endpoint in opts.endpoints.clone() {
                    match client.status_of(&endpoint).await {
                        Ok(json) => statuses
                            .push((endpoint, Ok(serde_json::from_str::<RaftStatus>(&json)?))),
                        Err(e) => statuses.push((endpoint, Err(e.to_string()))),
                    }
                }
                print_statuses(&statuses, opts.output)
            }
            RaftCommand::AddLearner { node_id, addr } => {
                let log_id = client.add_learner(node_id, &addr).await?;
                println!("learner {node_id} at {addr} added (log id {log_id})");
                Ok(())
            }
            RaftCommand::ChangeMembership { voters, retain } => {
                let log_id = client.change_membership(voters.clone(), retain).await?;
                println!("voters are now {voters:?} (log id {log_id})");
                Ok(())
            }
            RaftCommand::TransferLeader { to } => {
                let json = client.transfer_leader(to).await?;
                let outcome: TransferOutcome = serde_json::from_str(&json)?;
                if opts.output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&outcome)?);
                } else if outcome.from == outcome.to {
                    println!("node {} already leads (term {})", outcome.to, outcome.term);
                } else {
                    println!(
                        "node {} leads now (term {}), after node {}; proposals paused {} ms",
                        outcome.to, outcome.term, outcome.from, outcome.paused_ms
                    );
                }
                Ok(())
            }
        }
    })
}

fn opt(value: Option<u64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_statuses(
    statuses: &[(String, Result<RaftStatus, String>)],
    output: Output,
) -> anyhow::Result<()> {
    if output == Output::Json {
        let values: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(endpoint, s)| match s {
                Ok(status) => serde_json::json!({"endpoint": endpoint, "status": status}),
                Err(e) => serde_json::json!({"endpoint": endpoint, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|(endpoint, s)| match s {
            Ok(s) => vec![
                endpoint.clone(),
                s.id.to_string(),
                s.state.clone(),
                opt(s.leader),
                s.term.to_string(),
                opt(s.last_log_index),
                opt(s.committed_index),
                opt(s.applied_index),
                s.digest.chars().take(16).collect(),
            ],
            Err(e) => vec![endpoint.clone(), "-".into(), format!("unreachable: {e}")],
        })
        .map(|mut row| {
            row.resize(9, String::new());
            row
        })
        .collect();
    print_table(
        &[
            "ENDPOINT", "ID", "STATE", "LEADER", "TERM", "LAST", "COMMIT", "APPLIED", "DIGEST",
        ],
        &rows,
    );
    if let Some((_, Ok(leader))) = statuses
        .iter()
        .find(|(_, s)| matches!(s, Ok(s) if s.leader == Some(s.id)))
    {
        let rows: Vec<Vec<String>> = leader
            .members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    if m.voter { "voter" } else { "learner" }.to_string(),
                    opt(m.matched_index),
                    opt(m.lag),
                ]
            })
            .collect();
        println!();
        print_table(&["MEMBER", "ADDR", "ROLE", "MATCHED", "LAG"], &rows);
    }
    Ok(())
}
