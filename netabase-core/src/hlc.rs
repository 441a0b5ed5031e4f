//! A hybrid logical clock: timestamps that follow the wall clock, never go backwards (not
//! even across a restart) and move past every timestamp the node has seen.
//!
//! Timestamps are microseconds in one `u64`, the field the record envelope has always
//! carried, so records written before this clock existed stay comparable. A new timestamp
//! is `max(wall, last + 1, floor)`, where `last` is the greatest timestamp issued or merged
//! so far and `floor` is a caller's lower bound (one above the version stored for the key
//! being written, so a local write always supersedes it).
//!
//! Received timestamps are checked against the local wall clock before they are believed:
//! - up to `wall + max_offset` (clocks in sync): merged, so the next local timestamp
//!   follows it;
//! - up to `wall + max_offset + max_drift`: accepted, not merged (a clock this far ahead
//!   must not drag the node's clock with it);
//! - beyond: refused with [`ClockError`].
//!
//! Restarts: before the clock issues a timestamp past its *ceiling*, it raises the ceiling
//! to `timestamp + ceiling_step` and the caller persists it (in the same sync as the write
//! that carries the timestamp). A restarted clock starts at the persisted ceiling, so
//! nothing it issues can repeat or precede what it issued before the restart, even when the
//! wall clock stepped back meanwhile.

use core::time::Duration;

/// Limits of a [`Hlc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HlcConfig {
    /// How far ahead of the local wall clock a received timestamp may be and still be
    /// merged into the local clock.
    pub max_offset: Duration,
    /// How much further ahead it may be and still be accepted (without merging).
    pub max_drift: Duration,
    /// How far beyond an issued timestamp the persisted ceiling is raised, so that the
    /// ceiling is written once per step rather than once per timestamp.
    pub ceiling_step: Duration,
}

impl Default for HlcConfig {
    fn default() -> Self {
        HlcConfig {
            max_offset: Duration::from_secs(1),
            max_drift: Duration::from_secs(60),
            ceiling_step: Duration::from_secs(5),
        }
    }
}

/// A received timestamp too far ahead of the local wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp {timestamp} is {ahead_micros} µs ahead of the local clock (at most {limit_micros} µs accepted)"
)]
pub struct ClockError {
    /// The refused timestamp.
    pub timestamp: u64,
    /// How far ahead of the local wall clock it is.
    pub ahead_micros: u64,
    /// The most accepted.
    pub limit_micros: u64,
}

/// What [`Hlc::observe`] did with a received timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Within `max_offset`: merged into the clock.
    Merged,
    /// Within `max_offset + max_drift`: accepted, not merged.
    Accepted,
}

/// A timestamp issued by [`Hlc::issue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The timestamp.
    pub timestamp: u64,
    /// A new ceiling the caller must persist before the timestamp becomes visible
    /// (`None`: the persisted one still covers it).
    pub persist_ceiling: Option<u64>,
}

