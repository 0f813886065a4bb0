//! One function's live state in the activator — its pods, its hold queue and its counters —
//! behind one lock that is never held across an await.
//!
//! A request is [admitted](FunctionState::admit): it either gets a [`Lease`] (a place on a pod)
//! at once, or waits in the hold queue as a [`HeldRequest`] until a place frees or a pod becomes
//! usable, or is turned away when the queue is full or the activator holds all it may. Dropping a `Lease` frees its place and
//! hands it to the oldest held request.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use hyper::http::uri::Authority;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::oneshot;

use super::balancer::{Balancer, Endpoint, Slot};
use super::concurrency::ConcurrencyMeter;
use super::hold::{HoldLimit, HoldQueue, HoldRefused, WaiterId};
use super::lambda_api::FunctionFacts;
use super::metrics::RequestMetrics;
use crate::api::lambda::billed_ms;
use crate::api::stats::{FunctionStats, TriggerStats, UsageReport};
use crate::api::usage::ActivatorCounters;

/// A function's triggers by `(type, name)`, each with the load its backlog stands for.
type Triggers = BTreeMap<(&'static str, String), (TriggerStats, u64)>;

fn trigger_entry<'a>(
    triggers: &'a mut Triggers,
    type_: &'static str,
    name: &str,
) -> &'a mut (TriggerStats, u64) {
    triggers
        .entry((type_, name.to_string()))
        .or_insert_with(|| {
            let stats = TriggerStats {
                type_: type_.to_string(),
                name: name.to_string(),
                ..Default::default()
            };
            (stats, 0)
        })
}

/// What the activator needs of a function's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionConfig {
    /// `spec.timeout`: the longest a request may take, held time included.
    pub timeout: Duration,
    /// `spec.concurrency.perInstance`; 0 is unlimited.
    pub per_instance: u32,
    /// `spec.port`, for EndpointSlices that list no port.
    pub port: u16,
    /// How long past `timeout` a forwarded request still waits for the pod's answer: a handler
    /// function's sidecar times its invocations out itself and answers as Lambda does, which
    /// the activator would otherwise cut short. Zero for HTTP images.
    pub answer_grace: Duration,
    /// What the Lambda API, HTTP authentication and the event queue read of the spec.
    pub facts: Arc<FunctionFacts>,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            per_instance: 0,
            port: 8080,
            answer_grace: Duration::ZERO,
            facts: Arc::default(),
        }
    }
}

/// An address from one of the function's EndpointSlices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedEndpoint {
    pub ip: IpAddr,
    /// The slice's port; `None` when the slice lists none.
    pub port: Option<u16>,
    pub ready: bool,
    pub terminating: bool,
}

/// How the function's pods stand, to explain a request that timed out while held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSummary {
    pub listed: usize,
    pub usable: usize,
    pub per_instance: u32,
}

pub struct FunctionState {
    namespace: String,
    name: String,
    inner: Mutex<Inner>,
    /// Its asynchronous events as JetStream last counted them: how many, and when the oldest
    /// was accepted.
    queue: Mutex<Option<(u64, Option<Time>)>>,
    /// Its storage and queue triggers, by `(type, name)`, each with the load its backlog
    /// stands for (in requests).
    triggers: Mutex<Triggers>,
    metrics: RequestMetrics,
    usage: UsageCounter,
    /// Last explanation of why the function's pods are not ready, so that a burst of requests
    /// timing out together lists the pods once.
    pub(super) diagnosis: tokio::sync::Mutex<Option<(Instant, super::scale::Diagnosis)>>,
}

struct Inner {
    config: FunctionConfig,
    balancer: Balancer,
    queue: HoldQueue<Slot>,
    /// Requests admitted and not finished (proxied and held).
    meter: ConcurrencyMeter,
    requests: u64,
    last_request: Option<SystemTime>,
    poke_running: bool,
    /// No new poke before this instant (the last one found or set replicas).
    poke_not_before: Option<Instant>,
}

