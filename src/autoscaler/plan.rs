//! One tick of the autoscaler as a pure function: the functions it may scale, what the
//! activators said, the memory kept between ticks and the clock go in; the writes to make come
//! out. The loop in [`super`] reads the caches, scrapes, and performs the plan.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::scaling::{Decision, FunctionScaler, Observation, ScalePolicy};
use super::stats::Scrape;
use crate::api::function::TriggerStatus;
use crate::reconcile::Note;
use crate::replicas::Instances;

/// A value just written is not written again while the Deployment cache catches up.
pub const WRITE_SETTLE: Duration = Duration::from_secs(5);
/// `status.lastRequestTime` is written at most this often per function: each write also
/// triggers a reconcile and every watcher of functions.
pub const LAST_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// `(namespace, name)` of a function.
pub type Key = (String, String);

/// A function whose replicas the autoscaler owns, as the caches show it at this tick.
#[derive(Clone, Debug)]
pub struct Target {
    pub key: Key,
    pub uid: String,
    pub policy: ScalePolicy,
    /// Its Deployment's replicas, read before the activators were asked: a scale from zero
    /// the cache already shows was caused by a request the scrape then includes, so the
    /// function is not taken for idle and scaled straight back to zero.
    pub instances: Instances,
    /// `status.lastRequestTime` as recorded.
    pub recorded_last_request: Option<Timestamp>,
    /// `status.queuedEvents` and `status.oldestQueuedEvent` as recorded.
    pub recorded_queue: (Option<u64>, Option<Timestamp>),
    /// Its storage and queue triggers, `(type, name)`, in spec order.
    pub triggers: Vec<(&'static str, String)>,
    /// `status.triggers` as recorded.
    pub recorded_triggers: Vec<TriggerStatus>,
}

/// What the events field manager records of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsRecord {
    pub key: Key,
    /// `None` when no activator counts events (no NATS) and none is recorded: left out.
    pub queued: Option<u64>,
    pub oldest: Option<Timestamp>,
    pub triggers: Vec<TriggerStatus>,
}

/// Each of the spec's triggers as the activators reported it, over what `recorded` holds: the
/// last event time never goes back (an activator that restarted forgot it), and a trigger that
/// ever had an event is `Receiving` unless it has a problem; `Waiting` before its first.
pub fn trigger_statuses(
    triggers: &[(&'static str, String)],
    loads: &std::collections::BTreeMap<(String, String), crate::api::stats::TriggerStats>,
    recorded: &[TriggerStatus],
) -> Vec<TriggerStatus> {
    triggers
        .iter()
        .map(|(type_, name)| {
            let load = loads.get(&(type_.to_string(), name.clone()));
            let before = recorded
                .iter()
                .find(|r| r.type_ == *type_ && r.name == *name);
            let last_event_time = load
                .and_then(|l| l.last_event.clone())
                .max(before.and_then(|r| r.last_event_time.clone()));
            let state = match load.and_then(|l| l.problem.clone()) {
                Some(problem) => problem,
                None if last_event_time.is_some() => "Receiving".into(),
                None => "Waiting".into(),
            };
            TriggerStatus {
                type_: type_.to_string(),
                name: name.clone(),
                state,
                message: load.and_then(|l| l.message.clone()),
                events: i64::try_from(load.map_or(0, |l| l.events)).unwrap_or(i64::MAX),
                last_event_time,
                pending: load
                    .and_then(|l| l.pending)
                    .map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
            }
        })
        .collect()
}

/// The time of a tick: monotonic for the windows, wall clock for request times.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall: Timestamp,
}

/// A replica count to write, and the Event that explains it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleWrite {
    pub key: Key,
    pub from: i32,
    pub to: i32,
    pub panicking: bool,
    pub note: Note,
}

impl ScaleWrite {
    /// `up`, `down` or `zero`: the metric label of the write.
    pub fn direction(&self) -> &'static str {
        if self.to == 0 {
            "zero"
        } else if self.to > self.from {
            "up"
        } else {
            "down"
        }
    }
}

/// What one tick writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub scale: Vec<ScaleWrite>,
    /// `status.lastRequestTime` to record, by function.
    pub last_requests: Vec<(Key, Timestamp)>,
    /// `status.queuedEvents`, `status.oldestQueuedEvent` and `status.triggers` to record.
    pub queues: Vec<EventsRecord>,
    /// Functions in panic mode after this tick.
    pub panicking: i64,
}

