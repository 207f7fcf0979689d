//! `ClusterState::node_view`: what each node's agent is told to do, for every action kind,
//! checked against exact expected views.

use singularity_scheduler::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
use singularity_scheduler::*;

fn fleet() -> (Fleet, Vec<NodeId>) {
    let mut fleet = Fleet::new();
    fleet.state.set_verify_invariants(true);
    let ids = fleet.add_nodes("gpu", 3, 4, "h100", H100_MEMORY_BYTES, 3);
    (fleet, ids)
}

fn view(fleet: &Fleet, node: usize) -> NodeView {
    let name = NodeName::new(format!("gpu-{node}")).unwrap();
    fleet.state.node_view(&name).expect("registered")
}

fn placement(rank: u32, device_index: u16, local_rank: u32) -> RankPlacement {
    RankPlacement {
        rank,
        device_index,
        local_rank,
    }
}

#[test]
fn unknown_node_has_no_view_and_an_idle_node_an_empty_one() {
    let (fleet, ids) = fleet();
    assert!(fleet
        .state
        .node_view(&NodeName::new("nope").unwrap())
        .is_none());
    let v = view(&fleet, 1);
    assert_eq!(v.node, ids[1]);
    assert_eq!(v.status, NodeStatus::Up);
    assert!(v.jobs.is_empty());
}

#[test]
fn a_place_across_two_nodes_starts_the_right_ranks_on_each() {
    let (mut fleet, ids) = fleet();
    let job = fleet.submit(job_spec("j", Tier::Standard, 4, "h100"));
    let mut devices = devices_of(ids[0], 2, 1);
    devices.extend(devices_of(ids[1], 0, 1));
    let action = fleet.commit(job, ActionOp::Place { devices }, "placed");
    // 4 ranks on 2 devices: ranks 0,1 on gpu-0 device 2; ranks 2,3 on gpu-1 device 0.
    let v0 = view(&fleet, 0);
    let a0 = v0.jobs[0].action.as_ref().expect("involved");
    assert_eq!(a0.id, action);
    assert_eq!(a0.kind, ActionKind::Place);
    assert!(a0.source_nodes.is_empty() && !a0.stops_here && !a0.checkpoints);
    assert!(a0.sources_stopped());
    assert_eq!(a0.start_ranks, vec![placement(0, 2, 0), placement(1, 2, 1)]);
    assert_eq!(a0.start_master_node.as_ref().unwrap().as_str(), "gpu-0");
    assert!(
        v0.jobs[0].ranks_here.is_empty(),
        "not running until it completes"
    );
    let v1 = view(&fleet, 1);
    let a1 = v1.jobs[0].action.as_ref().unwrap();
    assert_eq!(a1.start_ranks, vec![placement(2, 0, 0), placement(3, 0, 1)]);
    assert!(view(&fleet, 2).jobs.is_empty());

    fleet.finish_action(action, 0);
    let v0 = view(&fleet, 0);
    assert_eq!(v0.jobs[0].phase, JobPhase::Running);
    assert!(v0.jobs[0].action.is_none());
    assert_eq!(
        v0.jobs[0].ranks_here,
        vec![placement(0, 2, 0), placement(1, 2, 1)]
    );
    assert_eq!(v0.jobs[0].master_node.as_ref().unwrap().as_str(), "gpu-0");
}

#[test]
fn a_preempt_stops_every_source_and_rank0s_node_reports_the_checkpoint_first() {
    let (mut fleet, ids) = fleet();
    let mut devices = devices_of(ids[1], 0, 1);
    devices.extend(devices_of(ids[0], 0, 1));
    let job = fleet.run_job(job_spec("j", Tier::Basic, 2, "h100"), devices);
    let action = fleet.commit(job, ActionOp::Preempt { for_job: None }, "make room");
    let v1 = view(&fleet, 1);
    let a1 = v1.jobs[0].action.as_ref().unwrap();
    assert!(a1.stops_here && a1.checkpoints && a1.reports_checkpoint_first);
    assert!(a1.start_ranks.is_empty());
    assert_eq!(a1.source_nodes, vec![ids[0], ids[1]]);
    assert!(!a1.sources_stopped());
    let a0 = view(&fleet, 0).jobs[0].action.clone().unwrap();
    assert!(a0.stops_here && !a0.reports_checkpoint_first);

    let cut = CheckpointRef {
        location: "/ckpt/job-1".into(),
        step: 7,
    };
    fleet.apply(Command::ReportActionProgress {
        action,
        node: ids[1],
        progress: Progress::Checkpointed {
            checkpoint: cut.clone(),
        },
    });
    let a0 = view(&fleet, 0).jobs[0].action.clone().unwrap();
    assert_eq!(
        a0.checkpoint,
        Some(cut),
        "the agreed cut reaches the others"
    );
    assert!(!a0.sources_stopped(), "gpu-0 has not stopped yet");
}

#[test]
fn a_migrate_stops_on_the_old_node_and_starts_on_the_new_one() {
    let (mut fleet, ids) = fleet();
    let job = fleet.run_job(
        job_spec("j", Tier::Standard, 2, "h100"),
        devices_of(ids[0], 0, 2),
    );
    let action = fleet.commit(
        job,
        ActionOp::Migrate {
            to: devices_of(ids[2], 1, 2),
        },
        "defragment",
    );
    let old = view(&fleet, 0).jobs[0].action.clone().unwrap();
    assert!(old.stops_here && old.start_ranks.is_empty());
    assert_eq!(old.kind, ActionKind::Migrate);
    let new = view(&fleet, 2);
    assert!(new.jobs[0].ranks_here.is_empty());
    let new = new.jobs[0].action.clone().unwrap();
    assert!(!new.stops_here && !new.reports_checkpoint_first);
    assert_eq!(new.source_nodes, vec![ids[0]]);
    assert_eq!(
        new.start_ranks,
        vec![placement(0, 1, 0), placement(1, 2, 1)]
    );
    assert_eq!(new.start_master_node.unwrap().as_str(), "gpu-2");

    fleet.finish_action(action, 3);
    assert!(
        view(&fleet, 0).jobs.is_empty(),
        "the old node has nothing left"
    );
    let v2 = view(&fleet, 2);
    assert_eq!(
        v2.jobs[0].ranks_here,
        vec![placement(0, 1, 0), placement(1, 2, 1)]
    );
    assert_eq!(v2.jobs[0].checkpoint.as_ref().unwrap().step, 3);
}

#[test]
fn a_shrink_on_the_same_node_stops_and_restarts_with_more_ranks_per_device() {
    let (mut fleet, ids) = fleet();
    let job = fleet.run_job(
        job_spec("j", Tier::Basic, 4, "h100"),
        devices_of(ids[0], 0, 4),
    );
    fleet.commit(
        job,
        ActionOp::Resize {
            to: devices_of(ids[0], 0, 2),
            for_job: None,
        },
        "shrink",
    );
    let a = view(&fleet, 0).jobs[0].action.clone().unwrap();
    assert!(a.stops_here && a.reports_checkpoint_first);
    assert_eq!(
        a.start_ranks,
        vec![
            placement(0, 0, 0),
            placement(1, 0, 1),
            placement(2, 1, 2),
            placement(3, 1, 3)
        ]
    );
}
