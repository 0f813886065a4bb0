//! The scaling decision for one function, Knative-KPA style, as pure arithmetic over samples.
//!
//! Each tick adds a sample of the function's concurrency (requests in the activators, in flight
//! and held, time-averaged since the previous tick and summed over activators). The desired
//! instance count is `ceil(average / target)` over the 60 s stable window. When the 6 s panic
//! window asks for at least twice the ready instances, the scaler panics: it follows the panic
//! window and never scales down until the condition has been gone for a stable window. Scale-up
//! is immediate; scale to zero needs `scale.min == 0`, no request for `idleTimeout` and nothing
//! in flight — and then happens whatever the windows still remember, even with an idleTimeout
//! shorter than the stable window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::api::ServerlessFunctionSpec;
use crate::api::function::Concurrency;

/// The window whose average sets the instance count in normal operation.
pub const STABLE_WINDOW: Duration = Duration::from_secs(60);
/// The short window that detects a load spike.
pub const PANIC_WINDOW: Duration = Duration::from_secs(6);
/// Panic when the panic window asks for this many times the ready instances (200%).
pub const PANIC_THRESHOLD: f64 = 2.0;
/// Target concurrency per instance when neither `target` nor `perInstance` is set.
pub const DEFAULT_TARGET: f64 = 100.0;
/// Share of `perInstance` that is the default target, leaving room for bursts.
pub const TARGET_UTILIZATION: f64 = 0.7;

/// The bounds and target of one function, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePolicy {
    pub min: i32,
    pub max: Option<i32>,
    /// Requests in flight per instance to aim for; always > 0.
    pub target: f64,
    pub idle_timeout: Duration,
}

impl ScalePolicy {
    pub fn of(spec: &ServerlessFunctionSpec) -> Self {
        let min = spec.scale.min.max(0);
        Self {
            min,
            max: spec.scale.max.map(|max| max.max(min).max(1)),
            target: target_concurrency(&spec.effective_concurrency()),
            idle_timeout: spec.scale.idle_timeout.into(),
        }
    }

    fn bound(&self, replicas: i32) -> i32 {
        let replicas = replicas.max(self.min);
        match self.max {
            Some(max) => replicas.min(max),
            None => replicas,
        }
    }
}

/// `concurrency.target`, else 70% of `perInstance` when that is limited, else 100.
pub fn target_concurrency(concurrency: &Concurrency) -> f64 {
    match (concurrency.target, concurrency.per_instance) {
        (Some(target), _) if target > 0 => f64::from(target),
        (_, Some(per_instance)) if per_instance > 0 => f64::from(per_instance) * TARGET_UTILIZATION,
        _ => DEFAULT_TARGET,
    }
}

/// What the loop observed of a function at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub now: Instant,
    /// Time-averaged requests in the activators since the previous tick, summed over them.
    pub concurrency: f64,
    /// Requests in the activators right now (in flight and held).
    pub in_flight: u32,
    /// Replicas the Deployment asks for now.
    pub current: i32,
    /// Ready instances now.
    pub ready: i32,
    /// Time since the last request (or since the function was first seen, if later).
    pub idle_for: Duration,
    /// Every activator answered; with only some, `concurrency` may be too low, so the
    /// decision never scales down.
    pub complete: bool,
}

/// What the scaler decided at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: i32,
    pub panicking: bool,
    /// Average concurrency over the stable window.
    pub stable_concurrency: f64,
    /// Average concurrency over the panic window.
    pub panic_concurrency: f64,
}

/// One tick's concurrency, and when it was taken as milliseconds after the scaler's first
/// sample: 12 bytes where an `Instant` and an `f64` take 24, and a function's first idle minute
/// keeps sixty of them.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Sample {
    at: u32,
    value: f64,
}

const _: () = assert!(std::mem::size_of::<Sample>() == 12);

/// A scaler older than this (about 24 days) moves its first sample up (see
/// [`FunctionScaler::millis`]), so that a sample's `u32` of milliseconds never runs out.
const MOVE_FIRST_SAMPLE_AFTER: u128 = u32::MAX as u128 / 2;

