//! Five-field cron expressions read in an IANA time zone, and the instants they fire at.
//!
//! The fields are `minute hour day-of-month month day-of-week`, as in crontab(5) and Kubernetes
//! CronJobs: `*`, `?` (same as `*`), numbers, ranges `a-b`, steps `*/s`, `a-b/s` and `a/s`,
//! comma lists, month names `JAN`–`DEC`, weekday names `SUN`–`SAT` (0 and 7 are Sunday), and the
//! macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`. When
//! both day fields are restricted, a day matches when either does (as cron does).
//!
//! Daylight saving time follows cron's rules: a tick whose local time is skipped (the clock jumps
//! forward) fires once, at the jump; a tick whose local time happens twice (the clock goes back)
//! fires on the first pass only, unless the hour field is a wildcard (`*`, `*/2`), in which case
//! it fires on both, so that "every 15 minutes" stays every 15 minutes.

use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// How far ahead (and back) a tick is looked for: eight years and a bit, so that a schedule on
/// 29 February is found even across a century year that is not a leap year.
const HORIZON_DAYS: i32 = 366 * 8 + 2;

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// The day-of-month field does not start with `*`: with a restricted day-of-week too,
    /// either matching is enough.
    day_of_month_restricted: bool,
    day_of_week_restricted: bool,
    /// The hour field is a wildcard, so the job is "interval-like" and runs in both passes of a
    /// repeated hour.
    hour_is_wildcard: bool,
}

/// Why a cron expression does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) separated by spaces, \
         found {found}; for example \"0 3 * * *\" is every day at 03:00"
    )]
    FieldCount { found: usize },
    #[error("the {field} field {value:?} {problem}")]
    Field {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error(
        "unknown macro {0:?}: use @yearly, @annually, @monthly, @weekly, @daily, @midnight or \
         @hourly, or five fields"
    )]
    UnknownMacro(String),
    #[error(
        "a time zone prefix ({0}) is not supported in the expression: set the schedule's \
         timeZone field instead"
    )]
    TimeZonePrefix(String),
}

/// What one field accepts.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is Sunday too, folded onto 0 after parsing.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, CronError> {
        let text = text.trim();
        let expanded = if let Some(name) = text.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(CronError::UnknownMacro(text.to_string())),
            }
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if let Some(first) = fields.first()
            && (first.starts_with("TZ=") || first.starts_with("CRON_TZ="))
        {
            return Err(CronError::TimeZonePrefix(first.to_string()));
        }
        let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
            return Err(CronError::FieldCount {
                found: fields.len(),
            });
        };
        let mut days_of_week = parse_field(day_of_week, &DAY_OF_WEEK)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: parse_field(minute, &MINUTE)?,
            hours: parse_field(hour, &HOUR)? as u32,
            days_of_month: parse_field(day_of_month, &DAY_OF_MONTH)? as u32,
            months: parse_field(month, &MONTH)? as u16,
            days_of_week: days_of_week as u8,
            day_of_month_restricted: !is_wildcard(day_of_month),
            day_of_week_restricted: !is_wildcard(day_of_week),
            hour_is_wildcard: is_wildcard(hour),
        })
    }
}

/// cron's own test: a field is a wildcard when it starts with `*` (so `*/2` is one too).
fn is_wildcard(field: &str) -> bool {
    field.starts_with('*') || field.starts_with('?')
}

/// The values a field allows, as bits (bit `n` set: value `n` allowed).
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let error = |problem: String| CronError::Field {
        field: spec.name,
        value: text.to_string(),
        problem,
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| {
                    error(format!(
                        "has step {step:?}, which is not a whole number such as 5 in */5"
                    ))
                })?;
                if step == 0 {
                    return Err(error("has step 0; a step must be 1 or more".into()));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            (spec.min, spec.max)
        } else if let Some((start, end)) = range.split_once('-') {
            let start = parse_value(start, spec).map_err(error)?;
            let end = parse_value(end, spec).map_err(error)?;
            if start > end {
                return Err(error(format!(
                    "has the range {range}, which runs backwards; write the smaller value first"
                )));
            }
            (start, end)
        } else {
            let value = parse_value(range, spec).map_err(error)?;
            // `a/s` means from a to the end of the field, stepping by s.
            (value, if step.is_some() { spec.max } else { value })
        };
        let step = step.unwrap_or(1) as usize;
        for value in (start..=end).step_by(step) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Some(index) = spec
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        // Month names start at 1 (JAN), weekday names at 0 (SUN).
        return Ok(index as u32 + spec.min);
    }
    let allowed = if spec.names.is_empty() {
        format!("{}–{}", spec.min, spec.max)
    } else {
        format!(
            "{}–{} or {}–{}",
            spec.min,
            spec.max,
            spec.names[0],
            spec.names[spec.names.len() - 1]
        )
    };
    let value: u32 = text
        .parse()
        .map_err(|_| format!("has {text:?}, which is not a number; allowed: {allowed}"))?;
    if value < spec.min || value > spec.max {
        return Err(format!("has {value}, out of range; allowed: {allowed}"));
    }
    Ok(value)
}

