//! Time as livehub counts it: changefeed stamps, and the clock readings
//! that are compared with them, stored, or sent.
//!
//! SurrealDB's versionstamps are `(unix_ms << 16) | counter`, minted from
//! the system clock and never below it, so a stamp is also a time. This
//! module is the only place that knows that layout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// A changefeed versionstamp: the position of a commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(pub u64);

/// Bits of a stamp below its milliseconds.
const COUNTER_BITS: u32 = 16;

impl Stamp {
    /// The lowest stamp a commit made at or after `time` can have.
    pub fn at(time: SystemTime) -> Stamp {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Stamp::of_millis(millis)
    }

    /// The lowest stamp a commit made now can have.
    pub fn now() -> Stamp {
        Stamp::at(SystemTime::now())
    }

    /// The first stamp of Unix millisecond `millis`.
    pub fn of_millis(millis: u64) -> Stamp {
        Stamp(millis.min(u64::MAX >> COUNTER_BITS) << COUNTER_BITS)
    }

    /// The Unix millisecond the commit was made in.
    pub fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// When the commit was made.
    pub(crate) fn time(self) -> OffsetDateTime {
        let millis = i128::from(self.millis());
        OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The stamp right after this one.
    pub(crate) fn next(self) -> Stamp {
        Stamp(self.0.saturating_add(1))
    }

    /// The first stamp `span` earlier (at the epoch at the latest).
    pub(crate) fn earlier_by(self, span: Duration) -> Stamp {
        Stamp(self.0.saturating_sub(Stamp::span(span)))
    }

    /// `span` in stamp units.
    fn span(span: Duration) -> u64 {
        Stamp::of_millis(u64::try_from(span.as_millis()).unwrap_or(u64::MAX)).0
    }
}

/// Milliseconds since the Unix epoch, now (as livehub stores times).
pub(crate) fn unix_ms_now() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// `time` in milliseconds since the Unix epoch.
pub fn unix_ms(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Seconds since the Unix epoch, now (as tokens count time).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// RFC 3339 in UTC with exactly three fractional digits, so every timestamp
/// livehub sends has the same shape (`2026-11-22T09:00:00.123Z`).
pub fn format_time(time: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// The time now, formatted as [`format_time`] does.
pub(crate) fn formatted_now() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// Reads an RFC 3339 time (as livehub stores them).
pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_map_to_commit_times() {
        let stamp = Stamp((1_700_000_000_123u64 << 16) | 5);
        assert_eq!(format_time(stamp.time()), "2023-11-14T22:13:20.123Z");
        assert_eq!(stamp.millis(), 1_700_000_000_123);
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(Stamp::at(time), Stamp(1_700_000_000_123u64 << 16));
        let whole_second = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(format_time(whole_second), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn stamp_arithmetic_saturates() {
        assert_eq!(Stamp(5).earlier_by(Duration::from_secs(1)), Stamp(0));
        assert_eq!(Stamp(u64::MAX).next(), Stamp(u64::MAX));
        assert_eq!(
            Stamp::of_millis(2_000).earlier_by(Duration::from_millis(500)),
            Stamp::of_millis(1_500)
        );
        assert_eq!(Stamp::of_millis(u64::MAX).millis(), u64::MAX >> 16);
    }
}
