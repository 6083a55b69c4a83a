//! The one place that reads the wall clock.
//!
//! Everything that depends on "now" (scheduling, caps, hygiene, touchpoint
//! dates) takes a [`Clock`]. `cadence run` uses the system clock; one-shot
//! commands take `--now` so tests can walk a lead through weeks in
//! milliseconds. Clippy's `disallowed-methods` forbids `Utc::now` everywhere
//! else, so the injected clock cannot be bypassed by accident.

use chrono::{DateTime, Utc};

/// A source of the current time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The real wall clock.
    System,
    /// A fixed instant (from `--now`).
    Fixed(DateTime<Utc>),
    /// The real clock moved by a constant: `cadence run --now T` starts at T
    /// and then runs at real speed, to try a schedule or test the daemon.
    Shifted(chrono::Duration),
}

impl Clock {
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Clock::Fixed(at)
    }

    /// `--now` if given, else the real clock.
    pub fn from_option(now: Option<DateTime<Utc>>) -> Self {
        now.map_or(Clock::System, Clock::fixed)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            #[allow(clippy::disallowed_methods)]
            Clock::System => Utc::now(),
            Clock::Fixed(t) => *t,
            #[allow(clippy::disallowed_methods)]
            Clock::Shifted(by) => Utc::now() + *by,
        }
    }

    /// Milliseconds since the Unix epoch, the unit the store keeps times in.
    /// A real-speed clock that reads `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        #[allow(clippy::disallowed_methods)]
        let by = start - Utc::now();
        Clock::Shifted(by)
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// Converts store milliseconds back to a timestamp.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
