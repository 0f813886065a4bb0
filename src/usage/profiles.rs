//! The meter of Fargate pods: a watch of the pods admitted under a profile keeps when each
//! started and ended and its provisioned size, and every [`WRITE_INTERVAL`] each profile's
//! `status.usage` gets its pods' time since the last write, with Fargate's one-minute minimum.
//!
//! Each write counts on from what the meter wrote of each pod before, or, for a pod it has not
//! written (a meter that restarted), from the last write's `updated`: a write that fails leaves
//! the time for the next write to count, news of a pod that comes after the write it falls in
//! is still counted, and a pod counted in full adds nothing more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{WRITE_INTERVAL, apply_usage};
use crate::api::usage::{NamespaceUsage, ProfileUsage, UsageAmounts};
use crate::api::{CAPACITY_ANNOTATION, FargateProfile, PROFILE_LABEL};
use crate::telemetry::{error_chain, ticker};

/// Fargate bills every pod for at least this long.
pub const MINIMUM_BILLED: SignedDuration = SignedDuration::from_secs(60);
/// Profiles written at once.
const CONCURRENT_WRITES: usize = 8;
/// Attempts at writing one profile when another writer changed it in between.
const WRITE_ATTEMPTS: usize = 2;
/// The write at shutdown gives up after this, within the pod's grace period: what it leaves,
/// the next meter counts.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the capacity annotation of a pod cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CapacityError {
    #[error(
        "annotation {CAPACITY_ANNOTATION}={value:?} is not a Fargate size such as \
         \"0.25vCPU 0.5GB\" (vCPUs, one space, then GB); fargo's webhook writes it when it \
         sizes the pod, so create the pod anew under a profile that sizes pods"
    )]
    Format { value: String },

    #[error(
        "annotation {CAPACITY_ANNOTATION}={value:?}: {amount:?} is not a positive decimal \
         number; fargo's webhook writes it when it sizes the pod, so create the pod anew under \
         a profile that sizes pods"
    )]
    Amount { value: String, amount: String },
}

/// What a pod was provisioned with: vCPUs and GB (Fargate's GB, which are GiB).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Provisioned {
    pub vcpu: f64,
    pub gb: f64,
}

/// Reads the capacity annotation, as [`Capacity::annotation`](crate::profile::Capacity::annotation)
/// writes it (`"0.25vCPU 0.5GB"`). Only plain decimals are taken: the value comes from the
/// pod, so `inf`, `NaN`, exponents and signs are refused rather than billed.
pub fn parse_capacity(value: &str) -> Result<Provisioned, CapacityError> {
    let format = || CapacityError::Format {
        value: value.to_string(),
    };
    let (cpu, memory) = value.split_once(' ').ok_or_else(format)?;
    let cpu = cpu.strip_suffix("vCPU").ok_or_else(format)?;
    let memory = memory.strip_suffix("GB").ok_or_else(format)?;
    Ok(Provisioned {
        vcpu: positive_decimal(value, cpu)?,
        gb: positive_decimal(value, memory)?,
    })
}

fn positive_decimal(value: &str, amount: &str) -> Result<f64, CapacityError> {
    let plain = !amount.is_empty() && amount.chars().all(|c| c.is_ascii_digit() || c == '.');
    match amount.parse::<f64>() {
        Ok(number) if plain && number > 0.0 && number.is_finite() => Ok(number),
        _ => Err(CapacityError::Amount {
            value: value.to_string(),
            amount: amount.to_string(),
        }),
    }
}

/// What the meter keeps of one pod: where it is billed, when it ran and at what size.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSpan {
    /// The FargateProfile it was admitted under.
    pub profile: String,
    pub namespace: String,
    /// `status.startTime`: when the kubelet took the pod, before its images were pulled, which
    /// is when Fargate starts billing. `None` until then.
    pub start: Option<Timestamp>,
    /// When it ended; `None` while it runs.
    pub end: Option<Timestamp>,
    pub vcpu: f64,
    pub gb: f64,
    /// What this meter has written of the pod so far; `None` when it has not written it (it
    /// started since, or the meter restarted), and the last write's `updated` stands for it.
    pub written: Option<Written>,
}

