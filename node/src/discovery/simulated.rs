//! The simulated device backend: a deterministic inventory of `count` identical devices, all
//! healthy unless a fault file says otherwise.
//!
//! Fault injection: with a fault directory, a file `device-<INDEX>.unhealthy` in it makes
//! device INDEX unhealthy; the file's text (trimmed, at most `MAX_REASON_BYTES`) is the reason.
//! Deleting the file makes the device healthy again. Each `poll_health` re-reads the directory,
//! so a test can fail a device of a running agent process by writing one file. A missing
//! directory means no faults. Files for indexes the node does not have are ignored.
//!
//! It must not pretend to be hardware: no NVML, no utilisation numbers, no topology.

use super::inventory::{DiscoveredDevice, Inventory};
use super::DeviceBackend;
use crate::error::NodeError;
use singularity_scheduler::limits::MAX_REASON_BYTES;
use singularity_scheduler::DeviceHealth;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of a fault file that are read; the rest is ignored.
const MAX_FAULT_FILE_BYTES: u64 = 4096;

/// Simulated devices, optionally with a fault directory.
#[derive(Clone, Debug)]
pub struct SimulatedBackend {
    count: u16,
    memory_bytes: u64,
    kind: String,
    node_name: String,
    fault_dir: Option<PathBuf>,
}

impl SimulatedBackend {
    /// `count` devices of `memory_bytes` and scheduler kind `kind`, on node `node_name` (which
    /// only seeds the UUIDs). The caller has validated the values (`DeviceSource::from_str`).
    pub fn new(count: u16, memory_bytes: u64, kind: &str, node_name: &str) -> Self {
        SimulatedBackend {
            count,
            memory_bytes,
            kind: kind.to_string(),
            node_name: node_name.to_string(),
            fault_dir: None,
        }
    }

    /// Reads faults from `dir` (see the module header).
    pub fn with_fault_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fault_dir = Some(dir.into());
        self
    }

    /// The fault file that marks device `index` unhealthy, if there is a fault directory.
    pub fn fault_file(&self, index: u16) -> Option<PathBuf> {
        self.fault_dir.as_deref().map(|dir| fault_file(dir, index))
    }

    fn health(&self, index: u16) -> Result<DeviceHealth, NodeError> {
        let Some(path) = self.fault_file(index) else {
            return Ok(DeviceHealth::Healthy);
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DeviceHealth::Healthy),
            Err(e) => {
                return Err(NodeError::io(
                    format!("reading fault file {}", path.display()),
                    e,
                ))
            }
        };
        let mut bytes = Vec::new();
        file.take(MAX_FAULT_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| NodeError::io(format!("reading fault file {}", path.display()), e))?;
        let text = String::from_utf8_lossy(&bytes);
        let reason = bounded_reason(text.trim(), &path);
        Ok(DeviceHealth::Unhealthy { reason })
    }
}

/// Path of the fault file for device `index` in `dir`: `dir/device-<index>.unhealthy`.
pub fn fault_file(dir: &Path, index: u16) -> PathBuf {
    dir.join(format!("device-{index}.unhealthy"))
}

