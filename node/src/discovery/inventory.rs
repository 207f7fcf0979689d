//! What discovery found: the devices of this machine, the driver, and the topology between
//! device pairs; plus the human-readable table `singularity agent --discover-only` prints.
//!
//! It must only describe: no NVML calls, no file reads. Backends fill it in.

use singularity_scheduler::{DeviceHealth, DeviceKind, DeviceSpec};
use std::fmt::Write as _;

/// One accelerator as discovery found it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveredDevice {
    /// Position in the backend's enumeration (NVML index, or 0.. for simulated devices).
    pub index: u16,
    /// The marketing name ("NVIDIA H100 80GB HBM3") or "simulated h100".
    pub name: String,
    /// The scheduler's device kind ("h100"); always a valid `DeviceKind`.
    pub kind: String,
    pub memory_bytes: u64,
    /// NVML UUID ("GPU-…"); for a simulated device a stable id from node name and index.
    pub uuid: String,
    /// PCI bus id ("00000000:18:00.0") where there is one.
    pub pci_bus_id: Option<String>,
    /// GPU utilisation over NVML's last sample period, where NVML reports it.
    pub utilization_percent: Option<u32>,
    pub health: DeviceHealth,
}

impl DiscoveredDevice {
    /// What the agent registers for this device.
    ///
    /// Panics only if a backend broke its contract and produced an invalid kind; both backends
    /// produce kinds that `DeviceKind::new` accepts (tested).
    pub fn to_spec(&self) -> DeviceSpec {
        let kind = DeviceKind::new(self.kind.as_str()).unwrap_or_else(|rejection| {
            panic!(
                "invariant: discovery produced an invalid kind {:?}: {rejection}",
                self.kind
            )
        });
        DeviceSpec {
            kind,
            memory_bytes: self.memory_bytes,
            uuid: self.uuid.clone(),
            health: self.health.clone(),
        }
    }
}

/// How two devices are connected, closest first: "nvlink", "same-board", "single-switch",
/// "multiple-switches", "host-bridge", "numa-node", "system".
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TopologyLink {
    /// The lower device index of the pair.
    pub a: u16,
    /// The higher device index of the pair.
    pub b: u16,
    pub level: String,
}

/// Everything discovery found on this machine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    /// "simulated" or "nvml".
    pub backend: &'static str,
    pub driver_version: Option<String>,
    /// Sorted by index, indexes 0..len.
    pub devices: Vec<DiscoveredDevice>,
    /// One link per device pair NVML described (empty for simulated devices), sorted by (a, b).
    pub topology: Vec<TopologyLink>,
}

impl Inventory {
    /// The device specs to register, in index order.
    pub fn specs(&self) -> Vec<DeviceSpec> {
        self.devices.iter().map(DiscoveredDevice::to_spec).collect()
    }
}

/// A human-readable table of the inventory: a header line, one row per device (index, name,
/// kind, memory in GiB, uuid, health, utilisation), then the topology links if any.
pub fn format_inventory(inv: &Inventory) -> String {
    let mut out = String::new();
    let driver = inv.driver_version.as_deref().unwrap_or("-");
    let _ = writeln!(
        out,
        "backend: {}   driver: {driver}   devices: {}",
        inv.backend,
        inv.devices.len()
    );
    let header = ["INDEX", "NAME", "KIND", "MEMORY", "UUID", "UTIL", "HEALTH"];
    let rows: Vec<[String; 7]> = inv
        .devices
        .iter()
        .map(|device| {
            [
                device.index.to_string(),
                device.name.clone(),
                device.kind.clone(),
                format!(
                    "{:.1} GiB",
                    device.memory_bytes as f64 / (1u64 << 30) as f64
                ),
                if device.uuid.is_empty() {
                    "-".to_string()
                } else {
                    device.uuid.clone()
                },
                device
                    .utilization_percent
                    .map_or("-".to_string(), |percent| format!("{percent}%")),
                match &device.health {
                    DeviceHealth::Healthy => "healthy".to_string(),
                    DeviceHealth::Unhealthy { reason } => format!("UNHEALTHY: {reason}"),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[column]);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    if !inv.topology.is_empty() {
        let _ = writeln!(out, "topology:");
        for link in &inv.topology {
            let _ = writeln!(out, "  {} <-> {}: {}", link.a, link.b, link.level);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u16, health: DeviceHealth) -> DiscoveredDevice {
        DiscoveredDevice {
            index,
            name: "NVIDIA H100 80GB HBM3".to_string(),
            kind: "h100".to_string(),
            memory_bytes: 80 << 30,
            uuid: format!("GPU-{index}"),
            pci_bus_id: Some(format!("00000000:{index:02x}:00.0")),
            utilization_percent: Some(7),
            health,
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            backend: "nvml",
            driver_version: Some("550.54.15".to_string()),
            devices: vec![
                device(0, DeviceHealth::Healthy),
                device(
                    1,
                    DeviceHealth::Unhealthy {
                        reason: "2 uncorrected ECC errors".to_string(),
                    },
                ),
            ],
            topology: vec![TopologyLink {
                a: 0,
                b: 1,
                level: "nvlink".to_string(),
            }],
        }
    }

    #[test]
    fn the_table_has_a_row_per_device_with_every_column() {
        let text = format_inventory(&inventory());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "backend: nvml   driver: 550.54.15   devices: 2",
            "{text}"
        );
        assert!(lines[1].starts_with("INDEX  NAME"), "{text}");
        assert!(lines[2].starts_with("0      NVIDIA H100 80GB HBM3  h100  80.0 GiB  GPU-0  7%"));
        assert!(lines[2].ends_with("healthy"), "{text}");
        assert!(
            lines[3].ends_with("UNHEALTHY: 2 uncorrected ECC errors"),
            "{text}"
        );
        assert_eq!(lines[4], "topology:");
        assert_eq!(lines[5], "  0 <-> 1: nvlink");
        assert_eq!(lines.len(), 6, "{text}");
    }

    #[test]
    fn devices_become_specs_and_serialize() {
        let inv = inventory();
        let specs = inv.specs();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].kind.as_str(), "h100");
        assert_eq!(specs[0].memory_bytes, 80 << 30);
        assert_eq!(specs[0].uuid, "GPU-0");
        assert!(!specs[1].health.is_healthy());
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["backend"], "nvml");
        assert_eq!(json["devices"][1]["index"], 1);
        assert_eq!(json["devices"][0]["utilization_percent"], 7);
        assert_eq!(json["topology"][0]["level"], "nvlink");
    }
}
