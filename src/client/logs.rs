//! `singularity job logs`: finds the agents through the replicas, asks each for the rank's log
//! and prints what they have; with `--follow`, the agent running the rank now is read last
//! and followed. A thin adapter over `singularity_proto::agents`.

use anyhow::Context;
use singularity_proto::agents::{list_agents, read_logs};
use singularity_proto::client::Client;
use singularity_proto::query;
use singularity_proto::v1::ReadLogsRequest;
use singularity_scheduler::{Job, Node};
use std::io::Write;

/// The name of the node where `rank` of `job` runs now, if it runs.
async fn current_node(client: &mut Client, job: &Job, rank: u32) -> anyhow::Result<Option<String>> {
    let Some(device) = job.rank_device(rank) else {
        return Ok(None);
    };
    let nodes: Vec<Node> = serde_json::from_str(&client.read(query::NODES, 0, false).await?.json)
        .context("decoding the node list")?;
    Ok(nodes
        .into_iter()
        .find(|n| n.id == device.node)
        .map(|n| n.name.to_string()))
}

/// Prints rank `rank` of job `id`'s output from every agent that has it.
pub async fn print_logs(
    client: &mut Client,
    endpoints: &[String],
    id: u64,
    rank: u32,
    follow: bool,
    stderr: bool,
) -> anyhow::Result<()> {
    let job: Job = serde_json::from_str(&client.read(query::JOB, id, false).await?.json)
        .context("decoding the job")?;
    if rank >= job.spec.world_size {
        anyhow::bail!(
            "job {id} has ranks 0 to {}; --rank {rank} does not exist",
            job.spec.world_size - 1
        );
    }
    let agents = list_agents(endpoints).await?;
    if agents.is_empty() {
        anyhow::bail!(
            "no node agent is known to the replicas at {}; start agents (singularity agent) or \
             check --endpoints",
            endpoints.join(",")
        );
    }
    let running_on = if follow {
        current_node(client, &job, rank).await?
    } else {
        None
    };
    // The node running the rank now goes last, so following it ends the output.
    let mut order: Vec<_> = agents.values().collect();
    order.sort_by_key(|a| (Some(&a.node) == running_on.as_ref(), a.node.clone()));
    let mut found = 0;
    let stdout = std::io::stdout();
    for agent in order {
        let follow_here = follow && Some(&agent.node) == running_on.as_ref();
        let request = ReadLogsRequest {
            job_id: id,
            rank,
            stderr,
            follow: follow_here,
        };
        let mut stream = match read_logs(&agent.addr, request).await {
            Ok(Some(stream)) => stream,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("warning: node {} ({}): {e}", agent.node, agent.addr);
                continue;
            }
        };
        found += 1;
        if agents.len() > 1 {
            eprintln!("==> job {id} rank {rank} on node {} <==", agent.node);
        }
        while let Some(chunk) = stream
            .message()
            .await
            .with_context(|| format!("reading logs from node {}", agent.node))?
        {
            let mut out = stdout.lock();
            out.write_all(&chunk.data)?;
            out.flush()?;
        }
    }
    if found == 0 {
        anyhow::bail!(
            "no agent has logs of job {id} rank {rank} (asked {}); it may not have started yet \
             ({:?})",
            agents.keys().cloned().collect::<Vec<_>>().join(", "),
            job.phase
        );
    }
    Ok(())
}
