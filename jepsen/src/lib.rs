//! Black-box correctness and load harness for Singularity: hosts, nemeses, workloads,
//! histories, the linearizability checker and reports.
//!
//! It must talk to a cluster only through its public API (the `proto` crate), never through
//! internal crates. Today it holds the history types, their readers and writers (Jepsen EDN,
//! JSON lines, porcupine's etcd logs), the linearizability checker (WGL search with
//! per-key partitioning and a visited-state cache) and its text, JSON and HTML reports.
//! `jepsen/README.md` describes the formats and the models' semantics.

pub mod checker;
pub mod edn;
pub mod edn_history;
pub mod error;
pub mod etcd_log;
pub mod fast_hash;
pub mod format;
pub mod harness;
pub mod history;
pub mod html;
pub mod json_history;
pub mod limits;
pub mod model;
pub mod op;
pub mod pairing;
pub mod porcupine_data;
pub mod report;
pub mod search;
pub mod value;
pub mod visited;

pub use checker::{check_file, check_history, CheckOptions};
pub use error::{Error, Result};
pub use format::{read_history, read_history_file, Format};
pub use history::{History, Semantics};
pub use model::ModelKind;
pub use op::{Op, OpType};
pub use report::{CheckReport, Validity};
pub use value::Value;