/// What became of a request on arrival.
pub enum Admission {
    /// A place on a pod: proxy now.
    Proxy(Lease),
    /// No free place: wait.
    Hold(HeldRequest),
    /// The hold queue is full (its capacity given): answer 429.
    QueueFull(usize),
    /// The activator holds as many requests as it may, all functions together (that number
    /// given): answer 503.
    ActivatorFull(usize),
}

impl FunctionState {
    pub fn new(
        namespace: &str,
        name: &str,
        config: FunctionConfig,
        queue_depth: usize,
        hold_limit: Arc<HoldLimit>,
        metrics: RequestMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            inner: Mutex::new(Inner {
                balancer: Balancer::new(config.per_instance),
                config,
                queue: HoldQueue::new(queue_depth, hold_limit),
                meter: ConcurrencyMeter::new(Instant::now()),
                requests: 0,
                last_request: None,
                poke_running: false,
                poke_not_before: None,
            }),
            metrics,
            usage: UsageCounter::default(),
            queue: Mutex::new(None),
            triggers: Mutex::default(),
            diagnosis: tokio::sync::Mutex::new(None),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> &RequestMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the counts are still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn config(&self) -> FunctionConfig {
        self.lock().config.clone()
    }

    pub fn set_config(&self, config: FunctionConfig) {
        let mut inner = self.lock();
        inner.balancer.set_per_instance(config.per_instance);
        inner.config = config;
        self.dispatch(&mut inner);
    }

    /// Replaces the pods with what the function's EndpointSlices list; returns the addresses
    /// to probe (listed, not ready yet).
    pub fn set_endpoints(&self, endpoints: &[ObservedEndpoint]) -> Vec<SocketAddr> {
        let mut inner = self.lock();
        let port = inner.config.port;
        let endpoints: Vec<Endpoint> = endpoints
            .iter()
            .map(|e| Endpoint {
                addr: SocketAddr::new(e.ip, e.port.unwrap_or(port)),
                ready: e.ready,
                terminating: e.terminating,
            })
            .collect();
        let to_probe = inner.balancer.set_endpoints(&endpoints);
        self.dispatch(&mut inner);
        to_probe
    }

    pub fn has_endpoints(&self) -> bool {
        self.lock().balancer.pod_count() > 0
    }

    pub fn pod_summary(&self) -> PodSummary {
        let inner = self.lock();
        PodSummary {
            listed: inner.balancer.pod_count(),
            usable: inner.balancer.usable_count(),
            per_instance: inner.config.per_instance,
        }
    }

    pub fn needs_probe(&self, addr: SocketAddr) -> bool {
        self.lock().balancer.needs_probe(addr)
    }

    /// The pod at `addr` answered HTTP: use it now, before its readiness reaches the
    /// EndpointSlice.
    pub fn mark_alive(&self, addr: SocketAddr) -> bool {
        let mut inner = self.lock();
        let became_usable = inner.balancer.mark_alive(addr);
        if became_usable {
            self.dispatch(&mut inner);
        }
        became_usable
    }

    pub fn probe_finished(&self, addr: SocketAddr) {
        self.lock().balancer.probe_finished(addr);
    }

    /// Whether requests are waiting in the hold queue.
    pub fn is_holding(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Takes in a request: counts it, and gives it a place on a pod, a place in the hold queue,
    /// or neither. Also returns the function's timeout.
    pub fn admit(self: &Arc<Self>) -> (Duration, Admission) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.requests += 1;
        inner.last_request = Some(SystemTime::now());
        let timeout = inner.config.timeout;
        if let Some(slot) = inner.balancer.pick() {
            inner.meter.increment(now);
            self.publish(&inner);
            let lease = Lease {
                function: self.clone(),
                slot,
                meter: None,
            };
            return (timeout, Admission::Proxy(lease));
        }
        let (id, receiver) = match inner.queue.push() {
            Ok(waiter) => waiter,
            Err(HoldRefused::QueueFull) => {
                return (timeout, Admission::QueueFull(inner.queue.capacity()));
            }
            Err(HoldRefused::LimitReached) => {
                return (timeout, Admission::ActivatorFull(inner.queue.limit().max()));
            }
        };
        inner.meter.increment(now);
        let cold = !inner.balancer.has_usable();
        let poke = !inner.poke_running && inner.poke_not_before.is_none_or(|t| now >= t) && cold;
        inner.poke_running |= poke;
        self.publish(&inner);
        let held = HeldRequest {
            function: self.clone(),
            id,
            receiver: Some(receiver),
            poke,
            cold,
        };
        (timeout, Admission::Hold(held))
    }

    /// The scale-from-zero poke ended; `settled` when it found or set replicas, so the next one
    /// may wait a while.
    pub fn poke_finished(&self, settled: bool) {
        let mut inner = self.lock();
        inner.poke_running = false;
        inner.poke_not_before = settled.then(|| Instant::now() + POKE_INTERVAL);
    }

    /// Records what JetStream holds for the function.
    pub fn set_queue(&self, queued: u64, oldest: Option<Time>) {
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = Some((queued, oldest));
    }

    fn triggers(&self) -> MutexGuard<'_, Triggers> {
        self.triggers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `count` events that arrived for a trigger.
    pub fn trigger_events(&self, type_: &'static str, name: &str, count: u64) {
        let mut triggers = self.triggers();
        let (trigger, _) = trigger_entry(&mut triggers, type_, name);
        trigger.events += count;
        trigger.last_event = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }

    /// Counts one event that arrived for a trigger.
    pub fn trigger_event(&self, type_: &'static str, name: &str) {
        self.trigger_events(type_, name, 1);
    }

    /// Records a trigger's problem (`None`: it works) and its backlog.
    pub fn set_trigger_state(
        &self,
        type_: &'static str,
        name: &str,
        problem: Option<(&str, String)>,
        pending: Option<u64>,
    ) {
        let mut triggers = self.triggers();
        let (trigger, _) = trigger_entry(&mut triggers, type_, name);
        (trigger.problem, trigger.message) = match problem {
            Some((reason, message)) => (Some(reason.to_string()), Some(message)),
            None => (None, None),
        };
        trigger.pending = pending;
    }

    /// Records the load a trigger's backlog stands for: the invocations it would run at once.
    pub fn set_trigger_demand(&self, type_: &'static str, name: &str, demand: u64) {
        let mut triggers = self.triggers();
        trigger_entry(&mut triggers, type_, name).1 = demand;
    }

    /// Forgets triggers the function no longer has.
    pub fn keep_triggers(&self, keep: impl Fn(&str, &str) -> bool) {
        self.triggers().retain(|(type_, name), _| keep(type_, name));
    }

    /// Counters for `/stats`; starts a new concurrency window. `None` before the first request
    /// or event count.
    pub fn stats(&self) -> Option<FunctionStats> {
        let now = Instant::now();
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (triggers, backlog) = {
            let triggers = self.triggers();
            // Messages waiting in a queue trigger's stream wake the function as events do.
            let backlog: u64 = triggers.values().map(|(_, demand)| demand).sum();
            let stats: Vec<TriggerStats> = triggers.values().map(|(t, _)| t.clone()).collect();
            (stats, backlog)
        };
        let mut inner = self.lock();
        if inner.requests == 0 && queue.is_none() && triggers.is_empty() {
            return None;
        }
        let (queued_events, oldest_queued_event) = match queue {
            Some((queued, oldest)) => (Some(queued + backlog), oldest),
            None if backlog > 0 => (Some(backlog), None),
            None => (None, None),
        };
        Some(FunctionStats {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            concurrency: inner.meter.take_average(now),
            in_flight: inner.balancer.in_flight(),
            held: u32::try_from(inner.queue.len()).unwrap_or(u32::MAX),
            requests: inner.requests,
            last_request: inner
                .last_request
                .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok())
                .map(Time),
            queued_events,
            oldest_queued_event,
            triggers,
            usage: self.usage.report(),
        })
    }

