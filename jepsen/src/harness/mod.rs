//! The test harness behind `singularity-jepsen test`: real `singularity server` replicas in
//! network namespaces, register, set and scheduler workloads driven through the public gRPC
//! API, a nemesis injecting partitions, kills, pauses, membership changes and clock skew on a
//! seeded schedule, and a results directory with the histories, verdicts, fault timeline and
//! plot.
//!
//! Cleanup is by guards: `net::Network` and `cluster::Cluster` remove their namespaces, links,
//! rules and processes when dropped (normal end, error, panic), and a SIGINT/SIGTERM makes
//! the run stop early and drop them.

pub mod agents;
pub mod client;
pub mod cluster;
pub mod fleet;
pub mod nemesis;
pub mod net;
pub mod plot;
pub mod recorder;
pub mod rng;
pub mod runner;
pub mod sched_check;
pub mod sched_run;
pub mod schedule;
pub mod workload;

pub use runner::{run_test, TestOptions, TestOutcome, WorkloadKind};
pub use schedule::NemesisKind;
