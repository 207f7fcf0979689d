//! `RaftError`, the one error type of this crate: storage, codec, data-directory identity and
//! server start-up failures, each naming what went wrong. It must not hide the source error.

use std::path::PathBuf;

/// Everything that can go wrong in the control plane outside openraft's own error types.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("RocksDB at {path}: {detail}")]
    Db { path: PathBuf, detail: String },
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("cannot decode {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("data dir {path} belongs to {found}, but this server is {expected}; use an empty dir or the right flags")]
    ForeignDataDir {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("data dir {path} is corrupt: {detail}")]
    CorruptDataDir { path: PathBuf, detail: String },
    #[error("scheduler: {0}")]
    Scheduler(#[from] singularity_scheduler::SchedulerError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
