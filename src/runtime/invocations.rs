//! The invocations between the function port and the runtime clients: queued until a runtime
//! asks for work (`/next`), running until it answers or the deadline passes. The state of the
//! runtime lives here too: whether one has asked for work (`/ready`), its standing init error,
//! and whether one timed out and must be restarted (`/live`).

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::RuntimeMetrics;
use super::report;
pub use crate::api::lambda::request_id;
use crate::api::lambda::{InvocationReport, Outcome, billed_ms};

/// What every invocation of this function shares.
#[derive(Clone, Debug)]
pub struct Function {
    pub namespace: String,
    pub name: String,
    /// `arn:aws:lambda:<region>:<namespace>:function:<name>`.
    pub arn: String,
    pub memory_mb: u32,
    pub timeout: Duration,
}

impl Function {
    pub fn new(
        region: &str,
        namespace: &str,
        name: &str,
        memory_mb: u32,
        timeout: Duration,
    ) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            arn: format!("arn:aws:lambda:{region}:{namespace}:function:{name}"),
            memory_mb,
            timeout,
        }
    }
}

/// An invocation as a runtime receives it from `/next`.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub request_id: String,
    pub event: Bytes,
    /// Milliseconds since the epoch (`Lambda-Runtime-Deadline-Ms`).
    pub deadline_ms: i64,
    pub trace_id: String,
}

/// How an invocation ended, for the function port.
#[derive(Clone, Debug, PartialEq)]
pub enum Finished {
    /// The handler's result.
    Response(Bytes),
    /// The handler's error, as the runtime posted it (or one fargo made for it).
    Error(Bytes),
    /// The runtime's init error: the handler never ran.
    InitError(Bytes),
    TimedOut,
}

/// Why an invocation is refused before it is queued.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The runtime failed to initialize, and no runtime asked for work since.
    InitError(Bytes),
    ShuttingDown,
}

/// An answer for an id that no running invocation has (unknown, answered, or timed out).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownRequestId;

/// How an invocation ended, with what a runtime's run of it measured (when one took it).
type Ending = (Finished, Option<Ran>);

/// What a runtime's run of an invocation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    /// Lambda's log lines of the invocation, from `START` to `REPORT`.
    pub log: String,
    /// Its duration rounded up to the millisecond.
    pub billed_ms: u64,
    /// The runtime's init duration, on its first invocation.
    pub init_ms: Option<f64>,
}

struct Queued {
    invocation: Invocation,
    answer: oneshot::Sender<Ending>,
}

struct Running {
    answer: oneshot::Sender<Ending>,
    started: Instant,
    init_duration: Option<Duration>,
}

struct State {
    queue: VecDeque<Queued>,
    running: HashMap<String, Running>,
    init_error: Option<Bytes>,
    /// A runtime asked for work since the sidecar started or the last runtime failed.
    runtime_waiting: bool,
    /// When the last invocation timed out; runtime connections accepted before it are the
    /// stuck runtime's, which kubelet restarts.
    timed_out_at: Option<Instant>,
    /// When the current runtime started (the sidecar's start, or its last failure), until its
    /// first `/next`.
    started_at: Option<Instant>,
    /// Init duration for the next invocation a runtime takes.
    init_duration: Option<Duration>,
    draining: bool,
}

/// Removes `request_id` from the queue; whether it was waiting there (not yet taken).
fn dequeue(state: &mut State, request_id: &str) -> bool {
    match state
        .queue
        .iter()
        .position(|queued| queued.invocation.request_id == request_id)
    {
        Some(position) => {
            state.queue.remove(position);
            true
        }
        None => false,
    }
}

/// The invocations of one function pod.
pub struct Invocations {
    function: Function,
    state: Mutex<State>,
    work: Notify,
    metrics: RuntimeMetrics,
}

