//! Metered use, as `status.usage` of functions and profiles keeps it: amounts in the units AWS
//! bills, totals since metering began, and hourly and daily buckets for reports over a window.
//!
//! The arithmetic here is pure; the writers are [`crate::usage`]'s.

use jiff::{Timestamp, ToSpan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Hourly buckets are kept this long.
pub const HOURS_KEPT: i64 = 48;
/// Daily buckets (UTC days) are kept this long.
pub const DAYS_KEPT: i64 = 32;

/// MB-milliseconds in one GB-second (Lambda's GB is 1,024 MB).
pub const MB_MS_PER_GB_SECOND: f64 = 1024.0 * 1000.0;

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

/// Use, in the units AWS bills. A field that stays zero is left out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageAmounts {
    /// Invocations that reached an instance of the function (functions).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub invocations: u64,
    /// Memory × billed time, in GB-seconds: a function's invocations, each rounded up to the
    /// millisecond; a profile's pods, at their provisioned memory.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub gb_seconds: f64,
    /// Runtimes that initialized (the `Init Duration` of a `REPORT` line): handler functions.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub inits: u64,
    /// Memory × init duration, in GB-seconds, apart from `gbSeconds`.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub init_gb_seconds: f64,
    /// Memory × time of the warm instances `scale.min` keeps (Lambda's provisioned
    /// concurrency), in GB-seconds.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub provisioned_gb_seconds: f64,
    /// Pods that started (profiles).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pods: u64,
    /// Provisioned vCPUs × billed time, in vCPU-seconds (profiles).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub vcpu_seconds: f64,
}

impl UsageAmounts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn add(&mut self, other: &UsageAmounts) {
        self.invocations += other.invocations;
        self.gb_seconds += other.gb_seconds;
        self.inits += other.inits;
        self.init_gb_seconds += other.init_gb_seconds;
        self.provisioned_gb_seconds += other.provisioned_gb_seconds;
        self.pods += other.pods;
        self.vcpu_seconds += other.vcpu_seconds;
    }
}

/// The amounts of one hour or one day (UTC), from `start`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageBucket {
    pub start: Time,
    #[serde(flatten)]
    pub amounts: UsageAmounts,
}

/// Totals and buckets of one account of use (a function, or one namespace of a profile).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageHistory {
    /// Everything since metering began.
    #[serde(flatten)]
    pub total: UsageAmounts,
    /// The last 48 hours that had use, by hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<UsageBucket>,
    /// The last 32 days that had use, by UTC day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<UsageBucket>,
}

impl UsageHistory {
    /// Adds `amounts`, used at `at`, to the totals and to its hour and day; drops buckets
    /// older than kept.
    pub fn add(&mut self, at: Timestamp, amounts: &UsageAmounts) {
        if amounts.is_empty() {
            return;
        }
        self.total.add(amounts);
        let hour = floor(at, 3600);
        let day = floor(at, 86_400);
        add_to(&mut self.hours, hour, amounts);
        add_to(&mut self.days, day, amounts);
        self.prune(at);
    }

    /// Drops buckets older than kept, as of `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let hours_from = floor(now, 3600) - (HOURS_KEPT - 1).hours();
        let days_from = floor(now, 86_400) - ((DAYS_KEPT - 1) * 24).hours();
        self.hours.retain(|b| b.start.0 >= hours_from);
        self.days.retain(|b| b.start.0 >= days_from);
    }

    /// Use since `from`, from the buckets: hourly when `from` is within the hours kept, daily
    /// otherwise; each bucket that overlaps the window counts whole. `None` when the buckets
    /// do not reach back that far.
    pub fn since(&self, from: Timestamp, now: Timestamp) -> Option<UsageAmounts> {
        let hours_from = floor(now, 3600) - (HOURS_KEPT - 1).hours();
        let days_from = floor(now, 86_400) - ((DAYS_KEPT - 1) * 24).hours();
        let (buckets, size) = if from >= hours_from {
            (&self.hours, 3600)
        } else if from >= days_from {
            (&self.days, 86_400)
        } else {
            return None;
        };
        let first = floor(from, size);
        let mut sum = UsageAmounts::default();
        for bucket in buckets.iter().filter(|b| b.start.0 >= first) {
            sum.add(&bucket.amounts);
        }
        Some(sum)
    }
}

fn add_to(buckets: &mut Vec<UsageBucket>, start: Timestamp, amounts: &UsageAmounts) {
    match buckets.iter_mut().find(|b| b.start.0 == start) {
        Some(bucket) => bucket.amounts.add(amounts),
        None => {
            buckets.push(UsageBucket {
                start: Time(start),
                amounts: *amounts,
            });
            buckets.sort_by_key(|b| b.start.0);
        }
    }
}

/// `at` rounded down to a multiple of `seconds` since the epoch (whole hours and UTC days).
pub fn floor(at: Timestamp, seconds: i64) -> Timestamp {
    let s = at.as_second().div_euclid(seconds) * seconds;
    Timestamp::from_second(s).unwrap_or(at)
}

/// What one activator counted for one function since it started: the cursor of the function's
/// usage on that activator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ActivatorCounters {
    #[serde(default)]
    pub invocations: u64,
    /// Billed milliseconds × memory in MB.
    #[serde(default)]
    pub mb_ms: u64,
    #[serde(default)]
    pub inits: u64,
    /// Init milliseconds × memory in MB.
    #[serde(default)]
    pub init_mb_ms: u64,
}

