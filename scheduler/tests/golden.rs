//! Golden bytes: one sample entry of every command kind, encoded at `FORMAT_VERSION`, must
//! encode to exactly the bytes stored in `tests/golden/entries-v1.hex`, and those bytes must
//! decode back to the sample. Entries live in replicas' logs for years: if this test fails, an
//! encoded type changed by accident. If the change is intended, bump `FORMAT_VERSION`, keep a
//! decoder for the old version, and bless a new file with `SINGULARITY_BLESS_GOLDEN=1`.

use singularity_scheduler::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn samples() -> Vec<Entry> {
    let node = NodeName::new("gpu-node-1").unwrap();
    let spec = JobSpec {
        name: "llama-finetune".into(),
        tenant: TenantName::new("nlp").unwrap(),
        tier: Tier::Standard,
        world_size: 8,
        device_kind: DeviceKind::new("h100").unwrap(),
        memory_per_rank_bytes: 40 << 30,
        run: RunSpec::Command {
            argv: vec!["python3".into(), "train.py".into(), "--lr=3e-4".into()],
            env: BTreeMap::from([("NCCL_DEBUG".into(), "INFO".into())]),
        },
        max_restarts: 3,
        metadata: BTreeMap::from([("owner".into(), "ana".into())]),
    };
    let client = Some(ClientRequest {
        client_id: ClientId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        sequence: 42,
    });
    let device = |n, i| DeviceRef::new(NodeId(n), i);
    let commands = vec![
        Command::RegisterNode {
            name: node.clone(),
            domain: LocalityDomain::new("rack-3").unwrap(),
            devices: vec![DeviceSpec {
                kind: DeviceKind::new("h100").unwrap(),
                memory_bytes: 80 << 30,
                uuid: "GPU-8d3f".into(),
                health: DeviceHealth::Healthy,
            }],
        },
        Command::DeregisterNode { name: node.clone() },
        Command::ReportNodeHealth {
            name: node.clone(),
            devices: vec![(
                0,
                DeviceHealth::Unhealthy {
                    reason: "XID 79".into(),
                },
            )],
        },
        Command::SetNodeDraining {
            name: node.clone(),
            draining: true,
        },
        Command::NodeDown {
            name: node,
            reason: "missed 5 heartbeats".into(),
        },
        Command::SubmitJob { spec },
        Command::CancelJob { job: JobId(17) },
        Command::UpdateJobMetadata {
            job: JobId(17),
            expected_version: Some(3),
            set: BTreeMap::from([("register".into(), "4".into())]),
            remove: vec!["old".into()],
        },
        Command::ApplyPlan {
            plan: Plan {
                computed_at_index: 1_234,
                trigger: "job 42 submitted".into(),
                actions: vec![
                    PlannedAction {
                        job: JobId(7),
                        op: ActionOp::Resize {
                            to: vec![device(1, 0), device(1, 1)],
                            for_job: Some(JobId(42)),
                        },
                        reason: "shrunk from 4 to 2 devices for job 42 (premium)".into(),
                    },
                    PlannedAction {
                        job: JobId(8),
                        op: ActionOp::Preempt {
                            for_job: Some(JobId(42)),
                        },
                        reason: "preempted for job 42, tier premium".into(),
                    },
                    PlannedAction {
                        job: JobId(9),
                        op: ActionOp::Place {
                            devices: vec![device(2, 0)],
                        },
                        reason: "placed on idle capacity".into(),
                    },
                    PlannedAction {
                        job: JobId(10),
                        op: ActionOp::Resume {
                            devices: vec![device(2, 1)],
                        },
                        reason: "resumed from step 900".into(),
                    },
                    PlannedAction {
                        job: JobId(11),
                        op: ActionOp::Migrate {
                            to: vec![device(3, 0)],
                        },
                        reason: "defragment rack-2".into(),
                    },
                    PlannedAction {
                        job: JobId(12),
                        op: ActionOp::Stop,
                        reason: "cancelled".into(),
                    },
                ],
            },
        },
        Command::ReportActionProgress {
            action: ActionId(99),
            node: NodeId(2),
            progress: Progress::Checkpointed {
                checkpoint: CheckpointRef {
                    location: "/shared/ckpt/job-8/step-900".into(),
                    step: 900,
                },
            },
        },
        Command::ReportActionProgress {
            action: ActionId(99),
            node: NodeId(2),
            progress: Progress::Failed {
                reason: "disk full".into(),
            },
        },
        Command::ReportJobExit {
            job: JobId(9),
            node: NodeId(2),
            exit: JobExit::Succeeded,
        },
        Command::ReportJobExit {
            job: JobId(9),
            node: NodeId(2),
            exit: JobExit::Failed {
                reason: "rank 3 exited with status 1".into(),
            },
        },
        Command::Tick,
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| {
            Entry::new(
                if i % 2 == 0 { client } else { None },
                1_700_000_000_000 + i as u64,
                command,
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("golden file holds hex"))
        .collect()
}

#[test]
fn stored_entry_bytes_never_change_by_accident() {
    assert_eq!(
        FORMAT_VERSION, 1,
        "a new format version needs a new golden file"
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/entries-v1.hex");
    let rendered: String = samples()
        .iter()
        .map(|e| format!("{} {}\n", e.command.kind(), hex(&e.encode().unwrap())))
        .collect();
    if std::env::var_os("SINGULARITY_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (line, (want, got)) in stored.lines().zip(rendered.lines()).enumerate() {
        assert_eq!(
            want, got,
            "entry {line} encodes differently from the golden file: an encoded type changed. \
             If intended, bump FORMAT_VERSION and bless a new file (see this file's header)."
        );
    }
    assert_eq!(
        stored.lines().count(),
        rendered.lines().count(),
        "sample count changed"
    );
    // The stored bytes still decode to the same entries.
    for (line, sample) in stored.lines().zip(samples()) {
        let bytes = unhex(line.split(' ').nth(1).unwrap());
        assert_eq!(Entry::decode(&bytes).unwrap(), sample);
    }
}

#[test]
fn decoding_refuses_bad_bytes_with_a_clear_error() {
    let bytes = samples()[5].encode().unwrap();
    let mut future = bytes.clone();
    future[0] = 2;
    let err = Entry::decode(&future).unwrap_err().to_string();
    assert!(err.contains("format version 2"), "{err}");
    let err = Entry::decode(&bytes[..bytes.len() - 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not decode"), "{err}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    let err = Entry::decode(&trailing).unwrap_err().to_string();
    assert!(err.contains("trailing"), "{err}");
    let err = Entry::decode(&[1]).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    let huge = vec![0u8; limits::MAX_ENTRY_BYTES + 1];
    let err = Entry::decode(&huge).unwrap_err().to_string();
    assert!(err.contains("limit"), "{err}");
}
