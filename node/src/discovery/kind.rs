//! Maps a marketing name reported by NVML ("NVIDIA H100 80GB HBM3") to the scheduler's device
//! kind ("h100"), the word jobs name in their spec.
//!
//! It must stay a pure function of the name: no NVML calls, no I/O, no table of known models
//! (a model it has never seen still gets a sensible kind).

use singularity_scheduler::limits::MAX_NAME_CHARS;

/// Vendor and brand words that say nothing about the model.
const VENDOR_WORDS: [&str; 4] = ["nvidia", "tesla", "geforce", "quadro"];

/// Series words that only mean something together with the token after them ("RTX 4090").
const SERIES_WORDS: [&str; 3] = ["rtx", "gtx", "titan"];

/// The kind used when a name holds no model token at all.
pub const FALLBACK_KIND: &str = "gpu";

/// The scheduler device kind for an NVML device name.
///
/// Vendor words are dropped, the first remaining token is the model (cut at its first `-`, so
/// "A100-SXM4-80GB" gives "a100"); a series word such as "RTX" is joined with the token after
/// it. The result is lowercased and keeps only `[a-z0-9]`, at most `MAX_NAME_CHARS` of them.
///
/// "NVIDIA H100 80GB HBM3" → "h100", "Tesla V100-SXM2-16GB" → "v100",
/// "NVIDIA GeForce RTX 4090" → "rtx4090", "NVIDIA L4" → "l4".
pub fn kind_from_name(name: &str) -> String {
    let mut tokens = name
        .split_whitespace()
        .filter(|token| !VENDOR_WORDS.contains(&token.to_ascii_lowercase().as_str()));
    let mut kind = String::new();
    if let Some(first) = tokens.next() {
        let first = model_part(first);
        kind.push_str(&first);
        if SERIES_WORDS.contains(&first.as_str()) {
            if let Some(second) = tokens.next() {
                kind.push_str(&model_part(second));
            }
        }
    }
    kind.truncate(MAX_NAME_CHARS);
    if kind.is_empty() {
        kind.push_str(FALLBACK_KIND);
    }
    debug_assert!(singularity_scheduler::DeviceKind::new(kind.as_str()).is_ok());
    kind
}

/// The part of a token before its first `-`, lowercased, `[a-z0-9]` only.
fn model_part(token: &str) -> String {
    token
        .split('-')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_scheduler_kinds() {
        let cases = [
            ("NVIDIA H100 80GB HBM3", "h100"),
            ("NVIDIA H100 PCIe", "h100"),
            ("NVIDIA A100-SXM4-80GB", "a100"),
            ("NVIDIA A100-PCIE-40GB", "a100"),
            ("Tesla V100-SXM2-16GB", "v100"),
            ("Tesla T4", "t4"),
            ("NVIDIA H200", "h200"),
            ("NVIDIA GH200 480GB", "gh200"),
            ("NVIDIA GeForce RTX 4090", "rtx4090"),
            ("NVIDIA GeForce GTX 1080 Ti", "gtx1080"),
            ("NVIDIA RTX A6000", "rtxa6000"),
            ("Quadro RTX 8000", "rtx8000"),
            ("NVIDIA L4", "l4"),
            ("NVIDIA L40S", "l40s"),
            ("NVIDIA B200", "b200"),
            ("  nvidia   h100  ", "h100"),
        ];
        for (name, kind) in cases {
            assert_eq!(kind_from_name(name), kind, "name {name:?}");
        }
    }

    #[test]
    fn names_without_a_model_fall_back_and_stay_valid_kinds() {
        for name in ["", "NVIDIA", "NVIDIA GeForce", "NVIDIA ---", "NVIDIA ÄÖ"] {
            assert_eq!(kind_from_name(name), FALLBACK_KIND, "name {name:?}");
        }
        let long = format!("NVIDIA {}", "X".repeat(200));
        let kind = kind_from_name(&long);
        assert_eq!(kind.len(), MAX_NAME_CHARS);
        assert!(singularity_scheduler::DeviceKind::new(kind).is_ok());
    }
}
