//! RFC 3339 timestamps, parsed strictly, and the injectable clock the verifier reads.
//!
//! The envelope carries its times as RFC 3339 strings. We accept exactly the profile the
//! spec names: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of one to nine digits, and
//! either `Z` or a numeric `±HH:MM` offset. Lowercase `t`/`z`, leap seconds and missing
//! offsets are refused, because every accepted spelling is one more way for two parsers
//! to disagree about when a passport expires.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An instant, held as nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    nanos: i128,
}

/// Why a timestamp string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimestampError {
    /// Shorter than the shortest accepted spelling (`YYYY-MM-DDTHH:MM:SSZ`).
    TooShort,
    /// A month, day (for that month and year) outside the calendar.
    DateOutOfRange,
    /// An hour, minute or second outside the day; leap seconds are refused.
    TimeOfDayOutOfRange,
    /// A fraction of zero or more than nine digits.
    FractionDigits,
    /// A numeric offset beyond `±23:59`.
    OffsetOutOfRange,
    /// Neither `Z` nor a `±HH:MM` offset closes the string.
    MissingOffset,
    /// A separator (`-`, `T`, `:`) is not where the profile puts it.
    UnexpectedCharacter,
    /// The string ends inside a field.
    Truncated,
    /// A field holds something other than ASCII digits.
    ExpectedDigit,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            TimestampError::TooShort => "too short",
            TimestampError::DateOutOfRange => "date out of range",
            TimestampError::TimeOfDayOutOfRange => "time of day out of range",
            TimestampError::FractionDigits => "fraction must have one to nine digits",
            TimestampError::OffsetOutOfRange => "offset out of range",
            TimestampError::MissingOffset => "expected Z or a ±HH:MM offset at the end",
            TimestampError::UnexpectedCharacter => "unexpected character",
            TimestampError::Truncated => "truncated",
            TimestampError::ExpectedDigit => "expected a digit",
        };
        write!(f, "not an RFC 3339 timestamp: {reason}")
    }
}

impl std::error::Error for TimestampError {}

const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Timestamp {
    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Timestamp {
            nanos: secs as i128 * NANOS_PER_SEC,
        }
    }

    /// `0001-01-01T00:00:00Z`, the zero value of Go's time type. The reference cannot
    /// tell it from a missing timestamp, so a passport naming it is refused as malformed.
    pub const ZERO_INSTANT: Timestamp = Timestamp {
        nanos: -62_135_596_800 * NANOS_PER_SEC,
    };

    /// `9999-12-31T23:59:59.999999999Z`, the latest instant the four-digit years of
    /// section 3 can write; a later one has no spelling a verifier parses.
    pub const LATEST: Timestamp = Timestamp {
        nanos: 253_402_300_799 * NANOS_PER_SEC + 999_999_999,
    };

    /// The current system time.
    pub fn now() -> Self {
        let nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Timestamp { nanos }
    }

    /// Whole seconds since the epoch, rounded towards negative infinity.
    pub fn unix_seconds(self) -> i64 {
        self.nanos.div_euclid(NANOS_PER_SEC) as i64
    }

    /// Nanoseconds since the epoch.
    pub fn unix_nanos(self) -> i128 {
        self.nanos
    }

    /// This instant moved by `secs` seconds (negative moves it back).
    pub fn plus_seconds(self, secs: i64) -> Self {
        Timestamp {
            nanos: self.nanos + secs as i128 * NANOS_PER_SEC,
        }
    }

    /// Nanoseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn nanos_since(self, earlier: Timestamp) -> i128 {
        self.nanos - earlier.nanos
    }

    /// Parses the strict RFC 3339 profile described in the module documentation.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError::TooShort);
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        expect(b, 10, b'T')?;
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(TimestampError::DateOutOfRange);
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimestampError::TimeOfDayOutOfRange);
        }
        let mut pos = 19;
        let mut fraction: i128 = 0;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let count = pos - start;
            if count == 0 || count > 9 {
                return Err(TimestampError::FractionDigits);
            }
            fraction = i128::from(digits(b, start, count)?) * 10i128.pow(9 - count as u32);
        }
        let offset_secs: i64 = match b.get(pos) {
            Some(b'Z') if pos + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
                let oh = digits(b, pos + 1, 2)?;
                expect(b, pos + 3, b':')?;
                let om = digits(b, pos + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err(TimestampError::OffsetOutOfRange);
                }
                let magnitude = i64::from(oh * 3600 + om * 60);
                if sign == b'+' {
                    magnitude
                } else {
                    -magnitude
                }
            }
            _ => return Err(TimestampError::MissingOffset),
        };
        let days = days_from_civil(i64::from(year), month, day);
        let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
        let secs = local - offset_secs;
        Ok(Timestamp {
            nanos: i128::from(secs) * NANOS_PER_SEC + fraction,
        })
    }

    /// Formats as RFC 3339 in UTC with `Z`, printing a fraction only when there is one.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.nanos.div_euclid(NANOS_PER_SEC) as i64;
        let frac = self.nanos.rem_euclid(NANOS_PER_SEC) as u32;
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )?;
        if frac != 0 {
            let digits = format!("{frac:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

fn expect(b: &[u8], pos: usize, want: u8) -> Result<(), TimestampError> {
    if b.get(pos) == Some(&want) {
        Ok(())
    } else {
        Err(TimestampError::UnexpectedCharacter)
    }
}

fn digits(b: &[u8], start: usize, count: usize) -> Result<u32, TimestampError> {
    let slice = b
        .get(start..start + count)
        .ok_or(TimestampError::Truncated)?;
    slice.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(TimestampError::ExpectedDigit)
        }
    })
}

fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where the verifier reads "now" from. Tests and the conformance runner fix it.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that can be set by hand; clones share one instant.
///
/// The instant is kept to the nanosecond: a fixed clock that dropped the fraction would
/// accept `now = expires_at + 0.5 s`, which the system clock refuses.
#[derive(Clone, Debug)]
pub struct FixedClock(std::sync::Arc<std::sync::Mutex<Timestamp>>);

impl FixedClock {
    /// A clock stopped at `t`.
    pub fn new(t: Timestamp) -> Self {
        FixedClock(std::sync::Arc::new(std::sync::Mutex::new(t)))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_reason() {
        for (text, reason) in [
            ("2026-05-21T12:00Z", TimestampError::TooShort),
            ("2026-02-30T12:00:00Z", TimestampError::DateOutOfRange),
            ("2026-05-21T12:00:60Z", TimestampError::TimeOfDayOutOfRange),
            ("2026-05-21T12:00:00.Z", TimestampError::FractionDigits),
            (
                "2026-05-21T12:00:00+24:00",
                TimestampError::OffsetOutOfRange,
            ),
            ("2026-05-21T12:00:00z", TimestampError::MissingOffset),
            ("2026-05-21 12:00:00Z", TimestampError::UnexpectedCharacter),
            ("2026-0a-21T12:00:00Z", TimestampError::ExpectedDigit),
        ] {
            assert_eq!(Timestamp::parse(text), Err(reason), "{text}");
        }
        assert_eq!(
            TimestampError::MissingOffset.to_string(),
            "not an RFC 3339 timestamp: expected Z or a ±HH:MM offset at the end"
        );
    }

    #[test]
    fn utc_and_offsets_name_the_same_instant() {
        let z = Timestamp::parse("2026-05-21T12:00:00Z").unwrap();
        let plus = Timestamp::parse("2026-05-21T14:30:00+02:30").unwrap();
        let minus = Timestamp::parse("2026-05-21T07:00:00-05:00").unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, minus);
        assert_eq!(z.unix_seconds(), 1_779_364_800);
    }

    #[test]
    fn fractions_of_one_to_nine_digits_are_accepted() {
        let t = Timestamp::parse("2026-05-21T12:00:00.5Z").unwrap();
        assert_eq!(t.unix_nanos() % NANOS_PER_SEC, 500_000_000);
        let t = Timestamp::parse("2026-05-21T12:00:00.123456789Z").unwrap();
        assert_eq!(t.unix_nanos() % NANOS_PER_SEC, 123_456_789);
        assert!(Timestamp::parse("2026-05-21T12:00:00.1234567890Z").is_err());
        assert!(Timestamp::parse("2026-05-21T12:00:00.Z").is_err());
    }

    #[test]
    fn sloppy_spellings_are_refused() {
        for bad in [
            "2026-05-21 12:00:00Z",
            "2026-05-21t12:00:00Z",
            "2026-05-21T12:00:00z",
            "2026-05-21T12:00:00",
            "2026-05-21T12:00:60Z",
            "2026-02-30T12:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-05-21T24:00:00Z",
            "2026-05-21T12:00:00+0200",
            "2026-05-21T12:00:00+24:00",
            "2026-05-21T12:00:00Z ",
            "+2026-05-21T12:00:00Z",
            "2026-5-21T12:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Timestamp::parse("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn the_zero_instant_is_year_one() {
        for spelling in [
            "0001-01-01T00:00:00Z",
            "0001-01-01T02:00:00+02:00",
            "0000-12-31T23:00:00-01:00",
        ] {
            assert_eq!(Timestamp::parse(spelling).unwrap(), Timestamp::ZERO_INSTANT);
        }
    }

    #[test]
    fn a_fixed_clock_keeps_the_fraction() {
        let t = Timestamp::parse("2026-05-21T12:29:00.5Z").unwrap();
        let clock = FixedClock::new(t);
        assert_eq!(clock.now(), t);
        let later = Timestamp::parse("2026-05-21T12:29:00.000000001Z").unwrap();
        clock.set(later);
        assert_eq!(clock.now(), later);
    }

    #[test]
    fn formatting_round_trips() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2026-05-21T12:00:00Z",
            "2000-02-29T23:59:59.25Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
    }
}
