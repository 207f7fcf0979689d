//! The NVML device backend: the machine's NVIDIA GPUs, their names, UUIDs, memory, utilisation,
//! PCI bus ids, pairwise topology, and health, read through `nvml-wrapper`, which loads
//! `libnvidia-ml.so` at run time.
//!
//! Health (`poll_health`) is bounded: per device, at most one handle lookup and three queries.
//! A device is unhealthy when
//! - NVML can no longer find it by the UUID the inventory recorded, or a memory query fails
//!   (for example `GpuLost`: it fell off the bus);
//! - it has pages pending retirement (`nvmlDeviceGetRetiredPagesPendingStatus`; it needs a
//!   reset);
//! - it counted uncorrected ECC errors since the driver loaded (volatile counter of
//!   `nvmlDeviceGetTotalEccErrors`).
//!
//! A check the device does not support (`NotSupported`, e.g. ECC on a consumer card) counts as
//! passed. Critical XID errors are not checked: NVML reports them only as events on a
//! registered event set, which this backend does not hold.
//!
//! It must not change device state (no resets, no clock or mode changes) and must not panic on
//! any NVML answer.

use super::inventory::{DiscoveredDevice, Inventory, TopologyLink};
use super::kind::kind_from_name;
use super::source::MAX_DEVICES_PER_NODE;
use super::DeviceBackend;
use crate::error::NodeError;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TopologyLevel};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use singularity_scheduler::limits::MAX_REASON_BYTES;
use singularity_scheduler::DeviceHealth;

/// NVLink links probed per device (NVML_NVLINK_MAX_LINKS of current drivers).
pub const MAX_NVLINKS_PER_DEVICE: u32 = 18;

/// The machine's NVIDIA GPUs through NVML.
pub struct NvmlBackend {
    nvml: Nvml,
    /// UUIDs in index order, recorded by the last inventory; health is polled by UUID so a
    /// device that disappears is reported as lost rather than confused with another.
    uuids: Vec<String>,
}

impl std::fmt::Debug for NvmlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlBackend")
            .field("uuids", &self.uuids)
            .finish_non_exhaustive()
    }
}

impl NvmlBackend {
    /// Loads `libnvidia-ml.so` and initialises NVML; says clearly when it cannot.
    pub fn open() -> Result<Self, NodeError> {
        let nvml = Nvml::init().map_err(unavailable)?;
        Ok(NvmlBackend {
            nvml,
            uuids: Vec::new(),
        })
    }

    fn device(&self, index: u16) -> Result<Device<'_>, NodeError> {
        self.nvml
            .device_by_index(u32::from(index))
            .map_err(|e| query_error(format!("device {index}"), e))
    }

    fn discover_device(&self, index: u16) -> Result<DiscoveredDevice, NodeError> {
        let device = self.device(index)?;
        let what = |field: &str| format!("device {index} {field}");
        let name = device.name().map_err(|e| query_error(what("name"), e))?;
        let uuid = device.uuid().map_err(|e| query_error(what("uuid"), e))?;
        let memory = device
            .memory_info()
            .map_err(|e| query_error(what("memory"), e))?;
        let pci_bus_id = device.pci_info().ok().map(|info| info.bus_id);
        let utilization_percent = device.utilization_rates().ok().map(|u| u.gpu);
        let health = judge_health(&probe(&device));
        Ok(DiscoveredDevice {
            index,
            kind: kind_from_name(&name),
            name,
            memory_bytes: memory.total,
            uuid,
            pci_bus_id,
            utilization_percent,
            health,
        })
    }

    /// NVLink first (an active link whose remote PCI bus id is another device's), then the
    /// closest common PCI ancestor for the pairs without one. Pairs NVML cannot describe are left
    /// out.
    fn topology(&self, devices: &[DiscoveredDevice]) -> Vec<TopologyLink> {
        let mut nvlinked = std::collections::BTreeSet::new();
        for device in devices {
            let Ok(handle) = self.device(device.index) else {
                continue;
            };
            for link in 0..MAX_NVLINKS_PER_DEVICE {
                let wrapper = handle.link_wrapper_for(link);
                match wrapper.is_active() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    // An unsupported or out-of-range link ends this device's links.
                    Err(_) => break,
                }
                let Ok(remote) = wrapper.remote_pci_info() else {
                    continue;
                };
                let peer = devices.iter().find(|other| {
                    other.index != device.index
                        && other
                            .pci_bus_id
                            .as_deref()
                            .is_some_and(|id| same_bus_id(id, &remote.bus_id))
                });
                if let Some(peer) = peer {
                    let pair = (device.index.min(peer.index), device.index.max(peer.index));
                    nvlinked.insert(pair);
                }
            }
        }
        let mut links = Vec::new();
        for (i, a) in devices.iter().enumerate() {
            for b in &devices[i + 1..] {
                let level = if nvlinked.contains(&(a.index, b.index)) {
                    Some("nvlink".to_string())
                } else {
                    self.common_ancestor(a.index, b.index)
                };
                if let Some(level) = level {
                    links.push(TopologyLink {
                        a: a.index,
                        b: b.index,
                        level,
                    });
                }
            }
        }
        links
    }

    fn common_ancestor(&self, a: u16, b: u16) -> Option<String> {
        let first = self.device(a).ok()?;
        let second = self.device(b).ok()?;
        let level = first.topology_common_ancestor(second).ok()?;
        Some(topology_level_name(level).to_string())
    }
}

