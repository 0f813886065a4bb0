use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use crate::profile::fargate_menu;

const T0: &str = "2026-03-01T10:00:00Z";

fn at(text: &str) -> Timestamp {
    text.parse().expect("a timestamp")
}

/// `seconds` after [`T0`].
fn t(seconds: i64) -> Timestamp {
    at(T0) + SignedDuration::from_secs(seconds)
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("pod fixture parses")
}

/// A pod admitted under profile `payments` at 0.25 vCPU and 0.5 GB, with `rest` (its spec and
/// status) appended.
fn profiled(name: &str, rest: &str) -> Pod {
    pod(&format!(
        r#"
metadata:
  name: {name}
  namespace: payments-eu
  uid: uid-{name}
  labels: {{app: api, fargo.dev/profile: payments}}
  annotations: {{fargo.dev/capacity-provisioned: 0.25vCPU 0.5GB}}
{rest}
"#
    ))
}

/// A pod with start and end (seconds after T0) and size 1 vCPU, 2 GB.
fn lived(start: Option<i64>, end: Option<i64>) -> PodSpan {
    PodSpan {
        profile: "payments".into(),
        namespace: "payments-eu".into(),
        start: start.map(t),
        end: end.map(t),
        vcpu: 1.0,
        gb: 2.0,
        written: None,
    }
}

/// What `span` adds over the consecutive intervals between `writes` (seconds after T0).
fn billed(span: &PodSpan, writes: &[i64]) -> Accrued {
    writes
        .windows(2)
        .map(|w| accrue(span, t(w[0]), t(w[1])))
        .fold(Accrued::default(), |sum, a| Accrued {
            pods: sum.pods + a.pods,
            seconds: sum.seconds + a.seconds,
        })
}

/// Every increasing series of writes that starts at `first`, ends at `last`, and falls in
/// between on any of `points`.
fn write_series(first: i64, points: &[i64], last: i64) -> Vec<Vec<i64>> {
    let inner: Vec<i64> = points
        .iter()
        .copied()
        .filter(|p| first < *p && *p < last)
        .collect();
    (0..1u32 << inner.len())
        .map(|mask| {
            let mut writes = vec![first];
            writes.extend(
                inner
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, p)| *p),
            );
            writes.push(last);
            writes
        })
        .collect()
}

// The annotation.

#[test]
fn reads_every_size_fargo_writes() {
    for capacity in fargate_menu() {
        let size = parse_capacity(&capacity.annotation()).expect("fargo's own annotation");
        assert_eq!(
            (size.vcpu * 1000.0).round() as u64,
            capacity.millicpu,
            "{capacity:?}"
        );
        assert_eq!(
            (size.gb * f64::from(1u32 << 30)).round() as u64,
            capacity.memory_bytes,
            "{capacity:?}"
        );
    }
    assert_eq!(
        parse_capacity("0.25vCPU 0.5GB"),
        Ok(Provisioned {
            vcpu: 0.25,
            gb: 0.5
        })
    );
}

#[test]
fn refuses_annotations_that_are_not_a_plain_size() {
    for value in [
        "",
        "0.25vCPU",
        "0.25 vCPU 0.5GB",
        "0.25vCPU 0.5GiB",
        "0.25vcpu 0.5GB",
        "0.5GB 0.25vCPU",
    ] {
        assert_eq!(
            parse_capacity(value),
            Err(CapacityError::Format {
                value: value.into()
            }),
            "{value:?}"
        );
    }
    for (value, amount) in [
        ("infvCPU 1GB", "inf"),
        ("NaNvCPU 1GB", "NaN"),
        ("-1vCPU 1GB", "-1"),
        ("0vCPU 1GB", "0"),
        ("1e3vCPU 1GB", "1e3"),
        ("1vCPU GB", ""),
        ("1vCPU  1GB", " 1"),
        ("1vCPU 1.2.3GB", "1.2.3"),
        ("1vCPU .GB", "."),
    ] {
        assert_eq!(
            parse_capacity(value),
            Err(CapacityError::Amount {
                value: value.into(),
                amount: amount.into()
            }),
            "{value:?}"
        );
    }
    let message = parse_capacity("lots").unwrap_err().to_string();
    assert_eq!(
        message,
        "annotation fargo.dev/capacity-provisioned=\"lots\" is not a Fargate size such as \
         \"0.25vCPU 0.5GB\" (vCPUs, one space, then GB); fargo's webhook writes it when it sizes \
         the pod, so create the pod anew under a profile that sizes pods"
    );
}

