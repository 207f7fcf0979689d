//! `DeviceSource`: where the agent's devices come from, parsed from the `--devices` flag
//! (`sim:COUNT[:MEMORY[:KIND]]` or `nvml`).
//!
//! It must only parse and validate: it opens no library and touches no device. Every bad form
//! gets an error that names what was wrong and the accepted forms.

use crate::error::NodeError;
use singularity_scheduler::limits::MAX_DEVICE_MEMORY_BYTES;
use singularity_scheduler::DeviceKind;
use std::fmt;
use std::str::FromStr;

/// Most devices one node may have: the scheduler's per-node limit, so a node the agent accepts
/// is never rejected at registration for its device count.
pub const MAX_DEVICES_PER_NODE: usize = singularity_scheduler::limits::MAX_DEVICES_PER_NODE;
/// Largest memory of one device, in bytes: the scheduler's limit (4 TiB).
pub const MAX_DEVICE_MEMORY: u64 = MAX_DEVICE_MEMORY_BYTES;
/// Memory of a simulated device when `--devices sim:COUNT` names none: 80 GiB, like an H100.
pub const DEFAULT_SIM_MEMORY_BYTES: u64 = 80 << 30;
/// Kind of a simulated device when `--devices` names none.
pub const DEFAULT_SIM_KIND: &str = "h100";

const _: () = assert!(MAX_DEVICES_PER_NODE >= 1 && MAX_DEVICES_PER_NODE <= u16::MAX as usize);
const _: () = assert!(DEFAULT_SIM_MEMORY_BYTES <= MAX_DEVICE_MEMORY);

/// Help text for the `--devices` flag, with the unit convention.
pub const DEVICES_HELP: &str = "Where devices come from: `nvml` (the machine's NVIDIA GPUs) or \
`sim:COUNT[:MEMORY[:KIND]]` (COUNT simulated devices, 1 to 64; MEMORY in bytes or with a \
K/M/G/T suffix, optionally followed by `iB` or `B`, always 1024-based, so 16G = 16GB = 16GiB = \
17179869184 bytes, default 80GiB; KIND the scheduler device kind, default h100). Examples: \
sim:4, sim:8:16GiB, sim:2:40G:a100, nvml";

/// Where the agent's devices come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSource {
    /// `count` simulated devices of `memory_bytes` each, of scheduler kind `kind`.
    Simulated {
        count: u16,
        memory_bytes: u64,
        kind: String,
    },
    /// The machine's NVIDIA GPUs, discovered through NVML.
    Nvml,
}

impl FromStr for DeviceSource {
    type Err = NodeError;

    fn from_str(input: &str) -> Result<Self, NodeError> {
        let bad = |problem: String| NodeError::BadDeviceSource {
            input: input.to_string(),
            problem,
        };
        let text = input.trim();
        if text == "nvml" {
            return Ok(DeviceSource::Nvml);
        }
        let mut parts = text.split(':');
        match parts.next() {
            Some("sim") => {}
            Some("nvml") => return Err(bad("nvml takes no arguments".to_string())),
            Some("") => return Err(bad("no device source given".to_string())),
            Some(other) => return Err(bad(format!("unknown device source {other:?}"))),
            None => unreachable!("split always yields a first part"),
        }
        let count_text = parts
            .next()
            .ok_or_else(|| bad("sim needs a device count".to_string()))?;
        let count = parse_count(count_text).map_err(bad)?;
        let memory_bytes = match parts.next() {
            None => DEFAULT_SIM_MEMORY_BYTES,
            Some(memory) => parse_memory(memory).map_err(bad)?,
        };
        let kind = match parts.next() {
            None => DEFAULT_SIM_KIND.to_string(),
            Some(kind) => {
                DeviceKind::new(kind)
                    .map_err(|rejection| bad(format!("the kind is not valid: {rejection}")))?;
                kind.to_string()
            }
        };
        if let Some(extra) = parts.next() {
            return Err(bad(format!(
                "unexpected field {extra:?} after the kind (at most 4 fields)"
            )));
        }
        Ok(DeviceSource::Simulated {
            count,
            memory_bytes,
            kind,
        })
    }
}

impl fmt::Display for DeviceSource {
    /// The flag form that parses back to the same source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSource::Nvml => f.write_str("nvml"),
            DeviceSource::Simulated {
                count,
                memory_bytes,
                kind,
            } => write!(f, "sim:{count}:{}:{kind}", format_memory(*memory_bytes)),
        }
    }
}

fn parse_count(text: &str) -> Result<u16, String> {
    let range = format!("the count must be 1 to {MAX_DEVICES_PER_NODE}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the count {text:?} is not a number; {range}"));
    }
    match text.parse::<u64>() {
        Ok(count) if (1..=MAX_DEVICES_PER_NODE as u64).contains(&count) => Ok(count as u16),
        _ => Err(format!("the count {text} is out of range; {range}")),
    }
}