impl Invocations {
    pub fn new(function: Function, metrics: RuntimeMetrics) -> Arc<Self> {
        Arc::new(Self {
            function,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: HashMap::new(),
                init_error: None,
                runtime_waiting: false,
                timed_out_at: None,
                started_at: Some(Instant::now()),
                init_duration: None,
                draining: false,
            }),
            work: Notify::new(),
            metrics,
        })
    }

    pub fn function(&self) -> &Function {
        &self.function
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an invocation for the next runtime that asks for work; its deadline is `timeout`
    /// after `arrival`.
    pub fn submit(
        self: &Arc<Self>,
        request_id: String,
        event: Bytes,
        arrival: Instant,
        arrival_epoch_ms: i64,
    ) -> Result<Ticket, Refusal> {
        let (answer, receiver) = oneshot::channel();
        let mut state = self.lock();
        if let Some(error) = state.init_error.clone() {
            drop(state);
            self.metrics.invocation(Outcome::InitError, None);
            return Err(Refusal::InitError(error));
        }
        if state.draining {
            return Err(Refusal::ShuttingDown);
        }
        let timeout_ms = i64::try_from(self.function.timeout.as_millis()).unwrap_or(i64::MAX);
        state.queue.push_back(Queued {
            invocation: Invocation {
                request_id: request_id.clone(),
                event,
                deadline_ms: arrival_epoch_ms.saturating_add(timeout_ms),
                trace_id: trace_id(arrival_epoch_ms, &request_id),
            },
            answer,
        });
        drop(state);
        self.work.notify_waiters();
        Ok(Ticket {
            invocations: self.clone(),
            request_id,
            deadline: arrival + self.function.timeout,
            receiver: Some(receiver),
        })
    }

    /// `/next`: waits for an invocation and hands it to the runtime on a connection accepted at
    /// `connection_accepted`; `None` once `stop` is cancelled. A connection older than the last
    /// timeout belongs to the runtime that timed out: it gets no more work.
    pub async fn next(
        &self,
        connection_accepted: Instant,
        stop: &CancellationToken,
    ) -> Option<Invocation> {
        let arrived = Instant::now();
        {
            let mut state = self.lock();
            if !stale(&state, connection_accepted) {
                state.timed_out_at = None;
                state.init_error = None;
                state.runtime_waiting = true;
                if let Some(started) = state.started_at.take() {
                    state.init_duration = Some(arrived - started);
                }
            }
        }
        loop {
            let mut notified = pin!(self.work.notified());
            notified.as_mut().enable();
            let taken = {
                let mut state = self.lock();
                if stale(&state, connection_accepted) {
                    None
                } else {
                    self.take(&mut state)
                }
            };
            if let Some(invocation) = taken {
                report::print(&report::start_line(&invocation.request_id));
                return Some(invocation);
            }
            tokio::select! {
                () = notified => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    fn take(&self, state: &mut State) -> Option<Invocation> {
        while let Some(queued) = state.queue.pop_front() {
            if queued.answer.is_closed() {
                self.metrics.invocation(Outcome::Cancelled, None);
                continue;
            }
            let init_duration = state.init_duration.take();
            state.running.insert(
                queued.invocation.request_id.clone(),
                Running {
                    answer: queued.answer,
                    started: Instant::now(),
                    init_duration,
                },
            );
            return Some(queued.invocation);
        }
        None
    }

    /// The runtime's answer (`/response` or `/error`) for a running invocation.
    pub fn finish(&self, request_id: &str, finished: Finished) -> Result<(), UnknownRequestId> {
        let running = self
            .lock()
            .running
            .remove(request_id)
            .ok_or(UnknownRequestId)?;
        let outcome = match finished {
            Finished::Response(_) => Outcome::Success,
            _ => Outcome::Error,
        };
        let ran = self.report(request_id, outcome, &running, None);
        let _ = running.answer.send((finished, Some(ran)));
        Ok(())
    }

    /// The deadline of `request_id` passed: a queued invocation is dropped, a running one ends
    /// as timed out and its runtime is reported not live until a new one connects.
    pub fn time_out(&self, request_id: &str) {
        let mut state = self.lock();
        if dequeue(&mut state, request_id) {
            drop(state);
            self.metrics.invocation(Outcome::Timeout, None);
            return;
        }
        let Some(running) = state.running.remove(request_id) else {
            return;
        };
        let now = Instant::now();
        state.timed_out_at = Some(now);
        state.runtime_waiting = false;
        state.started_at = Some(now);
        state.init_duration = None;
        drop(state);
        let timeout_line = report::timeout_line(request_id, self.function.timeout);
        report::print(&timeout_line);
        let mut ran = self.report(request_id, Outcome::Timeout, &running, Some(now));
        ran.log = ran.log.replacen('\n', &format!("\n{timeout_line}\n"), 1);
        let _ = running.answer.send((Finished::TimedOut, Some(ran)));
    }

    /// The caller left: a queued invocation is dropped; a running one keeps its deadline, so a
    /// stuck runtime is still found out.
    fn abandon(self: &Arc<Self>, request_id: String, deadline: Instant) {
        let mut state = self.lock();
        if dequeue(&mut state, &request_id) {
            drop(state);
            self.metrics.invocation(Outcome::Cancelled, None);
            return;
        }
        if state.running.contains_key(&request_id) {
            drop(state);
            let invocations = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                invocations.time_out(&request_id);
            });
        }
    }

    /// `/init/error`: the runtime could not load the handler. Waiting invocations fail with the
    /// error at once, and so do new ones until a runtime asks for work again.
    pub fn init_error(&self, body: Bytes) {
        self.metrics.init_error();
        let mut state = self.lock();
        state.init_error = Some(body.clone());
        state.runtime_waiting = false;
        state.started_at = Some(Instant::now());
        state.init_duration = None;
        let queued: Vec<Queued> = state.queue.drain(..).collect();
        drop(state);
        for waiting in queued {
            self.metrics.invocation(Outcome::InitError, None);
            let _ = waiting
                .answer
                .send((Finished::InitError(body.clone()), None));
        }
    }

    /// Counts and logs an invocation's end; returns its lines, from `START` to `REPORT`, and
    /// its billed and init durations.
    fn report(
        &self,
        request_id: &str,
        outcome: Outcome,
        running: &Running,
        end: Option<Instant>,
    ) -> Ran {
        let duration = end.unwrap_or_else(Instant::now) - running.started;
        self.metrics.invocation(outcome, Some(duration));
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let report = InvocationReport {
            namespace: self.function.namespace.clone(),
            function: self.function.name.clone(),
            request_id: request_id.to_string(),
            outcome,
            duration_ms,
            billed_duration_ms: billed_ms(duration_ms),
            memory_size_mb: self.function.memory_mb,
            max_memory_used_mb: report::max_memory_used_mb(),
            init_duration_ms: running
                .init_duration
                .map(|init| init.as_secs_f64() * 1000.0),
        };
        let end_lines = report::end_lines(&report);
        report::print(&end_lines);
        Ran {
            log: format!("{}\n{end_lines}\n", report::start_line(request_id)),
            billed_ms: report.billed_duration_ms,
            init_ms: report.init_duration_ms,
        }
    }

    /// `/ready`: why the pod should not get requests, if it should not.
    pub fn readiness(&self) -> Result<(), String> {
        let state = self.lock();
        if state.draining {
            return Err("the pod is shutting down".into());
        }
        if let Some(error) = &state.init_error {
            return Err(format!(
                "the runtime failed to initialize: {}",
                String::from_utf8_lossy(error)
            ));
        }
        if state.timed_out_at.is_some() {
            return Err("an invocation timed out; waiting for the runtime to restart".into());
        }
        if !state.runtime_waiting {
            return Err("no runtime client has asked for work yet".into());
        }
        Ok(())
    }

    /// `/live`: whether an invocation timed out and no new runtime has connected since.
    pub fn liveness(&self) -> Result<(), String> {
        match self.lock().timed_out_at {
            Some(_) => Err(format!(
                "an invocation timed out after {:.2} seconds; the runtime must be restarted",
                self.function.timeout.as_secs_f64()
            )),
            None => Ok(()),
        }
    }

    /// Takes no new invocation (SIGTERM).
    pub fn drain(&self) {
        self.lock().draining = true;
    }

    /// Nothing is queued or running.
    pub fn idle(&self) -> bool {
        let state = self.lock();
        state.queue.iter().all(|queued| queued.answer.is_closed()) && state.running.is_empty()
    }
}

fn stale(state: &State, connection_accepted: Instant) -> bool {
    state
        .timed_out_at
        .is_some_and(|timed_out| connection_accepted <= timed_out)
}

/// An X-Ray-shaped trace id (`Root=1-<epoch seconds hex>-<24 hex>;Sampled=0`) for
/// `Lambda-Runtime-Trace-Id`; the runtime clients expect one.
fn trace_id(epoch_ms: i64, request_id: &str) -> String {
    let hex: String = request_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(24)
        .collect();
    format!("Root=1-{:08x}-{hex:0<24};Sampled=0", epoch_ms / 1000)
}

/// The function port's hold on one invocation: wait for its end with [`Ticket::finished`];
/// dropped before that, it cancels the invocation if no runtime took it yet.
pub struct Ticket {
    invocations: Arc<Invocations>,
    request_id: String,
    deadline: Instant,
    receiver: Option<oneshot::Receiver<Ending>>,
}

impl Ticket {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The invocation's end: the runtime's answer, or [`Finished::TimedOut`] at the deadline.
    pub async fn finished(self) -> Finished {
        self.finished_with_log().await.0
    }

    /// [`Ticket::finished`], with what the run measured (Lambda's log lines of the invocation,
    /// `START` to `REPORT`, and its billed duration) when a runtime took it.
    pub async fn finished_with_log(mut self) -> Ending {
        let Some(mut receiver) = self.receiver.take() else {
            return (Finished::TimedOut, None);
        };
        match tokio::time::timeout_at(self.deadline, &mut receiver).await {
            Ok(Ok(ending)) => ending,
            // The sender is gone only when the invocation was dropped for the deadline.
            Ok(Err(_)) => (Finished::TimedOut, None),
            Err(_) => {
                // Timing a running invocation out sends its end, lines and all, at once.
                self.invocations.time_out(&self.request_id);
                receiver.try_recv().unwrap_or((Finished::TimedOut, None))
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            self.invocations
                .abandon(std::mem::take(&mut self.request_id), self.deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocations(timeout_ms: u64) -> Arc<Invocations> {
        Invocations::new(
            Function::new(
                "local",
                "media",
                "thumbnail",
                128,
                Duration::from_millis(timeout_ms),
            ),
            RuntimeMetrics::default(),
        )
    }

    fn submit(invocations: &Arc<Invocations>, id: &str) -> Ticket {
        invocations
            .submit(
                id.into(),
                Bytes::from_static(b"{}"),
                Instant::now(),
                1_000_000,
            )
            .expect("accepted")
    }

    #[test]
    fn the_function_arn_has_the_namespace_in_the_account_slot() {
        assert_eq!(
            invocations(1000).function().arn,
            "arn:aws:lambda:local:media:function:thumbnail"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_takes_the_invocation_with_its_deadline_and_answers_it() {
        let invocations = invocations(3000);
        let stop = CancellationToken::new();
        let ticket = submit(&invocations, "one");
        let taken = invocations.next(Instant::now(), &stop).await.expect("work");
        assert_eq!(taken.request_id, "one");
        assert_eq!(taken.deadline_ms, 1_003_000);
        assert!(taken.trace_id.starts_with("Root=1-000003e8-"));
        assert_eq!(invocations.readiness(), Ok(()));
        invocations
            .finish("one", Finished::Response(Bytes::from_static(b"42")))
            .expect("a running id");
        assert_eq!(
            ticket.finished().await,
            Finished::Response(Bytes::from_static(b"42"))
        );
        assert_eq!(
            invocations.finish("one", Finished::Response(Bytes::new())),
            Err(UnknownRequestId),
            "a second answer is refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_makes_the_runtime_not_live_until_a_new_connection_asks_for_work() {
        let invocations = invocations(1000);
        let stop = CancellationToken::new();
        let old_connection = Instant::now();
        let ticket = submit(&invocations, "slow");
        invocations.next(old_connection, &stop).await.expect("work");
        assert_eq!(ticket.finished().await, Finished::TimedOut);
        assert!(invocations.liveness().is_err());
        assert!(invocations.readiness().is_err());
        assert_eq!(
            invocations.finish("slow", Finished::Response(Bytes::new())),
            Err(UnknownRequestId),
            "a late answer is refused"
        );

        // The stuck runtime's connection gets no more work.
        let _waiting = submit(&invocations, "next");
        let stale = tokio::time::timeout(
            Duration::from_millis(100),
            invocations.next(old_connection, &stop),
        )
        .await;
        assert!(stale.is_err(), "an old connection was handed work");
        assert!(invocations.liveness().is_err());

        tokio::time::advance(Duration::from_millis(1)).await;
        let taken = invocations.next(Instant::now(), &stop).await.expect("work");
        assert_eq!(taken.request_id, "next");
        assert_eq!(invocations.liveness(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_init_error_fails_waiting_and_new_invocations_until_a_runtime_asks_again() {
        let invocations = invocations(60_000);
        let stop = CancellationToken::new();
        let waiting = submit(&invocations, "waiting");
        let error = Bytes::from_static(
            br#"{"errorMessage":"bad handler","errorType":"Runtime.HandlerNotFound"}"#,
        );
        invocations.init_error(error.clone());
        assert_eq!(waiting.finished().await, Finished::InitError(error.clone()));
        assert!(matches!(
            invocations.submit("new".into(), Bytes::new(), Instant::now(), 0),
            Err(Refusal::InitError(body)) if body == error
        ));
        assert!(
            invocations
                .readiness()
                .expect_err("not ready")
                .contains("bad handler")
        );

        let restarted = {
            let invocations = invocations.clone();
            let stop = stop.clone();
            tokio::spawn(async move { invocations.next(Instant::now(), &stop).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(invocations.readiness(), Ok(()));
        let ticket = submit(&invocations, "after");
        assert_eq!(
            restarted.await.expect("joined").expect("work").request_id,
            "after"
        );
        drop(ticket);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_cancels_its_queued_invocation() {
        let invocations = invocations(60_000);
        let stop = CancellationToken::new();
        drop(submit(&invocations, "gone"));
        let _kept = submit(&invocations, "kept");
        let taken = invocations.next(Instant::now(), &stop).await.expect("work");
        assert_eq!(taken.request_id, "kept");
    }

    #[tokio::test(start_paused = true)]
    async fn invocations_wait_for_a_runtime_until_their_deadline() {
        let invocations = invocations(500);
        let ticket = submit(&invocations, "lonely");
        let started = Instant::now();
        assert_eq!(ticket.finished().await, Finished::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert!(invocations.idle());
        assert_eq!(
            invocations.liveness(),
            Ok(()),
            "no runtime took it: nothing to restart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_runtimes_are_released_at_stop_and_new_work_is_refused_while_draining() {
        let invocations = invocations(500);
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(invocations.next(Instant::now(), &stop).await.is_none());
        invocations.drain();
        assert!(matches!(
            invocations.submit("late".into(), Bytes::new(), Instant::now(), 0),
            Err(Refusal::ShuttingDown)
        ));
    }
}
