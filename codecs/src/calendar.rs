//! Proleptic Gregorian calendar arithmetic: dates as day counts since
//! 1970-01-01 and back, leap years and month lengths.
//!
//! The wire dates the codecs own (F7 transmission date-time `MMDDhhmmss`,
//! settlement dates, ISO 20022 date-times) are calendar fields, while clocks
//! and zone offsets work in seconds; [`days_from_civil`] and
//! [`civil_from_days`] convert between them. They are Howard Hinnant's
//! algorithms (<https://howardhinnant.github.io/date_algorithms.html>): exact
//! and table-free. The switch, the bank simulator and the load generator use
//! them from here rather than each keeping its own copy.
//!
//! Day counts and years stay far from overflow for any date a `u64` Unix time
//! in seconds or a four-digit year can name.

/// Days since 1970-01-01 of the date `year`-`month`-`day` (month 1-12,
/// day 1 to the month's length); dates before 1970 give negative counts.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count from 0000-03-01 so that the leap day ends each 'year'.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1-12, day 1-31) that is `days` days after
/// 1970-01-01 (before it when negative); the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01, the start of a 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // doy < 366 and mp < 12, so both fit a u32.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `year` has a 29 February (every 4th year, except centuries not
/// divisible by 400).
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// How many days `month` (1-12) of `year` has; 31 for a month out of range,
/// so check the month first.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (days since 1970-01-01, date), checked against Python's `datetime`
    /// except 0000-03-01 (year 0 is outside it), the algorithm's own epoch.
    const KNOWN: &[(i64, (i64, u32, u32))] = &[
        (0, (1970, 1, 1)),
        (-1, (1969, 12, 31)),
        (-365, (1969, 1, 1)),
        (11_016, (2000, 2, 29)),
        (19_723, (2024, 1, 1)),
        (19_782, (2024, 2, 29)),
        (-25_509, (1900, 2, 28)),
        (-25_508, (1900, 3, 1)),
        (-135_081, (1600, 2, 29)),
        (47_541, (2100, 3, 1)),
        (-719_162, (1, 1, 1)),
        (-719_468, (0, 3, 1)),
        (2_932_896, (9999, 12, 31)),
    ];

    #[test]
    fn known_dates() {
        for &(days, date) in KNOWN {
            assert_eq!(civil_from_days(days), date, "day {days}");
            let (y, m, d) = date;
            assert_eq!(days_from_civil(y, m, d), days, "{date:?}");
        }
    }

    #[test]
    fn leap_years_and_month_lengths() {
        for (year, leap) in [
            (2024, true),
            (2023, false),
            (2000, true),
            (1900, false),
            (1600, true),
            (0, true),
            (-4, true),
            (-100, false),
        ] {
            assert_eq!(is_leap_year(year), leap, "{year}");
            assert_eq!(days_in_month(year, 2), if leap { 29 } else { 28 }, "{year}");
        }
        let lengths: Vec<u32> = (1..=12).map(|m| days_in_month(2023, m)).collect();
        assert_eq!(lengths, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // Years -400 to 2800: whole eras on both sides of the epoch, so every
        // century and 400-year leap rule is crossed at least once.
        let first = days_from_civil(-400, 1, 1);
        let last = days_from_civil(2_800, 12, 31);
        let mut prev = civil_from_days(first - 1);
        assert_eq!(prev, (-401, 12, 31));
        for days in first..=last {
            let date = civil_from_days(days);
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
            assert_eq!(date, next_day(prev), "day {days}");
            prev = date;
        }
        assert_eq!(prev, (2_800, 12, 31));
    }

    /// The day after `date`, from the month lengths (an independent way of
    /// counting, so a slip in either shows up).
    fn next_day((y, m, d): (i64, u32, u32)) -> (i64, u32, u32) {
        let len = days_in_month(y, m);
        match (d < len, m < 12) {
            (true, _) => (y, m, d + 1),
            (false, true) => (y, m + 1, 1),
            (false, false) => (y + 1, 1, 1),
        }
    }
}
