//! The metering of functions, run by the autoscaler: it hands each scrape of the activators'
//! `/stats` to [`FunctionMeter::observe`], and every [`WRITE_INTERVAL`] the functions whose
//! counts moved (or that keep warm instances) get their `status.usage` brought up to date.
//!
//! Each activator counts a function's invocations and GB-milliseconds from zero under a random
//! counter id. The status keeps, per counter id, what was already added to the totals (a
//! cursor), so a write adds only what a counter gained since: whichever controller replica
//! writes, after any restart, and however many scrapes it missed. An activator that dies has
//! its last scraped counts written at the next interval; what it counted after its last scrape
//! (under a second) is lost, never counted twice. Each write is conditional on the
//! resourceVersion it was computed from, so two writers cannot add the same counts.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use super::{WRITE_INTERVAL, apply_usage};
use crate::api::ServerlessFunction;
use crate::api::stats::UsageReport;
use crate::api::usage::{ActivatorCounters, ActivatorCursor, FunctionUsage, UsageAmounts};

/// `(namespace, name)`.
pub type Key = (String, String);

/// A cursor whose activator has not answered for this long is dropped from the status: its
/// count ended (the activator restarted, or stopped counting the function).
const CURSOR_TTL: SignedDuration = SignedDuration::from_hours(1);
/// Warm instances are billed for the time since the last write, up to this: a longer gap
/// (the controller was away) is not guessed at.
const MAX_PROVISIONED_GAP: SignedDuration = SignedDuration::from_mins(5);
/// Writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// Per counter id, the counts one write took in.
type Written = BTreeMap<String, ActivatorCounters>;

/// What `scale.min` keeps warm: instances ready (up to `scale.min`) and their memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Provisioned {
    pub instances: u32,
    pub memory_mb: u64,
}

/// One activator's latest count of one function.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    counted: ActivatorCounters,
    at: Timestamp,
}

/// The autoscaler's side of metering; only the leader's runs.
#[derive(Default)]
pub struct FunctionMeter {
    /// By function, by counter id: the latest counts the activators reported.
    latest: HashMap<Key, BTreeMap<String, Seen>>,
    /// By function: the counts its last successful write took in.
    written: HashMap<Key, Written>,
    last_flush: Option<Instant>,
    flushing: Option<JoinHandle<Vec<(Key, Written)>>>,
}

/// One function's write.
struct Job {
    key: Key,
    reports: Vec<(String, Seen)>,
    provisioned: Option<Provisioned>,
}

impl FunctionMeter {
    /// Takes in one scrape's usage reports, by function.
    pub fn observe<'a>(
        &mut self,
        reports: impl IntoIterator<Item = (&'a Key, &'a [UsageReport])>,
        now: Timestamp,
    ) {
        for (key, reports) in reports {
            if reports.is_empty() {
                continue;
            }
            let latest = self.latest.entry(key.clone()).or_default();
            for report in reports {
                latest.insert(
                    report.counter.clone(),
                    Seen {
                        counted: report.counted.clone(),
                        at: now,
                    },
                );
            }
        }
    }

    /// Every [`WRITE_INTERVAL`]: writes the usage of the functions whose counts moved since
    /// their last write, and of those with warm instances (`provisioned`), in the background.
    /// A write still running from the last interval is waited for at the next tick.
    pub fn flush(
        &mut self,
        client: &Client,
        provisioned: &HashMap<Key, Provisioned>,
        now: Instant,
        wall: Timestamp,
    ) {
        if let Some(flushing) = &self.flushing {
            if !flushing.is_finished() {
                return;
            }
            if let Some(flushing) = self.flushing.take()
                && let Some(Ok(written)) = futures::FutureExt::now_or_never(flushing)
            {
                for (key, counts) in written {
                    self.written.insert(key, counts);
                }
            }
        }
        if self
            .last_flush
            .is_some_and(|last| now.duration_since(last) < WRITE_INTERVAL)
        {
            return;
        }
        self.last_flush = Some(now);
        let jobs = self.jobs(provisioned, wall);
        if jobs.is_empty() {
            return;
        }
        let client = client.clone();
        self.flushing = Some(tokio::spawn(async move {
            futures::stream::iter(jobs)
                .map(|job| write(&client, job, wall))
                .buffer_unordered(WRITE_CONCURRENCY)
                .filter_map(|written| async move { written })
                .collect()
                .await
        }));
    }

    /// Waits for a write in flight (at shutdown).
    pub async fn finish(&mut self) {
        if let Some(flushing) = self.flushing.take() {
            let _ = flushing.await;
        }
    }

    fn jobs(&mut self, provisioned: &HashMap<Key, Provisioned>, wall: Timestamp) -> Vec<Job> {
        // Counts of activators long gone are in the status already, or were never written
        // because the function is gone: forget them.
        for latest in self.latest.values_mut() {
            latest.retain(|_, seen| wall.duration_since(seen.at) < CURSOR_TTL);
        }
        self.latest.retain(|_, latest| !latest.is_empty());
        self.written.retain(|key, _| self.latest.contains_key(key));

        let mut jobs = vec![];
        for (key, latest) in &self.latest {
            let moved = self.written.get(key).is_none_or(|written| {
                latest
                    .iter()
                    .any(|(id, seen)| written.get(id) != Some(&seen.counted))
            });
            if moved || provisioned.contains_key(key) {
                jobs.push(Job {
                    key: key.clone(),
                    reports: latest
                        .iter()
                        .map(|(id, seen)| (id.clone(), seen.clone()))
                        .collect(),
                    provisioned: provisioned.get(key).copied(),
                });
            }
        }
        for (key, warm) in provisioned {
            if !self.latest.contains_key(key) {
                jobs.push(Job {
                    key: key.clone(),
                    reports: vec![],
                    provisioned: Some(*warm),
                });
            }
        }
        jobs
    }
}