// The span of a pod.

#[test]
fn a_running_pod_spans_from_its_start_time() {
    let running = profiled(
        "api-1",
        r#"
spec: {containers: [{name: app}], restartPolicy: Always}
status:
  phase: Running
  startTime: "2026-03-01T10:00:00Z"
  containerStatuses:
    - {name: app, state: {running: {startedAt: "2026-03-01T10:00:20Z"}}}
"#,
    );
    assert_eq!(
        span(&running, t(100)),
        Some(PodSpan {
            profile: "payments".into(),
            namespace: "payments-eu".into(),
            start: Some(t(0)),
            end: None,
            vcpu: 0.25,
            gb: 0.5,
            written: None,
        })
    );
}

#[test]
fn a_pod_not_yet_started_has_no_start() {
    let pending = profiled("api-1", "spec: {containers: [{name: app}]}");
    let span = span(&pending, t(100)).expect("a profiled pod");
    assert_eq!((span.start, span.end), (None, None));
}

#[test]
fn pods_without_the_label_or_a_readable_size_are_not_metered() {
    let unlabelled = pod(r#"
metadata:
  name: web
  namespace: payments-eu
  annotations: {fargo.dev/capacity-provisioned: 0.25vCPU 0.5GB}
status: {startTime: "2026-03-01T10:00:00Z"}
"#);
    assert_eq!(span(&unlabelled, t(0)), None);
    // A profile with `sizing.policy: None` does not size its pods.
    let not_sized = pod(r#"
metadata:
  name: batch
  namespace: jobs
  labels: {fargo.dev/profile: batch}
status: {startTime: "2026-03-01T10:00:00Z"}
"#);
    assert_eq!(span(&not_sized, t(0)), None);
    let mut malformed = profiled("api-1", "status: {startTime: \"2026-03-01T10:00:00Z\"}");
    malformed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(CAPACITY_ANNOTATION.into(), "a lot".into());
    assert_eq!(span(&malformed, t(0)), None);
}

#[test]
fn a_finished_pod_ends_when_its_last_container_finished() {
    let succeeded = profiled(
        "job-1",
        r#"
spec:
  restartPolicy: Never
  initContainers: [{name: setup}]
  containers: [{name: main}, {name: side}]
status:
  phase: Succeeded
  startTime: "2026-03-01T10:00:00Z"
  initContainerStatuses:
    - {name: setup, state: {terminated: {exitCode: 0, finishedAt: "2026-03-01T10:00:05Z"}}}
  containerStatuses:
    - {name: main, state: {terminated: {exitCode: 0, finishedAt: "2026-03-01T10:01:40Z"}}}
    - {name: side, state: {terminated: {exitCode: 0, finishedAt: "2026-03-01T10:01:30Z"}}}
"#,
    );
    assert_eq!(span(&succeeded, t(500)).unwrap().end, Some(t(100)));
}

#[test]
fn a_failed_pod_that_says_not_when_ends_now_and_init_containers_do_not_say() {
    let failed = profiled(
        "job-1",
        r#"
spec: {restartPolicy: Never, initContainers: [{name: setup}], containers: [{name: main}]}
status:
  phase: Failed
  startTime: "2026-03-01T10:00:00Z"
  initContainerStatuses:
    - {name: setup, state: {terminated: {exitCode: 1, finishedAt: "2026-03-01T10:00:05Z"}}}
  containerStatuses:
    - {name: main, state: {waiting: {reason: PodInitializing}}}
"#,
    );
    assert_eq!(span(&failed, t(500)).unwrap().end, Some(t(500)));
}

#[test]
fn containers_stopped_for_good_end_the_pod_before_its_phase_says_so() {
    let stopped = |restart_policy: &str, exit_code: i32, deleting: bool| {
        let mut pod = profiled(
            "api-1",
            &format!(
                r#"
spec: {{restartPolicy: {restart_policy}, containers: [{{name: app}}]}}
status:
  phase: Running
  startTime: "2026-03-01T10:00:00Z"
  containerStatuses:
    - {{name: app, state: {{terminated: {{exitCode: {exit_code}, finishedAt: "2026-03-01T10:01:10Z"}}}}}}
"#
            ),
        );
        if deleting {
            pod.metadata.deletion_timestamp = Some(Time(t(60)));
        }
        span(&pod, t(500)).unwrap().end
    };
    assert_eq!(stopped("Always", 0, true), Some(t(70)), "being deleted");
    assert_eq!(stopped("Never", 1, false), Some(t(70)));
    assert_eq!(stopped("OnFailure", 0, false), Some(t(70)));
    // The kubelet starts these again: the pod, and its bill, go on.
    assert_eq!(stopped("Always", 0, false), None);
    assert_eq!(stopped("OnFailure", 1, false), None);
}

// Accrual.

#[test]
fn a_pod_is_billed_from_its_start_while_it_runs() {
    let running = lived(Some(10), None);
    assert_eq!(
        accrue(&running, t(0), t(30)),
        Accrued {
            pods: 1,
            seconds: 20.0
        }
    );
    assert_eq!(
        accrue(&running, t(30), t(60)),
        Accrued {
            pods: 0,
            seconds: 30.0
        }
    );
}

#[test]
fn a_pod_adds_nothing_before_its_start_or_without_one() {
    assert!(accrue(&lived(Some(40), None), t(0), t(30)).is_empty());
    assert!(accrue(&lived(None, None), t(0), t(30)).is_empty());
    assert!(accrue(&lived(None, Some(20)), t(0), t(30)).is_empty());
}

#[test]
fn a_pod_started_exactly_at_the_write_counts_as_started_with_no_time_yet() {
    assert_eq!(
        accrue(&lived(Some(30), None), t(0), t(30)),
        Accrued {
            pods: 1,
            seconds: 0.0
        }
    );
    assert_eq!(accrue(&lived(Some(30), None), t(30), t(60)).pods, 0);
}

#[test]
fn a_pod_that_ended_before_the_interval_adds_nothing() {
    for span in [lived(Some(0), Some(30)), lived(Some(0), Some(90))] {
        assert!(accrue(&span, t(90), t(120)).is_empty(), "{span:?}");
        assert!(accrue(&span, t(100), t(130)).is_empty(), "{span:?}");
    }
}

#[test]
fn the_minimum_is_topped_up_in_the_interval_that_holds_the_end() {
    let short = lived(Some(0), Some(30));
    assert_eq!(
        accrue(&short, t(20), t(50)),
        Accrued {
            pods: 0,
            seconds: 40.0
        },
        "up to a minute after the start, though the interval ends before"
    );
    assert_eq!(
        accrue(&short, t(-5), t(30)),
        Accrued {
            pods: 1,
            seconds: 60.0
        }
    );
}

#[test]
fn a_pod_living_30_seconds_is_billed_one_minute_however_the_writes_fall() {
    let short = lived(Some(0), Some(30));
    let points = [0, 1, 15, 29, 30, 31, 45, 59, 60, 61, 90];
    for last in [30, 31, 45, 60, 200] {
        for writes in write_series(-10, &points, last) {
            assert_eq!(
                billed(&short, &writes),
                Accrued {
                    pods: 1,
                    seconds: 60.0
                },
                "writes at {writes:?}"
            );
        }
    }
}

#[test]
fn a_pod_living_90_seconds_is_billed_90_seconds_however_the_writes_fall() {
    let long = lived(Some(0), Some(90));
    let points = [0, 15, 30, 59, 60, 61, 89, 90, 91, 120];
    for last in [90, 91, 150] {
        for writes in write_series(-30, &points, last) {
            assert_eq!(
                billed(&long, &writes),
                Accrued {
                    pods: 1,
                    seconds: 90.0
                },
                "writes at {writes:?}"
            );
        }
    }
}

#[test]
fn consecutive_intervals_add_up_to_the_one_they_make_never_more() {
    let spans = [
        lived(Some(0), None),
        lived(Some(0), Some(30)),
        lived(Some(0), Some(59)),
        lived(Some(0), Some(60)),
        lived(Some(0), Some(61)),
        lived(Some(0), Some(150)),
        lived(Some(45), Some(50)),
        lived(Some(0), Some(0)),
        lived(None, Some(10)),
    ];
    let instants = [-20, 0, 10, 29, 30, 45, 59, 60, 61, 100, 149, 150, 200];
    for span in &spans {
        for &from in &instants {
            for &to in instants.iter().filter(|to| **to > from) {
                let whole = accrue(span, t(from), t(to));
                for &split in instants.iter().filter(|m| from < **m && **m < to) {
                    let parts = billed(span, &[from, split, to]);
                    assert_eq!(parts, whole, "{span:?} over ({from}, {split}, {to}]");
                }
            }
        }
    }
}

#[test]
fn a_running_pod_is_billed_up_to_the_last_write() {
    let running = lived(Some(5), None);
    for writes in write_series(0, &[5, 10, 30, 60], 95) {
        assert_eq!(billed(&running, &writes).seconds, 90.0, "{writes:?}");
    }
}

#[test]
fn an_end_from_a_clock_ahead_counts_as_running_until_reached() {
    let skewed = lived(Some(0), Some(100));
    assert_eq!(accrue(&skewed, t(30), t(60)).seconds, 30.0);
    assert_eq!(accrue(&skewed, t(60), t(120)).seconds, 40.0);
}

#[test]
fn an_end_before_the_start_bills_the_minimum() {
    let backwards = lived(Some(30), Some(10));
    assert_eq!(
        billed(&backwards, &[0, 20, 40, 200]),
        Accrued {
            pods: 1,
            seconds: 60.0
        }
    );
}

#[test]
fn amounts_are_the_seconds_at_the_provisioned_size() {
    let span = PodSpan {
        vcpu: 0.25,
        gb: 0.5,
        ..lived(Some(0), None)
    };
    let amounts = span.amounts(Accrued {
        pods: 1,
        seconds: 60.0,
    });
    assert_eq!(
        amounts,
        UsageAmounts {
            pods: 1,
            vcpu_seconds: 15.0,
            gb_seconds: 30.0,
            ..UsageAmounts::default()
        }
    );
}

// The profile's usage.

fn in_namespace(namespace: &str, span: PodSpan) -> PodSpan {
    PodSpan {
        namespace: namespace.into(),
        ..span
    }
}

fn written(update: UsageUpdate) -> ProfileUsage {
    match update {
        UsageUpdate::Write(usage) => usage,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[test]
fn the_first_write_counts_from_the_profiles_creation() {
    let created = t(-60);
    let spans = [
        in_namespace("payments-us", lived(Some(-30), None)),
        in_namespace("payments-eu", lived(Some(10), None)),
        in_namespace("payments-eu", lived(None, None)),
    ];
    let usage = written(update_usage(None, created, &spans, t(30)));
    assert_eq!(usage.since.0, created);
    assert_eq!(usage.updated.0, t(30));
    assert_eq!(usage.total.pods, 2);
    assert_eq!(usage.total.vcpu_seconds, 60.0 + 20.0);
    assert_eq!(usage.total.gb_seconds, 2.0 * 80.0);
    let namespaces: Vec<_> = usage
        .namespaces
        .iter()
        .map(|n| (n.namespace.as_str(), n.history.total.vcpu_seconds))
        .collect();
    assert_eq!(namespaces, [("payments-eu", 20.0), ("payments-us", 60.0)]);
    assert_eq!(
        usage.namespaces[0].history.hours[0].start.0,
        at("2026-03-01T10:00:00Z")
    );
}

#[test]
fn an_end_learned_after_the_write_it_falls_in_still_gets_its_minute() {
    // A write up to t(30) sees the pod running; a moment later the watch says it ended at
    // t(30). The next write adds the rest of its minute.
    let mut tracked = TrackedPods::default();
    tracked.follow(watcher::Event::Init, t(0));
    tracked.follow(watcher::Event::InitDone, t(0));
    let uid = "short".to_string();
    tracked.seen(uid.clone(), Some(lived(Some(0), None)));
    let spans = tracked.by_profile().remove("payments").unwrap();
    let first = written(update_usage(None, t(0), &spans, t(30)));
    assert_eq!(first.total.vcpu_seconds, 30.0);
    tracked.settle("payments", Settled::CountedTo(t(30)));

    tracked.seen(uid.clone(), Some(lived(Some(0), Some(30))));
    let spans = tracked.by_profile().remove("payments").unwrap();
    let second = written(update_usage(Some(&first), t(0), &spans, t(60)));
    assert_eq!(second.total.vcpu_seconds, 60.0, "one minute at least");
    assert_eq!(second.total.pods, 1);
    tracked.settle("payments", Settled::CountedTo(t(60)));
    assert!(tracked.by_profile().is_empty(), "counted in full");
}

#[test]
fn a_pod_started_in_the_second_its_profile_was_created_is_counted() {
    let spans = [lived(Some(0), Some(30))];
    let usage = written(update_usage(None, t(0), &spans, t(45)));
    assert_eq!(usage.total.pods, 1);
    assert_eq!(usage.total.vcpu_seconds, 60.0);
}

#[test]
fn a_later_write_adds_the_time_since_the_last_and_keeps_since() {
    let spans = [lived(Some(0), None)];
    let first = written(update_usage(None, t(-60), &spans, t(30)));
    let second = written(update_usage(Some(&first), t(-60), &spans, t(60)));
    assert_eq!(second.since.0, t(-60));
    assert_eq!(second.updated.0, t(60));
    assert_eq!(second.total.pods, 1);
    assert_eq!(second.total.vcpu_seconds, 60.0);
    assert_eq!(second.namespaces.len(), 1);
    assert_eq!(second.namespaces[0].history.total.vcpu_seconds, 60.0);
}

#[test]
fn nothing_is_written_before_the_last_write_or_in_its_second() {
    let spans = [lived(Some(0), None)];
    let first = written(update_usage(None, t(-60), &spans, t(30)));
    for now in [t(20), t(30), t(30) + SignedDuration::from_millis(999)] {
        assert_eq!(
            update_usage(Some(&first), t(-60), &spans, now),
            UsageUpdate::Behind
        );
    }
}

#[test]
fn pods_that_ended_before_the_last_write_or_have_not_started_write_nothing() {
    let spans = [lived(Some(0), Some(20)), lived(None, None)];
    let first = written(update_usage(None, t(-60), &spans, t(30)));
    assert_eq!(first.total.vcpu_seconds, 60.0);
    assert_eq!(
        update_usage(Some(&first), t(-60), &spans, t(60)),
        UsageUpdate::NothingNew { counted_to: t(30) }
    );
}

#[test]
fn writes_at_any_fraction_of_a_second_count_each_second_once_across_restarts() {
    // Each write is read back from its JSON, as the next meter (or this one after a restart)
    // reads it: `updated` keeps whole seconds only.
    let spans = [lived(Some(0), Some(30)), lived(Some(0), Some(125))];
    let mut usage: Option<ProfileUsage> = None;
    for millis in [10_700, 40_300, 70_999, 100_001, 130_500, 160_250] {
        let now = t(0) + SignedDuration::from_millis(millis);
        if let UsageUpdate::Write(next) = update_usage(usage.as_ref(), t(0), &spans, now) {
            let json = serde_json::to_value(&next).unwrap();
            usage = Some(serde_json::from_value(json).unwrap());
        }
    }
    let usage = usage.expect("written");
    assert_eq!(
        usage.total.pods, 2,
        "both started in the second of the profile's creation: counted"
    );
    assert_eq!(usage.total.vcpu_seconds, 60.0 + 125.0);
    assert_eq!(usage.updated.0, t(130));
}

// The pods tracked.

fn apply(pod: Pod) -> Event<DeserializeGuard<Pod>> {
    Event::Apply(DeserializeGuard(Ok(pod)))
}

fn running(name: &str) -> Pod {
    profiled(
        name,
        r#"
spec: {restartPolicy: Always, containers: [{name: app}]}
status: {phase: Running, startTime: "2026-03-01T10:00:00Z"}
"#,
    )
}

fn succeeded(name: &str) -> Pod {
    profiled(
        name,
        r#"
spec: {restartPolicy: Never, containers: [{name: app}]}
status:
  phase: Succeeded
  startTime: "2026-03-01T10:00:00Z"
  containerStatuses:
    - {name: app, state: {terminated: {exitCode: 0, finishedAt: "2026-03-01T10:00:20Z"}}}
"#,
    )
}

fn ends(tracked: &TrackedPods) -> Vec<Option<Timestamp>> {
    tracked
        .by_profile()
        .values()
        .flatten()
        .map(|s| s.end)
        .collect()
}

#[test]
fn a_deleted_pod_ends_when_seen_gone_unless_it_said_when() {
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(running("api-1")), t(10));
    tracked.follow(Event::Delete(DeserializeGuard(Ok(running("api-1")))), t(50));
    assert_eq!(ends(&tracked), [Some(t(50))]);

    let mut tracked = TrackedPods::default();
    tracked.follow(apply(succeeded("job-1")), t(30));
    tracked.follow(
        Event::Delete(DeserializeGuard(Ok(succeeded("job-1")))),
        t(90),
    );
    assert_eq!(ends(&tracked), [Some(t(20))]);
}

#[test]
fn the_earliest_end_of_a_pod_that_says_not_when_holds() {
    let failed = || {
        profiled(
            "job-1",
            r#"
spec: {restartPolicy: Never, containers: [{name: app}]}
status: {phase: Failed, startTime: "2026-03-01T10:00:00Z"}
"#,
        )
    };
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(failed()), t(40));
    tracked.follow(apply(failed()), t(70));
    tracked.follow(Event::Delete(DeserializeGuard(Ok(failed()))), t(90));
    assert_eq!(ends(&tracked), [Some(t(40))]);
}

#[test]
fn writes_wait_for_the_list_and_pods_a_relist_misses_end_when_it_completes() {
    let mut tracked = TrackedPods::default();
    assert!(!tracked.is_listed());
    tracked.follow(Event::Init, t(0));
    tracked.follow(
        Event::InitApply(DeserializeGuard(Ok(running("api-1")))),
        t(0),
    );
    tracked.follow(
        Event::InitApply(DeserializeGuard(Ok(running("api-2")))),
        t(0),
    );
    assert!(!tracked.is_listed());
    tracked.follow(Event::InitDone, t(0));
    assert!(tracked.is_listed());

    // The watch went down; api-2 was deleted meanwhile.
    tracked.follow(Event::Init, t(100));
    assert!(
        !tracked.is_listed(),
        "a write now could miss pods not relisted yet"
    );
    tracked.follow(
        Event::InitApply(DeserializeGuard(Ok(running("api-1")))),
        t(100),
    );
    tracked.follow(Event::InitDone, t(105));
    let mut spans: Vec<_> = tracked.by_profile().remove("payments").unwrap();
    spans.sort_by_key(|s| s.end);
    assert_eq!(
        spans.iter().map(|s| s.end).collect::<Vec<_>>(),
        [None, Some(t(105))]
    );
}

#[test]
fn a_pod_that_does_not_parse_keeps_its_span_and_counts_as_listed() {
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(running("api-1")), t(0));
    let broken: DeserializeGuard<Pod> = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "payments-eu", "uid": "uid-api-1"},
        "spec": {"containers": "not a list"},
    }))
    .expect("the guard takes any object with metadata");
    assert!(broken.0.is_err());
    tracked.follow(Event::Init, t(50));
    tracked.follow(Event::InitApply(broken.clone()), t(50));
    tracked.follow(Event::InitDone, t(50));
    tracked.follow(Event::Apply(broken), t(60));
    assert_eq!(ends(&tracked), [None]);
}

