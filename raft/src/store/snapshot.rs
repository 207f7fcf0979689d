//! The snapshot format: a versioned envelope with openraft's snapshot metadata, the scheduler
//! state's digest and the state's own `encode_snapshot` bytes. Installing checks the digest, so
//! a corrupt or truncated snapshot is refused rather than applied. It must not touch storage.

use super::codec::{decode_bounded, encode};
use super::state_machine::AppliedState;
use crate::error::RaftError;
use crate::types::{LogId, SnapshotMeta};
use serde::{Deserialize, Serialize};
use singularity_scheduler::limits::MAX_SNAPSHOT_BYTES;
use singularity_scheduler::{ClusterState, StateDigest};

/// A snapshot as stored in RocksDB, sent to lagging replicas and saved by operators.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotEnvelope {
    pub meta: SnapshotMeta,
    /// Digest of the state: equal on every replica at the same applied index.
    pub digest: StateDigest,
    /// `ClusterState::encode_snapshot` bytes.
    pub state: Vec<u8>,
}

impl SnapshotEnvelope {
    /// The envelope of an applied state, at its last applied log id and membership.
    pub fn of(applied: &AppliedState) -> Result<SnapshotEnvelope, RaftError> {
        let digest = applied.state.digest();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: snapshot_id(applied.last_applied, &digest),
        };
        Ok(SnapshotEnvelope {
            meta,
            digest,
            state: applied.state.encode_snapshot()?,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, RaftError> {
        encode("snapshot", self)
    }

    /// Decodes an envelope without checking the state inside.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotEnvelope, RaftError> {
        decode_bounded("snapshot", bytes, MAX_SNAPSHOT_BYTES + 64 * 1024)
    }

    /// Decodes the state and checks it against the digest.
    pub fn state(&self) -> Result<ClusterState, RaftError> {
        let state = ClusterState::decode_snapshot(&self.state)?;
        let digest = state.digest();
        if digest != self.digest {
            return Err(RaftError::Decode {
                what: "snapshot",
                detail: format!(
                    "state digest is {digest}, but the snapshot says {}",
                    self.digest
                ),
            });
        }
        Ok(state)
    }
}

/// The snapshot id openraft sees: term, index and the start of the digest.
fn snapshot_id(last: Option<LogId>, digest: &StateDigest) -> String {
    let digest = digest.to_string();
    match last {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, &digest[..16]),
        None => format!("0-0-{}", &digest[..16]),
    }
}