/// What a meter has written of one pod: whether it counted its start, and its billed time.
///
/// News of a pod comes after the fact: a write up to `t` may see a pod running that, it
/// learns a moment later, ended (or started) at or before `t`. Counting on from what was
/// written, rather than from what the pod looks like as of `t`, adds what that write missed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Written {
    pub started: bool,
    pub time: SignedDuration,
}

impl PodSpan {
    /// What `accrued` of this pod amounts to, at its size.
    pub fn amounts(&self, accrued: Accrued) -> UsageAmounts {
        UsageAmounts {
            pods: accrued.pods,
            vcpu_seconds: accrued.seconds * self.vcpu,
            gb_seconds: accrued.seconds * self.gb,
            ..UsageAmounts::default()
        }
    }

    /// Whether nothing of the pod is left to count once its profile is counted up to
    /// `counted_to`: it ended by then, or ended without ever starting.
    fn counted_by(&self, counted_to: Timestamp) -> bool {
        match (self.start, self.end) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(start), Some(end)) => end.max(start) <= counted_to,
        }
    }
}

/// The span of a pod admitted under a profile; `None` for a pod without the profile label or
/// the capacity annotation (a profile that does not size its pods), or whose annotation does
/// not parse, which is logged: such a pod is not metered. `now` stands for the end of a pod
/// that ended without saying when.
pub fn span(pod: &Pod, now: Timestamp) -> Option<PodSpan> {
    let profile = pod.metadata.labels.as_ref()?.get(PROFILE_LABEL)?;
    let annotation = pod
        .metadata
        .annotations
        .as_ref()?
        .get(CAPACITY_ANNOTATION)?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let size = match parse_capacity(annotation) {
        Ok(size) => size,
        Err(error) => {
            warn!(
                pod = pod.metadata.name.as_deref().unwrap_or_default(),
                %namespace, %profile, %error,
                "pod left out of its profile's usage"
            );
            return None;
        }
    };
    Some(PodSpan {
        profile: profile.clone(),
        namespace,
        start: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0),
        end: ended_at(pod, now),
        vcpu: size.vcpu,
        gb: size.gb,
        written: None,
    })
}

/// When the pod ended, if it has: in phase `Succeeded` or `Failed`, or with all its containers
/// terminated for good, the last `finishedAt` of its containers (init containers ran before
/// them), else `now`. Containers that the kubelet will start again (`restartPolicy: Always`, or
/// `OnFailure` after a failure, on a pod not being deleted) leave the pod running: Fargate bills
/// a pod until it terminates, restarts included.
fn ended_at(pod: &Pod, now: Timestamp) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let stopped_for_good = !containers.is_empty()
        && containers.iter().all(|c| terminated(c).is_some())
        && will_not_restart(pod, containers);
    if !terminal && !stopped_for_good {
        return None;
    }
    let finished = containers
        .iter()
        .filter_map(|c| terminated(c)?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    Some(finished.unwrap_or(now))
}

fn terminated(container: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    container.state.as_ref()?.terminated.as_ref()
}

/// Whether the kubelet leaves the pod's terminated containers as they are.
fn will_not_restart(pod: &Pod, containers: &[ContainerStatus]) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return true;
    }
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => true,
        Some("OnFailure") => containers
            .iter()
            .all(|c| terminated(c).is_some_and(|t| t.exit_code == 0)),
        _ => false,
    }
}

/// What a pod adds over one interval: whether it started in it, and its billed seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accrued {
    pub pods: u64,
    pub seconds: f64,
}

impl Accrued {
    pub fn is_empty(&self) -> bool {
        self.pods == 0 && self.seconds == 0.0
    }
}

/// What `span` adds over the interval `(from, to]` between two writes.
///
/// It is `billed_by(to) − billed_by(from)`, the difference of one running total, so the
/// accruals of consecutive intervals add up to the pod's bill however the writes fall, each
/// second once: the one-minute minimum lands in the interval that holds the pod's end, and a
/// pod that ended by `from` adds nothing, its bill being complete in the write up to `from`.
/// A pod is counted as started in the interval that holds its start.
///
/// When the meter has written the pod before ([`PodSpan::written`]), it counts on from what it
/// wrote instead of from `from`.
pub fn accrue(span: &PodSpan, from: Timestamp, to: Timestamp) -> Accrued {
    let Some(start) = span.start else {
        return Accrued::default();
    };
    let before = span.written.unwrap_or_else(|| Written {
        started: start <= from,
        time: billed_by(span, from),
    });
    let seconds = billed_by(span, to) - before.time;
    Accrued {
        pods: u64::from(!before.started && start <= to),
        seconds: seconds.max(SignedDuration::ZERO).as_secs_f64(),
    }
}

