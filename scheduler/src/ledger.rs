//! SLA accounting: per-tier totals of requested and delivered device-time, and the accrual
//! of a job's ledger up to a leader time.
//!
//! Accrual reads only the job and the time it is given; it never looks at a clock.

use crate::job::{Job, JobPhase};
use crate::tier::Tier;
use serde::{Deserialize, Serialize};

/// Requested and delivered device-time summed over jobs of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLedger {
    pub requested_device_ms: u64,
    pub delivered_device_ms: u64,
}

impl TierLedger {
    pub fn attainment_ppm(&self) -> u32 {
        if self.requested_device_ms == 0 {
            return 1_000_000;
        }
        (u128::from(self.delivered_device_ms) * 1_000_000 / u128::from(self.requested_device_ms))
            .min(1_000_000) as u32
    }
}

/// Per-tier totals: `live` over jobs still in the state, `retired` over jobs forgotten since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaTotals {
    pub live: [TierLedger; 3],
    pub retired: [TierLedger; 3],
}

impl SlaTotals {
    /// All-time totals of a tier.
    pub fn tier(&self, tier: Tier) -> TierLedger {
        let live = self.live[tier.index()];
        let retired = self.retired[tier.index()];
        TierLedger {
            requested_device_ms: live.requested_device_ms + retired.requested_device_ms,
            delivered_device_ms: live.delivered_device_ms + retired.delivered_device_ms,
        }
    }

    /// Moves a forgotten job's ledger from live to retired.
    pub(crate) fn retire(&mut self, job: &Job) {
        let i = job.spec.tier.index();
        self.live[i].requested_device_ms -= job.ledger.requested_device_ms;
        self.live[i].delivered_device_ms -= job.ledger.delivered_device_ms;
        self.retired[i].requested_device_ms += job.ledger.requested_device_ms;
        self.retired[i].delivered_device_ms += job.ledger.delivered_device_ms;
    }
}

/// Accrues `job`'s ledger up to `now_ms` and adds the same amounts to `totals`.
/// A finished job accrues nothing more.
pub(crate) fn accrue(job: &mut Job, totals: &mut SlaTotals, now_ms: u64) {
    let since = job.ledger.accrued_until_ms;
    if now_ms <= since {
        return;
    }
    job.ledger.accrued_until_ms = now_ms;
    if job.phase.is_terminal() {
        return;
    }
    let elapsed_ms = now_ms - since;
    let requested = u64::from(job.spec.world_size) * elapsed_ms;
    let delivered = if job.phase == JobPhase::Running {
        job.assignment.len() as u64 * elapsed_ms
    } else {
        0
    };
    job.ledger.requested_device_ms += requested;
    job.ledger.delivered_device_ms += delivered;
    let tier = &mut totals.live[job.spec.tier.index()];
    tier.requested_device_ms += requested;
    tier.delivered_device_ms += delivered;
}