impl DeviceBackend for NvmlBackend {
    fn inventory(&mut self) -> Result<Inventory, NodeError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| query_error("device count".to_string(), e))?;
        if count == 0 {
            return Err(NodeError::Nvml {
                what: "device count".to_string(),
                detail: "NVML found no GPUs on this machine; use --devices sim:COUNT[:MEMORY] \
                         for simulated devices"
                    .to_string(),
            });
        }
        NodeError::check_limit(
            "NVML devices on this machine",
            u64::from(count),
            MAX_DEVICES_PER_NODE as u64,
        )?;
        let devices = (0..count as u16)
            .map(|index| self.discover_device(index))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = self.topology(&devices);
        self.uuids = devices.iter().map(|d| d.uuid.clone()).collect();
        Ok(Inventory {
            backend: "nvml",
            driver_version: self.nvml.sys_driver_version().ok(),
            devices,
            topology,
        })
    }

    fn poll_health(&mut self) -> Result<Vec<(u16, DeviceHealth)>, NodeError> {
        if self.uuids.is_empty() {
            self.inventory()?;
        }
        let health = self
            .uuids
            .iter()
            .enumerate()
            .map(|(index, uuid)| {
                let health = match self.nvml.device_by_uuid(uuid.as_str()) {
                    Ok(device) => judge_health(&probe(&device)),
                    Err(e) => unhealthy(format!("NVML cannot find device {uuid}: {e}")),
                };
                (index as u16, health)
            })
            .collect();
        Ok(health)
    }
}

/// What the health checks saw for one device. `None` means the check is not supported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthProbe {
    /// An error from a basic query (memory info), if it failed.
    pub query_error: Option<String>,
    pub pages_pending_retirement: Option<bool>,
    pub uncorrected_ecc_errors: Option<u64>,
}

fn probe(device: &Device<'_>) -> HealthProbe {
    let query_error = device.memory_info().err().map(|e| e.to_string());
    let pages_pending_retirement = device.are_pages_pending_retired().ok();
    let uncorrected_ecc_errors = device
        .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
        .ok();
    HealthProbe {
        query_error,
        pages_pending_retirement,
        uncorrected_ecc_errors,
    }
}

/// The health a probe means; every failing check is named in the reason.
pub fn judge_health(probe: &HealthProbe) -> DeviceHealth {
    let mut problems = Vec::new();
    if let Some(error) = &probe.query_error {
        problems.push(format!("NVML query failed: {error}"));
    }
    if probe.pages_pending_retirement == Some(true) {
        problems.push("memory pages are pending retirement (reset the GPU)".to_string());
    }
    if let Some(count) = probe.uncorrected_ecc_errors.filter(|&count| count > 0) {
        problems.push(format!(
            "{count} uncorrected ECC errors since the driver loaded"
        ));
    }
    if problems.is_empty() {
        DeviceHealth::Healthy
    } else {
        unhealthy(problems.join("; "))
    }
}

