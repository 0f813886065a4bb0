//! Cron schedules of functions: each `triggers.schedules[]` entry sends its `body` to the
//! function through the activator at every tick.
//!
//! A tick fires at most once, whichever controller replica holds the lead and across restarts:
//! the last tick of each schedule is kept in the function's [`SCHEDULE_STATE_ANNOTATION`](crate::api::SCHEDULE_STATE_ANNOTATION), and a tick is
//! *claimed* by writing it there — with the resourceVersion the decision was made on, so two
//! writers cannot both claim it — before the request is sent. A tick missed while no controller
//! ran fires once, for the latest missed tick, when one returns. A new (or changed) schedule is
//! armed without firing: its first tick is the first one after it was seen.
//!
//! - [`cron`]: the expressions, time zones and the instants they fire at (pure);
//! - this module: validation and the fire plan for one function (pure);
//! - [`trigger`]: the loop that claims ticks and sends the requests.

pub mod cron;
pub mod trigger;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::SCHEDULE_HEADER;
use crate::api::function::Schedule;
pub use cron::{Cron, CronError, ScheduleError, ZonedCron, parse_time_zone};

/// Problems with a function's schedules, one line per schedule, naming it; empty when all are
/// valid.
pub fn validate(schedules: &[Schedule]) -> Vec<String> {
    schedules
        .iter()
        .filter_map(|schedule| {
            let problem = match ZonedCron::parse(&schedule.cron, schedule.time_zone.as_deref()) {
                Err(error) => error.to_string(),
                Ok(_) if !is_header_value(&schedule.name) => format!(
                    "the name is sent in the {SCHEDULE_HEADER} header, so it must be printable \
                     ASCII"
                ),
                Ok(_) => return None,
            };
            Some(format!("schedule {:?}: {problem}", schedule.name))
        })
        .collect()
}

fn is_header_value(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// What the controller last recorded for each schedule of a function.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct ScheduleState(pub BTreeMap<String, ScheduleRecord>);

/// The last tick of one schedule, and the expression it was a tick of.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRecord {
    /// RFC 3339: the last tick fired, or when the schedule was armed.
    pub last_tick: String,
    pub cron: String,
    #[serde(default)]
    pub time_zone: String,
}

impl ScheduleState {
    /// The state in the annotation; an absent or unreadable one is empty (every schedule is
    /// armed afresh, never fired twice: arming does not fire).
    pub fn from_annotation(annotation: Option<&str>) -> Self {
        annotation
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The last tick recorded for `schedule`, unless the schedule changed since.
    fn last_tick(&self, schedule: &Schedule) -> Option<Timestamp> {
        let record = self.0.get(&schedule.name)?;
        if record.cron != schedule.cron
            || record.time_zone != schedule.time_zone.clone().unwrap_or_default()
        {
            return None;
        }
        record.last_tick.parse().ok()
    }
}

/// A tick to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Fire {
    pub schedule: String,
    pub tick: Timestamp,
    pub body: Option<String>,
}

/// What to do for one function now.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The state to record, with every fired tick claimed and every new schedule armed.
    pub state: ScheduleState,
    /// Whether `state` differs from what is recorded.
    pub changed: bool,
    /// Ticks to send once `state` is recorded.
    pub fires: Vec<Fire>,
}

/// Decides, from a function's schedules and recorded state, which ticks are due at `now` and
/// what to record. Invalid schedules are left alone (the reconciler reports them); records of
/// schedules that no longer exist are dropped.
pub fn plan(schedules: &[Schedule], recorded: &ScheduleState, now: Timestamp) -> Plan {
    let mut state = ScheduleState::default();
    let mut fires = vec![];
    for schedule in schedules {
        let Ok(zoned) = ZonedCron::parse(&schedule.cron, schedule.time_zone.as_deref()) else {
            if let Some(record) = recorded.0.get(&schedule.name) {
                state.0.insert(schedule.name.clone(), record.clone());
            }
            continue;
        };
        let last_tick = match recorded.last_tick(schedule) {
            None => now,
            Some(last) => match zoned.due_tick(last, now) {
                Some(tick) => {
                    fires.push(Fire {
                        schedule: schedule.name.clone(),
                        tick,
                        body: schedule.body.clone(),
                    });
                    tick
                }
                None => last,
            },
        };
        let record = match recorded.0.get(&schedule.name) {
            // Keep the recorded text while nothing fired, so an unchanged state compares equal.
            Some(record) if recorded.last_tick(schedule) == Some(last_tick) => record.clone(),
            _ => ScheduleRecord {
                last_tick: last_tick.to_string(),
                cron: schedule.cron.clone(),
                time_zone: schedule.time_zone.clone().unwrap_or_default(),
            },
        };
        state.0.insert(schedule.name.clone(), record);
    }
    let changed = state != *recorded;
    Plan {
        state,
        changed,
        fires,
    }
}