/// Reads the function afresh, adds what its counters gained, and applies the result on
/// condition that nothing else wrote it meanwhile (once more on a conflict). Returns the
/// counts taken in, when written.
async fn write(client: &Client, job: Job, now: Timestamp) -> Option<(Key, Written)> {
    let (namespace, name) = &job.key;
    let api: Api<ServerlessFunction> = Api::namespaced(client.clone(), namespace);
    for _ in 0..2 {
        let function = match api.get_opt(name).await {
            Ok(Some(function)) => function,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(%namespace, function = %name, %error, "reading the function to meter it failed");
                return None;
            }
        };
        let previous = function.status.as_ref().and_then(|s| s.usage.as_ref());
        let reports: Vec<(String, ActivatorCounters, Timestamp)> = job
            .reports
            .iter()
            .map(|(id, seen)| (id.clone(), seen.counted.clone(), seen.at))
            .collect();
        let usage = fold(previous, &reports, job.provisioned, now);
        if previous == Some(&usage) {
            break;
        }
        let version = function.resource_version().unwrap_or_default();
        match apply_usage(&api, name, &version, &usage).await {
            Ok(_) => {
                let counts = job
                    .reports
                    .into_iter()
                    .map(|(id, seen)| (id, seen.counted))
                    .collect();
                return Some((job.key, counts));
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(%namespace, function = %name, "usage write conflicted; reading again");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return None,
            Err(error) => {
                tracing::warn!(%namespace, function = %name, %error, "writing the function's usage failed");
                return None;
            }
        }
    }
    None
}

/// The function's usage after taking in `reports` (counter id, counts, when seen) and the
/// warm instances' time since the last write: each counter adds what it gained over its
/// cursor (all of it when it has none), and its cursor moves to what it reported.
pub fn fold(
    previous: Option<&FunctionUsage>,
    reports: &[(String, ActivatorCounters, Timestamp)],
    provisioned: Option<Provisioned>,
    now: Timestamp,
) -> FunctionUsage {
    let mut usage = previous.cloned().unwrap_or_else(|| FunctionUsage {
        since: Time(now),
        updated: Time(now),
        history: Default::default(),
        activators: vec![],
    });
    let mut gained = UsageAmounts::default();
    for (counter, counted, seen) in reports {
        match usage.activators.iter_mut().find(|c| &c.counter == counter) {
            Some(cursor) => {
                gained.add(&counted.since(&cursor.counted));
                cursor.counted = highest(&cursor.counted, counted);
                cursor.seen = Time(cursor.seen.0.max(*seen));
            }
            None => {
                gained.add(&counted.since(&ActivatorCounters::default()));
                usage.activators.push(ActivatorCursor {
                    counter: counter.clone(),
                    seen: Time(*seen),
                    counted: counted.clone(),
                });
            }
        }
    }
    if let (Some(warm), Some(previous)) = (provisioned, previous) {
        let gap = now
            .duration_since(previous.updated.0)
            .clamp(SignedDuration::ZERO, MAX_PROVISIONED_GAP);
        gained.provisioned_gb_seconds =
            f64::from(warm.instances) * warm.memory_mb as f64 / 1024.0 * gap.as_secs_f64();
    }
    usage
        .activators
        .retain(|c| now.duration_since(c.seen.0) < CURSOR_TTL);
    usage.activators.sort_by(|a, b| a.counter.cmp(&b.counter));
    usage.history.add(now, &gained);
    usage.history.prune(now);
    if !gained.is_empty() || provisioned.is_some() {
        usage.updated = Time(now);
    }
    usage
}

