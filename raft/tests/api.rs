//! The client API against a real 3-replica cluster: exactly-once retries, bad input refused
//! with InvalidArgument before anything is proposed, a follower naming the leader, stale
//! versus linearizable reads, and node heartbeats answered by the leader without a log entry.

mod common;

use common::{spec, submit, TestCluster};
use singularity_proto::query;
use singularity_proto::v1::control_client::ControlClient;
use singularity_proto::v1::{NodeHeartbeatRequest, WriteRequest};
use singularity_proto::{ClientError, LEADER_HEADER};
use singularity_raft::client::Client;
use singularity_scheduler::{
    ClientId, Command, DeviceHealth, DeviceKind, DeviceSpec, Effect, Entry, JobId, LocalityDomain,
    NodeName, Outcome,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_is_exactly_once_refuses_bad_input_and_follows_the_leader() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");

    // Writes sent to a follower reach the leader.
    let mut client = Client::new(vec![cluster.addrs[&follower].to_string()]).expect("client");
    let first = client.write(submit("once")).await.expect("write");
    let Outcome::Accepted(Effect::JobSubmitted { job }) = first.outcome else {
        panic!("{:?}", first.outcome)
    };

    // A retry with the same client id and sequence takes effect once.
    let entry = Entry::from_client(client.client_id(), 1, submit("once"));
    let retry = client.write_entry(&entry).await.expect("retry");
    assert_eq!(
        retry.outcome,
        Outcome::Duplicate(Effect::JobSubmitted { job })
    );

    // An invalid spec is refused before it is proposed.
    let mut bad = spec("bad");
    bad.world_size = 0;
    let last_before = cluster.replicas[&leader]
        .raft
        .metrics()
        .borrow()
        .last_log_index;
    let error = client
        .write(Command::SubmitJob { spec: bad })
        .await
        .expect_err("invalid");
    match &error {
        ClientError::Rpc { code, message, .. } => {
            assert_eq!(code, "InvalidArgument");
            assert!(message.contains("world_size"), "{message}");
        }
        other => panic!("{other}"),
    }

    // Malformed bytes get InvalidArgument naming the problem.
    let mut raw = ControlClient::connect(format!("http://{}", cluster.addrs[&leader]))
        .await
        .expect("connect");
    let status = raw
        .write(WriteRequest {
            entry: vec![1, 0, 0xff, 0xff],
        })
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("entry"), "{}", status.message());
    // A write without a client id is refused.
    let anonymous = Entry::new(None, 0, Command::CancelJob { job: JobId(1) })
        .encode()
        .expect("encode");
    let status = raw
        .write(WriteRequest { entry: anonymous })
        .await
        .expect_err("anonymous");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let last_after = cluster.replicas[&leader]
        .raft
        .metrics()
        .borrow()
        .last_log_index;
    assert_eq!(last_before, last_after, "bad input reached the log");

    // Reads: linearizable through any replica, stale from the replica asked.
    let reply = client.read(query::JOB, job.0, false).await.expect("read");
    assert!(reply.json.contains("\"once\""));
    let stale = client.read(query::JOBS, 0, true).await.expect("stale read");
    assert!(stale.applied_index > 0);

    // A metadata compare-and-set with a wrong version is rejected and changes nothing.
    let other = Client::new(vec![cluster.addrs[&leader].to_string()])
        .expect("client")
        .with_session(ClientId(7), 1);
    let mut other = other;
    let cas = other
        .write(Command::UpdateJobMetadata {
            job,
            expected_version: Some(999),
            set: [("k".to_string(), "v".to_string())].into_iter().collect(),
            remove: vec![],
        })
        .await
        .expect("cas write");
    assert!(cas.outcome.rejection().is_some(), "{:?}", cas.outcome);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_heartbeats_are_answered_by_the_leader_and_append_nothing() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let mut client = Client::new(vec![cluster.addrs[&follower].to_string()]).expect("client");
    let register = Command::RegisterNode {
        name: NodeName::new("gpu-0").unwrap(),
        domain: LocalityDomain::new("rack-1").unwrap(),
        devices: vec![DeviceSpec {
            kind: DeviceKind::new("h100").unwrap(),
            memory_bytes: 80 << 30,
            uuid: String::new(),
            health: DeviceHealth::Healthy,
        }],
    };
    let registered = client.write(register).await.expect("register");
    assert!(
        registered.outcome.rejection().is_none(),
        "{:?}",
        registered.outcome
    );
    let last_log_index = || {
        cluster.replicas[&leader]
            .raft
            .metrics()
            .borrow()
            .last_log_index
    };
    let before = last_log_index();

    // Sent to a follower, a heartbeat reaches the leader and says how the node stands there.
    assert_eq!(
        client.node_heartbeat("gpu-0").await.expect("heartbeat"),
        "up"
    );
    assert_eq!(
        client.node_heartbeat("gpu-0").await.expect("heartbeat"),
        "up"
    );
    assert_eq!(
        client.node_heartbeat("gpu-9").await.expect("heartbeat"),
        "unknown"
    );

    // A follower names the leader instead of answering.
    let mut raw = ControlClient::connect(format!("http://{}", cluster.addrs[&follower]))
        .await
        .expect("connect");
    let status = raw
        .node_heartbeat(NodeHeartbeatRequest {
            node: "gpu-0".into(),
        })
        .await
        .expect_err("a follower does not answer");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get(LEADER_HEADER).is_some(), "{status:?}");

    // A bad name is refused, saying why.
    let error = client.node_heartbeat("").await.expect_err("empty name");
    match &error {
        ClientError::Rpc { code, message, .. } => {
            assert_eq!(code, "InvalidArgument");
            assert!(message.contains("node"), "{message}");
        }
        other => panic!("{other}"),
    }

    // None of it was written to the log.
    assert_eq!(before, last_log_index());
    cluster.shutdown().await;
}