impl Cron {
    /// Whether the schedule runs on this local date.
    pub fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day_of_month = self.days_of_month & (1 << date.day()) != 0;
        let day_of_week = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // cron's rule: either matching is enough only when both fields are restricted; a
        // wildcard field (`*`, or a step such as `*/10`) must match too.
        if self.day_of_month_restricted && self.day_of_week_restricted {
            day_of_month || day_of_week
        } else {
            day_of_month && day_of_week
        }
    }

    /// Every instant the schedule fires at on a local date, in order.
    pub fn ticks_on(&self, date: Date, tz: &TimeZone) -> Vec<Timestamp> {
        if !self.matches_date(date) {
            return vec![];
        }
        let mut ticks = vec![];
        for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            for minute in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                let local = date.at(hour as i8, minute as i8, 0, 0);
                self.push_instants(local, tz, &mut ticks);
            }
        }
        ticks.sort();
        ticks.dedup();
        ticks
    }

    fn push_instants(&self, local: DateTime, tz: &TimeZone, ticks: &mut Vec<Timestamp>) {
        match tz.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                ticks.extend(offset.to_timestamp(local).ok());
            }
            AmbiguousOffset::Gap { after, .. } => {
                // `local` read with the offset after the jump lies before the jump, wherever it
                // is in the gap; the jump itself is the transition just after it. (Read with the
                // offset before, the first skipped minute is the jump's own instant, which a
                // search for the transition strictly before it misses.)
                if let Ok(before_jump) = after.to_timestamp(local)
                    && let Some(jump) = tz.following(before_jump).next()
                {
                    ticks.push(jump.timestamp());
                }
            }
            AmbiguousOffset::Fold { before, after } => {
                ticks.extend(before.to_timestamp(local).ok());
                if self.hour_is_wildcard {
                    ticks.extend(after.to_timestamp(local).ok());
                }
            }
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Start a day early: a tick of the previous local date can lie after `after` when the
        // offset changed in between.
        let mut date = after.to_zoned(tz.clone()).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            if let Some(tick) = self
                .ticks_on(date, tz)
                .into_iter()
                .find(|tick| *tick > after)
            {
                return Some(tick);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The last tick at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut date = at.to_zoned(tz.clone()).date().tomorrow().ok()?;
        for _ in 0..HORIZON_DAYS {
            if let Some(tick) = self
                .ticks_on(date, tz)
                .into_iter()
                .rev()
                .find(|tick| *tick <= at)
            {
                return Some(tick);
            }
            date = date.yesterday().ok()?;
        }
        None
    }

    /// Whether the schedule fires at all (`0 0 30 2 *`, 30 February, never does).
    pub fn ever_fires(&self) -> bool {
        // Any run of eight years holds every date that exists.
        let start = Date::constant(2024, 1, 1);
        (0..HORIZON_DAYS).any(|day| {
            start
                .checked_add(day.days())
                .is_ok_and(|date| self.matches_date(date))
        })
    }
}

/// A cron expression and the time zone it is read in.
#[derive(Clone, Debug)]
pub struct ZonedCron {
    pub cron: Cron,
    pub tz: TimeZone,
}

/// Why a schedule cannot run; the text names what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron {cron:?}: {source}")]
    Cron {
        cron: String,
        #[source]
        source: CronError,
    },
    #[error(
        "cron {0:?} never fires: no date matches its day-of-month, month and day-of-week fields"
    )]
    NeverFires(String),
    #[error(
        "timeZone {0:?} is not an IANA time zone: use a name such as UTC, Europe/Paris or \
         America/New_York"
    )]
    UnknownTimeZone(String),
}