#[test]
fn pods_counted_in_full_are_forgotten_and_stay_so() {
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(running("api-1")), t(0));
    tracked.follow(apply(succeeded("job-1")), t(30));
    tracked.settle("payments", Settled::Pending);
    assert_eq!(tracked.by_profile()["payments"].len(), 2);
    tracked.settle("batch", Settled::CountedTo(t(60)));
    assert_eq!(tracked.by_profile()["payments"].len(), 2, "another profile");

    tracked.settle("payments", Settled::CountedTo(t(60)));
    assert_eq!(ends(&tracked), [None], "job-1 is counted");
    // A later event of job-1 (its deletion under way) does not bring it back ...
    tracked.follow(apply(succeeded("job-1")), t(70));
    assert_eq!(ends(&tracked), [None]);
    // ... nor its deletion, after which it is forgotten altogether.
    tracked.follow(
        Event::Delete(DeserializeGuard(Ok(succeeded("job-1")))),
        t(80),
    );
    assert_eq!(ends(&tracked), [None]);
    assert!(tracked.counted.is_empty());
}

#[test]
fn a_pod_that_ended_after_the_write_or_never_started_is_settled_accordingly() {
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(succeeded("job-1")), t(30));
    let pending = profiled("job-2", "spec: {containers: [{name: app}]}");
    tracked.follow(apply(pending.clone()), t(30));
    tracked.follow(Event::Delete(DeserializeGuard(Ok(pending))), t(40));
    tracked.settle("payments", Settled::CountedTo(t(10)));
    assert_eq!(
        ends(&tracked),
        [Some(t(20))],
        "job-1 ended after t(10); job-2 never ran"
    );
}

#[test]
fn the_pods_of_a_deleted_profile_are_not_metered() {
    let mut tracked = TrackedPods::default();
    tracked.follow(apply(running("api-1")), t(0));
    let mut other = running("etl-1");
    other
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(PROFILE_LABEL.into(), "batch".into());
    tracked.follow(apply(other), t(0));
    tracked.settle("payments", Settled::ProfileGone);
    assert_eq!(tracked.by_profile().keys().collect::<Vec<_>>(), ["batch"]);
    tracked.follow(apply(running("api-1")), t(30));
    assert!(!tracked.by_profile().contains_key("payments"));
}
