//! The command tree of the `singularity` binary. It grows as capabilities land: a subcommand
//! appears here only when it works. Each subcommand lives in its own module with its `Args` and
//! a `run` function; this file only wires them together and turns errors into exit codes.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Singularity: a highly available, workload-aware scheduler for fleets of AI accelerators.
///
/// Every job can be preempted, migrated and resized without losing work, so the fleet stays
/// full while each job gets its tier's service level.
#[derive(Debug, Parser)]
#[command(name = "singularity", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control-plane replica (Raft over RocksDB, gRPC API).
    Server(crate::server::ServerArgs),
    /// Run the node agent of one machine: register its accelerators, heartbeat, execute the
    /// committed actions for its node, run jobs' ranks as processes, serve their logs.
    Agent(crate::agent::AgentArgs),
    /// Run the device proxy of one accelerator: owns its memory, serves the job workers over
    /// shared memory, checkpoints and time-slices their ranks (simulated device).
    DeviceProxy(crate::device_proxy::DeviceProxyArgs),
    /// A local cluster in one command: 3 replicas and 2 agents with simulated devices.
    Dev(crate::dev::DevArgs),
    /// The example training worker (data-parallel linear regression on the device proxies);
    /// run it with `job submit --worker`; the agent sets its environment.
    TrainExample(crate::train_example::TrainExampleArgs),
    /// Submit, list, inspect, cancel jobs and update their metadata.
    Job(crate::client::job::JobArgs),
    /// Inspect nodes.
    Node(crate::client::node::NodeArgs),
    /// Inspect the cluster's scheduler state.
    Cluster(crate::client::cluster::ClusterArgs),
    /// Raft status and membership, snapshots, the decoded log.
    Operator(crate::operator::OperatorArgs),
    /// Closed-loop write load against a Singularity or etcd cluster (benchmarks).
    BenchLoad(crate::bench_load::BenchLoadArgs),
    /// Replay a job trace through a scheduling policy on a simulated fleet and report
    /// utilization, completion times and SLA attainment.
    Simulate(crate::simulate::SimulateArgs),
}

/// Runs the binary: exit 0 on success, 1 on a failure the error message explains, 2 on a usage
/// error (clap's convention).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Server(args) => crate::server::run(args),
        Command::Agent(args) => crate::agent::run(args),
        Command::DeviceProxy(args) => crate::device_proxy::run(args),
        Command::Dev(args) => crate::dev::run(args),
        Command::TrainExample(args) => return ExitCode::from(crate::train_example::run(args)),
        Command::Job(args) => crate::client::job::run(args),
        Command::Node(args) => crate::client::node::run(args),
        Command::Cluster(args) => crate::client::cluster::run(args),
        Command::Operator(args) => crate::operator::run(args),
        Command::BenchLoad(args) => crate::bench_load::run(args),
        Command::Simulate(args) => crate::simulate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