impl ZonedCron {
    /// Parses `cron` and looks up `time_zone` (UTC when absent or empty).
    pub fn parse(cron: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let parsed: Cron = cron.parse().map_err(|source| ScheduleError::Cron {
            cron: cron.to_string(),
            source,
        })?;
        if !parsed.ever_fires() {
            return Err(ScheduleError::NeverFires(cron.to_string()));
        }
        let tz = parse_time_zone(time_zone)?;
        Ok(Self { cron: parsed, tz })
    }

    /// The first tick strictly after `after`.
    pub fn next_tick(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron.next_after(after, &self.tz)
    }

    /// The tick to fire now, if any: the latest tick at or before `now` that is later than
    /// `last_fired`. Ticks missed in between are not fired one by one: only the latest is.
    pub fn due_tick(&self, last_fired: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.cron
            .latest_at_or_before(now, &self.tz)
            .filter(|tick| *tick > last_fired)
    }
}

/// An IANA time zone by name; absent or empty means UTC.
pub fn parse_time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name.map(str::trim) {
        None | Some("") => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> Cron {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} parses: {e}"))
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("a test timestamp")
    }

    fn zoned(text: &str, tz: &str) -> ZonedCron {
        ZonedCron::parse(text, Some(tz)).expect("a valid schedule")
    }

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").expect("the tz database has Europe/Paris")
    }

    #[test]
    fn every_minute_fires_on_the_next_minute() {
        let every = zoned("* * * * *", "UTC");
        assert_eq!(
            every.next_tick(ts("2026-01-02T03:04:05Z")),
            Some(ts("2026-01-02T03:05:00Z"))
        );
        assert_eq!(
            every.next_tick(ts("2026-01-02T03:05:00Z")),
            Some(ts("2026-01-02T03:06:00Z")),
            "the next tick is strictly after the given instant"
        );
    }

    #[test]
    fn daily_schedule_in_paris_fires_at_local_time() {
        let nightly = zoned("0 3 * * *", "Europe/Paris");
        // Winter: UTC+1.
        assert_eq!(
            nightly.next_tick(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-11T02:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            nightly.next_tick(ts("2026-07-10T12:00:00Z")),
            Some(ts("2026-07-11T01:00:00Z"))
        );
    }

    #[test]
    fn a_tick_in_the_skipped_hour_fires_once_at_the_jump() {
        // 29 March 2026: Paris jumps from 02:00 CET to 03:00 CEST (01:00 UTC).
        let half_past_two = zoned("30 2 * * *", "Europe/Paris");
        assert_eq!(
            half_past_two.next_tick(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        // And the day after, back to 02:30 CEST.
        assert_eq!(
            half_past_two.next_tick(ts("2026-03-29T01:00:00Z")),
            Some(ts("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn a_tick_at_the_first_skipped_minute_fires_at_the_jump() {
        // 02:00 does not exist on the days the clock jumps from 02:00 to 03:00: the nightly run
        // happens at the jump, as for any tick in the skipped hour, not a day late.
        for (cron, tz, day_before, jump) in [
            (
                "0 2 * * *",
                "Europe/Paris",
                "2026-03-28T12:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
            (
                "0 2 * * *",
                "America/New_York",
                "2026-03-07T12:00:00Z",
                "2026-03-08T07:00:00Z",
            ),
            // Lord Howe Island jumps half an hour, from 02:00 to 02:30.
            (
                "@hourly",
                "Australia/Lord_Howe",
                "2026-10-03T15:10:00Z",
                "2026-10-03T15:30:00Z",
            ),
        ] {
            let schedule = zoned(cron, tz);
            assert_eq!(schedule.next_tick(ts(day_before)), Some(ts(jump)), "{tz}");
            assert_eq!(
                schedule.cron.latest_at_or_before(ts(jump), &schedule.tz),
                Some(ts(jump)),
                "{tz}"
            );
        }
    }

    #[test]
    fn interval_ticks_in_the_skipped_hour_collapse_into_one() {
        let quarterly = zoned("*/15 * * * *", "Europe/Paris");
        let mut ticks = vec![];
        let mut at = ts("2026-03-29T00:40:00Z"); // 01:40 CET
        for _ in 0..3 {
            at = quarterly.next_tick(at).unwrap();
            ticks.push(at);
        }
        assert_eq!(
            ticks,
            vec![
                ts("2026-03-29T00:45:00Z"), // 01:45 CET
                ts("2026-03-29T01:00:00Z"), // the jump; 02:00–02:45 do not exist
                ts("2026-03-29T01:15:00Z"), // 03:15 CEST
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_repeated_hour_fires_once() {
        // 25 October 2026: Paris goes back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
        let half_past_two = zoned("30 2 * * *", "Europe/Paris");
        let first = half_past_two.next_tick(ts("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, ts("2026-10-25T00:30:00Z"), "02:30 CEST");
        assert_eq!(
            half_past_two.next_tick(first),
            Some(ts("2026-10-26T01:30:00Z")),
            "not again at 02:30 CET, but the next day"
        );
    }

    #[test]
    fn an_interval_in_the_repeated_hour_fires_in_both_passes() {
        let hourly_at_half = zoned("30 * * * *", "Europe/Paris");
        let mut ticks = vec![];
        let mut at = ts("2026-10-24T23:00:00Z"); // 01:00 CEST
        for _ in 0..4 {
            at = hourly_at_half.next_tick(at).unwrap();
            ticks.push(at);
        }
        assert_eq!(
            ticks,
            vec![
                ts("2026-10-24T23:30:00Z"), // 01:30 CEST
                ts("2026-10-25T00:30:00Z"), // 02:30 CEST
                ts("2026-10-25T01:30:00Z"), // 02:30 CET
                ts("2026-10-25T02:30:00Z"), // 03:30 CET
            ]
        );
    }

    #[test]
    fn due_tick_is_the_latest_tick_after_the_last_fired_one() {
        let nightly = zoned("0 3 * * *", "Europe/Paris");
        let last = ts("2026-01-10T02:00:00Z");
        assert_eq!(nightly.due_tick(last, ts("2026-01-10T12:00:00Z")), None);
        assert_eq!(
            nightly.due_tick(last, ts("2026-01-11T02:00:00Z")),
            Some(ts("2026-01-11T02:00:00Z")),
            "a tick is due at its exact instant"
        );
        assert_eq!(
            nightly.due_tick(last, ts("2026-01-11T01:59:59Z")),
            None,
            "and not a second before"
        );
    }

    #[test]
    fn ticks_missed_while_down_fire_once_for_the_latest() {
        let nightly = zoned("0 3 * * *", "UTC");
        // Down for three nights: only the last one fires.
        assert_eq!(
            nightly.due_tick(ts("2026-01-10T03:00:00Z"), ts("2026-01-13T09:00:00Z")),
            Some(ts("2026-01-13T03:00:00Z"))
        );
        // Once it is recorded, nothing more is due.
        assert_eq!(
            nightly.due_tick(ts("2026-01-13T03:00:00Z"), ts("2026-01-13T09:00:00Z")),
            None
        );
    }

    #[test]
    fn due_tick_across_the_spring_jump_in_paris() {
        let half_past_two = zoned("30 2 * * *", "Europe/Paris");
        let last = ts("2026-03-28T01:30:00Z"); // 02:30 CET on the 28th
        assert_eq!(
            half_past_two.due_tick(last, ts("2026-03-29T00:59:59Z")),
            None
        );
        assert_eq!(
            half_past_two.due_tick(last, ts("2026-03-29T01:00:30Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either_matches() {
        // The 1st of the month, or any Monday.
        let c = cron("0 0 1 * MON");
        assert!(c.matches_date(Date::constant(2026, 1, 1))); // a Thursday, the 1st
        assert!(c.matches_date(Date::constant(2026, 1, 5))); // a Monday
        assert!(!c.matches_date(Date::constant(2026, 1, 6))); // a Tuesday
    }

    #[test]
    fn one_day_field_restricted_means_only_it_counts() {
        let weekdays = cron("0 9 * * 1-5");
        assert!(weekdays.matches_date(Date::constant(2026, 1, 5))); // Monday
        assert!(!weekdays.matches_date(Date::constant(2026, 1, 4))); // Sunday
        let stepped = cron("0 9 */10 * MON");
        // `*/10` counts as a wildcard, as in cron: both must match.
        assert!(stepped.matches_date(Date::constant(2026, 6, 1))); // Monday the 1st
        assert!(!stepped.matches_date(Date::constant(2026, 1, 5))); // Monday the 5th
    }

    #[test]
    fn names_ranges_steps_and_lists_parse() {
        let c = cron("5,10-20/5 */6 1-3 jan-MAR,dec SUN,sat");
        assert_eq!(c.minutes, (1 << 5) | (1 << 10) | (1 << 15) | (1 << 20));
        assert_eq!(
            c.hours,
            (1 << 0) | (1 << 6) | (1 << 12) | (1 << 18),
            "*/6 is 0, 6, 12, 18"
        );
        assert_eq!(c.months, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 12));
        assert_eq!(c.days_of_week, (1 << 0) | (1 << 6));
        assert_eq!(
            cron("30/10 * * * *").minutes,
            (1 << 30) | (1 << 40) | (1 << 50)
        );
    }

    #[test]
    fn seven_is_sunday() {
        assert_eq!(cron("0 0 * * 7").days_of_week, 1);
        assert_eq!(cron("0 0 * * 5-7").days_of_week, (1 << 5) | (1 << 6) | 1);
    }

    #[test]
    fn macros_expand_to_their_five_fields() {
        assert_eq!(cron("@daily"), cron("0 0 * * *"));
        assert_eq!(cron("@midnight"), cron("0 0 * * *"));
        assert_eq!(cron("@hourly"), cron("0 * * * *"));
        assert_eq!(cron("@weekly"), cron("0 0 * * 0"));
        assert_eq!(cron("@monthly"), cron("0 0 1 * *"));
        assert_eq!(cron("@yearly"), cron("0 0 1 1 *"));
        assert_eq!(cron("@annually"), cron("0 0 1 1 *"));
    }

    #[test]
    fn malformed_expressions_say_which_field_is_wrong() {
        let message = |text: &str| text.parse::<Cron>().unwrap_err().to_string();
        assert!(message("0 3 * *").contains("expected 5 fields"));
        assert!(message("0 3 * * * *").contains("found 6"));
        let hour = message("0 24 * * *");
        assert!(hour.contains("hour") && hour.contains("0–23"), "{hour}");
        let month = message("0 0 1 FOO *");
        assert!(
            month.contains("month") && month.contains("JAN–DEC"),
            "{month}"
        );
        assert!(message("*/0 * * * *").contains("step 0"));
        assert!(message("0 5-2 * * *").contains("backwards"));
        assert!(message("@fortnightly").contains("unknown macro"));
        assert!(message("CRON_TZ=UTC 0 3 * * *").contains("timeZone"));
        assert!(message("").contains("found 0"));
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        let error = ZonedCron::parse("0 0 30 2 *", None).unwrap_err();
        assert!(matches!(error, ScheduleError::NeverFires(_)), "{error}");
        // 29 February exists every four years.
        let leap = zoned("0 0 29 2 *", "UTC");
        assert_eq!(
            leap.next_tick(ts("2026-01-01T00:00:00Z")),
            Some(ts("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            leap.due_tick(ts("2024-02-29T00:00:00Z"), ts("2027-06-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn unknown_time_zones_are_refused_with_an_example() {
        let error = ZonedCron::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(error, ScheduleError::UnknownTimeZone("Mars/Olympus".into()));
        assert!(error.to_string().contains("Europe/Paris"));
    }

    #[test]
    fn an_absent_or_empty_time_zone_is_utc() {
        assert_eq!(parse_time_zone(None).unwrap(), TimeZone::UTC);
        assert_eq!(parse_time_zone(Some("")).unwrap(), TimeZone::UTC);
        assert_eq!(
            ZonedCron::parse("0 3 * * *", None)
                .unwrap()
                .next_tick(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T03:00:00Z"))
        );
    }

    #[test]
    fn latest_tick_is_found_backwards_across_days() {
        let tz = paris();
        let monday_morning = cron("0 9 * * MON");
        // Sunday 11 January 2026, evening: the latest is Monday 5 January 09:00 CET.
        assert_eq!(
            monday_morning.latest_at_or_before(ts("2026-01-11T20:00:00Z"), &tz),
            Some(ts("2026-01-05T08:00:00Z"))
        );
    }
}
