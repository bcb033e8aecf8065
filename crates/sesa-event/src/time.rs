//! Time as the platform tells it: [`Instant`] is nanoseconds since the platform started.
//!
//! Never the OS clock directly: the simulator gives the same code a virtual clock.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time on the platform's monotonic clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The platform's epoch.
    pub const ZERO: Instant = Instant { nanos: 0 };

    /// `nanos` nanoseconds after the platform's epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant { nanos }
    }

    /// Nanoseconds since the platform's epoch.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// How long after `earlier` this is, or zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// This instant plus `d`, saturating at the end of time (584 years of uptime).
    pub fn saturating_add(self, d: Duration) -> Instant {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_add(d),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}
