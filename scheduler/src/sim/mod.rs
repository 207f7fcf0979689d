//! The trace-replay simulator core: replays a job trace through a `Policy` and the real
//! `ClusterState::apply` on a simulated clock, with a cost model for checkpoint, restore,
//! migration and splicing, and reports utilisation, completion times and SLA attainment.
//!
//! It must stay pure and deterministic like the rest of the crate: no file or terminal I/O
//! (the binary reads the trace and draws the progress bar), no wall clock, no randomness.