    /// Hands free places to held requests, oldest first.
    fn dispatch(&self, inner: &mut Inner) {
        while !inner.queue.is_empty() {
            let Some(slot) = inner.balancer.pick() else {
                break;
            };
            if let Err(slot) = inner.queue.release_one(slot) {
                inner.balancer.release(slot.pod);
                break;
            }
        }
        self.publish(inner);
    }

    fn publish(&self, inner: &Inner) {
        self.metrics
            .in_flight
            .set(i64::from(inner.balancer.in_flight()));
        self.metrics
            .held
            .set(i64::try_from(inner.queue.len()).unwrap_or(i64::MAX));
    }

    fn finish(&self, slot: &Slot) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.balancer.release(slot.pod);
        inner.meter.decrement(now);
        self.dispatch(&mut inner);
    }

    fn abandon(&self, id: WaiterId, receiver: &mut oneshot::Receiver<Slot>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.queue.remove(id);
        // A place may have been handed over after the waiter stopped listening.
        receiver.close();
        if let Ok(slot) = receiver.try_recv() {
            inner.balancer.release(slot.pod);
        }
        inner.meter.decrement(now);
        self.dispatch(&mut inner);
    }
}

/// Between two scale-from-zero pokes of one function that found replicas or set them.
const POKE_INTERVAL: Duration = Duration::from_secs(1);

