//! Singularity's scheduler core: pure, synchronous and deterministic.
