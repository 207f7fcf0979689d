//! Durable storage of a replica: one RocksDB database with a column family for the log, one
//! for the vote and log bookkeeping, and one for the state machine's snapshot and the data
//! dir's identity. It must not acknowledge a write before RocksDB has synced it.

pub mod codec;
pub mod db;
pub mod log_store;
pub mod recent_entries;
pub mod snapshot;
pub mod state_machine;

pub use db::{DataDirIdentity, Db};
pub use log_store::LogStore;
pub use state_machine::{AppliedState, StateMachineStore};

use crate::types::{NodeId, StorageError};
use openraft::{AnyError, StorageIOError};

/// Turns any displayable failure into openraft's storage error for a write.
pub(crate) fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::<NodeId>::write(AnyError::error(e.to_string())).into()
}

/// Turns any displayable failure into openraft's storage error for a read.
pub(crate) fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::<NodeId>::read(AnyError::error(e.to_string())).into()
}