/// The time `span` is billed for up to `at`: none before it starts, its time since its start
/// while it runs (or seems to: an end after `at`, from another clock, counts from when it is
/// reached), and from its end on, its whole time, at least [`MINIMUM_BILLED`].
fn billed_by(span: &PodSpan, at: Timestamp) -> SignedDuration {
    let Some(start) = span.start.filter(|start| *start <= at) else {
        return SignedDuration::ZERO;
    };
    // An end before the start (clocks again) is the start: the pod gets its minimum.
    match span.end.map(|end| end.max(start)) {
        Some(end) if end <= at => end.duration_since(start).max(MINIMUM_BILLED),
        _ => at.duration_since(start),
    }
}

/// `at` without its fraction of a second: `status.usage.updated` is a `Time`, which keeps
/// whole seconds, and the next interval starts from what was stored.
fn whole_second(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// What bringing a profile's usage up to date comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum UsageUpdate {
    /// Now is not after the last write (a writer whose clock is ahead wrote it): nothing yet.
    Behind,
    /// None of the pods used anything since the last write, at `counted_to`: nothing to write,
    /// and the pods ended by then are counted.
    NothingNew { counted_to: Timestamp },
    /// The usage to write, counted up to its `updated`.
    Write(ProfileUsage),
}

/// The usage of a profile created at `created` whose status holds `previous`, once its pods'
/// `spans` are counted up to `now` (to the second). The first write counts from the profile's
/// creation (its second included), which is when its metering began.
pub fn update_usage(
    previous: Option<&ProfileUsage>,
    created: Timestamp,
    spans: &[PodSpan],
    now: Timestamp,
) -> UsageUpdate {
    let to = whole_second(now);
    // The first interval opens a second before the creation: timestamps keep whole seconds,
    // and a pod may start in the very second its profile was created.
    let from = previous.map_or(created - SignedDuration::from_secs(1), |usage| {
        usage.updated.0
    });
    if to <= from {
        return UsageUpdate::Behind;
    }
    let mut by_namespace: BTreeMap<&str, UsageAmounts> = BTreeMap::new();
    for span in spans {
        let accrued = accrue(span, from, to);
        if !accrued.is_empty() {
            let amounts = span.amounts(accrued);
            by_namespace
                .entry(span.namespace.as_str())
                .or_default()
                .add(&amounts);
        }
    }
    if by_namespace.is_empty() {
        return UsageUpdate::NothingNew { counted_to: from };
    }
    let mut usage = previous.cloned().unwrap_or_else(|| ProfileUsage {
        since: Time(created),
        updated: Time(from),
        total: UsageAmounts::default(),
        namespaces: vec![],
    });
    for (namespace, amounts) in by_namespace {
        usage.total.add(&amounts);
        let index = match usage
            .namespaces
            .iter()
            .position(|n| n.namespace == namespace)
        {
            Some(index) => index,
            None => {
                usage.namespaces.push(NamespaceUsage {
                    namespace: namespace.to_string(),
                    history: Default::default(),
                });
                usage.namespaces.len() - 1
            }
        };
        usage.namespaces[index].history.add(to, &amounts);
    }
    for namespace in &mut usage.namespaces {
        namespace.history.prune(to);
    }
    usage
        .namespaces
        .sort_by(|a, b| a.namespace.cmp(&b.namespace));
    usage.updated = Time(to);
    UsageUpdate::Write(usage)
}

/// Where a profile's pods stand after an attempt to write its usage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Settled {
    /// Counted up to this instant: the pods ended by then are done with.
    CountedTo(Timestamp),
    /// The profile does not exist: its pods are not metered.
    ProfileGone,
    /// Nothing more is known to be counted (the write failed, or must wait).
    Pending,
}