/// A reason the scheduler accepts: 1 to `MAX_REASON_BYTES` bytes, cut at a char boundary.
fn bounded_reason(text: &str, path: &Path) -> String {
    if text.is_empty() {
        return format!("marked unhealthy by fault file {}", path.display())
            .chars()
            .take(MAX_REASON_BYTES / 4)
            .collect();
    }
    let mut end = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A stable id for simulated device `index` of `node_name`, shaped like an NVML UUID:
/// `SIM-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex of BLAKE3 over name and index).
pub fn simulated_uuid(node_name: &str, index: u16) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"singularity-simulated-device\0");
    hasher.update(node_name.as_bytes());
    hasher.update(b"\0");
    hasher.update(&index.to_le_bytes());
    let hex: String = hasher.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "SIM-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl DeviceBackend for SimulatedBackend {
    fn inventory(&mut self) -> Result<Inventory, NodeError> {
        let mut devices = Vec::with_capacity(self.count as usize);
        for index in 0..self.count {
            devices.push(DiscoveredDevice {
                index,
                name: format!("simulated {}", self.kind),
                kind: self.kind.clone(),
                memory_bytes: self.memory_bytes,
                uuid: simulated_uuid(&self.node_name, index),
                pci_bus_id: None,
                utilization_percent: None,
                health: self.health(index)?,
            });
        }
        Ok(Inventory {
            backend: "simulated",
            driver_version: None,
            devices,
            topology: Vec::new(),
        })
    }

    fn poll_health(&mut self) -> Result<Vec<(u16, DeviceHealth)>, NodeError> {
        (0..self.count)
            .map(|index| Ok((index, self.health(index)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_is_deterministic_and_registrable() {
        let mut backend = SimulatedBackend::new(4, 16 << 30, "a100", "node-1");
        let inv = backend.inventory().unwrap();
        assert_eq!(inv, backend.inventory().unwrap());
        assert_eq!(inv.backend, "simulated");
        assert_eq!(inv.driver_version, None);
        assert!(inv.topology.is_empty());
        assert_eq!(inv.devices.len(), 4);
        for (i, device) in inv.devices.iter().enumerate() {
            assert_eq!(device.index as usize, i);
            assert_eq!(device.name, "simulated a100");
            assert_eq!(device.kind, "a100");
            assert_eq!(device.memory_bytes, 16 << 30);
            assert_eq!(device.health, DeviceHealth::Healthy);
            assert_eq!(device.uuid, simulated_uuid("node-1", i as u16));
            let spec = device.to_spec();
            assert_eq!(spec.kind.as_str(), "a100");
            assert_eq!(spec.uuid, device.uuid);
        }
        let uuid = &inv.devices[0].uuid;
        assert_eq!(uuid.len(), 40, "{uuid}");
        assert!(uuid.starts_with("SIM-"), "{uuid}");
        // Different indexes and nodes give different ids; the same ones the same id.
        let ids: std::collections::BTreeSet<_> = inv.devices.iter().map(|d| &d.uuid).collect();
        assert_eq!(ids.len(), 4);
        assert_ne!(simulated_uuid("node-1", 0), simulated_uuid("node-2", 0));
        assert_eq!(simulated_uuid("node-1", 3), simulated_uuid("node-1", 3));
    }

    #[test]
    fn fault_files_make_devices_unhealthy_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let faults = dir.path().join("faults");
        let mut backend = SimulatedBackend::new(3, 1 << 30, "h100", "n").with_fault_dir(&faults);
        // No directory yet: every device is healthy.
        let all_healthy: Vec<_> = (0..3).map(|i| (i, DeviceHealth::Healthy)).collect();
        assert_eq!(backend.poll_health().unwrap(), all_healthy);

        std::fs::create_dir(&faults).unwrap();
        std::fs::write(fault_file(&faults, 1), "XID 79: fell off the bus\n").unwrap();
        std::fs::write(fault_file(&faults, 2), "").unwrap();
        std::fs::write(fault_file(&faults, 7), "no such device").unwrap();
        let health = backend.poll_health().unwrap();
        assert_eq!(health[0], (0, DeviceHealth::Healthy));
        assert_eq!(
            health[1],
            (
                1,
                DeviceHealth::Unhealthy {
                    reason: "XID 79: fell off the bus".to_string()
                }
            )
        );
        match &health[2].1 {
            DeviceHealth::Unhealthy { reason } => {
                assert!(reason.contains("device-2.unhealthy"), "{reason}")
            }
            other => panic!("device 2 should be unhealthy: {other:?}"),
        }
        assert_eq!(health.len(), 3);
        assert!(!backend.inventory().unwrap().devices[1].health.is_healthy());

        std::fs::remove_file(fault_file(&faults, 1)).unwrap();
        std::fs::remove_file(fault_file(&faults, 2)).unwrap();
        assert_eq!(backend.poll_health().unwrap(), all_healthy);
    }

    #[test]
    fn long_reasons_are_cut_to_what_the_scheduler_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = SimulatedBackend::new(1, 1 << 30, "h100", "n").with_fault_dir(dir.path());
        std::fs::write(fault_file(dir.path(), 0), "é".repeat(3000)).unwrap();
        let (_, health) = backend.poll_health().unwrap().remove(0);
        let DeviceHealth::Unhealthy { reason } = health else {
            panic!("device 0 should be unhealthy");
        };
        assert!(!reason.is_empty() && reason.len() <= MAX_REASON_BYTES);
        assert!(reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn an_unreadable_fault_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a file.
        std::fs::create_dir(fault_file(dir.path(), 0)).unwrap();
        let mut backend = SimulatedBackend::new(1, 1 << 30, "h100", "n").with_fault_dir(dir.path());
        let err = backend.poll_health().unwrap_err().to_string();
        assert!(err.contains("device-0.unhealthy"), "{err}");
    }
}
