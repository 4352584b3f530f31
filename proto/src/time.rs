//! Conversions between the model's Timestamp/Duration messages and std types.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Duration, Timestamp};

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// As a SystemTime (times before the epoch clamp to it).
    pub fn to_system_time(&self) -> SystemTime {
        let secs = u64::try_from(self.seconds).unwrap_or(0);
        UNIX_EPOCH + std::time::Duration::new(secs, self.nanos)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

impl Duration {
    /// As a std Duration (negative spans clamp to zero).
    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::new(u64::try_from(self.seconds).unwrap_or(0), self.nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let d = std::time::Duration::from_millis(1500);
        assert_eq!(Duration::from(d).to_std(), d);
        let t = SystemTime::now();
        let back = Timestamp::from(t).to_system_time();
        assert_eq!(back, t);
    }
}
