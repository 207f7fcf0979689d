//! The example training job as a worker program: it attaches to the device proxy named in its
//! environment (`SINGULARITY_*`, set by the agent), trains, and writes its final weights to
//! `--output-dir/model-rank<R>.bin` (raw little-endian f32). Exit code 75 means it was
//! checkpointed and stopped (preempted).
//!
//! It must stay free of checkpoint code: the runtime does all of it.

use clap::Parser;
use singularity_node::example::{train, TrainConfig, TrainState};
use singularity_node::runtime::{exit_code, Runtime};
use std::path::PathBuf;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    train: TrainConfig,
    /// Directory for the final weights.
    #[arg(long)]
    output_dir: PathBuf,
}

fn run(cli: &Cli) -> singularity_node::Result<()> {
    let seed = cli.train.seed;
    let mut rt = Runtime::from_env(|rank, _| TrainState::new(seed, rank))?;
    let weights = train(&mut rt, &cli.train)?;
    let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    let path = cli.output_dir.join(format!("model-rank{}.bin", rt.rank()));
    std::fs::write(&path, bytes)
        .map_err(|e| singularity_node::NodeError::io(format!("writing {}", path.display()), e))?;
    rt.finish()
}

fn main() {
    let cli = Cli::parse();
    let outcome = run(&cli);
    if let Err(e) = &outcome {
        eprintln!("worker: {e}");
    }
    std::process::exit(exit_code(&outcome));
}
