//! Measuring planner latency without a clock in the core: the simulator asks an injected
//! `Stopwatch` for the time around each `Policy::plan` call. The binary passes one backed by
//! `std::time::Instant`; tests pass `FakeStopwatch`, so reports are reproducible.
//!
//! Nothing in this module reads a clock; the measured latencies are reported, never used to
//! decide anything in the simulation.

/// A monotonic source of nanoseconds, injected by the caller.
pub trait Stopwatch {
    /// Nanoseconds since an arbitrary origin; never decreases.
    fn now_ns(&mut self) -> u64;
}

/// A stopwatch that advances by a fixed step on every reading: deterministic latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct FakeStopwatch {
    pub now_ns: u64,
    pub step_ns: u64,
}

impl FakeStopwatch {
    /// Each `plan` call then measures exactly `step_ns`.
    pub fn new(step_ns: u64) -> Self {
        FakeStopwatch { now_ns: 0, step_ns }
    }
}

impl Stopwatch for FakeStopwatch {
    fn now_ns(&mut self) -> u64 {
        self.now_ns = self.now_ns.saturating_add(self.step_ns);
        self.now_ns
    }
}
