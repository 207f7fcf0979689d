//! `singularity device-proxy`: runs the proxy of one (simulated) device until killed. The node
//! agent starts one per device; workers attach to its socket.
//!
//! It must stay a thin adapter over `singularity_node::proxy`, holding no proxy logic.

use anyhow::Context;

/// Flags of `singularity device-proxy`.
#[derive(Debug, clap::Args)]
pub struct DeviceProxyArgs {
    #[command(flatten)]
    proxy: singularity_node::proxy::ProxyArgs,
}

/// Serves until the process is killed.
pub fn run(args: DeviceProxyArgs) -> anyhow::Result<()> {
    let socket = args.proxy.socket.clone();
    singularity_node::proxy::serve(args.proxy)
        .with_context(|| format!("device proxy on {}", socket.display()))
}
