//! A device proxy process (the same as `singularity device-proxy`), as a binary of this crate
//! so the crate's tests and benchmarks can start proxies as child processes.
//!
//! It must stay a thin wrapper over `singularity_node::proxy::serve`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: singularity_node::proxy::ProxyArgs,
}

fn main() -> std::process::ExitCode {
    match singularity_node::proxy::serve(Cli::parse().args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
