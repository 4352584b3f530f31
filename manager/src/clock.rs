//! Wall-clock time for controllers, with timers on tokio's clock.
//!
//! Task timestamps are wall-clock (they are compared across managers and workers, and survive a
//! leader change), but waiting must go through tokio so that tests run on paused virtual time.
//! A `Clock` is either the system's wall clock or a virtual one that starts at a given time and
//! advances with tokio's clock; either way a wall-clock deadline becomes a tokio `Instant`
//! through [`Clock::instant_at`].

use std::time::{Duration, SystemTime};

use shoal_proto::Timestamp;
use tokio::time::Instant;

/// Where controllers read the time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The machine's wall clock (production).
    System,
    /// `wall` at tokio instant `at`, advancing with tokio's (possibly paused) clock: for tests.
    Virtual { wall: SystemTime, at: Instant },
}

impl Clock {
    /// A virtual clock reading `wall` now.
    pub fn starting_at(wall: SystemTime) -> Clock {
        Clock::Virtual {
            wall,
            at: Instant::now(),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> Timestamp {
        self.now_system().into()
    }

    fn now_system(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Virtual { wall, at } => *wall + at.elapsed(),
        }
    }

    /// The tokio instant at which the wall clock will read `t` (now, if `t` has passed).
    pub fn instant_at(&self, t: &Timestamp) -> Instant {
        let wait = t
            .to_system_time()
            .duration_since(self.now_system())
            .unwrap_or_default();
        Instant::now() + wait
    }
}

/// `t + d`, saturating.
pub fn add(t: &Timestamp, d: Duration) -> Timestamp {
    (t.to_system_time() + d).into()
}

/// `t - d`, clamped to the epoch.
pub fn sub(t: &Timestamp, d: Duration) -> Timestamp {
    t.to_system_time()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .into()
}

/// Total order on timestamps (seconds, then nanoseconds).
pub fn key(t: &Timestamp) -> (i64, u32) {
    (t.seconds, t.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_time_follows_tokio() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = Clock::starting_at(start);
        assert_eq!(clock.now(), Timestamp::from(start));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now().seconds, 1_000_003);
        let deadline = clock.instant_at(&add(&clock.now(), Duration::from_secs(2)));
        assert_eq!(deadline - Instant::now(), Duration::from_secs(2));
        // A time in the past is due now.
        assert!(clock.instant_at(&sub(&clock.now(), Duration::from_secs(9))) <= Instant::now());
    }
}