/// Parses a memory size: a whole number of bytes, or a whole number followed by K, M, G or T
/// (any case), optionally followed by `iB` or `B`; every suffix is 1024-based. The result must
/// be 1 to `MAX_DEVICE_MEMORY` bytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let forms = "write MEMORY as bytes or as a whole number with K, M, G or T \
                 (optionally KiB/KB..., all 1024-based), e.g. 16GiB";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "the memory {text:?} does not start with a number; {forms}"
        ));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "the memory {text:?} has an unknown unit {suffix:?}; {forms}"
            ))
        }
    };
    let limit = format!(
        "the memory must be 1 byte to {} ({MAX_DEVICE_MEMORY} bytes)",
        format_memory(MAX_DEVICE_MEMORY)
    );
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(1u64 << shift));
    match bytes {
        Some(bytes) if (1..=MAX_DEVICE_MEMORY).contains(&bytes) => Ok(bytes),
        _ => Err(format!("the memory {text:?} is out of range; {limit}")),
    }
}

/// The shortest exact form of a byte count that `parse_memory` reads back ("16GiB", "1000").
pub fn format_memory(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(count: u16, memory_bytes: u64, kind: &str) -> DeviceSource {
        DeviceSource::Simulated {
            count,
            memory_bytes,
            kind: kind.to_string(),
        }
    }

    #[test]
    fn good_forms_parse() {
        let cases = [
            ("nvml", DeviceSource::Nvml),
            (" nvml ", DeviceSource::Nvml),
            ("sim:4", sim(4, 80 << 30, "h100")),
            ("sim:1", sim(1, 80 << 30, "h100")),
            ("sim:64", sim(64, 80 << 30, "h100")),
            ("sim:4:16GiB", sim(4, 16 << 30, "h100")),
            ("sim:4:16GB", sim(4, 16 << 30, "h100")),
            ("sim:4:16G", sim(4, 16 << 30, "h100")),
            ("sim:4:16g", sim(4, 16 << 30, "h100")),
            ("sim:4:16gib", sim(4, 16 << 30, "h100")),
            ("sim:2:512MiB", sim(2, 512 << 20, "h100")),
            ("sim:2:64K", sim(2, 64 << 10, "h100")),
            ("sim:2:1T", sim(2, 1 << 40, "h100")),
            ("sim:2:4TiB", sim(2, 4 << 40, "h100")),
            ("sim:2:1000", sim(2, 1000, "h100")),
            ("sim:2:1000B", sim(2, 1000, "h100")),
            ("sim:4:16GiB:a100", sim(4, 16 << 30, "a100")),
            ("sim:3:40G:sim", sim(3, 40 << 30, "sim")),
        ];
        for (input, expected) in cases {
            let parsed: DeviceSource = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, expected, "input {input:?}");
            let again: DeviceSource = parsed.to_string().parse().unwrap();
            assert_eq!(again, parsed, "round trip of {input:?} via {parsed}");
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong_and_the_accepted_forms() {
        let cases = [
            ("", "no device source given"),
            ("gpu", "unknown device source \"gpu\""),
            ("nvml:0", "nvml takes no arguments"),
            ("sim", "sim needs a device count"),
            (
                "sim:",
                "the count \"\" is not a number; the count must be 1 to 64",
            ),
            (
                "sim:0",
                "the count 0 is out of range; the count must be 1 to 64",
            ),
            (
                "sim:65",
                "the count 65 is out of range; the count must be 1 to 64",
            ),
            ("sim:-1", "the count \"-1\" is not a number"),
            ("sim:four", "the count \"four\" is not a number"),
            (
                "sim:99999999999999999999999",
                "the count 99999999999999999999999 is out of range",
            ),
            ("sim:4:", "the memory \"\" does not start with a number"),
            (
                "sim:4:GiB",
                "the memory \"GiB\" does not start with a number",
            ),
            ("sim:4:16XB", "has an unknown unit \"XB\""),
            ("sim:4:1.5GiB", "has an unknown unit \".5GiB\""),
            ("sim:4:0", "the memory \"0\" is out of range"),
            ("sim:4:5TiB", "the memory \"5TiB\" is out of range"),
            (
                "sim:4:99999999999T",
                "out of range; the memory must be 1 byte to 4TiB",
            ),
            ("sim:4:16GiB:", "the kind is not valid"),
            ("sim:4:16GiB:A100", "the kind is not valid"),
            (
                "sim:4:16GiB:a100:x",
                "unexpected field \"x\" after the kind",
            ),
        ];
        for (input, expected) in cases {
            let err = input.parse::<DeviceSource>().unwrap_err();
            assert!(
                matches!(err, NodeError::BadDeviceSource { .. }),
                "{input:?}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(expected), "{input:?}: {text}");
            assert!(
                text.starts_with(&format!("--devices {input:?}: ")),
                "{input:?}: {text}"
            );
            assert!(
                text.ends_with("; use sim:COUNT[:MEMORY[:KIND]] or nvml"),
                "{input:?}: {text}"
            );
        }
        let text = "sim:0".parse::<DeviceSource>().unwrap_err().to_string();
        assert_eq!(
            text,
            "--devices \"sim:0\": the count 0 is out of range; the count must be 1 to 64; \
             use sim:COUNT[:MEMORY[:KIND]] or nvml"
        );
    }

    #[test]
    fn memory_formats_read_back() {
        for bytes in [1, 1000, 1 << 10, 3 << 20, 80 << 30, 4 << 40, (1 << 30) + 1] {
            assert_eq!(parse_memory(&format_memory(bytes)), Ok(bytes));
        }
        assert_eq!(format_memory(80 << 30), "80GiB");
        assert_eq!(format_memory(1536 << 20), "1536MiB");
    }
}
