//! Service tiers and what each one promises (DESIGN.md, "tier").
//!
//! The tier order and floors here are policy constants shared by apply (which refuses plans that
//! break a tier's promise) and the planner; they must not depend on anything but the tier.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's service tier. The derived order is by importance: `Basic < Standard < Premium`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Runs on idle capacity and yields first.
    Basic,
    /// May be shrunk down to half its devices, and preempted only for premium work.
    Standard,
    /// Never preempted or shrunk for a lower tier.
    Premium,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Premium, Tier::Standard, Tier::Basic];

    /// Target share of requested device-time, in parts per million (`None`: best effort).
    pub fn target_share_ppm(self) -> Option<u32> {
        match self {
            Tier::Premium => Some(950_000),
            Tier::Standard => Some(700_000),
            Tier::Basic => None,
        }
    }

    /// The fewest devices a job of this tier and world size may run on: premium runs whole,
    /// standard on at least half (rounded up to a divisor of the world size), basic on one.
    pub fn min_devices(self, world_size: u32) -> u32 {
        match self {
            Tier::Premium => world_size,
            Tier::Standard => {
                let half = world_size.div_ceil(2);
                (half..=world_size)
                    .find(|d| world_size % d == 0)
                    .unwrap_or(world_size)
            }
            Tier::Basic => 1,
        }
    }

    /// Whether a job of tier `self` may be preempted so that a job of tier `beneficiary` runs.
    pub fn may_be_preempted_for(self, beneficiary: Tier) -> bool {
        match self {
            Tier::Premium => beneficiary == Tier::Premium,
            Tier::Standard => beneficiary == Tier::Premium,
            Tier::Basic => true,
        }
    }

    /// Whether a job of tier `self` may be shrunk so that a job of tier `beneficiary` runs.
    pub fn may_be_shrunk_for(self, beneficiary: Tier) -> bool {
        match self {
            Tier::Premium => beneficiary == Tier::Premium,
            Tier::Standard | Tier::Basic => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Premium => "premium",
            Tier::Standard => "standard",
            Tier::Basic => "basic",
        }
    }

    /// Index into per-tier arrays, premium first.
    pub fn index(self) -> usize {
        match self {
            Tier::Premium => 0,
            Tier::Standard => 1,
            Tier::Basic => 2,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "premium" => Ok(Tier::Premium),
            "standard" => Ok(Tier::Standard),
            "basic" => Ok(Tier::Basic),
            other => Err(format!(
                "unknown tier {other:?}; use premium, standard or basic"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_divide_the_world_size() {
        assert_eq!(Tier::Premium.min_devices(8), 8);
        assert_eq!(Tier::Standard.min_devices(8), 4);
        assert_eq!(Tier::Standard.min_devices(6), 3);
        assert_eq!(Tier::Standard.min_devices(7), 7);
        assert_eq!(Tier::Standard.min_devices(1), 1);
        assert_eq!(Tier::Basic.min_devices(64), 1);
        for w in 1..200u32 {
            for t in Tier::ALL {
                let floor = t.min_devices(w);
                assert!(
                    floor >= 1 && floor <= w && w % floor == 0,
                    "{t} {w} {floor}"
                );
            }
        }
    }

    #[test]
    fn tier_rules() {
        assert!(!Tier::Premium.may_be_preempted_for(Tier::Standard));
        assert!(Tier::Premium.may_be_preempted_for(Tier::Premium));
        assert!(!Tier::Standard.may_be_preempted_for(Tier::Standard));
        assert!(Tier::Standard.may_be_shrunk_for(Tier::Standard));
        assert!(Tier::Basic.may_be_preempted_for(Tier::Basic));
        assert_eq!("standard".parse::<Tier>(), Ok(Tier::Standard));
        assert!("gold".parse::<Tier>().is_err());
    }
}