/// What this activator metered for one function since it began counting it: plain sums, so
/// that a request adds to them without a lock.
struct UsageCounter {
    /// Drawn when counting began; the autoscaler keeps a cursor per id.
    id: String,
    invocations: AtomicU64,
    mb_ms: AtomicU64,
    inits: AtomicU64,
    init_mb_ms: AtomicU64,
}

impl Default for UsageCounter {
    fn default() -> Self {
        Self {
            id: crate::api::lambda::request_id(),
            invocations: AtomicU64::new(0),
            mb_ms: AtomicU64::new(0),
            inits: AtomicU64::new(0),
            init_mb_ms: AtomicU64::new(0),
        }
    }
}

impl UsageCounter {
    fn record(&self, memory_mb: u64, billed_ms: u64, init_ms: Option<u64>) {
        self.mb_ms
            .fetch_add(billed_ms.saturating_mul(memory_mb), Ordering::Relaxed);
        if let Some(init) = init_ms {
            self.init_mb_ms
                .fetch_add(init.saturating_mul(memory_mb), Ordering::Relaxed);
            self.inits.fetch_add(1, Ordering::Relaxed);
        }
        // Last, so that a report never shows an invocation without its time.
        self.invocations.fetch_add(1, Ordering::Release);
    }

    fn report(&self) -> Option<UsageReport> {
        let invocations = self.invocations.load(Ordering::Acquire);
        (invocations > 0).then(|| UsageReport {
            counter: self.id.clone(),
            counted: ActivatorCounters {
                invocations,
                mb_ms: self.mb_ms.load(Ordering::Relaxed),
                inits: self.inits.load(Ordering::Relaxed),
                init_mb_ms: self.init_mb_ms.load(Ordering::Relaxed),
            },
        })
    }
}

/// The metering of one forwarded request: from when it was sent to a pod until its lease
/// ends (the response's end), unless the pod's sidecar said what the runtime ran.
struct Meter {
    sent: Instant,
    memory_mb: u64,
    /// The sidecar's billed duration and init duration, in milliseconds.
    ran: Option<(u64, Option<u64>)>,
}

/// A place on one pod for one request; freed when dropped.
pub struct Lease {
    function: Arc<FunctionState>,
    slot: Slot,
    meter: Option<Meter>,
}

impl Lease {
    pub fn function(&self) -> &Arc<FunctionState> {
        &self.function
    }

    pub fn addr(&self) -> SocketAddr {
        self.slot.addr
    }

    pub fn authority(&self) -> &Authority {
        &self.slot.authority
    }

