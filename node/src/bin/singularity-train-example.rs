//! The example training job as a worker program: it attaches to the device proxy named in its
//! environment (`SINGULARITY_*`, set by the agent), trains, and writes its final weights to
//! `--output-dir/model-rank<R>.bin` (raw little-endian f32). Exit code 75 means it was
//! checkpointed and stopped (preempted). `singularity train-example` is the same program.
//!
//! It must stay free of checkpoint code (the runtime does all of it) and a thin wrapper over
//! `singularity_node::example::worker_main`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: singularity_node::example::WorkerArgs,
}

fn main() {
    std::process::exit(singularity_node::example::worker_main(&Cli::parse().args));
}
