//! Deterministic tier assignment for trace jobs: a stable 64-bit FNV-1a hash of the seed and the
//! job id, mapped onto a tier mix such as `premium=0.2,standard=0.3,basic=0.5`.
//!
//! It must give the same tier for the same id and seed on every machine and in every build, so
//! it never uses `std`'s `DefaultHasher` (whose output may change between Rust releases).

use crate::tier::Tier;
use std::fmt;
use std::str::FromStr;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Shares are held in parts per million.
pub const PPM: u64 = 1_000_000;

/// 64-bit FNV-1a over `bytes`, continuing from `state` (start from `fnv1a_64(&[])`).
pub fn fnv1a_64_continue(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_continue(FNV_OFFSET_BASIS, bytes)
}

/// Shares of each tier, in parts per million; they sum to exactly one million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierMix {
    pub premium_ppm: u64,
    pub standard_ppm: u64,
    pub basic_ppm: u64,
}

impl Default for TierMix {
    /// The default mix: 20% premium, 30% standard, 50% basic.
    fn default() -> Self {
        TierMix {
            premium_ppm: 200_000,
            standard_ppm: 300_000,
            basic_ppm: 500_000,
        }
    }
}

impl TierMix {
    /// The share of `tier`, in parts per million.
    pub fn share_ppm(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Premium => self.premium_ppm,
            Tier::Standard => self.standard_ppm,
            Tier::Basic => self.basic_ppm,
        }
    }

    /// The tier of a job: the hash of `seed` and `job_id` picks a point in [0, 1), and the
    /// mix's cumulative shares (premium, then standard, then basic) say which tier holds it.
    pub fn assign(&self, seed: u64, job_id: &str) -> Tier {
        let hash = fnv1a_64_continue(fnv1a_64(&seed.to_le_bytes()), job_id.as_bytes());
        let point = hash % PPM;
        if point < self.premium_ppm {
            Tier::Premium
        } else if point < self.premium_ppm + self.standard_ppm {
            Tier::Standard
        } else {
            Tier::Basic
        }
    }
}

impl fmt::Display for TierMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = |ppm: u64| ppm as f64 / PPM as f64;
        write!(
            f,
            "premium={},standard={},basic={}",
            share(self.premium_ppm),
            share(self.standard_ppm),
            share(self.basic_ppm)
        )
    }
}

/// Parses a share such as `0.25` or `1` into parts per million, exactly (at most 6 decimals).
fn parse_share_ppm(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || fraction.len() > 6 || whole.len() > 1 {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut fraction_ppm: u64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        fraction_ppm += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    let ppm = whole * PPM + fraction_ppm;
    (ppm <= PPM).then_some(ppm)
}

impl FromStr for TierMix {
    type Err = String;

    /// `premium=0.2,standard=0.3,basic=0.5`: every tier at most once, shares between 0 and 1
    /// with at most 6 decimals, summing to exactly 1; a tier left out gets 0.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut shares: [Option<u64>; 3] = [None; 3];
        for part in text.split(',') {
            let part = part.trim();
            let Some((name, value)) = part.split_once('=') else {
                return Err(format!(
                    "{part:?} is not TIER=SHARE (for example premium=0.2,standard=0.3,basic=0.5)"
                ));
            };
            let tier: Tier = name.trim().parse()?;
            let ppm = parse_share_ppm(value.trim()).ok_or_else(|| {
                format!(
                    "the share of {tier} {:?} is not a number between 0 and 1 with at most 6 decimals",
                    value.trim()
                )
            })?;
            let slot = &mut shares[tier.index()];
            if slot.is_some() {
                return Err(format!("tier {tier} is given twice"));
            }
            *slot = Some(ppm);
        }
        let [premium, standard, basic] = shares.map(|s| s.unwrap_or(0));
        let sum = premium + standard + basic;
        if sum != PPM {
            return Err(format!(
                "the shares sum to {}, not 1",
                sum as f64 / PPM as f64
            ));
        }
        Ok(TierMix {
            premium_ppm: premium,
            standard_ppm: standard,
            basic_ppm: basic,
        })
    }
}
