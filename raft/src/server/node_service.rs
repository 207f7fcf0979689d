//! The `NodeService` gRPC service node agents use: `WatchNode` streams one node's `NodeView`
//! of the applied state whenever it changes (and as a keep-alive), never from a state older
//! than the index the agent last saw, so an agent that reconnects to another replica does not
//! go back in time; `ListAgents` names the agents watching through this replica and where
//! they serve their logs.
//!
//! It only reads: it must never propose or change the replicated state. The agent directory
//! is this replica's memory, not replicated state, and is bounded.

use crate::store::StateMachineStore;
use crate::types::Raft;
use singularity_proto::v1::node_service_server::NodeService;
use singularity_proto::v1::*;
use singularity_scheduler::NodeName;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// Agents remembered by one replica's directory.
pub const MAX_AGENTS_TRACKED: usize = 10_000;
/// Watches one replica serves at once.
pub const MAX_WATCHES_PER_REPLICA: usize = 10_000;
/// A watch sends its view at least this often, changed or not, so agents notice a dead stream.
pub const WATCH_KEEPALIVE_MS: u64 = 2_000;
/// Pause after each applied change before the next view is computed: bursts of entries
/// become one view.
pub const WATCH_MIN_INTERVAL_MS: u64 = 2;

/// The node-agent API of one replica.
#[derive(Clone)]
pub struct NodeServiceImpl {
    raft: Raft,
    sm: StateMachineStore,
    agents: Arc<Mutex<BTreeMap<String, AgentInfo>>>,
    watches: Arc<AtomicUsize>,
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Decrements the open-watch count when a watch ends, however it ends.
struct WatchSlot(Arc<AtomicUsize>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl NodeServiceImpl {
    pub fn new(raft: Raft, sm: StateMachineStore) -> Self {
        NodeServiceImpl {
            raft,
            sm,
            agents: Arc::default(),
            watches: Arc::default(),
        }
    }

    fn remember_agent(&self, node: &str, addr: &str) {
        if addr.is_empty() {
            return;
        }
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if !agents.contains_key(node) && agents.len() >= MAX_AGENTS_TRACKED {
            // Forget the agent heard from longest ago.
            if let Some(oldest) = agents
                .iter()
                .min_by_key(|(_, a)| a.last_seen_ms)
                .map(|(name, _)| name.clone())
            {
                agents.remove(&oldest);
            }
        }
        agents.insert(
            node.to_string(),
            AgentInfo {
                node: node.to_string(),
                addr: addr.to_string(),
                last_seen_ms: wall_clock_ms(),
            },
        );
    }

    /// The view of `node` as JSON (empty when not registered) and the applied index it is at.
    fn current_view(&self, node: &NodeName) -> Result<(u64, String), Status> {
        let applied = self.sm.read();
        let index = applied.last_applied.map_or(0, |id| id.index);
        let json = match applied.state.node_view(node) {
            None => String::new(),
            Some(view) => {
                serde_json::to_string(&view).map_err(|e| Status::internal(e.to_string()))?
            }
        };
        Ok((index, json))
    }
}

type ViewStream = Pin<Box<dyn futures::Stream<Item = Result<NodeViewUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeServiceImpl {
    type WatchNodeStream = ViewStream;

    async fn watch_node(
        &self,
        request: Request<WatchNodeRequest>,
    ) -> Result<Response<Self::WatchNodeStream>, Status> {
        let request = request.into_inner();
        let node = NodeName::new(request.node.clone())
            .map_err(|e| Status::invalid_argument(format!("node: {e}")))?;
        if request.agent_addr.len() > 256 {
            return Err(Status::invalid_argument(
                "agent_addr is longer than 256 bytes; give host:port",
            ));
        }
        if self.watches.fetch_add(1, Ordering::SeqCst) >= MAX_WATCHES_PER_REPLICA {
            self.watches.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(format!(
                "this replica serves {MAX_WATCHES_PER_REPLICA} watches already; use another replica"
            )));
        }
        let slot = WatchSlot(self.watches.clone());
        self.remember_agent(node.as_str(), &request.agent_addr);
        let (tx, rx) = mpsc::channel::<Result<NodeViewUpdate, Status>>(4);
        let service = self.clone();
        let min_index = request.min_applied_index;
        let agent_addr = request.agent_addr;
        tokio::spawn(async move {
            let _slot = slot;
            let mut metrics = service.raft.metrics();
            let mut last_sent: Option<String> = None;
            let mut last_sent_at = Instant::now();
            let keepalive = Duration::from_millis(WATCH_KEEPALIVE_MS);
            loop {
                let (index, json) = match service.current_view(&node) {
                    Ok(view) => view,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let due = last_sent.as_deref() != Some(json.as_str())
                    || last_sent_at.elapsed() >= keepalive;
                if index >= min_index && due {
                    let update = NodeViewUpdate {
                        applied_index: index,
                        view_json: json.clone(),
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    service.remember_agent(node.as_str(), &agent_addr);
                    last_sent = Some(json);
                    last_sent_at = Instant::now();
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(keepalive) => {}
                    _ = tx.closed() => return,
                }
                // Coalesce bursts of applied entries into one view.
                tokio::time::sleep(Duration::from_millis(WATCH_MIN_INTERVAL_MS)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Response::new(ListAgentsReply {
            agents: agents.values().cloned().collect(),
        }))
    }
}