    /// The request is being sent to the pod now: it is metered (at `memory_mb`) when the lease
    /// ends, unless [`Lease::not_run`] says otherwise.
    pub fn meter_from_now(&mut self, memory_mb: u64) {
        self.meter = Some(Meter {
            sent: Instant::now(),
            memory_mb,
            ran: None,
        });
    }

    /// The sidecar's figures for what the runtime ran: they are metered instead of the time
    /// the activator saw. They come in the pod's answer, so the billed duration is never taken
    /// above the time since the request was sent (a runtime that is only ever asked to run a
    /// request inside that time cannot have run longer). The init duration is not capped: a
    /// cold start's init ran before the request was sent.
    pub fn ran(&mut self, billed_ms: u64, init_ms: Option<u64>) {
        if let Some(meter) = &mut self.meter {
            let seen = crate::api::lambda::billed_ms(meter.sent.elapsed().as_secs_f64() * 1000.0);
            meter.ran = Some((billed_ms.min(seen), init_ms));
        }
    }

    /// The request never ran (the pod could not be reached, or its sidecar refused it).
    pub fn not_run(&mut self) {
        self.meter = None;
    }

    /// Moves to a free place on another usable pod, for a retry; false when there is none.
    pub fn switch_pod(&mut self) -> bool {
        let mut inner = self.function.lock();
        let Some(other) = inner.balancer.pick_other(self.slot.pod) else {
            return false;
        };
        inner.balancer.release(self.slot.pod);
        self.slot = other;
        self.function.dispatch(&mut inner);
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(meter) = self.meter.take() {
            let (billed, init) = meter
                .ran
                .unwrap_or_else(|| (billed_ms(meter.sent.elapsed().as_secs_f64() * 1000.0), None));
            self.function.usage.record(meter.memory_mb, billed, init);
        }
        self.function.finish(&self.slot);
    }
}

/// A request in the hold queue.
pub struct HeldRequest {
    function: Arc<FunctionState>,
    id: WaiterId,
    /// `None` once the request got its place.
    receiver: Option<oneshot::Receiver<Slot>>,
    poke: bool,
    /// The function had no usable pod when the request arrived: a cold start.
    cold: bool,
}

impl HeldRequest {
    /// Whether this request is the one that should ask for the function to scale from zero
    /// (no usable pod, no poke running or recent).
    pub fn should_poke(&self) -> bool {
        self.poke
    }

    /// Whether the function had no usable pod when the request arrived (at zero, or all its
    /// pods starting or broken), so that its wait is a cold start.
    pub fn is_cold(&self) -> bool {
        self.cold
    }

    /// Waits for a place on a pod until `deadline`; `None` when the deadline passed.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Option<Lease> {
        let receiver = self.receiver.as_mut()?;
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(slot)) => {
                self.receiver = None;
                Some(Lease {
                    function: self.function.clone(),
                    slot,
                    meter: None,
                })
            }
            // The queue never drops a waiter it has not served; treat it as a timeout.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

