//! The client API against a real 3-replica cluster: exactly-once retries, bad input refused
//! with InvalidArgument before anything is proposed, a follower naming the leader, and stale
//! versus linearizable reads.

mod common;

use common::{spec, submit, TestCluster};
use singularity_proto::query;
use singularity_proto::v1::control_client::ControlClient;
use singularity_proto::v1::WriteRequest;
use singularity_proto::ClientError;
use singularity_raft::client::Client;
use singularity_scheduler::{ClientId, Command, Effect, Entry, JobId, Outcome};

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