/// The pods the meter follows, by uid, as [`PodSpan`]s only (there may be thousands), and the
/// uids of the pods counted in full, so that a later event of such a pod (a finalizer removed,
/// its deletion) cannot bring it back to be counted again.
#[derive(Debug, Default)]
pub struct TrackedPods {
    spans: HashMap<String, PodSpan>,
    counted: HashSet<String>,
    /// The uids a relist under way has listed.
    relisting: Option<HashSet<String>>,
    /// A list has completed and no relist is under way. Until then a pod may be missing from
    /// the spans, and a write would count its profile up to now without it.
    listed: bool,
}

impl TrackedPods {
    /// Whether the spans are complete enough to write from.
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Follows one event of the watch of profiled pods, seen at `now`.
    pub fn follow(&mut self, event: watcher::Event<DeserializeGuard<Pod>>, now: Timestamp) {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashSet::new());
                self.listed = false;
            }
            watcher::Event::InitApply(pod) => {
                if let Some((uid, span)) = read(&pod, now) {
                    if let Some(listed) = self.relisting.as_mut() {
                        listed.insert(uid.clone());
                    }
                    self.seen(uid, span);
                }
            }
            watcher::Event::InitDone => self.relisted(now),
            watcher::Event::Apply(pod) => {
                if let Some((uid, span)) = read(&pod, now) {
                    self.seen(uid, span);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((uid, span)) = read(&pod, now) {
                    self.gone(uid, span, now);
                }
            }
        }
    }

    /// A pod as it is now. A pod whose span cannot be read keeps the one it had. Of two ends,
    /// the earlier holds: a pod that ended without saying when is given `now` at each event.
    fn seen(&mut self, uid: String, span: Option<PodSpan>) {
        let Some(mut span) = span else {
            return;
        };
        if self.counted.contains(&uid) {
            return;
        }
        if let Some(old) = self.spans.get(&uid) {
            if let (Some(before), Some(now)) = (old.end, span.end) {
                span.end = Some(before.min(now));
            }
            span.written = old.written;
        }
        self.spans.insert(uid, span);
    }

    /// A pod deleted, as it last was: it ended when it said, or else now.
    fn gone(&mut self, uid: String, last: Option<PodSpan>, now: Timestamp) {
        if self.counted.remove(&uid) {
            return;
        }
        self.seen(uid.clone(), last);
        if let Some(span) = self.spans.get_mut(&uid) {
            span.end.get_or_insert(now);
        }
    }

    /// A list is complete: the pods it did not list were deleted while the watch was down, and
    /// end now.
    fn relisted(&mut self, now: Timestamp) {
        if let Some(listed) = self.relisting.take() {
            for (uid, span) in &mut self.spans {
                if !listed.contains(uid) {
                    span.end.get_or_insert(now);
                }
            }
            self.counted.retain(|uid| listed.contains(uid));
        }
        self.listed = true;
    }

    /// The spans of each profile.
    pub fn by_profile(&self) -> BTreeMap<String, Vec<PodSpan>> {
        let mut profiles: BTreeMap<String, Vec<PodSpan>> = BTreeMap::new();
        for span in self.spans.values() {
            profiles
                .entry(span.profile.clone())
                .or_default()
                .push(span.clone());
        }
        profiles
    }

    /// Records what `settled` counted of the pods of `profile` (the spans are those the write
    /// used: no event is followed while writing), and forgets those counted in full.
    pub fn settle(&mut self, profile: &str, settled: Settled) {
        let done = |span: &PodSpan| match settled {
            Settled::CountedTo(counted_to) => span.counted_by(counted_to),
            Settled::ProfileGone => true,
            Settled::Pending => false,
        };
        let counted = &mut self.counted;
        self.spans.retain(|uid, span| {
            if span.profile != profile {
                return true;
            }
            let forget = done(span);
            if forget {
                counted.insert(uid.clone());
            } else if let (Settled::CountedTo(to), Some(start)) = (settled, span.start) {
                let before = span.written.map_or(SignedDuration::ZERO, |w| w.time);
                span.written = Some(Written {
                    started: start <= to,
                    time: billed_by(span, to).max(before),
                });
            }
            !forget
        });
    }
}

