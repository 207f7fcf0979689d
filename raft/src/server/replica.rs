//! `Replica`: one running control-plane replica. Start-up opens (and checks the identity of)
//! the data dir, starts openraft on the RocksDB stores, serves the Raft and Control gRPC
//! services and the metrics endpoint, and bootstraps a new cluster from `initial_cluster`
//! (safe to do on every member: only an empty replica initializes). Shutdown stops serving and
//! stops openraft so the data dir can be reopened. It must not hold scheduling logic.

use super::config::ServerConfig;
use super::control::{ApiStats, ControlService};
use super::liveness::NodeLiveness;
use super::metrics::{self, MetricsSources};
use super::node_service::NodeServiceImpl;
use super::scheduling::SchedulingLoop;
use super::transfer::ProposalGate;
use crate::error::RaftError;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::network::{route_connections, Network, NetworkStats, RaftGrpc};
use crate::store::{DataDirIdentity, Db, LogStore, StateMachineStore};
use crate::types::Raft;
use openraft::BasicNode;
use singularity_proto::v1::control_server::ControlServer;
use singularity_proto::v1::node_service_server::NodeServiceServer;
use singularity_proto::v1::raft_service_server::RaftServiceServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// A running replica.
pub struct Replica {
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub log: LogStore,
    pub config: ServerConfig,
    /// Counters of this replica's outgoing append-entries links.
    pub network: Arc<NetworkStats>,
    /// The address the gRPC server is bound to.
    pub addr: SocketAddr,
    /// Set to `true` to stop serving: the server shuts down and open append-entries links end.
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Accepts connections: serves append-entries links, hands the rest to `server`.
    router: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    scheduling: Option<SchedulingLoop>,
}

impl Replica {
    /// Binds `config.listen_addr` and starts.
    pub async fn start(config: ServerConfig) -> Result<Replica, RaftError> {
        let listener = TcpListener::bind(config.listen_addr).await.map_err(|e| {
            RaftError::Config(format!("cannot listen on {}: {e}", config.listen_addr))
        })?;
        Replica::start_on(config, listener).await
    }

    /// Starts on an already bound listener (tests bind port 0 first).
    pub async fn start_on(
        config: ServerConfig,
        listener: TcpListener,
    ) -> Result<Replica, RaftError> {
        let raft_config = config.raft_config()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let identity = DataDirIdentity {
            cluster: config.cluster.clone(),
            node_id: config.node_id,
        };
        let db = Db::open_for(&config.data_dir, &identity)?;
        let log = LogStore::new(db.clone())?;
        if log
            .forget_own_leadership(config.node_id)
            .map_err(|e| RaftError::Raft(format!("reading the stored vote: {e}")))?
        {
            tracing::info!(
                "led before it stopped: it campaigns for a newer term instead of resuming"
            );
        }
        let sm = StateMachineStore::open(db)?;
        let network = Network::new(config.node_id);
        let network_stats = network.stats();
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))?;

        let api = Arc::new(ApiStats::default());
        // Closed only while this replica hands its leadership over (`operator raft
        // transfer-leader`): client writes, linearizable reads and plans wait at it.
        let gate = ProposalGate::default();
        // Node heartbeats this replica heard while leading (not logged).
        let liveness = NodeLiveness::default();
        let control = ControlService::new(
            raft.clone(),
            sm.clone(),
            log.clone(),
            api.clone(),
            gate.clone(),
            liveness.clone(),
        );
        let addr = listener.local_addr()?;
        let (stop, stopping) = watch::channel(false);
        // Append-entries links are served apart from gRPC, on the same port.
        let (grpc_connections, router) =
            route_connections(listener, raft.clone(), stopping.clone());
        let incoming = ReceiverStream::new(grpc_connections);
        let mut stopped = stopping.clone();
        let server = tonic::transport::Server::builder()
            .add_service(
                RaftServiceServer::new(RaftGrpc::new(raft.clone()))
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(
                ControlServer::new(control)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(NodeServiceServer::new(NodeServiceImpl::new(
                raft.clone(),
                sm.clone(),
            )))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
        let server = tokio::spawn(server);

        let metrics = match config.metrics_addr {
            None => None,
            Some(metrics_addr) => {
                let listener = TcpListener::bind(metrics_addr).await.map_err(|e| {
                    RaftError::Config(format!("cannot serve metrics on {metrics_addr}: {e}"))
                })?;
                let sources = MetricsSources {
                    raft: raft.clone(),
                    log: log.clone(),
                    sm: sm.clone(),
                    api,
                    network: network_stats.clone(),
                };
                Some(tokio::spawn(metrics::serve(listener, sources)))
            }
        };

        let scheduling = SchedulingLoop::spawn(
            raft.clone(),
            sm.clone(),
            config.node_id,
            config.scheduling.clone(),
            gate,
            liveness,
        );
        let replica = Replica {
            raft,
            sm,
            log,
            config,
            network: network_stats,
            addr,
            stop,
            server,
            router,
            metrics,
            scheduling: Some(scheduling),
        };
        replica.bootstrap().await?;
        tracing::info!(node = replica.config.node_id, addr = %replica.addr, "replica started");
        Ok(replica)
    }

    /// Initializes a new cluster from `initial_cluster` if this replica has never been part of one.
    async fn bootstrap(&self) -> Result<(), RaftError> {
        if self.config.initial_cluster.is_empty() {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = self
            .config
            .initial_cluster
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(RaftError::Raft(format!(
                "cannot initialize the cluster: {e}"
            ))),
        }
    }

    /// Stops serving and stops openraft; the data dir is closed once this returns and all
    /// in-flight requests have ended.
    pub async fn shutdown(mut self) -> Result<(), RaftError> {
        if let Some(scheduling) = self.scheduling.take() {
            scheduling.stop().await;
        }
        self.stop.send_replace(true);
        if let Some(metrics) = self.metrics.take() {
            metrics.abort();
        }
        let raft_result = self.raft.shutdown().await;
        let _ = (&mut self.router).await;
        let _ = (&mut self.server).await;
        raft_result.map_err(|e| RaftError::Raft(format!("openraft did not stop cleanly: {e}")))
    }

    /// Stops without waiting for anything: the nearest an in-process test gets to a crash.
    pub fn abort(self) {
        // Open append-entries links end too (they outlive the aborted router task).
        self.stop.send_replace(true);
        if let Some(scheduling) = &self.scheduling {
            scheduling.abort();
        }
        if let Some(metrics) = &self.metrics {
            metrics.abort();
        }
        self.router.abort();
        self.server.abort();
        let raft = self.raft.clone();
        tokio::spawn(async move {
            let _ = raft.shutdown().await;
        });
    }
}
