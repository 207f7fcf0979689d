//! The Prometheus exporter's text on a real 3-replica cluster after some writes: every row is
//! there with its HELP and TYPE lines, the indexes moved, and the leader counts the
//! append-entries links it opened to its two followers. Waits are bounded; no durations are
//! asserted.

mod common;

use common::{submit_jobs, TestCluster, MAX_POLLS, POLL};
use singularity_raft::server::control::ApiStats;
use singularity_raft::server::metrics::{render, MetricsSources};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `name value` samples of Prometheus' text format, by name.
fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("a sample is `name value`");
            (name.to_string(), value.parse().expect("an integer value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_metrics_show_the_log_and_its_links_to_both_followers() {
    let cluster = TestCluster::start(3).await;
    let leader_id = cluster.wait_leader().await;
    let mut client = cluster.client();
    let jobs = submit_jobs(&mut client, "metered", 5).await;
    assert_eq!(jobs.len(), 5);

    let leader = &cluster.replicas[&leader_id];
    let sources = MetricsSources {
        raft: leader.raft.clone(),
        log: leader.log.clone(),
        sm: leader.sm.clone(),
        api: Arc::new(ApiStats::default()),
        network: leader.network.clone(),
    };
    // openraft publishes the applied index after it answers the write, and the link to the
    // slower follower may still be opening: wait (bounded) until both show.
    let mut text = render(&sources);
    for _ in 0..MAX_POLLS {
        let values = samples(&text);
        if values["singularity_raft_applied_index"] >= 6
            && values["singularity_raft_append_links_opened_total"] >= 2
        {
            break;
        }
        tokio::time::sleep(POLL).await;
        text = render(&sources);
    }
    let values = samples(&text);
    for name in values.keys() {
        assert!(
            text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} ")),
            "{name} lacks its HELP or TYPE line"
        );
    }
    assert_eq!(values["singularity_raft_is_leader"], 1);
    assert_eq!(values["singularity_raft_members"], 3);
    assert!(values["singularity_raft_applied_index"] >= 6, "{text}");
    assert!(values["singularity_entries_applied_total"] >= 6, "{text}");
    assert!(
        values["singularity_raft_append_links_opened_total"] >= 2,
        "one link per follower at least: {text}"
    );
    assert_eq!(values["singularity_raft_unary_appends_total"], 0, "{text}");
    assert!(values.contains_key("singularity_raft_append_links_dropped_total"));
    cluster.shutdown().await;
}
