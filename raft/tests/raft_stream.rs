//! The append-entries stream between replicas, on real replicas over loopback: a follower that
//! crashes and restarts breaks the leader's stream, the leader opens a fresh one and writes go
//! on through it; a malformed or oversized message on the stream is refused with the reason and
//! appends nothing; a peer without the stream RPC (an older replica) is sent unary calls.

mod common;

use common::{submit_jobs, TestCluster, MAX_POLLS, POLL};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, Vote};
use singularity_proto::v1::raft_service_client::RaftServiceClient;
use singularity_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use singularity_proto::v1::raft_stream_reply::Result as StreamResult;
use singularity_proto::v1::{
    RaftPayload, RaftStreamReply, RaftStreamRequest, TimeoutNowReply, TimeoutNowRequest,
};
use singularity_raft::limits::MAX_GRPC_MESSAGE_BYTES;
use singularity_raft::network::service::AppendStreamReplies;
use singularity_raft::network::{Network, RaftGrpc};
use singularity_raft::server::Replica;
use singularity_raft::store::codec;
use singularity_raft::types::{NodeId, TypeConfig};
use singularity_scheduler::Job;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

fn streams_opened(replica: &Replica) -> u64 {
    replica.network.streams_opened.load(Ordering::Relaxed)
}

/// Last log index of every running replica.
fn last_indexes(cluster: &TestCluster) -> BTreeMap<NodeId, Option<u64>> {
    cluster
        .replicas
        .iter()
        .map(|(id, r)| (*id, r.raft.metrics().borrow().last_log_index))
        .collect()
}