/// The memory of one function's scaler between ticks.
#[derive(Clone, Debug, Default)]
pub struct FunctionScaler {
    samples: VecDeque<Sample>,
    /// The first sample's time; samples are kept as milliseconds after it.
    first_sample: Option<Instant>,
    /// The last time the panic condition held; `None` when not panicking.
    panic_since: Option<Instant>,
    /// The most instances asked for during this panic.
    max_panic_replicas: i32,
}

impl FunctionScaler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    /// Adds the tick's sample and decides the instance count.
    pub fn observe(&mut self, policy: &ScalePolicy, observed: &Observation) -> Decision {
        let now = observed.now;
        let concurrency = observed.concurrency.max(0.0);
        let at = self.millis(now);
        self.samples.push_back(Sample {
            at,
            value: concurrency,
        });
        let first_sample = self.first_sample.unwrap_or(now);
        while let Some(&Sample { at: oldest, .. }) = self.samples.front() {
            if u128::from(at.saturating_sub(oldest)) >= STABLE_WINDOW.as_millis() {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let stable_concurrency = self.average(at, STABLE_WINDOW);
        let panic_concurrency = self.average(at, PANIC_WINDOW);
        let target = policy.target.max(f64::MIN_POSITIVE);
        let desired_stable = instances_for(stable_concurrency, target);
        let desired_panic = instances_for(panic_concurrency, target);

        let ready_capacity = f64::from(observed.ready.max(1));
        let over_threshold = panic_concurrency / target >= PANIC_THRESHOLD * ready_capacity;
        if over_threshold {
            self.panic_since = Some(now);
        } else if let Some(since) = self.panic_since
            && now.saturating_duration_since(since) >= STABLE_WINDOW
        {
            self.panic_since = None;
            self.max_panic_replicas = 0;
        }

        let mut desired = desired_stable;
        if self.is_panicking() {
            desired = desired.max(desired_panic);
            if desired > self.max_panic_replicas {
                self.max_panic_replicas = desired;
            } else {
                desired = self.max_panic_replicas;
            }
        }

        // No request for idleTimeout and none in the activators: the load the windows remember
        // is over, so neither it nor a panic keeps (or brings back) an instance.
        let idle = policy.min == 0
            && observed.idle_for >= policy.idle_timeout
            && observed.in_flight == 0
            && concurrency == 0.0;
        if idle {
            desired = 0;
            // Freed, not cleared: most functions sit idle, and a full window's buffer is
            // 0.75 KB each.
            self.samples = VecDeque::new();
            self.panic_since = None;
            self.max_panic_replicas = 0;
        } else if desired == 0 && observed.current > 0 {
            desired = 1;
        }

        // A scaler that has not yet seen a whole stable window (a new leader, a new function)
        // knows too little to take instances away; neither does one missing some activators.
        let window_filled = now.saturating_duration_since(first_sample) >= STABLE_WINDOW;
        if desired < observed.current && (!window_filled || !observed.complete) {
            desired = observed.current;
        }

        Decision {
            desired: policy.bound(desired),
            panicking: self.is_panicking(),
            stable_concurrency,
            panic_concurrency,
        }
    }

    /// `now` as milliseconds after the first sample (which `now` becomes if there is none).
    /// Once that passes [`MOVE_FIRST_SAMPLE_AFTER`], the first sample is taken to be two
    /// stable windows before `now`, and the samples kept move with it; any older than that
    /// (none, as a window never keeps them) become that old, and are dropped as such.
    fn millis(&mut self, now: Instant) -> u32 {
        let first = *self.first_sample.get_or_insert(now);
        let millis = now.saturating_duration_since(first).as_millis();
        if millis <= MOVE_FIRST_SAMPLE_AFTER {
            return millis as u32;
        }
        let shift = millis - 2 * STABLE_WINDOW.as_millis();
        self.first_sample = Some(first + Duration::from_millis(shift as u64));
        let shift = u32::try_from(shift).unwrap_or(u32::MAX);
        for sample in &mut self.samples {
            sample.at = sample.at.saturating_sub(shift);
        }
        (2 * STABLE_WINDOW.as_millis()) as u32
    }

    /// The average of the samples within `window` of `now` (milliseconds, as [`Self::millis`]).
    fn average(&self, now: u32, window: Duration) -> f64 {
        let (sum, count) = self
            .samples
            .iter()
            .rev()
            .take_while(|sample| u128::from(now.saturating_sub(sample.at)) < window.as_millis())
            .fold((0.0, 0u32), |(sum, count), &Sample { value, .. }| {
                (sum + value, count + 1)
            });
        if count == 0 {
            0.0
        } else {
            sum / f64::from(count)
        }
    }
}

/// Instances that serve `concurrency` at `target` each; tolerant of float noise just above a
/// whole number.
fn instances_for(concurrency: f64, target: f64) -> i32 {
    let exact = concurrency / target;
    let rounded = (exact - 1e-9).ceil().max(0.0);
    if rounded >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        rounded as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: Option<i32>, target: f64) -> ScalePolicy {
        ScalePolicy {
            min,
            max,
            target,
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Drives a scaler with one sample per second and returns the last decision.
    struct Run {
        scaler: FunctionScaler,
        policy: ScalePolicy,
        start: Instant,
        second: u64,
        current: i32,
        ready: i32,
        idle_for: Duration,
        complete: bool,
    }

    impl Run {
        fn new(policy: ScalePolicy, current: i32) -> Self {
            Self {
                scaler: FunctionScaler::new(),
                policy,
                start: Instant::now(),
                second: 0,
                current,
                ready: current,
                idle_for: Duration::ZERO,
                complete: true,
            }
        }

        /// `seconds` ticks at `concurrency`; the instances follow the decision at once.
        fn run(&mut self, seconds: u64, concurrency: f64) -> Decision {
            let mut last = None;
            for _ in 0..seconds {
                let decision = self.tick(concurrency);
                self.current = decision.desired;
                self.ready = decision.desired;
                last = Some(decision);
            }
            last.expect("at least one tick")
        }

        fn tick(&mut self, concurrency: f64) -> Decision {
            self.second += 1;
            let observed = Observation {
                now: self.start + Duration::from_secs(self.second),
                concurrency,
                in_flight: concurrency.ceil() as u32,
                current: self.current,
                ready: self.ready,
                idle_for: self.idle_for,
                complete: self.complete,
            };
            self.scaler.observe(&self.policy, &observed)
        }
    }

    #[test]
    fn a_scaler_older_than_its_milliseconds_keeps_averaging_its_windows() {
        let mut run = Run::new(policy(1, None, 1.0), 1);
        run.run(120, 4.0);
        // 30 days later, past what a sample's milliseconds since the first one can hold: the
        // samples of then are long out of the windows, and new ones average as before.
        run.second += 30 * 24 * 3600;
        let first = run.tick(2.0);
        assert_eq!(first.stable_concurrency, 2.0, "{first:?}");
        let decision = run.run(90, 3.0);
        assert_eq!(decision.stable_concurrency, 3.0, "{decision:?}");
        assert_eq!(decision.desired, 3);
        // Sixty samples in the stable window, six in the panic window, as at the start.
        let half = run.run(30, 1.0);
        assert_eq!(half.stable_concurrency, 2.0, "{half:?}");
        assert_eq!(half.panic_concurrency, 1.0, "{half:?}");
    }

    #[test]
    fn steady_load_gets_load_over_target_instances() {
        let mut run = Run::new(policy(0, None, 10.0), 1);
        let decision = run.run(120, 35.0);
        assert_eq!(decision.desired, 4);
        assert!(!decision.panicking);
    }

    #[test]
    fn a_load_step_is_answered_on_the_first_tick() {
        let mut run = Run::new(policy(0, None, 1.0), 1);
        run.run(120, 1.0);
        // 10x the load: the panic window (6 samples, one of them 10) already asks for 3.
        let decision = run.tick(10.0);
        assert!(decision.desired > 1, "{decision:?}");
        assert!(decision.panicking);
    }

    #[test]
    fn panic_follows_the_panic_window_up_to_the_full_load() {
        let mut run = Run::new(policy(0, None, 1.0), 1);
        run.run(120, 1.0);
        let decision = run.run(6, 10.0);
        assert_eq!(decision.desired, 10);
        assert!(decision.panicking);
    }

    #[test]
    fn panic_never_scales_down_and_ends_a_stable_window_after_the_spike() {
        let mut run = Run::new(policy(0, None, 1.0), 1);
        run.run(120, 1.0);
        run.run(6, 10.0);
        let during = run.run(30, 1.0);
        assert_eq!(during.desired, 10, "held at the panic maximum");
        assert!(during.panicking);
        // The spike ended 36s ago; 60s after the condition last held, panic ends.
        let after = run.run(40, 1.0);
        assert!(!after.panicking);
        assert!(after.desired < 10, "{after:?}");
    }

    #[test]
    fn without_panic_a_drop_in_load_scales_down_gradually() {
        let mut run = Run::new(policy(0, None, 1.0), 8);
        run.run(120, 8.0);
        let soon = run.run(10, 2.0);
        // The stable average is still (50*8 + 10*2)/60 = 7.
        assert_eq!(soon.desired, 7);
        let later = run.run(60, 2.0);
        assert_eq!(later.desired, 2);
    }

    #[test]
    fn scales_to_zero_only_after_idle_timeout_with_nothing_in_flight() {
        let mut run = Run::new(policy(0, None, 10.0), 1);
        run.run(120, 0.0);
        assert_eq!(run.current, 1, "idle for less than idleTimeout: keep one");
        run.idle_for = Duration::from_secs(61);
        assert_eq!(run.tick(0.0).desired, 0);
    }

    #[test]
    fn an_idle_function_keeps_no_samples_between_ticks() {
        let mut run = Run::new(policy(0, None, 10.0), 0);
        run.run(120, 0.0);
        assert!(
            run.scaler.samples.capacity() >= 60,
            "a full window before idleness"
        );
        run.idle_for = Duration::from_secs(61);
        run.run(5, 0.0);
        assert_eq!(run.scaler.samples.capacity(), 0);
        // Load again: the window fills from the first sample on.
        run.idle_for = Duration::ZERO;
        assert_eq!(run.tick(25.0).desired, 3);
    }

    #[test]
    fn an_idle_timeout_shorter_than_the_stable_window_is_honoured() {
        let mut run = Run::new(
            ScalePolicy {
                idle_timeout: Duration::from_secs(5),
                ..policy(0, None, 1.0)
            },
            1,
        );
        run.run(120, 1.0);
        run.run(3, 0.0);
        assert_eq!(run.current, 1, "the load ended 3s ago");
        run.idle_for = Duration::from_secs(6);
        assert_eq!(run.tick(0.0).desired, 0, "{:?}", run.scaler);
    }

    #[test]
    fn an_idle_function_is_not_scaled_back_up_by_the_load_the_window_remembers() {
        // Scaled to zero by someone else (or by the idle rule) right after a burst.
        let mut run = Run::new(
            ScalePolicy {
                idle_timeout: Duration::from_secs(1),
                ..policy(0, None, 1.0)
            },
            4,
        );
        run.run(120, 1.0);
        run.run(6, 10.0);
        run.current = 0;
        run.ready = 0;
        run.idle_for = Duration::from_secs(2);
        assert_eq!(run.run(10, 0.0).desired, 0);
        // Woken again, it starts from one instance, not from the burst's panic maximum.
        run.idle_for = Duration::ZERO;
        run.current = 1;
        run.ready = 1;
        assert_eq!(run.tick(0.5).desired, 1);
    }

    #[test]
    fn a_request_in_flight_prevents_scale_to_zero() {
        let mut run = Run::new(policy(0, None, 10.0), 1);
        run.run(120, 0.0);
        run.idle_for = Duration::from_secs(600);
        let observed = Observation {
            now: run.start + Duration::from_secs(121),
            concurrency: 0.0,
            in_flight: 1,
            current: 1,
            ready: 1,
            idle_for: run.idle_for,
            complete: true,
        };
        assert_eq!(run.scaler.observe(&run.policy, &observed).desired, 1);
    }

    #[test]
    fn min_above_zero_never_scales_to_zero() {
        let mut run = Run::new(policy(2, None, 10.0), 2);
        run.idle_for = Duration::from_secs(3600);
        assert_eq!(run.run(200, 0.0).desired, 2);
    }

    #[test]
    fn max_bounds_the_instances_even_in_panic() {
        let mut run = Run::new(policy(0, Some(5), 1.0), 1);
        run.run(60, 1.0);
        let decision = run.run(10, 100.0);
        assert_eq!(decision.desired, 5);
    }

    #[test]
    fn zero_instances_with_no_load_stay_at_zero() {
        let mut run = Run::new(policy(0, None, 10.0), 0);
        assert_eq!(run.run(5, 0.0).desired, 0);
    }

    #[test]
    fn load_on_a_function_at_zero_scales_it_up_at_once() {
        let mut run = Run::new(policy(0, None, 10.0), 0);
        run.run(120, 0.0);
        let decision = run.tick(3.0);
        assert_eq!(decision.desired, 1);
    }

    #[test]
    fn a_new_scaler_does_not_scale_down_before_a_whole_window() {
        // A new leader finds 5 instances and no load yet.
        let mut run = Run::new(policy(0, None, 10.0), 5);
        run.idle_for = Duration::from_secs(3600);
        assert_eq!(run.run(59, 0.0).desired, 5);
        assert_eq!(run.run(2, 0.0).desired, 0);
    }

    #[test]
    fn missing_activators_block_scale_down_but_not_scale_up() {
        let mut run = Run::new(policy(0, None, 1.0), 4);
        run.run(120, 4.0);
        run.complete = false;
        assert_eq!(run.run(120, 1.0).desired, 4, "partial data: hold");
        assert!(
            run.run(10, 20.0).desired > 4,
            "partial data still shows more load"
        );
    }

    #[test]
    fn target_defaults_to_seventy_percent_of_per_instance_or_one_hundred() {
        let of = |per_instance, target| {
            target_concurrency(&Concurrency {
                per_instance,
                target,
            })
        };
        assert_eq!(of(Some(10), Some(7)), 7.0);
        assert!((of(Some(10), None) - 7.0).abs() < 1e-9);
        assert!((of(Some(1), None) - 0.7).abs() < 1e-9);
        assert_eq!(of(Some(0), None), 100.0, "0 is unlimited");
        assert_eq!(of(None, None), 100.0);
        assert_eq!(of(None, Some(0)), 100.0, "0 is the default");
    }

    #[test]
    fn an_exact_multiple_of_the_target_needs_no_extra_instance() {
        assert_eq!(instances_for(20.0, 10.0), 2);
        assert_eq!(instances_for(2.1 * 3.0, 2.1), 3);
        assert_eq!(instances_for(20.5, 10.0), 3);
        assert_eq!(instances_for(0.0, 10.0), 0);
        assert_eq!(instances_for(0.01, 10.0), 1);
    }

    #[test]
    fn policy_reads_the_spec() {
        let spec: ServerlessFunctionSpec = serde_yaml::from_str(
            "image: x\nconcurrency: {perInstance: 10}\nscale: {min: 1, max: 20, idleTimeout: 5m}\n",
        )
        .expect("a spec");
        let policy = ScalePolicy::of(&spec);
        assert_eq!(policy.min, 1);
        assert_eq!(policy.max, Some(20));
        assert!((policy.target - 7.0).abs() < 1e-9);
        assert_eq!(policy.idle_timeout, Duration::from_secs(300));
    }
}
