//! The example job: data-parallel linear regression trained with SGD on synthetic data drawn
//! from a fixed seed, written against the worker runtime only. Each rank draws its own batch
//! from its registered RNG, computes its gradient on the device, allreduces it, and updates the
//! weights; every rank ends with the same weights. It declares its per-step buffers (batch,
//! targets, residual, gradient) dead once read for the last time in a step (a liveness hint:
//! each is rewritten entirely before it is read in the next step), so splicing and
//! checkpoints move only the weights.
//!
//! It must contain no checkpoint, placement or splicing code: that is the point of the proof.

use crate::device::{Handle, Kernel};
use crate::error::{NodeError, Result};
use crate::runtime::{exit_code, Runtime};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The program's host state, registered with the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// xorshift64* state of this rank's data stream.
    pub rng: u64,
    /// Samples consumed so far by this rank.
    pub cursor: u64,
    /// Mean squared error of the last step.
    pub last_loss: f32,
}

impl TrainState {
    /// The state of a fresh start: each rank's stream derives from the seed and its rank.
    pub fn new(seed: u64, rank: u32) -> Self {
        TrainState {
            rng: splitmix(seed ^ (rank as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            cursor: 0,
            last_loss: 0.0,
        }
    }
}

/// Shape and hyper-parameters of the example.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainConfig {
    /// Steps to train.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Seed of the data and the initial weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Input features.
    #[arg(long, default_value_t = 16)]
    pub features: usize,
    /// Outputs.
    #[arg(long, default_value_t = 4)]
    pub outputs: usize,
    /// Samples per rank per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub learning_rate: f32,
    /// Do not declare the per-step buffers dead (to measure what the liveness hints save; the
    /// results are the same bits either way).
    #[arg(long)]
    pub no_liveness_hints: bool,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A uniform float in [-1, 1) from an xorshift64* stream.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
    bits as f32 / (1u64 << 23) as f32 - 1.0
}

fn seeded(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = splitmix(seed);
    (0..len).map(|_| uniform(&mut s) * scale).collect()
}

/// Trains and returns this rank's final weights.
pub fn train(rt: &mut Runtime<TrainState>, cfg: &TrainConfig) -> Result<Vec<f32>> {
    let (d, o, b) = (cfg.features, cfg.outputs, cfg.batch);
    let w = rt.buffer("w", d * o, || seeded(cfg.seed, d * o, 0.1))?;
    let w_true = rt.buffer("w_true", d * o, || seeded(cfg.seed ^ 0x5EED, d * o, 1.0))?;
    let buf = |rt: &mut Runtime<TrainState>, name: &str, len: usize| {
        rt.buffer(name, len, || vec![0.0; len])
    };
    let (x, noise, t, pred, grad) = (
        buf(rt, "x", b * d)?,
        buf(rt, "noise", b * o)?,
        buf(rt, "t", b * o)?,
        buf(rt, "pred", b * o)?,
        buf(rt, "grad", d * o)?,
    );
    let mut xs = vec![0f32; b * d];
    let mut ns = vec![0f32; b * o];
    let world = rt.world_size() as f32;
    let matmul = |a: Handle, bb: Handle, c: Handle, m: usize, k: usize, n: usize, trans_a: bool| {
        Kernel::Matmul {
            a,
            b: bb,
            c,
            m: m as u32,
            k: k as u32,
            n: n as u32,
            trans_a,
            trans_b: false,
        }
    };
    while rt.next_step(cfg.steps)?.is_some() {
        let st = rt.state_mut();
        xs.iter_mut().for_each(|v| *v = uniform(&mut st.rng));
        ns.iter_mut().for_each(|v| *v = uniform(&mut st.rng) * 0.01);
        st.cursor += b as u64;
        rt.copy_in(x, &xs)?;
        rt.copy_in(noise, &ns)?;
        // Targets on the device: t = x·w_true + noise.
        rt.kernel(matmul(x, w_true, t, b, d, o, false))?;
        rt.kernel(Kernel::Add {
            x: t,
            y: noise,
            out: t,
        })?;
        // Residual and gradient of the mean squared error.
        rt.kernel(matmul(x, w, pred, b, d, o, false))?;
        rt.kernel(Kernel::Axpy {
            a: -1.0,
            x: t,
            y: pred,
        })?;
        rt.kernel(matmul(x, pred, grad, d, b, o, true))?;
        rt.kernel(Kernel::Scale {
            a: 2.0 / (b * o) as f32,
            x: grad,
        })?;
        let hints = !cfg.no_liveness_hints;
        if hints {
            // Rewritten by the next step's copies and kernels before any read.
            for h in [x, noise, t] {
                rt.discard(h)?;
            }
        }
        let sq = rt.kernel(Kernel::Dot { x: pred, y: pred })?;
        if hints {
            rt.discard(pred)?;
        }
        rt.allreduce_sum(grad)?;
        rt.kernel(Kernel::Axpy {
            a: -cfg.learning_rate / world,
            x: grad,
            y: w,
        })?;
        if hints {
            rt.discard(grad)?;
        }
        rt.state_mut().last_loss = sq / (b * o) as f32;
    }
    let mut out = vec![0f32; d * o];
    rt.copy_out(w, &mut out)?;
    Ok(out)
}

/// Flags of the example as a worker program (`singularity train-example`,
/// `singularity-train-example`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub train: TrainConfig,
    /// Directory for the final weights (`model-rank<R>.bin`, raw little-endian f32).
    #[arg(long)]
    pub output_dir: PathBuf,
}

