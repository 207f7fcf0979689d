//! Node benchmarks (placeholder until written).
fn main() {}