/// An unhealthy state with a reason the scheduler accepts (1 to `MAX_REASON_BYTES` bytes).
fn unhealthy(reason: String) -> DeviceHealth {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason[..end].to_string();
    assert!(
        !reason.trim().is_empty(),
        "invariant: a health reason is never empty"
    );
    DeviceHealth::Unhealthy { reason }
}

/// The topology level's name in `TopologyLink::level`.
pub fn topology_level_name(level: TopologyLevel) -> &'static str {
    match level {
        TopologyLevel::Internal => "same-board",
        TopologyLevel::Single => "single-switch",
        TopologyLevel::Multiple => "multiple-switches",
        TopologyLevel::HostBridge => "host-bridge",
        TopologyLevel::Node => "numa-node",
        TopologyLevel::System => "system",
    }
}

/// PCI bus ids compare without case and without leading zeros of the domain
/// ("00000000:18:00.0" and "0000:18:00.0" are the same bus).
fn same_bus_id(a: &str, b: &str) -> bool {
    fn normal(id: &str) -> String {
        let id = id.trim().to_ascii_lowercase();
        match id.split_once(':') {
            Some((domain, rest)) => format!("{}:{rest}", domain.trim_start_matches('0')),
            None => id,
        }
    }
    normal(a) == normal(b)
}

/// Why NVML could not be opened, in the words the operator needs.
fn unavailable(error: NvmlError) -> NodeError {
    let detail = match &error {
        NvmlError::LibloadingError(e) => format!("libnvidia-ml.so could not be loaded: {e}"),
        NvmlError::FailedToLoadSymbol(e) => {
            format!("libnvidia-ml.so is missing a function (driver too old?): {e}")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        other => format!("NVML could not be initialised: {other}"),
    };
    NodeError::NvmlUnavailable { detail }
}

fn query_error(what: String, error: NvmlError) -> NodeError {
    NodeError::Nvml {
        what,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_every_failing_check() {
        assert_eq!(judge_health(&HealthProbe::default()), DeviceHealth::Healthy);
        let fine = HealthProbe {
            query_error: None,
            pages_pending_retirement: Some(false),
            uncorrected_ecc_errors: Some(0),
        };
        assert_eq!(judge_health(&fine), DeviceHealth::Healthy);
        let bad = HealthProbe {
            query_error: Some("the GPU has fallen off the bus".to_string()),
            pages_pending_retirement: Some(true),
            uncorrected_ecc_errors: Some(3),
        };
        let DeviceHealth::Unhealthy { reason } = judge_health(&bad) else {
            panic!("a failing probe must be unhealthy");
        };
        assert_eq!(
            reason,
            "NVML query failed: the GPU has fallen off the bus; memory pages are pending \
             retirement (reset the GPU); 3 uncorrected ECC errors since the driver loaded"
        );
        let long = HealthProbe {
            query_error: Some("é".repeat(2000)),
            ..HealthProbe::default()
        };
        let DeviceHealth::Unhealthy { reason } = judge_health(&long) else {
            panic!("a failing probe must be unhealthy");
        };
        assert!(reason.len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn bus_ids_compare_by_bus() {
        assert!(same_bus_id("00000000:18:00.0", "0000:18:00.0"));
        assert!(same_bus_id("00000000:AB:00.0", "00000000:ab:00.0"));
        assert!(!same_bus_id("00000000:18:00.0", "00000000:19:00.0"));
        assert!(!same_bus_id("00000001:18:00.0", "00000000:18:00.0"));
    }

    #[test]
    fn topology_levels_have_names() {
        assert_eq!(topology_level_name(TopologyLevel::Internal), "same-board");
        assert_eq!(topology_level_name(TopologyLevel::Single), "single-switch");
        assert_eq!(topology_level_name(TopologyLevel::System), "system");
    }
}