impl Drop for HeldRequest {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            self.function.abandon(self.id, &mut receiver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activator::metrics::ActivatorMetrics;

    fn function(per_instance: u32, queue_depth: usize) -> Arc<FunctionState> {
        function_within(per_instance, queue_depth, HoldLimit::new(usize::MAX))
    }

    fn function_within(
        per_instance: u32,
        queue_depth: usize,
        hold_limit: Arc<HoldLimit>,
    ) -> Arc<FunctionState> {
        let metrics = ActivatorMetrics::default().for_function("media", "thumbnail");
        let config = FunctionConfig {
            per_instance,
            ..FunctionConfig::default()
        };
        FunctionState::new(
            "media",
            "thumbnail",
            config,
            queue_depth,
            hold_limit,
            metrics,
        )
    }

    fn pod(last_octet: u8, ready: bool) -> ObservedEndpoint {
        ObservedEndpoint {
            ip: IpAddr::from([10, 0, 0, last_octet]),
            port: Some(8080),
            ready,
            terminating: false,
        }
    }

    fn held(admission: Admission) -> HeldRequest {
        match admission {
            Admission::Hold(held) => held,
            _ => panic!("expected the request to be held"),
        }
    }

    fn proxied(admission: Admission) -> Lease {
        match admission {
            Admission::Proxy(lease) => lease,
            _ => panic!("expected the request to be proxied"),
        }
    }

    fn later(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn request_to_a_function_with_ready_pod_is_proxied_at_once() {
        let function = function(0, 10);
        function.set_endpoints(&[pod(1, true)]);
        let (timeout, admission) = function.admit();
        assert_eq!(timeout, Duration::from_secs(60));
        let lease = proxied(admission);
        assert_eq!(lease.addr(), SocketAddr::from(([10, 0, 0, 1], 8080)));
    }

    #[test]
    fn a_billed_duration_is_never_metered_above_the_time_the_activator_saw() {
        let function = function(0, 10);
        function.set_endpoints(&[pod(1, true)]);
        let mut lease = proxied(function.admit().1);
        lease.meter_from_now(128);
        std::thread::sleep(Duration::from_millis(5));
        // An hour, claimed by an answer that came within milliseconds.
        lease.ran(3_600_000, Some(900));
        drop(lease);
        let first = function.usage.report().expect("a report").counted;
        assert_eq!(first.invocations, 1);
        assert!(
            (5 * 128..=1_000 * 128).contains(&first.mb_ms),
            "{}",
            first.mb_ms
        );
        assert_eq!(first.init_mb_ms, 900 * 128);

        // A figure below the time seen stands: the runtime ran for part of it.
        let mut lease = proxied(function.admit().1);
        lease.meter_from_now(128);
        std::thread::sleep(Duration::from_millis(20));
        lease.ran(3, None);
        drop(lease);
        let both = function.usage.report().expect("a report").counted;
        assert_eq!(both.mb_ms - first.mb_ms, 3 * 128);
    }

    #[test]
    fn slice_without_port_uses_the_function_port() {
        let function = function(0, 10);
        function.set_endpoints(&[ObservedEndpoint {
            port: None,
            ..pod(1, true)
        }]);
        let lease = proxied(function.admit().1);
        assert_eq!(lease.addr().port(), 8080);
    }

    #[test]
    fn hold_queue_full_rejects_the_request() {
        let function = function(0, 2);
        let _first = held(function.admit().1);
        let _second = held(function.admit().1);
        assert!(matches!(function.admit().1, Admission::QueueFull(2)));
        let stats = function.stats().expect("requests arrived");
        assert_eq!(stats.held, 2);
        assert_eq!(stats.requests, 3);
    }

    #[test]
    fn activator_hold_limit_rejects_the_request_and_frees_with_the_held_ones() {
        let limit = HoldLimit::new(2);
        let function = function_within(0, 10, limit.clone());
        let first = held(function.admit().1);
        let _second = held(function.admit().1);
        assert!(matches!(function.admit().1, Admission::ActivatorFull(2)));
        assert_eq!(function.stats().map(|s| s.held), Some(2));
        drop(first);
        assert_eq!(limit.held(), 1);
        let _third = held(function.admit().1);
    }

    #[test]
    fn only_the_first_held_request_pokes() {
        let function = function(0, 10);
        let first = held(function.admit().1);
        let second = held(function.admit().1);
        assert!(first.should_poke());
        assert!(!second.should_poke());
        function.poke_finished(true);
        assert!(
            !held(function.admit().1).should_poke(),
            "a poke that found replicas is not repeated at once"
        );
        function.poke_finished(false);
        assert!(
            held(function.admit().1).should_poke(),
            "a failed poke is retried"
        );
    }

    #[test]
    fn busy_pods_do_not_poke() {
        let function = function(1, 10);
        function.set_endpoints(&[pod(1, true)]);
        let _busy = proxied(function.admit().1);
        assert!(!held(function.admit().1).should_poke());
    }

    #[tokio::test]
    async fn held_request_times_out_when_no_pod_becomes_ready() {
        let function = function(0, 10);
        let request = held(function.admit().1);
        assert!(request.wait_until(later(20)).await.is_none());
        let stats = function.stats().expect("a request arrived");
        assert_eq!(stats.held, 0, "the timed-out request left the queue");
        assert!(!function.is_holding());
    }

    #[tokio::test]
    async fn held_requests_are_released_when_a_pod_becomes_ready() {
        let function = function(0, 10);
        let first = held(function.admit().1);
        let second = held(function.admit().1);
        let waiting = tokio::spawn(async move {
            let a = first.wait_until(later(5_000)).await;
            let b = second.wait_until(later(5_000)).await;
            (a.map(|l| l.addr()), b.map(|l| l.addr()))
        });
        tokio::task::yield_now().await;
        function.set_endpoints(&[pod(1, true)]);
        let (a, b) = waiting.await.expect("waiters finish");
        assert_eq!(a, Some(pod_addr(1)));
        assert_eq!(b, Some(pod_addr(1)));
        assert!(!function.is_holding());
    }

    #[tokio::test]
    async fn probed_pod_releases_held_requests_before_it_is_ready() {
        let function = function(0, 10);
        let request = held(function.admit().1);
        let to_probe = function.set_endpoints(&[pod(1, false)]);
        assert_eq!(to_probe, vec![pod_addr(1)]);
        assert!(function.is_holding());
        assert!(function.mark_alive(pod_addr(1)));
        let lease = request.wait_until(later(5_000)).await;
        assert_eq!(lease.map(|l| l.addr()), Some(pod_addr(1)));
    }

    #[tokio::test]
    async fn finished_request_hands_its_place_to_the_oldest_held_one() {
        let function = function(1, 10);
        function.set_endpoints(&[pod(1, true)]);
        let running = proxied(function.admit().1);
        let first = held(function.admit().1);
        let second = held(function.admit().1);
        drop(running);
        let lease = first
            .wait_until(later(5_000))
            .await
            .expect("first gets the place");
        assert!(
            function.is_holding(),
            "second still waits: perInstance is 1"
        );
        drop(lease);
        assert!(second.wait_until(later(5_000)).await.is_some());
        let stats = function.stats().expect("requests arrived");
        assert_eq!((stats.in_flight, stats.held), (0, 0));
    }

    #[tokio::test]
    async fn place_handed_to_a_request_that_gave_up_is_not_lost() {
        let function = function(1, 10);
        function.set_endpoints(&[pod(1, true)]);
        let running = proxied(function.admit().1);
        let gave_up = held(function.admit().1);
        drop(running); // hands the place to `gave_up` …
        drop(gave_up); // … which never takes it.
        let next = function.admit().1;
        assert!(
            matches!(next, Admission::Proxy(_)),
            "the place is free again"
        );
    }

    #[test]
    fn concurrency_counts_held_and_proxied_requests() {
        let function = function(1, 10);
        function.set_endpoints(&[pod(1, true)]);
        let _running = proxied(function.admit().1);
        let _held = held(function.admit().1);
        let stats = function.stats().expect("requests arrived");
        assert_eq!((stats.in_flight, stats.held), (1, 1));
        // The window since creation is microseconds long; the exact average is the meter's test.
        assert!(
            stats.concurrency > 0.0 && stats.concurrency <= 2.0,
            "{}",
            stats.concurrency
        );
        assert!(stats.last_request.is_some());
    }

    #[test]
    fn idle_function_has_no_stats() {
        assert_eq!(function(0, 10).stats(), None);
    }

    #[test]
    fn retry_switches_to_another_pod_and_keeps_the_count() {
        let function = function(0, 10);
        function.set_endpoints(&[pod(1, true), pod(2, true)]);
        let mut lease = proxied(function.admit().1);
        let before = lease.addr();
        assert!(lease.switch_pod());
        assert_ne!(lease.addr(), before);
        assert_eq!(function.stats().map(|s| s.in_flight), Some(1));
        drop(lease);
        assert_eq!(function.stats().map(|s| s.in_flight), Some(0));
    }

    fn pod_addr(last_octet: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last_octet], 8080))
    }
}