/// One function's scaler and what was last written for it.
struct Tracked {
    /// A digest of the function's uid ([`crate::caches::digest`]): a function deleted and made
    /// again under its name starts over.
    uid: u64,
    scaler: FunctionScaler,
    /// When the autoscaler first saw the function: idleness is counted from here at the
    /// earliest, so a new leader does not take a function for idle since forever.
    first_seen: Timestamp,
    written: Option<(i32, Instant)>,
    last_request_written: Option<Instant>,
    queue_written: Option<Instant>,
}

impl Tracked {
    fn new(uid: u64, now: Timestamp) -> Self {
        Self {
            uid,
            scaler: FunctionScaler::new(),
            first_seen: now,
            written: None,
            last_request_written: None,
            queue_written: None,
        }
    }
}

/// What the autoscaler remembers between ticks.
#[derive(Default)]
pub struct AutoscalerState {
    tracked: HashMap<Key, Tracked>,
}

impl AutoscalerState {
    /// Decides this tick's writes, and remembers them as written; functions not among
    /// `targets` are forgotten.
    pub fn plan(&mut self, targets: &[Target], scrape: &Scrape, clock: Clock) -> Plan {
        let Clock { now, wall } = clock;
        let mut plan = Plan::default();
        // Borrowed, not cloned: a tick looks at every function, and cloning each one's key
        // (twice) cost tens of thousands of allocations a second at 10,000 functions.
        let seen: HashSet<&Key> = targets.iter().map(|target| &target.key).collect();
        for target in targets {
            let key = &target.key;
            let uid = crate::caches::digest(&target.uid);
            if !self.tracked.contains_key(key) {
                self.tracked.insert(key.clone(), Tracked::new(uid, wall));
            }
            let Some(entry) = self.tracked.get_mut(key) else {
                continue;
            };
            if entry.uid != uid {
                *entry = Tracked::new(uid, wall);
            }

            let load = scrape.loads.get(key).cloned().unwrap_or_default();
            let queued = load.queued_events.unwrap_or(0);
            let recorded = target.recorded_last_request;
            let last_activity = [load.last_request, recorded, Some(entry.first_seen)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(wall);
            let idle_for = elapsed_since(last_activity, wall);
            let decision = entry.scaler.observe(
                &target.policy,
                &Observation {
                    now,
                    // Each waiting event is a request to come: the function scales on them,
                    // from zero, and stays up while any waits.
                    concurrency: load.concurrency.max(queued as f64),
                    in_flight: load
                        .in_flight
                        .max(u32::try_from(queued).unwrap_or(u32::MAX)),
                    current: target.instances.desired,
                    ready: target.instances.ready,
                    idle_for,
                    complete: scrape.complete(),
                },
            );
            if decision.panicking {
                plan.panicking += 1;
            }
            let settling = entry.written.is_some_and(|(value, at)| {
                value == decision.desired && now.saturating_duration_since(at) < WRITE_SETTLE
            });
            if decision.desired != target.instances.desired && !settling {
                entry.written = Some((decision.desired, now));
                plan.scale.push(ScaleWrite {
                    key: key.clone(),
                    from: target.instances.desired,
                    to: decision.desired,
                    panicking: decision.panicking,
                    note: scale_note(target, &decision, idle_for),
                });
            }

            if let Some(last) = load.last_request
                && recorded.is_none_or(|recorded| last > recorded)
                && entry
                    .last_request_written
                    .is_none_or(|at| now.saturating_duration_since(at) >= LAST_REQUEST_INTERVAL)
            {
                entry.last_request_written = Some(now);
                plan.last_requests.push((key.clone(), last));
            }

            // Only from every activator's report: one missing would read as events gone.
            let triggers =
                trigger_statuses(&target.triggers, &load.triggers, &target.recorded_triggers);
            let queue_changed = load.queued_events.is_some_and(|queued| {
                (Some(queued), load.oldest_queued_event) != target.recorded_queue
            });
            if scrape.complete()
                && (queue_changed || triggers != target.recorded_triggers)
                && entry
                    .queue_written
                    .is_none_or(|at| now.saturating_duration_since(at) >= LAST_REQUEST_INTERVAL)
            {
                entry.queue_written = Some(now);
                // No count from the activators (no NATS) keeps what is recorded.
                let (queued, oldest) = match load.queued_events {
                    Some(queued) => (Some(queued), load.oldest_queued_event),
                    None => target.recorded_queue,
                };
                plan.queues.push(EventsRecord {
                    key: key.clone(),
                    queued,
                    oldest,
                    triggers,
                });
            }
        }
        self.tracked.retain(|key, _| seen.contains(key));
        plan
    }

    /// A planned scale write failed: the next tick decides and writes it again.
    pub fn write_failed(&mut self, key: &Key) {
        if let Some(entry) = self.tracked.get_mut(key) {
            entry.written = None;
        }
    }
}

/// The Event of a scale write: why the count changed.
fn scale_note(target: &Target, decision: &Decision, idle_for: Duration) -> Note {
    let from = target.instances.desired;
    let to = decision.desired;
    if to == 0 {
        return Note::normal(
            "Scale",
            "ScaledToZero",
            format!(
                "scaled from {from} to 0: no request for {}s",
                idle_for.as_secs()
            ),
        );
    }
    Note::normal(
        "Scale",
        "Scaled",
        format!(
            "scaled from {from} to {to}: {:.2} requests in flight on average over 60s ({:.2} over \
             6s) for a target of {:.2} per instance{}",
            decision.stable_concurrency,
            decision.panic_concurrency,
            target.policy.target,
            if decision.panicking {
                "; panic mode: no scale-down until the load has been lower for 60s"
            } else {
                ""
            }
        ),
    )
}

fn elapsed_since(earlier: Timestamp, now: Timestamp) -> Duration {
    let millis = now
        .as_millisecond()
        .saturating_sub(earlier.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::stats::FunctionLoad;

    fn key() -> Key {
        ("media".to_string(), "thumbnail".to_string())
    }

    fn target(desired: i32, ready: i32) -> Target {
        Target {
            key: key(),
            uid: "uid-1".into(),
            policy: ScalePolicy {
                min: 0,
                max: Some(5),
                target: 10.0,
                idle_timeout: Duration::from_secs(30),
            },
            instances: Instances {
                desired,
                existing: desired,
                ready,
            },
            recorded_last_request: None,
            recorded_queue: (None, None),
            triggers: vec![],
            recorded_triggers: vec![],
        }
    }

    fn scrape(concurrency: f64, in_flight: u32, last_request: Option<Timestamp>) -> Scrape {
        Scrape {
            loads: [(
                key(),
                FunctionLoad {
                    concurrency,
                    in_flight,
                    last_request,
                    queued_events: None,
                    oldest_queued_event: None,
                    triggers: Default::default(),
                    usage: vec![],
                },
            )]
            .into(),
            answered: 1,
            failed: 0,
        }
    }

    struct Ticks {
        state: AutoscalerState,
        start: Instant,
        wall: Timestamp,
        second: u64,
    }

    impl Ticks {
        fn new() -> Self {
            Self {
                state: AutoscalerState::default(),
                start: Instant::now(),
                wall: "2026-11-28T12:00:00Z".parse().expect("a timestamp"),
                second: 0,
            }
        }

        fn clock(&self) -> Clock {
            Clock {
                now: self.start + Duration::from_secs(self.second),
                wall: self
                    .wall
                    .checked_add(jiff::SignedDuration::from_secs(self.second as i64))
                    .expect("in range"),
            }
        }

        fn tick(&mut self, targets: &[Target], scrape: &Scrape) -> Plan {
            self.second += 1;
            let clock = self.clock();
            self.state.plan(targets, scrape, clock)
        }
    }

    #[test]
    fn a_load_step_plans_a_scale_up_with_its_reason() {
        let mut ticks = Ticks::new();
        let now = ticks.clock().wall;
        let plan = ticks.tick(&[target(1, 1)], &scrape(35.0, 35, Some(now)));
        assert_eq!(plan.scale.len(), 1, "{plan:?}");
        let write = &plan.scale[0];
        assert_eq!((write.from, write.to), (1, 4));
        assert_eq!(write.direction(), "up");
        assert_eq!(write.note.reason, "Scaled");
        assert!(
            write.note.text.starts_with("scaled from 1 to 4: "),
            "{}",
            write.note.text
        );
        assert!(write.note.text.contains("target of 10.00 per instance"));
    }

    #[test]
    fn a_written_value_is_not_written_again_while_the_cache_catches_up() {
        let mut ticks = Ticks::new();
        let load = scrape(35.0, 35, Some(ticks.clock().wall));
        assert_eq!(ticks.tick(&[target(1, 1)], &load).scale.len(), 1);
        // The cache still shows 1: within WRITE_SETTLE the same 4 is not asked for again.
        assert!(ticks.tick(&[target(1, 1)], &load).scale.is_empty());
        // Once the write is known to have failed, it is.
        ticks.state.write_failed(&key());
        assert_eq!(ticks.tick(&[target(1, 1)], &load).scale.len(), 1);
    }

    #[test]
    fn an_idle_function_is_scaled_to_zero_once_idle_and_a_whole_window_seen() {
        let mut ticks = Ticks::new();
        let last = ticks.clock().wall;
        let mut plans = vec![];
        for _ in 0..70 {
            plans.push(ticks.tick(&[target(1, 1)], &scrape(0.0, 0, Some(last))));
        }
        let (at, write) = plans
            .iter()
            .enumerate()
            .find_map(|(i, plan)| plan.scale.first().map(|w| (i + 1, w.clone())))
            .expect("a scale to zero within 70s");
        // Idle after 30s, but a scaler takes nothing away before it has seen a stable window
        // (60s) from its first sample, at the first tick.
        assert_eq!(at, 61);
        assert_eq!((write.from, write.to), (1, 0));
        assert_eq!(write.direction(), "zero");
        assert_eq!(write.note.reason, "ScaledToZero");
        assert_eq!(write.note.text, "scaled from 1 to 0: no request for 60s");
    }

    fn queued(events: u64) -> Scrape {
        let mut scrape = scrape(0.0, 0, None);
        for load in scrape.loads.values_mut() {
            load.queued_events = Some(events);
        }
        scrape
    }

    #[test]
    fn waiting_events_wake_a_function_scale_it_and_are_recorded() {
        let mut ticks = Ticks::new();
        // At zero, 20 events waiting, target 10 per instance: two instances at once.
        let plan = ticks.tick(&[target(0, 0)], &queued(20));
        let write = plan.scale.first().expect("a scale from zero");
        assert_eq!((write.from, write.to), (0, 2));
        assert_eq!(plan.queues, vec![events_record(20)]);

        // Recorded already: nothing to write.
        let mut recorded = target(2, 2);
        recorded.recorded_queue = (Some(20), None);
        for _ in 0..11 {
            let plan = ticks.tick(&[recorded.clone()], &queued(20));
            assert!(plan.queues.is_empty(), "{plan:?}");
        }
        // Drained: zero is recorded, at most every ten seconds after the last write.
        let plan = ticks.tick(&[recorded.clone()], &queued(0));
        assert_eq!(plan.queues, vec![events_record(0)]);
    }

    fn events_record(queued: u64) -> EventsRecord {
        EventsRecord {
            key: key(),
            queued: Some(queued),
            oldest: None,
            triggers: vec![],
        }
    }

    #[test]
    fn triggers_are_recorded_as_the_activators_report_them() {
        let mut ticks = Ticks::new();
        let mut target = target(0, 0);
        target.triggers = vec![("Storage", "photos".into()), ("Queue", "readings".into())];
        let mut scrape = scrape(0.0, 0, None);
        let load = scrape.loads.get_mut(&key()).expect("the function's load");
        load.triggers.insert(
            ("Storage".into(), "photos".into()),
            crate::api::stats::TriggerStats {
                type_: "Storage".into(),
                name: "photos".into(),
                events: 3,
                last_event: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::now(),
                )),
                ..Default::default()
            },
        );
        load.triggers.insert(
            ("Queue".into(), "readings".into()),
            crate::api::stats::TriggerStats {
                type_: "Queue".into(),
                name: "readings".into(),
                problem: Some("StreamNotShared".into()),
                message: Some("stream IOT does not list namespace media".into()),
                ..Default::default()
            },
        );
        let plan = ticks.tick(&[target.clone()], &scrape);
        let record = plan.queues.first().expect("triggers to record");
        assert_eq!(record.queued, None, "no NATS count: left out");
        let states: Vec<(&str, &str, i64)> = record
            .triggers
            .iter()
            .map(|t| (t.name.as_str(), t.state.as_str(), t.events))
            .collect();
        assert_eq!(
            states,
            vec![
                ("photos", "Receiving", 3),
                ("readings", "StreamNotShared", 0)
            ]
        );
        // Recorded: nothing more to write while nothing changes.
        target.recorded_triggers = record.triggers.clone();
        for _ in 0..11 {
            assert!(ticks.tick(&[target.clone()], &scrape).queues.is_empty());
        }
        // A trigger no activator reports yet is Waiting.
        let waiting = trigger_statuses(&[("Storage", "other".into())], &Default::default(), &[]);
        assert_eq!(waiting[0].state, "Waiting");
        // An activator that restarted forgot its events: the recorded last event stays, and
        // with it the state.
        let forgotten = trigger_statuses(
            &target.triggers,
            &Default::default(),
            &target.recorded_triggers,
        );
        let photos = forgotten.iter().find(|t| t.name == "photos").unwrap();
        assert_eq!(photos.state, "Receiving");
        assert!(photos.last_event_time.is_some());
    }

