//! Group commit against a real 3-replica cluster: many concurrent client writes share log
//! entries (batches), yet each writer gets its own outcome, a retried write still takes effect
//! once, the log describes a batch write by write, and every replica reaches the same state.

mod common;

use common::{submit, TestCluster};
use singularity_raft::client::Client;
use singularity_raft::oplog;
use singularity_scheduler::{Effect, Entry, Outcome};
use std::collections::BTreeSet;

/// Concurrent writers; far more than the batches allowed in flight, so most writes wait and
/// join a batch.
const WRITERS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let endpoint = cluster.addrs[&leader].to_string();

    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(vec![endpoint]).expect("client");
            let result = client
                .write(submit(&format!("gc-{i}")))
                .await
                .expect("write");
            (i, client.client_id(), result)
        }));
    }
    let mut jobs = BTreeSet::new();
    let mut first = None;
    let mut reader = cluster.client();
    for task in tasks {
        let (i, client_id, result) = task.await.expect("writer");
        let Outcome::Accepted(Effect::JobSubmitted { job }) = result.outcome else {
            panic!("{:?}", result.outcome)
        };
        assert!(jobs.insert(job), "job {job} given to two writers");
        first.get_or_insert((client_id, job));
        // The outcome a writer got is its own write's: the job it names is the one it sent.
        let reply = reader
            .read(singularity_proto::query::JOB, job.0, false)
            .await
            .expect("read");
        let name = format!("\"gc-{i}\"");
        assert!(reply.json.contains(&name), "writer {i} got {}", reply.json);
    }
    assert_eq!(jobs.len(), WRITERS);

    // A retry of an already applied write (same client and sequence) takes effect once, even
    // though it now travels alone or in another batch.
    let (client_id, job) = first.expect("a writer");
    let retry = Entry::from_client(client_id, 1, submit("gc-retry"));
    let mut again = Client::new(vec![endpoint]).expect("client");
    let duplicate = again.write_entry(&retry).await.expect("retry");
    assert_eq!(
        duplicate.outcome,
        Outcome::Duplicate(Effect::JobSubmitted { job })
    );

    // The log holds fewer entries than writes, with at least one batch, described write by
    // write for operators.
    let index = cluster.wait_converged().await;
    let log = &cluster.replicas[&leader].log;
    let lines: Vec<oplog::LogLine> = log
        .entries(1, index + 1)
        .expect("log")
        .iter()
        .map(oplog::describe)
        .collect();
    let batches: Vec<&oplog::LogLine> = lines.iter().filter(|l| l.kind == "batch").collect();
    assert!(!batches.is_empty(), "no batch among {lines:?}");
    for batch in &batches {
        assert!(
            batch.summary.contains("client writes: "),
            "{}",
            batch.summary
        );
        assert!(batch.summary.contains("[client "), "{}", batch.summary);
    }
    let submits = lines.iter().filter(|l| l.kind == "submit_job").count()
        + batches
            .iter()
            .map(|b| b.summary.matches("[client ").count())
            .sum::<usize>();
    assert_eq!(
        submits,
        WRITERS + 1,
        "every write, and the retry, is in the log"
    );

    cluster.assert_same_digest().await;
    cluster.shutdown().await;
}