/// Field by field, the higher count (one counter never goes back).
fn highest(a: &ActivatorCounters, b: &ActivatorCounters) -> ActivatorCounters {
    ActivatorCounters {
        invocations: a.invocations.max(b.invocations),
        mb_ms: a.mb_ms.max(b.mb_ms),
        inits: a.inits.max(b.inits),
        init_mb_ms: a.init_mb_ms.max(b.init_mb_ms),
    }
}

/// The warm instances of a function: `scale.min`, as far as that many are ready.
pub fn provisioned(function: &ServerlessFunction) -> Option<Provisioned> {
    let min = u32::try_from(function.spec.scale.min)
        .ok()
        .filter(|m| *m > 0)?;
    let ready = function
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let memory_mb = crate::quantity::parse_bytes(&function.spec.memory)
        .map_or(128, |bytes| bytes / (1024 * 1024));
    (ready > 0).then_some(Provisioned {
        instances: ready.min(min),
        memory_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn counts(invocations: u64, ms_at_128: u64) -> ActivatorCounters {
        ActivatorCounters {
            invocations,
            mb_ms: ms_at_128 * 128,
            ..Default::default()
        }
    }

    #[test]
    fn twenty_invocations_of_200_ms_at_128_mb_are_half_a_gb_second() {
        let now = at("2026-11-28T10:00:00Z");
        let usage = fold(None, &[("a".into(), counts(20, 20 * 200), now)], None, now);
        assert_eq!(usage.history.total.invocations, 20);
        assert_eq!(usage.history.total.gb_seconds, 0.5);
        assert_eq!(usage.activators.len(), 1);
    }

    #[test]
    fn a_counter_is_taken_once_whatever_the_number_of_writes() {
        let t0 = at("2026-11-28T10:00:00Z");
        let t1 = at("2026-11-28T10:00:30Z");
        let t2 = at("2026-11-28T10:01:00Z");
        let first = fold(None, &[("a".into(), counts(10, 1000), t0)], None, t0);
        // The same counts again (a restarted controller, a repeated write): nothing added.
        let again = fold(
            Some(&first),
            &[("a".into(), counts(10, 1000), t0)],
            None,
            t1,
        );
        assert_eq!(again.history.total, first.history.total);
        // Two activators: one moved on, one new.
        let later = fold(
            Some(&again),
            &[
                ("a".into(), counts(15, 1500), t2),
                ("b".into(), counts(3, 300), t2),
            ],
            None,
            t2,
        );
        assert_eq!(later.history.total.invocations, 18);
        assert_eq!(later.activators.len(), 2);
        // An activator gone quiet keeps its cursor until CURSOR_TTL.
        let quiet = fold(
            Some(&later),
            &[("b".into(), counts(4, 400), t2)],
            None,
            at("2026-11-28T10:30:00Z"),
        );
        assert_eq!(quiet.activators.len(), 2);
        assert_eq!(quiet.history.total.invocations, 19);
        let gone = fold(Some(&quiet), &[], None, at("2026-11-28T11:31:00Z"));
        assert!(gone.activators.is_empty());
        assert_eq!(gone.history.total.invocations, 19);
    }

    #[test]
    fn nothing_new_changes_nothing() {
        let t0 = at("2026-11-28T10:00:00Z");
        let first = fold(None, &[("a".into(), counts(1, 100), t0)], None, t0);
        let idle = fold(
            Some(&first),
            &[("a".into(), counts(1, 100), t0)],
            None,
            at("2026-11-28T10:01:00Z"),
        );
        assert_eq!(
            idle, first,
            "a function at rest accrues nothing, not even a new time"
        );
    }

    #[test]
    fn warm_instances_are_billed_for_the_time_between_writes() {
        let t0 = at("2026-11-28T10:00:00Z");
        let warm = Provisioned {
            instances: 2,
            memory_mb: 512,
        };
        let first = fold(None, &[], Some(warm), t0);
        assert_eq!(first.history.total.provisioned_gb_seconds, 0.0);
        let second = fold(Some(&first), &[], Some(warm), at("2026-11-28T10:00:30Z"));
        assert_eq!(second.history.total.provisioned_gb_seconds, 30.0);
        let after_a_gap = fold(Some(&second), &[], Some(warm), at("2026-11-28T12:00:00Z"));
        assert_eq!(
            after_a_gap.history.total.provisioned_gb_seconds,
            30.0 + 300.0,
            "a gap is billed up to five minutes"
        );
    }
}
