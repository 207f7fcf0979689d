//! The append-entries link between replicas, on real replicas over loopback: a follower that
//! crashes and restarts breaks the leader's link, the leader opens a fresh one and writes go
//! on through it; a malformed or oversized frame on the link is refused with the reason and
//! appends nothing; a peer without the link (an older replica, gRPC only) is sent unary calls.

mod common;

use common::{submit_jobs, TestCluster, MAX_POLLS, POLL};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, Vote};
use singularity_proto::v1::raft_service_server::RaftServiceServer;
use singularity_raft::limits::MAX_GRPC_MESSAGE_BYTES;
use singularity_raft::network::frame::{self, LinkAnswer, LinkRequest, PREFACE};
use singularity_raft::network::{Network, RaftGrpc};
use singularity_raft::server::Replica;
use singularity_raft::store::codec;
use singularity_raft::types::{NodeId, TypeConfig};
use singularity_scheduler::Job;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn links_opened(replica: &Replica) -> u64 {
    replica.network.links_opened.load(Ordering::Relaxed)
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
async fn a_follower_restarted_mid_link_gets_a_fresh_link_and_writes_go_on() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    let mut acked = submit_jobs(&mut client, "before", 10).await;
    let leader = cluster.wait_leader().await;
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    let (first, second) = (followers[0], followers[1]);
    // The leader replicates to both followers over links (the slower one may still be
    // opening its link when the writes above were committed by the faster one).
    let mut opened_before = 0;
    for _ in 0..MAX_POLLS {
        opened_before = links_opened(&cluster.replicas[&leader]);
        if opened_before >= 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        opened_before >= 2,
        "the leader replicates over links: {opened_before} opened"
    );

    // The first follower dies under the leader's open link; the other keeps a quorum.
    cluster.crash(first);
    acked.extend(submit_jobs(&mut client, "one-down", 10).await);
    cluster.restart(first).await;
    // Now stop the other follower: every commit needs the restarted one, which the leader
    // can reach only through a link opened after the restart.
    cluster.stop(second).await;
    acked.extend(submit_jobs(&mut client, "through-fresh-link", 10).await);
    assert_eq!(
        cluster.wait_leader().await,
        leader,
        "the leader was not expected to change"
    );
    let leader_replica = &cluster.replicas[&leader];
    assert!(
        links_opened(leader_replica) > opened_before,
        "a fresh link was opened to the restarted follower"
    );
    assert!(leader_replica.network.links_dropped.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        leader_replica.network.unary_appends.load(Ordering::Relaxed),
        0,
        "every replica serves links"
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

/// An open link to `addr`, after the preface exchange.
async fn open_link(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let mut link = BufReader::new(socket);
    link.write_all(PREFACE).await.expect("send the preface");
    let mut echoed = [0u8; PREFACE.len()];
    link.read_exact(&mut echoed)
        .await
        .expect("the preface echoed");
    assert_eq!(&echoed, PREFACE);
    link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_or_oversized_link_frames_are_refused_and_append_nothing() {
    let cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    submit_jobs(&mut client, "before", 3).await;
    cluster.wait_converged().await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let before = last_indexes(&cluster);
    let mut link = open_link(cluster.addrs[&follower]).await;

    // Bytes that are no encoded request: refused, naming what could not be decoded.
    let garbage = LinkRequest {
        seq: 7,
        data: vec![1, 0, 0xff, 0xff],
    };
    frame::write_request(&mut link, &garbage)
        .await
        .expect("send");
    let reply = frame::read_reply(&mut link)
        .await
        .expect("reply")
        .expect("a reply");
    assert_eq!(reply.seq, 7);
    match reply.answer {
        LinkAnswer::Refused(why) => assert!(why.contains("append-entries link request"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The link goes on: a well-formed request of an old leader is answered by Raft.
    let stale = LinkRequest {
        seq: 8,
        data: codec::encode("test request", &stale_append()).expect("encode"),
    };
    frame::write_request(&mut link, &stale).await.expect("send");
    let reply = frame::read_reply(&mut link)
        .await
        .expect("reply")
        .expect("a reply");
    assert_eq!(reply.seq, 8);
    let LinkAnswer::Result(data) = reply.answer else {
        panic!("expected Raft's answer, got {:?}", reply.answer)
    };
    let answer: Result<
        AppendEntriesResponse<NodeId>,
        openraft::error::RaftError<NodeId, openraft::error::Infallible>,
    > = codec::decode_bounded("test reply", &data, MAX_GRPC_MESSAGE_BYTES).expect("decode");
    assert!(
        matches!(answer, Ok(AppendEntriesResponse::HigherVote(_))),
        "{answer:?}"
    );

    // A frame announcing a body over the limit is refused, naming the limit, and the link
    // closes (its body cannot be skipped).
    let oversized = ((frame::MAX_FRAME_BODY_BYTES + 1) as u32).to_be_bytes();
    link.write_all(&oversized).await.expect("send");
    let reply = frame::read_reply(&mut link)
        .await
        .expect("reply")
        .expect("a reply");
    match reply.answer {
        LinkAnswer::Refused(why) => assert!(why.contains("limit"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        frame::read_reply(&mut link)
            .await
            .expect("a clean end")
            .is_none(),
        "the follower closes the link"
    );

    // A connection that starts like a link but sends another preface is closed.
    let mut wrong = TcpStream::connect(cluster.addrs[&follower])
        .await
        .expect("connect");
    let mut preface = *PREFACE;
    preface[PREFACE.len() - 5] = b'9';
    wrong.write_all(&preface).await.expect("send");
    let mut rest = Vec::new();
    let read = wrong.read_to_end(&mut rest).await;
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed without an answer: {read:?} {rest:?}"
    );

    // gRPC on the same port is unaffected.
    submit_jobs(&mut client, "after", 1).await;
    // openraft publishes the leader's last index after it answers: wait for it, bounded.
    let mut after = last_indexes(&cluster);
    for _ in 0..MAX_POLLS {
        if after[&leader] > before[&leader] {
            break;
        }
        tokio::time::sleep(POLL).await;
        after = last_indexes(&cluster);
    }
    assert!(
        after[&leader] > before[&leader],
        "a client write still commits through the same port"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_without_the_link_is_sent_unary_append_entries() {
    let cluster = TestCluster::start(1).await;
    let only = cluster.wait_leader().await;
    let raft = cluster.replicas[&only].raft.clone();
    let before = last_indexes(&cluster);

    // A replica of a version before the link: only its gRPC server listens on the port.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let older_addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(RaftGrpc::new(raft)))
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
    assert_eq!(stats.links_opened.load(Ordering::Relaxed), 0);
    assert_eq!(last_indexes(&cluster), before, "nothing was appended");

    stop.send_replace(true);
    server.await.expect("join").expect("older server stopped");
    cluster.shutdown().await;
}