/// A hybrid logical clock (see the [module documentation](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hlc {
    config: HlcConfig,
    /// Greatest timestamp issued or merged.
    last: u64,
    /// Every timestamp issued is at most this; persisted.
    ceiling: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Hlc {
    /// A clock that starts after `persisted_ceiling` (the ceiling of its previous run, if
    /// any).
    pub fn new(config: HlcConfig, persisted_ceiling: Option<u64>) -> Self {
        let ceiling = persisted_ceiling.unwrap_or(0);
        Hlc {
            config,
            last: ceiling,
            ceiling,
        }
    }

    /// The limits.
    pub fn config(&self) -> &HlcConfig {
        &self.config
    }

    /// The greatest timestamp issued or merged so far.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The ceiling: no timestamp issued so far exceeds it.
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// A new timestamp, at least `floor`, at wall-clock time `wall` (microseconds since the
    /// Unix epoch).
    pub fn issue(&mut self, wall: u64, floor: u64) -> Issued {
        let timestamp = wall.max(self.last.saturating_add(1)).max(floor);
        self.last = timestamp;
        let persist_ceiling = (timestamp > self.ceiling).then(|| {
            self.ceiling = timestamp.saturating_add(micros(self.config.ceiling_step));
            self.ceiling
        });
        Issued {
            timestamp,
            persist_ceiling,
        }
    }

    /// Checks a received timestamp against the local wall clock `wall` and merges it when
    /// it is close enough (see the [module documentation](self)).
    pub fn observe(&mut self, timestamp: u64, wall: u64) -> Result<Observed, ClockError> {
        let offset = micros(self.config.max_offset);
        let limit = offset.saturating_add(micros(self.config.max_drift));
        let ahead = timestamp.saturating_sub(wall);
        if ahead <= offset {
            self.last = self.last.max(timestamp);
            Ok(Observed::Merged)
        } else if ahead <= limit {
            Ok(Observed::Accepted)
        } else {
            Err(ClockError {
                timestamp,
                ahead_micros: ahead,
                limit_micros: limit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn follows_the_wall_clock_and_never_goes_back() {
        let mut hlc = Hlc::new(HlcConfig::default(), None);
        let a = hlc.issue(100 * SEC, 0);
        assert_eq!(a.timestamp, 100 * SEC);
        assert_eq!(a.persist_ceiling, Some(105 * SEC));
        // The wall clock steps back: the clock does not.
        let b = hlc.issue(50 * SEC, 0);
        assert_eq!(b.timestamp, 100 * SEC + 1);
        assert_eq!(b.persist_ceiling, None);
        // A floor above everything wins.
        assert_eq!(hlc.issue(50 * SEC, 200 * SEC).timestamp, 200 * SEC);
    }

    #[test]
    fn received_timestamps_are_merged_accepted_or_refused() {
        let mut hlc = Hlc::new(HlcConfig::default(), None);
        let wall = 1_000 * SEC;
        assert_eq!(hlc.observe(wall + SEC / 2, wall), Ok(Observed::Merged));
        assert_eq!(hlc.issue(wall, 0).timestamp, wall + SEC / 2 + 1);
        assert_eq!(hlc.observe(wall + 30 * SEC, wall), Ok(Observed::Accepted));
        assert!(hlc.issue(wall, 0).timestamp < wall + SEC);
        let err = hlc.observe(wall + 62 * SEC, wall).unwrap_err();
        assert_eq!(err.ahead_micros, 62 * SEC);
        assert_eq!(err.limit_micros, 61 * SEC);
        // The past is always fine.
        assert_eq!(hlc.observe(3, wall), Ok(Observed::Merged));
    }

    #[test]
    fn a_restart_starts_at_the_persisted_ceiling() {
        let mut hlc = Hlc::new(HlcConfig::default(), None);
        let issued = hlc.issue(10_000 * SEC, 0);
        let ceiling = issued.persist_ceiling.unwrap();
        for _ in 0..100 {
            assert_eq!(hlc.issue(10_000 * SEC, 0).persist_ceiling, None);
        }
        let mut restarted = Hlc::new(HlcConfig::default(), Some(ceiling));
        // The wall clock went back an hour across the restart.
        let after = restarted.issue(10_000 * SEC - 3600 * SEC, 0);
        assert!(after.timestamp > hlc.last());
    }

    #[derive(Clone, Debug)]
    enum Step {
        Issue { wall_step: i64, floor: u64 },
        Observe { ahead: i64 },
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (-5 * SEC as i64..5 * SEC as i64, 0u64..2_000 * SEC)
                .prop_map(|(wall_step, floor)| Step::Issue { wall_step, floor }),
            (-70 * SEC as i64..70 * SEC as i64).prop_map(|ahead| Step::Observe { ahead }),
            Just(Step::Restart),
        ]
    }

    proptest! {
        /// The clock's laws: issued timestamps strictly increase (across restarts from the
        /// persisted ceiling too), are at least the wall clock and the floor, follow every
        /// merged timestamp, and a refused timestamp changes nothing.
        #[test]
        fn hlc_laws(steps in proptest::collection::vec(step(), 1..60)) {
            let config = HlcConfig::default();
            let mut hlc = Hlc::new(config, None);
            let mut persisted: Option<u64> = None;
            let mut wall: u64 = 1_000 * SEC;
            let mut issued: Vec<u64> = Vec::new();
            let mut merged_max = 0u64;
            for s in steps {
                match s {
                    Step::Issue { wall_step, floor } => {
                        wall = wall.saturating_add_signed(wall_step);
                        let i = hlc.issue(wall, floor);
                        if let Some(c) = i.persist_ceiling {
                            persisted = Some(c);
                        }
                        prop_assert!(i.timestamp >= wall && i.timestamp >= floor);
                        prop_assert!(i.timestamp > merged_max);
                        prop_assert!(issued.last().is_none_or(|&l| i.timestamp > l));
                        prop_assert!(persisted.is_some_and(|c| i.timestamp <= c));
                        issued.push(i.timestamp);
                    }
                    Step::Observe { ahead } => {
                        let ts = wall.saturating_add_signed(ahead);
                        let before = hlc.clone();
                        match hlc.observe(ts, wall) {
                            Ok(Observed::Merged) => merged_max = merged_max.max(ts),
                            Ok(Observed::Accepted) => prop_assert_eq!(&hlc, &before),
                            Err(_) => {
                                prop_assert!(ts > wall + 61 * SEC);
                                prop_assert_eq!(&hlc, &before);
                            }
                        }
                    }
                    Step::Restart => {
                        // Merged timestamps that were never issued need not survive.
                        hlc = Hlc::new(config, persisted);
                        merged_max = 0;
                    }
                }
            }
        }
    }
}
