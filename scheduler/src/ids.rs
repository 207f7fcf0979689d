//! Identifiers: numeric ids that the state assigns in apply (never reused), and the client id
//! that a client chooses for exactly-once retries.
//!
//! Ids are plain data: they carry no meaning beyond identity and order, and must never be
//! derived from a clock or a random source inside the scheduler.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A registered node, assigned by apply when the node registers. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// A submitted job, assigned by apply at submission. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A committed action, assigned by apply when a plan commits. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId(pub u64);

/// A client's identity for exactly-once writes, chosen by the client (a random 128-bit value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u128);

/// One device: the node it is on and its index among that node's devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    pub node: NodeId,
    pub index: u16,
}

impl DeviceRef {
    pub fn new(node: NodeId, index: u16) -> Self {
        DeviceRef { node, index }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "action {}", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node.0, self.index)
    }
}

/// Renders a device list compactly for log summaries: `node#3[0-3,6] node#4[0-7]`.
pub fn format_devices(devices: &[DeviceRef]) -> String {
    let mut sorted: Vec<DeviceRef> = devices.to_vec();
    sorted.sort();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let node = sorted[i].node;
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{node}["));
        let mut first_range = true;
        while i < sorted.len() && sorted[i].node == node {
            let start = sorted[i].index;
            let mut end = start;
            while i + 1 < sorted.len()
                && sorted[i + 1].node == node
                && sorted[i + 1].index == end + 1
            {
                end += 1;
                i += 1;
            }
            if !first_range {
                out.push(',');
            }
            first_range = false;
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
            i += 1;
        }
        out.push(']');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_render_as_ranges_per_node() {
        let d = |n, i| DeviceRef::new(NodeId(n), i);
        let text = format_devices(&[d(4, 1), d(3, 0), d(3, 1), d(3, 2), d(3, 6), d(4, 0)]);
        assert_eq!(text, "node#3[0-2,6] node#4[0-1]");
        assert_eq!(format_devices(&[]), "");
    }
}
