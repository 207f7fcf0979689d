//! The `singularity` binary: parses flags and hands off to a subcommand. It holds no logic a
//! library crate should own; each subcommand's module is a thin adapter over a library.

mod agent;
mod bench_load;
mod cli;
mod client;
mod dev;
mod device_proxy;
mod logging;
mod operator;
mod server;
mod simulate;
mod train_example;

fn main() -> std::process::ExitCode {
    cli::main()
}