/// The earliest instant at which [`plan`] would do anything: now when a schedule must be armed,
/// else the next tick after the recorded one. `None` when there is nothing to do, ever.
pub fn next_due(
    schedules: &[Schedule],
    recorded: &ScheduleState,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    let stale_records = recorded
        .0
        .keys()
        .any(|name| !schedules.iter().any(|s| &s.name == name));
    if stale_records {
        earliest = Some(now);
    }
    for schedule in schedules {
        let Ok(zoned) = ZonedCron::parse(&schedule.cron, schedule.time_zone.as_deref()) else {
            continue;
        };
        let due = match recorded.last_tick(schedule) {
            None => Some(now),
            Some(last) => zoned.next_tick(last),
        };
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    earliest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(name: &str, cron: &str, tz: Option<&str>) -> Schedule {
        Schedule {
            name: name.into(),
            cron: cron.into(),
            time_zone: tz.map(Into::into),
            body: Some(format!("{{\"from\":\"{name}\"}}")),
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("a test timestamp")
    }

    fn recorded(entries: &[(&str, &str, &str, Option<&str>)]) -> ScheduleState {
        ScheduleState(
            entries
                .iter()
                .map(|(name, tick, cron, tz)| {
                    (
                        name.to_string(),
                        ScheduleRecord {
                            last_tick: tick.to_string(),
                            cron: cron.to_string(),
                            time_zone: tz.unwrap_or_default().to_string(),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_new_schedule_is_armed_without_firing() {
        let schedules = [schedule("nightly", "0 3 * * *", Some("Europe/Paris"))];
        let now = ts("2026-01-10T12:00:00Z");
        let plan = plan(&schedules, &ScheduleState::default(), now);
        assert!(plan.fires.is_empty());
        assert!(plan.changed);
        assert_eq!(
            plan.state.0["nightly"]
                .last_tick
                .parse::<Timestamp>()
                .unwrap(),
            now
        );
        assert_eq!(plan.state.0["nightly"].time_zone, "Europe/Paris");
    }

    #[test]
    fn a_due_tick_is_claimed_and_fired_once() {
        let schedules = [schedule("nightly", "0 3 * * *", None)];
        let state = recorded(&[("nightly", "2026-01-10T03:00:00Z", "0 3 * * *", None)]);
        let now = ts("2026-01-11T03:00:01Z");
        let first = plan(&schedules, &state, now);
        assert_eq!(
            first.fires,
            vec![Fire {
                schedule: "nightly".into(),
                tick: ts("2026-01-11T03:00:00Z"),
                body: Some("{\"from\":\"nightly\"}".into()),
            }]
        );
        assert!(first.changed);
        let again = plan(&schedules, &first.state, ts("2026-01-11T03:00:02Z"));
        assert!(
            again.fires.is_empty(),
            "the claimed tick does not fire again"
        );
        assert!(!again.changed);
    }

    #[test]
    fn nothing_changes_between_ticks() {
        let schedules = [schedule("nightly", "0 3 * * *", None)];
        let state = recorded(&[("nightly", "2026-01-10T03:00:00Z", "0 3 * * *", None)]);
        let plan = plan(&schedules, &state, ts("2026-01-10T15:00:00Z"));
        assert!(plan.fires.is_empty());
        assert!(!plan.changed);
        assert_eq!(plan.state, state);
    }

    #[test]
    fn a_changed_expression_re_arms_instead_of_firing_a_past_tick() {
        let schedules = [schedule("report", "0 9 * * *", None)];
        let state = recorded(&[("report", "2026-01-10T03:00:00Z", "0 3 * * *", None)]);
        let now = ts("2026-01-11T10:00:00Z");
        let plan = plan(&schedules, &state, now);
        assert!(
            plan.fires.is_empty(),
            "09:00 today passed before the change"
        );
        assert_eq!(plan.state.0["report"].cron, "0 9 * * *");
        assert_eq!(
            plan.state.0["report"]
                .last_tick
                .parse::<Timestamp>()
                .unwrap(),
            now
        );
    }

    #[test]
    fn records_of_removed_schedules_are_dropped() {
        let schedules = [schedule("nightly", "0 3 * * *", None)];
        let state = recorded(&[
            ("nightly", "2026-01-10T03:00:00Z", "0 3 * * *", None),
            ("gone", "2026-01-10T03:00:00Z", "0 3 * * *", None),
        ]);
        let now = ts("2026-01-10T04:00:00Z");
        assert_eq!(next_due(&schedules, &state, now), Some(now));
        let plan = plan(&schedules, &state, now);
        assert!(plan.changed);
        assert!(!plan.state.0.contains_key("gone"));
    }

    #[test]
    fn invalid_schedules_neither_fire_nor_lose_their_record() {
        let schedules = [schedule("broken", "0 25 * * *", None)];
        let state = recorded(&[("broken", "2026-01-10T03:00:00Z", "0 3 * * *", None)]);
        let plan = plan(&schedules, &state, ts("2026-02-01T00:00:00Z"));
        assert!(plan.fires.is_empty());
        assert!(!plan.changed);
        assert_eq!(
            next_due(&schedules, &state, ts("2026-02-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn next_due_is_the_next_tick_after_the_recorded_one() {
        let schedules = [
            schedule("nightly", "0 3 * * *", None),
            schedule("hourly", "0 * * * *", None),
        ];
        let state = recorded(&[
            ("nightly", "2026-01-10T03:00:00Z", "0 3 * * *", None),
            ("hourly", "2026-01-10T05:00:00Z", "0 * * * *", None),
        ]);
        assert_eq!(
            next_due(&schedules, &state, ts("2026-01-10T05:30:00Z")),
            Some(ts("2026-01-10T06:00:00Z"))
        );
        let unarmed = [schedule("new", "0 3 * * *", None)];
        let now = ts("2026-01-10T05:30:00Z");
        assert_eq!(next_due(&unarmed, &state, now), Some(now));
    }

    #[test]
    fn validation_names_each_bad_schedule_and_what_is_wrong() {
        let schedules = [
            schedule("ok", "0 3 * * *", Some("Europe/Paris")),
            schedule("bad-cron", "0 3 * *", None),
            schedule("bad-zone", "0 3 * * *", Some("Europe/Atlantis")),
            schedule("never", "0 0 31 4 *", None),
        ];
        let problems = validate(&schedules);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("schedule \"bad-cron\": cron \"0 3 * *\": expected 5 fields")
        );
        assert!(problems[1].contains("\"bad-zone\"") && problems[1].contains("Europe/Atlantis"));
        assert!(problems[2].contains("\"never\"") && problems[2].contains("never fires"));
    }

    #[test]
    fn schedule_names_must_fit_in_a_header() {
        let problems = validate(&[schedule("caf\u{e9}", "0 3 * * *", None)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains(SCHEDULE_HEADER));
    }

    #[test]
    fn the_state_annotation_round_trips_and_tolerates_garbage() {
        let state = recorded(&[("nightly", "2026-01-10T03:00:00Z", "0 3 * * *", Some("UTC"))]);
        let text = state.to_annotation();
        assert_eq!(
            text,
            r#"{"nightly":{"lastTick":"2026-01-10T03:00:00Z","cron":"0 3 * * *","timeZone":"UTC"}}"#
        );
        assert_eq!(ScheduleState::from_annotation(Some(&text)), state);
        assert_eq!(
            ScheduleState::from_annotation(Some("not json")),
            ScheduleState::default()
        );
        assert_eq!(
            ScheduleState::from_annotation(None),
            ScheduleState::default()
        );
    }
}
