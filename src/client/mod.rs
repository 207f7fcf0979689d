//! The client subcommands (`job`, `node`, `cluster`): shared flags (`--endpoints`, also from
//! `SINGULARITY_ENDPOINTS`, and `--output table|json`), and printing. Each subcommand is a thin
//! adapter over `singularity_raft::client::Client`; no cluster logic lives here.

pub mod cluster;
pub mod job;
pub mod logs;
pub mod node;

use anyhow::Context;
use clap::{Args, ValueEnum};
use singularity_raft::client::{Client, WriteResult};
use singularity_scheduler::Outcome;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// Flags every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Replicas to talk to (`HOST:PORT,...`); writes find the leader from any of them.
    #[arg(
        long,
        global = true,
        env = "SINGULARITY_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7070"
    )]
    pub endpoints: Vec<String>,
    /// table for people, json for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl ClientOpts {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.endpoints.clone())?)
    }
}

/// Runs `work` on a fresh single-purpose runtime.
pub fn block_on<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
}

/// Prints a JSON document, pretty.
pub fn print_json(json: &str) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_str(json).context("reply is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Prints a write's result; a rejection is an error naming the reason.
pub fn report_write(result: &WriteResult, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "log_index": result.log_index,
                "outcome": result.outcome,
            }))?
        ),
        Output::Table => match &result.outcome {
            Outcome::Accepted(effect) => {
                println!("accepted at index {}: {effect:?}", result.log_index)
            }
            Outcome::Duplicate(effect) => println!("already applied (retry): {effect:?}"),
            Outcome::Rejected(_) => {}
        },
    }
    if let Outcome::Rejected(reason) = &result.outcome {
        anyhow::bail!("rejected: {reason}");
    }
    Ok(())
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
