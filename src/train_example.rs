//! `singularity train-example`: the example data-parallel training worker (linear regression
//! with SGD on seeded synthetic data) built on the worker runtime, so that
//! `singularity job submit --worker "$(which singularity)" -- train-example ...` runs it under
//! the device proxies with nothing but this binary installed.
//!
//! It must stay a thin adapter over `singularity_node::example`, holding no training logic.

/// Flags of `singularity train-example`.
#[derive(Debug, clap::Args)]
pub struct TrainExampleArgs {
    #[command(flatten)]
    worker: singularity_node::example::WorkerArgs,
}

/// Trains; the exit code is 0, 75 (checkpointed and stopped: preempted) or 1.
pub fn run(args: TrainExampleArgs) -> u8 {
    singularity_node::example::worker_main(&args.worker) as u8
}