impl ActivatorCounters {
    /// What was counted after `before` (the same activator, read earlier). Counters never go
    /// back on one activator; if they seem to, nothing is taken rather than a negative amount.
    pub fn since(&self, before: &ActivatorCounters) -> UsageAmounts {
        UsageAmounts {
            invocations: self.invocations.saturating_sub(before.invocations),
            gb_seconds: self.mb_ms.saturating_sub(before.mb_ms) as f64 / MB_MS_PER_GB_SECOND,
            inits: self.inits.saturating_sub(before.inits),
            init_gb_seconds: self.init_mb_ms.saturating_sub(before.init_mb_ms) as f64
                / MB_MS_PER_GB_SECOND,
            ..UsageAmounts::default()
        }
    }
}

/// The counters of one activator already in a function's totals.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActivatorCursor {
    /// The activator's count (a random id it drew when it began counting the function).
    pub counter: String,
    /// When it last answered.
    pub seen: Time,
    #[serde(flatten)]
    pub counted: ActivatorCounters,
}

/// `status.usage` of a ServerlessFunction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionUsage {
    /// When metering of the function began.
    pub since: Time,
    /// When these figures were last brought up to date.
    pub updated: Time,
    #[serde(flatten)]
    pub history: UsageHistory,
    /// What each activator had counted when the totals were written, so that an activator's
    /// counts are taken once, whoever reads them next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activators: Vec<ActivatorCursor>,
}

/// One namespace's pods under a profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceUsage {
    pub namespace: String,
    #[serde(flatten)]
    pub history: UsageHistory,
}

/// `status.usage` of a FargateProfile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUsage {
    /// When metering of the profile began.
    pub since: Time,
    /// The pods' time is counted up to this instant.
    pub updated: Time,
    /// All namespaces together.
    #[serde(flatten)]
    pub total: UsageAmounts,
    /// By namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn gb(gb_seconds: f64) -> UsageAmounts {
        UsageAmounts {
            invocations: 1,
            gb_seconds,
            ..Default::default()
        }
    }

    #[test]
    fn amounts_go_to_their_hour_and_day() {
        let mut history = UsageHistory::default();
        history.add(at("2026-11-28T10:15:00Z"), &gb(1.0));
        history.add(at("2026-11-28T10:45:00Z"), &gb(2.0));
        history.add(at("2026-11-28T11:05:00Z"), &gb(4.0));
        assert_eq!(history.total.invocations, 3);
        assert_eq!(history.total.gb_seconds, 7.0);
        assert_eq!(history.hours.len(), 2);
        assert_eq!(history.hours[0].start.0, at("2026-11-28T10:00:00Z"));
        assert_eq!(history.hours[0].amounts.gb_seconds, 3.0);
        assert_eq!(history.days.len(), 1);
        assert_eq!(history.days[0].amounts.gb_seconds, 7.0);

        let now = at("2026-11-28T11:30:00Z");
        let last_hour = history.since(at("2026-11-28T11:10:00Z"), now).unwrap();
        assert_eq!(
            last_hour.gb_seconds, 4.0,
            "the overlapping hour counts whole"
        );
        let last_day = history.since(at("2026-11-27T11:30:00Z"), now).unwrap();
        assert_eq!(last_day.gb_seconds, 7.0);
        let last_week = history.since(at("2026-11-21T11:30:00Z"), now).unwrap();
        assert_eq!(last_week.gb_seconds, 7.0, "from the daily buckets");
        assert_eq!(history.since(at("2026-09-01T00:00:00Z"), now), None);
    }

    #[test]
    fn old_buckets_are_dropped_and_the_totals_kept() {
        let mut history = UsageHistory::default();
        history.add(at("2026-11-01T10:00:00Z"), &gb(1.0));
        history.add(at("2026-11-28T10:00:00Z"), &gb(1.0));
        assert_eq!(history.hours.len(), 1);
        assert_eq!(history.days.len(), 2);
        history.add(at("2026-12-10T10:00:00Z"), &gb(1.0));
        assert_eq!(
            history.days.len(),
            2,
            "1 November is more than 32 days back"
        );
        assert_eq!(history.total.gb_seconds, 3.0);
    }

    #[test]
    fn an_activators_counts_are_taken_from_its_cursor() {
        let before = ActivatorCounters {
            invocations: 10,
            mb_ms: 128 * 2000,
            inits: 1,
            init_mb_ms: 128 * 300,
        };
        let now = ActivatorCounters {
            invocations: 30,
            mb_ms: 128 * 6000,
            inits: 1,
            init_mb_ms: 128 * 300,
        };
        let amounts = now.since(&before);
        assert_eq!(amounts.invocations, 20);
        assert_eq!(amounts.gb_seconds, 0.5, "4,000 ms at 128 MB");
        assert_eq!(amounts.inits, 0);
        assert!(before.since(&now).is_empty(), "never negative");
    }

    #[test]
    fn usage_reads_as_json_with_flattened_amounts() {
        let mut history = UsageHistory::default();
        history.add(at("2026-11-28T10:15:00Z"), &gb(0.5));
        let usage = FunctionUsage {
            since: Time(at("2026-11-28T10:00:00Z")),
            updated: Time(at("2026-11-28T10:15:00Z")),
            history,
            activators: vec![],
        };
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["invocations"], 1);
        assert_eq!(json["gbSeconds"], 0.5);
        assert_eq!(json["hours"][0]["gbSeconds"], 0.5);
        assert!(json.get("pods").is_none(), "zero amounts are left out");
        let back: FunctionUsage = serde_json::from_value(json).unwrap();
        assert_eq!(back, usage);
    }
}