/// The uid and span of a pod of the watch; a pod that does not parse is logged and has none.
fn read(pod: &DeserializeGuard<Pod>, now: Timestamp) -> Option<(String, Option<PodSpan>)> {
    match &pod.0 {
        Ok(pod) => Some((pod.metadata.uid.clone()?, span(pod, now))),
        Err(invalid) => {
            warn!(
                pod = invalid.metadata.name.as_deref().unwrap_or_default(),
                namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "pod does not parse; its usage is counted from what was last read of it"
            );
            Some((invalid.metadata.uid.clone()?, None))
        }
    }
}

/// Meters the pods admitted under a profile until `shutdown`, then writes once more.
///
/// Every [`WRITE_INTERVAL`] each profile with pods is brought up to date: its pods' time since
/// the `updated` of its `status.usage` (or, the first time, since the profile's creation) up to
/// now, each pod at its provisioned size. A profile that no longer exists takes nothing: the
/// pods it left running (`deletionPolicy: Orphan`) are not metered. Writes wait for the watch's
/// list to complete, so that no pod is missing from a profile counted up to now.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let mut events =
        crate::guarded::watcher::<Pod>(client, watcher::Config::default().labels(PROFILE_LABEL))
            .default_backoff()
            .boxed();
    let mut tracked = TrackedPods::default();
    let mut writes = ticker(WRITE_INTERVAL);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = writes.tick() => write_all(&profiles, &mut tracked).await,
            event = events.next() => match event {
                Some(Ok(event)) => tracked.follow(event, Timestamp::now()),
                Some(Err(error)) => warn!(error = %error_chain(&error), "watching profiled pods"),
                None => break,
            },
        }
    }
    if tokio::time::timeout(LAST_WRITE_TIMEOUT, write_all(&profiles, &mut tracked))
        .await
        .is_err()
    {
        warn!("the last write of profile usage timed out; the next meter counts the time since");
    }
}

/// Writes the usage of every profile with tracked pods, a few at once, and forgets the pods
/// counted in full.
async fn write_all(api: &Api<FargateProfile>, tracked: &mut TrackedPods) {
    if !tracked.is_listed() {
        debug!("profiled pods not listed yet; profile usage not written");
        return;
    }
    let settled: Vec<(String, Settled)> = futures::stream::iter(tracked.by_profile())
        .map(|(name, spans)| async move {
            let settled = write_profile(api, &name, &spans).await;
            (name, settled)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    for (name, settled) in settled {
        tracked.settle(&name, settled);
    }
}

/// Brings the usage of profile `name` up to date with its pods' `spans`, from the profile as
/// read just before, so that a write made since by someone else is built on, not repeated.
#[tracing::instrument(skip_all, fields(profile = name))]
async fn write_profile(api: &Api<FargateProfile>, name: &str, spans: &[PodSpan]) -> Settled {
    for attempt in 1..=WRITE_ATTEMPTS {
        let profile = match api.get_opt(name).await {
            Ok(Some(profile)) => profile,
            Ok(None) => {
                debug!(
                    pods = spans.len(),
                    "FargateProfile gone: its pods are not metered"
                );
                return Settled::ProfileGone;
            }
            Err(error) => {
                warn!(error = %error_chain(&error), "reading the FargateProfile to write its usage");
                return Settled::Pending;
            }
        };
        let meta = &profile.metadata;
        let (Some(created), Some(version)) = (&meta.creation_timestamp, &meta.resource_version)
        else {
            warn!("the FargateProfile has no creationTimestamp or resourceVersion");
            return Settled::Pending;
        };
        let previous = profile.status.as_ref().and_then(|s| s.usage.as_ref());
        let usage = match update_usage(previous, created.0, spans, Timestamp::now()) {
            UsageUpdate::Behind => return Settled::Pending,
            UsageUpdate::NothingNew { counted_to } => return Settled::CountedTo(counted_to),
            UsageUpdate::Write(usage) => usage,
        };
        match apply_usage(api, name, version, &usage).await {
            Ok(_) => return Settled::CountedTo(usage.updated.0),
            Err(kube::Error::Api(status)) if status.code == 404 => return Settled::ProfileGone,
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < WRITE_ATTEMPTS => {
                debug!("the FargateProfile changed since it was read; reading it again");
            }
            Err(error) => {
                warn!(
                    error = %error_chain(&error),
                    "writing the FargateProfile's usage; the next write counts the time since"
                );
                return Settled::Pending;
            }
        }
    }
    Settled::Pending
}

#[cfg(test)]
mod tests;