fn run_worker(args: &WorkerArgs) -> Result<()> {
    let seed = args.train.seed;
    let batch = args.train.batch.max(1) as u64;
    let mut rt = Runtime::from_env(|rank, _| TrainState::new(seed, rank))?;
    let (rank, world) = (rt.rank(), rt.world_size());
    // The data cursor says how far a restored rank had got; the program itself keeps no step.
    println!(
        "rank {rank}/{world}: starting at step {} of {}",
        rt.state().cursor / batch,
        args.train.steps
    );
    let weights = match train(&mut rt, &args.train) {
        Err(NodeError::Preempted { step }) => {
            println!("rank {rank}/{world}: checkpointed at step {step} and stopped");
            return Err(NodeError::Preempted { step });
        }
        other => other?,
    };
    std::fs::create_dir_all(&args.output_dir)
        .map_err(|e| NodeError::io(format!("creating {}", args.output_dir.display()), e))?;
    let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    let path = args.output_dir.join(format!("model-rank{rank}.bin"));
    std::fs::write(&path, bytes)
        .map_err(|e| NodeError::io(format!("writing {}", path.display()), e))?;
    println!(
        "rank {rank}/{world}: finished {} steps, loss {}, weights in {}",
        args.train.steps,
        rt.state().last_loss,
        path.display()
    );
    rt.finish()
}

/// Runs the example as a worker attached as its environment says (the agent sets it) and
/// returns the process exit code: 0, `PREEMPTED_EXIT_CODE` after a stopping checkpoint, or 1.
pub fn worker_main(args: &WorkerArgs) -> i32 {
    let outcome = run_worker(args);
    if let Err(e) = &outcome {
        if !matches!(e, NodeError::Preempted { .. }) {
            eprintln!("worker: {e}");
        }
    }
    exit_code(&outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_training_reduces_the_loss() {
        let cfg = TrainConfig {
            steps: 300,
            seed: 7,
            features: 8,
            outputs: 2,
            batch: 16,
            learning_rate: 0.05,
            no_liveness_hints: false,
        };
        let mut rt = Runtime::in_process(|r, _| TrainState::new(cfg.seed, r));
        let first = {
            let mut probe = Runtime::in_process(|r, _| TrainState::new(cfg.seed, r));
            train(
                &mut probe,
                &TrainConfig {
                    steps: 1,
                    ..cfg.clone()
                },
            )
            .unwrap();
            probe.state().last_loss
        };
        let w = train(&mut rt, &cfg).unwrap();
        assert_eq!(w.len(), 16);
        assert!(
            rt.state().last_loss < first / 10.0,
            "loss {} -> {}",
            first,
            rt.state().last_loss
        );
        let again = train(
            &mut Runtime::in_process(|r, _| TrainState::new(cfg.seed, r)),
            &cfg,
        )
        .unwrap();
        assert_eq!(w, again, "training is deterministic");
        let unhinted = train(
            &mut Runtime::in_process(|r, _| TrainState::new(cfg.seed, r)),
            &TrainConfig {
                no_liveness_hints: true,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(w, unhinted, "the liveness hints change no bits");
    }
}