    #[test]
    fn a_new_function_is_idle_only_from_when_it_was_first_seen() {
        let mut ticks = Ticks::new();
        // No request ever, no lastRequestTime: a new leader must not take it for idle at once.
        let plan = ticks.tick(&[target(1, 1)], &scrape(0.0, 0, None));
        assert!(plan.scale.is_empty(), "{plan:?}");
    }

    #[test]
    fn an_incomplete_scrape_never_scales_down() {
        let mut ticks = Ticks::new();
        let mut partial = scrape(0.0, 0, Some(ticks.clock().wall));
        partial.failed = 1;
        for _ in 0..120 {
            let plan = ticks.tick(&[target(3, 3)], &partial);
            assert!(plan.scale.is_empty(), "{plan:?}");
        }
    }

    #[test]
    fn the_last_request_is_recorded_when_newer_at_most_every_ten_seconds() {
        let mut ticks = Ticks::new();
        let first = ticks.clock().wall;
        let plan = ticks.tick(&[target(1, 1)], &scrape(1.0, 1, Some(first)));
        assert_eq!(plan.last_requests, vec![(key(), first)]);

        let later = first
            .checked_add(jiff::SignedDuration::from_secs(2))
            .unwrap();
        let plan = ticks.tick(&[target(1, 1)], &scrape(1.0, 1, Some(later)));
        assert!(
            plan.last_requests.is_empty(),
            "within 10s of the last write"
        );

        for _ in 0..8 {
            let plan = ticks.tick(&[target(1, 1)], &scrape(1.0, 1, Some(later)));
            assert!(
                plan.last_requests.is_empty(),
                "within 10s of the last write"
            );
        }
        let plan = ticks.tick(&[target(1, 1)], &scrape(1.0, 1, Some(later)));
        assert_eq!(plan.last_requests, vec![(key(), later)]);

        let mut recorded = target(1, 1);
        recorded.recorded_last_request = Some(later);
        for _ in 0..11 {
            let plan = ticks.tick(&[recorded.clone()], &scrape(1.0, 1, Some(later)));
            assert!(plan.last_requests.is_empty(), "already recorded");
        }
    }

    #[test]
    fn a_function_made_again_under_the_same_name_starts_afresh() {
        let mut ticks = Ticks::new();
        let load = scrape(35.0, 35, Some(ticks.clock().wall));
        assert_eq!(ticks.tick(&[target(1, 1)], &load).scale.len(), 1);
        let mut again = target(1, 1);
        again.uid = "uid-2".into();
        // A new uid forgets the write just made, so the new function is scaled at once.
        assert_eq!(ticks.tick(&[again], &load).scale.len(), 1);
    }

    #[test]
    fn functions_in_panic_mode_are_counted() {
        let mut ticks = Ticks::new();
        let plan = ticks.tick(
            &[target(1, 1)],
            &scrape(100.0, 100, Some(ticks.clock().wall)),
        );
        assert_eq!(plan.panicking, 1, "{plan:?}");
    }
}
