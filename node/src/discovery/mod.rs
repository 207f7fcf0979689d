//! Accelerator discovery for the node agent: which devices this machine has (NVML or
//! simulated), what kind and how much memory each has, how they are connected, and whether each
//! is healthy right now.
//!
//! `--devices` parses into a [`DeviceSource`]; [`open`] turns it into a [`DeviceBackend`], whose
//! [`DeviceBackend::inventory`] is what the agent registers ([`Inventory::specs`]) and prints
//! ([`format_inventory`], or JSON through `serde`), and whose [`DeviceBackend::poll_health`] it
//! calls on every heartbeat.
//!
//! It must not talk to the control plane, run jobs, or change device state: it only reads.

mod inventory;
mod kind;
mod nvml;
mod simulated;
mod source;

pub use inventory::{format_inventory, DiscoveredDevice, Inventory, TopologyLink};
pub use kind::{kind_from_name, FALLBACK_KIND};
pub use nvml::{
    judge_health, topology_level_name, HealthProbe, NvmlBackend, MAX_NVLINKS_PER_DEVICE,
};
pub use simulated::{fault_file, simulated_uuid, SimulatedBackend};
pub use source::{
    format_memory, parse_memory, DeviceSource, DEFAULT_SIM_KIND, DEFAULT_SIM_MEMORY_BYTES,
    DEVICES_HELP, MAX_DEVICES_PER_NODE, MAX_DEVICE_MEMORY,
};

use crate::error::NodeError;
pub use singularity_scheduler::DeviceHealth;
use std::path::Path;

/// A source of devices: what they are, and how healthy they are now.
pub trait DeviceBackend: Send {
    /// Every device with its current health, the driver version and the topology.
    fn inventory(&mut self) -> Result<Inventory, NodeError>;
    /// Current health of every device (index, health), re-read from the hardware each call.
    fn poll_health(&mut self) -> Result<Vec<(u16, DeviceHealth)>, NodeError>;
}

/// Opens the backend for `source`. `node_name` seeds the ids of simulated devices.
///
/// For `DeviceSource::Nvml` this loads `libnvidia-ml.so`; on a machine without the NVIDIA
/// driver it fails with `NodeError::NvmlUnavailable`, whose message says so and suggests
/// `--devices sim:COUNT[:MEMORY]`.
pub fn open(source: &DeviceSource, node_name: &str) -> Result<Box<dyn DeviceBackend>, NodeError> {
    open_with_fault_dir(source, node_name, None)
}

/// Opens the backend for `source` and takes one inventory: what `singularity agent
/// --discover-only` prints (with [`format_inventory`], or as JSON).
pub fn discover(source: &DeviceSource, node_name: &str) -> Result<Inventory, NodeError> {
    open(source, node_name)?.inventory()
}

/// Like [`open`], with a fault directory for simulated devices (see [`SimulatedBackend`]: a
/// file `device-<INDEX>.unhealthy` in it makes that device unhealthy, its text the reason).
/// A fault directory with `nvml` is a configuration error: real devices are not faked.
pub fn open_with_fault_dir(
    source: &DeviceSource,
    node_name: &str,
    fault_dir: Option<&Path>,
) -> Result<Box<dyn DeviceBackend>, NodeError> {
    match source {
        DeviceSource::Simulated {
            count,
            memory_bytes,
            kind,
        } => {
            let backend = SimulatedBackend::new(*count, *memory_bytes, kind, node_name);
            Ok(Box::new(match fault_dir {
                Some(dir) => backend.with_fault_dir(dir),
                None => backend,
            }))
        }
        DeviceSource::Nvml => {
            if let Some(dir) = fault_dir {
                return Err(NodeError::Config(format!(
                    "a device fault directory ({}) works only with simulated devices \
                     (--devices sim:...), not with nvml",
                    dir.display()
                )));
            }
            Ok(Box::new(NvmlBackend::open()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_simulated_gives_the_parsed_devices() {
        let source: DeviceSource = "sim:2:16GiB:a100".parse().unwrap();
        let mut backend = open(&source, "node-a").unwrap();
        let inv = backend.inventory().unwrap();
        assert_eq!(inv.devices.len(), 2);
        assert_eq!(inv.specs()[1].memory_bytes, 16 << 30);
        assert_eq!(inv.specs()[1].kind.as_str(), "a100");
        assert_eq!(
            backend.poll_health().unwrap(),
            vec![(0, DeviceHealth::Healthy), (1, DeviceHealth::Healthy)]
        );
        assert_eq!(discover(&source, "node-a").unwrap(), inv);
        let table = format_inventory(&inv);
        assert!(table.contains("simulated a100"), "{table}");
        assert!(table.contains("16.0 GiB"), "{table}");
    }

    #[test]
    fn open_with_fault_dir_reports_injected_faults() {
        let dir = tempfile::tempdir().unwrap();
        let source: DeviceSource = "sim:2".parse().unwrap();
        let mut backend = open_with_fault_dir(&source, "node-a", Some(dir.path())).unwrap();
        std::fs::write(fault_file(dir.path(), 0), "injected by test").unwrap();
        let health = backend.poll_health().unwrap();
        assert_eq!(
            health[0].1,
            DeviceHealth::Unhealthy {
                reason: "injected by test".to_string()
            }
        );
        assert_eq!(health[1].1, DeviceHealth::Healthy);
        let err = open_with_fault_dir(&DeviceSource::Nvml, "node-a", Some(dir.path()))
            .err()
            .expect("a fault dir with nvml is refused")
            .to_string();
        assert!(err.contains("only with simulated devices"), "{err}");
    }

    /// On a machine without the NVIDIA driver (like the CI machine) opening NVML must fail with
    /// the message that tells the operator what to do; where NVML does load, it must find GPUs.
    #[test]
    fn nvml_is_either_reported_missing_clearly_or_finds_devices() {
        match open(&DeviceSource::Nvml, "node-a") {
            Err(err) => {
                assert!(matches!(err, NodeError::NvmlUnavailable { .. }), "{err:?}");
                let text = err.to_string();
                println!("{text}");
                assert!(
                    text.starts_with("NVML is not available on this machine ("),
                    "{text}"
                );
                assert!(
                    text.ends_with(
                        "Install the NVIDIA driver, or use --devices sim:COUNT[:MEMORY] for \
                         simulated devices."
                    ),
                    "{text}"
                );
                if !std::path::Path::new("/dev/nvidiactl").exists() {
                    assert!(
                        text.contains("libnvidia-ml.so could not be loaded")
                            || text.contains("driver is not loaded"),
                        "{text}"
                    );
                }
            }
            Ok(mut backend) => {
                let inv = backend
                    .inventory()
                    .expect("NVML loaded, so it must list GPUs");
                assert_eq!(inv.backend, "nvml");
                assert!(!inv.devices.is_empty());
                for (i, device) in inv.devices.iter().enumerate() {
                    assert_eq!(device.index as usize, i);
                    assert!(device.memory_bytes > 0);
                    assert!(device.uuid.starts_with("GPU-"), "{}", device.uuid);
                    let _ = device.to_spec();
                }
                let health = backend.poll_health().unwrap();
                assert_eq!(health.len(), inv.devices.len());
                println!("{}", format_inventory(&inv));
            }
        }
    }
}
