//! The checks of the `cron` fuzz target, shared with the replay of its regressions
//! (`tests/fuzz_regressions.rs`).
//!
//! Schedules: cron expressions and time zones as a tenant writes them, the instants they fire at,
//! and the fire plan the controller records in the function's annotation.
//!
//! Checked for every expression that parses:
//! - the next tick lies strictly after the start, within the search horizon (a schedule that
//!   parses fires at least once in any eight years), and ticks only move forward;
//! - looking back from a tick finds that tick, and finds nothing between the start and it;
//! - a tick is due exactly from its own instant on.
//!
//! And of the plan: its state survives the annotation, planning again at once does nothing, and
//! the plan does something at the instant `next_due` names and nothing just before it.

use std::collections::HashSet;

use arbitrary::Arbitrary;
use fargo::api::function::Schedule;
use fargo::schedule::{Cron, ScheduleState, ZonedCron, next_due, parse_time_zone, plan};
use jiff::{SignedDuration, Timestamp};

const CRONS: [&str; 10] = [
    "0 3 * * *",
    "*/15 * * * *",
    "30 2 * * *",
    "0 0 29 2 *",
    "@hourly",
    "0 9-17/2 * JAN-MAR MON-FRI",
    "59 23 31 12 SAT",
    "0 0 1,15 * 1",
    "5 1-3 * * 0,7",
    "0 0 31 4 *",
];
const TIME_ZONES: [&str; 9] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "",
];

/// The search horizon of eight years and a few days: a schedule that fires at all fires within it.
const HORIZON: SignedDuration = SignedDuration::from_hours(24 * (366 * 8 + 4));

#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Known(u8),
    Any(&'a str),
}

impl<'a> Text<'a> {
    fn pick(&self, known: &[&'static str]) -> &'a str {
        match self {
            Text::Known(index) => known[usize::from(*index) % known.len()],
            Text::Any(text) => text,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ScheduleInput<'a> {
    name: &'a str,
    cron: Text<'a>,
    time_zone: Option<Text<'a>>,
    /// The tick last recorded for it, as an offset from `now`, if one is.
    recorded: Option<i32>,
}

#[derive(Arbitrary, Debug)]
enum Recorded<'a> {
    /// Records of the schedules themselves.
    Records,
    /// Any annotation text.
    Annotation(&'a str),
}

#[derive(Arbitrary, Debug)]
pub struct Input<'a> {
    cron: Text<'a>,
    time_zone: Option<Text<'a>>,
    start_second: i64,
    start_nanosecond: u32,
    schedules: Vec<ScheduleInput<'a>>,
    recorded: Recorded<'a>,
}

/// Every check, on one input.
pub fn run(input: &Input<'_>) {
    let cron = input.cron.pick(&CRONS);
    let time_zone = input.time_zone.as_ref().map(|tz| tz.pick(&TIME_ZONES));
    let _ = cron.parse::<Cron>();
    let _ = parse_time_zone(time_zone);
    let anytime = timestamp(
        input.start_second,
        input.start_nanosecond,
        SignedDuration::ZERO,
    );
    // Far enough from the ends of time for four ticks and a look back.
    let start = timestamp(input.start_second, input.start_nanosecond, HORIZON * 5);
    if let Ok(zoned) = ZonedCron::parse(cron, time_zone) {
        // Near the ends of time a search may find nothing, but must not panic.
        let _ = zoned.next_tick(anytime);
        let _ = zoned.due_tick(anytime, anytime);
        check_ticks(&zoned, start);
    }
    check_plan(input, start);
}

/// An instant jiff can represent, at least `margin` from both ends of its range.
fn timestamp(second: i64, nanosecond: u32, margin: SignedDuration) -> Timestamp {
    let min = Timestamp::MIN.as_second() + margin.as_secs();
    let max = Timestamp::MAX.as_second() - 1 - margin.as_secs();
    let second = min + second.rem_euclid(max - min + 1);
    Timestamp::new(second, (nanosecond % 1_000_000_000) as i32).expect("within jiff's range")
}

fn check_ticks(zoned: &ZonedCron, start: Timestamp) {
    let mut after = start;
    for _ in 0..4 {
        let tick = zoned
            .next_tick(after)
            .unwrap_or_else(|| panic!("no tick after {after} for a schedule that fires"));
        assert!(tick > after, "tick {tick} is not after {after}");
        assert!(
            tick.duration_since(after) <= HORIZON,
            "tick {tick} lies beyond the horizon after {after}"
        );
        assert_eq!(
            zoned.cron.latest_at_or_before(tick, &zoned.tz),
            Some(tick),
            "looking back from tick {tick} misses it"
        );
        let just_before = tick - SignedDuration::from_nanos(1);
        if let Some(earlier) = zoned.cron.latest_at_or_before(just_before, &zoned.tz) {
            assert!(
                earlier <= after,
                "tick {earlier} lies between {after} and the next tick {tick}"
            );
        }
        assert_eq!(zoned.due_tick(after, tick), Some(tick));
        assert_eq!(zoned.due_tick(after, just_before), None);
        after = tick;
    }
}

/// The input's schedules, with unique names as the CRD requires, and the state recorded for them.
fn schedules(input: &Input<'_>, now: Timestamp) -> (Vec<Schedule>, ScheduleState) {
    let mut names = HashSet::new();
    let mut schedules = vec![];
    let mut records = serde_json::Map::new();
    for schedule in input.schedules.iter().take(4) {
        if !names.insert(schedule.name) {
            continue;
        }
        let time_zone = schedule.time_zone.as_ref().map(|tz| tz.pick(&TIME_ZONES));
        let cron = schedule.cron.pick(&CRONS);
        if let Some(offset) = schedule.recorded
            && let Ok(last_tick) = now.checked_add(SignedDuration::from_secs(offset.into()))
        {
            records.insert(
                schedule.name.to_string(),
                serde_json::json!({
                    "lastTick": last_tick.to_string(),
                    "cron": cron,
                    "timeZone": time_zone.unwrap_or_default(),
                }),
            );
        }
        schedules.push(Schedule {
            name: schedule.name.to_string(),
            cron: cron.to_string(),
            time_zone: time_zone.map(str::to_string),
            body: None,
        });
    }
    let annotation = match input.recorded {
        Recorded::Records => serde_json::Value::Object(records).to_string(),
        Recorded::Annotation(text) => text.to_string(),
    };
    (schedules, ScheduleState::from_annotation(Some(&annotation)))
}

fn check_plan(input: &Input<'_>, now: Timestamp) {
    let (schedules, recorded) = schedules(input, now);
    let first = plan(&schedules, &recorded, now);
    for fire in &first.fires {
        assert!(
            fire.tick <= now,
            "tick {} fired before it is due",
            fire.tick
        );
    }
    let state = ScheduleState::from_annotation(Some(&first.state.to_annotation()));
    assert_eq!(
        state, first.state,
        "the state does not survive the annotation"
    );

    let again = plan(&schedules, &state, now);
    assert!(
        again.fires.is_empty() && !again.changed,
        "planning again at once does something: {again:?}"
    );

    let Some(due) = next_due(&schedules, &state, now) else {
        return;
    };
    assert!(due > now, "next_due {due} is not after {now} once planned");
    let just_before = due - SignedDuration::from_nanos(1);
    let before = plan(&schedules, &state, just_before);
    assert!(
        before.fires.is_empty() && !before.changed,
        "the plan does something before next_due {due}: {before:?}"
    );
    let at = plan(&schedules, &state, due);
    assert!(
        at.fires.iter().any(|fire| fire.tick == due),
        "the plan fires nothing at next_due {due}: {at:?}"
    );
}