/// An append-entries request from a leader of term 0: any replica answers `HigherVote`
/// without appending anything.
fn stale_append() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(0, 99),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_mid_stream_gets_a_fresh_stream_and_writes_go_on() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    let mut acked = submit_jobs(&mut client, "before", 10).await;
    let leader = cluster.wait_leader().await;
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    let (first, second) = (followers[0], followers[1]);
    // The leader replicates to both followers over streams (the slower one may still be
    // opening its stream when the writes above were committed by the faster one).
    let mut opened_before = 0;
    for _ in 0..MAX_POLLS {
        opened_before = streams_opened(&cluster.replicas[&leader]);
        if opened_before >= 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        opened_before >= 2,
        "the leader replicates over streams: {opened_before} opened"
    );

    // The first follower dies under the leader's open stream; the other keeps a quorum.
    cluster.crash(first);
    acked.extend(submit_jobs(&mut client, "one-down", 10).await);
    cluster.restart(first).await;
    // Now stop the other follower: every commit needs the restarted one, which the leader
    // can reach only through a stream opened after the restart.
    cluster.stop(second).await;
    acked.extend(submit_jobs(&mut client, "through-fresh-stream", 10).await);
    assert_eq!(
        cluster.wait_leader().await,
        leader,
        "the leader was not expected to change"
    );
    let leader_replica = &cluster.replicas[&leader];
    assert!(
        streams_opened(leader_replica) > opened_before,
        "a fresh stream was opened to the restarted follower"
    );
    assert!(
        leader_replica
            .network
            .streams_dropped
            .load(Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        leader_replica.network.unary_appends.load(Ordering::Relaxed),
        0,
        "every replica has the stream RPC"
    );

    cluster.restart(second).await;
    cluster.assert_same_digest().await;
    let reply = client
        .read(singularity_proto::query::JOBS, 0, false)
        .await
        .expect("read");
    let present: Vec<Job> = serde_json::from_str(&reply.json).expect("jobs json");
    for job in &acked {
        assert!(
            present.iter().any(|j| j.id == *job),
            "acknowledged {job} is missing"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_or_oversized_stream_messages_are_refused_and_append_nothing() {
    let cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    submit_jobs(&mut client, "before", 3).await;
    cluster.wait_converged().await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let before = last_indexes(&cluster);

    let mut raw = RaftServiceClient::connect(format!("http://{}", cluster.addrs[&follower]))
        .await
        .expect("connect");
    let (requests, queued) = mpsc::channel(4);
    let mut replies: Streaming<RaftStreamReply> = raw
        .append_entries_stream(ReceiverStream::new(queued))
        .await
        .expect("open stream")
        .into_inner();

    // Bytes that are no encoded request: refused, naming what could not be decoded.
    requests
        .send(RaftStreamRequest {
            seq: 7,
            data: vec![1, 0, 0xff, 0xff],
        })
        .await
        .expect("send");
    let reply = replies.message().await.expect("reply").expect("a reply");
    assert_eq!(reply.seq, 7);
    match reply.result {
        Some(StreamResult::Refused(why)) => {
            assert!(why.contains("append-entries stream request"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The stream goes on: a well-formed request of an old leader is answered by Raft.
    requests
        .send(RaftStreamRequest {
            seq: 8,
            data: codec::encode("test request", &stale_append()).expect("encode"),
        })
        .await
        .expect("send");
    let reply = replies.message().await.expect("reply").expect("a reply");
    assert_eq!(reply.seq, 8);
    let Some(StreamResult::Data(data)) = reply.result else {
        panic!("expected Raft's answer, got {:?}", reply.result)
    };
    let answer: Result<
        AppendEntriesResponse<NodeId>,
        openraft::error::RaftError<NodeId, openraft::error::Infallible>,
    > = codec::decode_bounded("test reply", &data, MAX_GRPC_MESSAGE_BYTES).expect("decode");
    assert!(
        matches!(answer, Ok(AppendEntriesResponse::HigherVote(_))),
        "{answer:?}"
    );

    // A message over the size limit ends the stream with an error naming the limit.
    requests
        .send(RaftStreamRequest {
            seq: 9,
            data: vec![0; MAX_GRPC_MESSAGE_BYTES + 1],
        })
        .await
        .expect("send");
    let status = replies.message().await.expect_err("oversized");
    assert!(
        status.message().contains("message length too large")
            || status.message().contains("too large"),
        "{status}"
    );

    assert_eq!(last_indexes(&cluster), before, "nothing was appended");
    cluster.shutdown().await;
}

/// A replica of a version before the stream RPC: unary calls are served by a real replica's
/// service, and the stream is answered as tonic answers an unknown method.
struct OlderReplica(RaftGrpc);

#[tonic::async_trait]
impl RaftService for OlderReplica {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.0.append_entries(request).await
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.0.vote(request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.0.install_snapshot(request).await
    }

    async fn timeout_now(
        &self,
        _request: Request<TimeoutNowRequest>,
    ) -> Result<Response<TimeoutNowReply>, Status> {
        Err(Status::unimplemented("no such method"))
    }

    type AppendEntriesStreamStream = AppendStreamReplies;

    async fn append_entries_stream(
        &self,
        _request: Request<Streaming<RaftStreamRequest>>,
    ) -> Result<Response<AppendStreamReplies>, Status> {
        Err(Status::unimplemented("no such method"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_without_the_stream_rpc_is_sent_unary_append_entries() {
    let cluster = TestCluster::start(1).await;
    let only = cluster.wait_leader().await;
    let raft = cluster.replicas[&only].raft.clone();
    let before = last_indexes(&cluster);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let older_addr = listener.local_addr().expect("addr");
    let (stop, stopping) = watch::channel(false);
    let mut stopped = stopping.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(OlderReplica(RaftGrpc::new(
                raft, stopping,
            ))))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ),
    );

    let mut network = Network::new(99);
    let stats = network.stats();
    let mut peer = network
        .new_client(only, &BasicNode::new(older_addr.to_string()))
        .await;
    for round in 1..=2u64 {
        let answer = peer
            .append_entries(stale_append(), RPCOption::new(Duration::from_secs(5)))
            .await;
        assert!(
            matches!(answer, Ok(AppendEntriesResponse::HigherVote(_))),
            "round {round}: {answer:?}"
        );
        assert_eq!(stats.unary_appends.load(Ordering::Relaxed), round);
    }
    assert_eq!(stats.streams_opened.load(Ordering::Relaxed), 0);
    assert_eq!(last_indexes(&cluster), before, "nothing was appended");

    stop.send_replace(true);
    server.await.expect("join").expect("older server stopped");
    cluster.shutdown().await;
}
