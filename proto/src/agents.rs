//! Finding node agents and reading their ranks' logs: `list_agents` asks every given replica
//! which agents watch through it (replicas remember only their own watchers, so the union is
//! the fleet), and `read_logs` opens an agent's log stream.
//!
//! It must not retry or interpret logs: callers decide what to print.

use crate::channel::{channel, streaming_channel};
use crate::error::ClientError;
use crate::limits::CLIENT_RPC_TIMEOUT_MS;
use crate::v1::agent_client::AgentClient;
use crate::v1::node_service_client::NodeServiceClient;
use crate::v1::{AgentInfo, ListAgentsRequest, LogChunk, ReadLogsRequest};
use std::collections::BTreeMap;
use std::time::Duration;

fn rpc_error(endpoint: &str, status: tonic::Status) -> ClientError {
    ClientError::Rpc {
        endpoint: endpoint.to_string(),
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
    }
}

/// The agents known to any of `endpoints`, by node name (the most recently seen address
/// wins). Replicas that do not answer are skipped; an error only if none answers.
pub async fn list_agents(endpoints: &[String]) -> Result<BTreeMap<String, AgentInfo>, ClientError> {
    let mut agents: BTreeMap<String, AgentInfo> = BTreeMap::new();
    let mut last_error = None;
    let mut answered = false;
    for endpoint in endpoints {
        let channel = channel(endpoint, Duration::from_millis(CLIENT_RPC_TIMEOUT_MS))
            .map_err(|e| ClientError::Transport(format!("{endpoint}: {e}")))?;
        match NodeServiceClient::new(channel)
            .list_agents(ListAgentsRequest {})
            .await
        {
            Ok(reply) => {
                answered = true;
                for agent in reply.into_inner().agents {
                    let newer = agents
                        .get(&agent.node)
                        .map_or(true, |known| known.last_seen_ms < agent.last_seen_ms);
                    if newer {
                        agents.insert(agent.node.clone(), agent);
                    }
                }
            }
            Err(status) => last_error = Some(rpc_error(endpoint, status)),
        }
    }
    match (answered, last_error) {
        (false, Some(error)) => Err(error),
        _ => Ok(agents),
    }
}

/// Opens the log stream of one rank of a job on the agent at `addr`. `Ok(None)` when that
/// agent has no such log.
pub async fn read_logs(
    addr: &str,
    request: ReadLogsRequest,
) -> Result<Option<tonic::Streaming<LogChunk>>, ClientError> {
    let channel =
        streaming_channel(addr).map_err(|e| ClientError::Transport(format!("{addr}: {e}")))?;
    match AgentClient::new(channel).read_logs(request).await {
        Ok(stream) => Ok(Some(stream.into_inner())),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(rpc_error(addr, status)),
    }
}
