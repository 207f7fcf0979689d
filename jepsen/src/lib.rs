//! Black-box correctness and load harness for Singularity: hosts, nemeses, workloads,
//! histories, the linearizability checker and reports.
//!
//! It must talk to a cluster only through its public API (the `proto` crate), never through
//! internal crates.
