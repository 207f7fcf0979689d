//! The replicated control plane: openraft's type configuration, the RocksDB log store and the
//! state machine that wraps `singularity_scheduler::ClusterState`, the tonic network between
//! replicas, and the server (client API, leader scheduling loop, linearizable reads).
//!
//! It must not make scheduling decisions of its own (the pure `scheduler` crate does) and must
//! never acknowledge a log append before RocksDB has synced it. Nothing lives here yet; the
//! control-plane issue fills it.
