//! A function's status, computed from what the reconciler observed; no client.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::conditions::{
    self, HOSTS_ACCEPTED, PROFILE_FOUND, READY, SCALED_TO_ZERO, SCHEDULES_VALID, condition,
};
use crate::api::function_url;
use crate::api::routes::Refusal;
use crate::api::{ServerlessFunction, ServerlessFunctionStatus};
use crate::replicas::Instances;

/// Reasons of the Ready condition.
pub mod reason {
    /// Ready: at least one instance is ready.
    pub const SERVING: &str = "Serving";
    /// Ready: no instances; the next request wakes the function.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// Ready: scaling from zero; requests are held until an instance is ready.
    pub const WAKING: &str = "Waking";
    /// Not ready: the first instances are starting.
    pub const STARTING: &str = "Starting";
    /// Not ready: no instance is ready and the pods say why.
    pub const PODS_FAILING: &str = "PodsFailing";
    /// Not ready: the Deployment is not there (yet).
    pub const DEPLOYMENT_MISSING: &str = "DeploymentMissing";
    pub const PROFILE_NOT_FOUND: &str = "ProfileNotFound";
    pub const PROFILE_DOES_NOT_SELECT_NAMESPACE: &str = "ProfileDoesNotSelectNamespace";
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
    pub const INVALID_NAME: &str = "InvalidName";
    /// HostsAccepted: a host is one of the activator's own names (or under its domain, an IP
    /// address, `localhost`).
    pub const HOST_RESERVED: &str = "HostReserved";
    /// HostsAccepted: another function claimed the same host and path first.
    pub const HOST_CLAIMED: &str = "HostClaimed";
}

/// What became of `spec.profile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileCheck {
    NotRequested,
    Found(String),
    /// No such FargateProfile, or it is being deleted.
    Missing(String),
    /// The profile exists but does not select the function's namespace, so the webhook would
    /// refuse the pods.
    NotSelecting {
        profile: String,
        namespace: String,
    },
}

impl ProfileCheck {
    /// Whether the function's pods may be created: the profile they name will take them.
    pub fn admits_pods(&self) -> bool {
        matches!(self, ProfileCheck::NotRequested | ProfileCheck::Found(_))
    }

    /// `(reason, message)` when the profile keeps the function from running.
    fn problem(&self) -> Option<(&'static str, String)> {
        match self {
            ProfileCheck::NotRequested | ProfileCheck::Found(_) => None,
            ProfileCheck::Missing(profile) => Some((
                reason::PROFILE_NOT_FOUND,
                format!(
                    "FargateProfile {profile:?} does not exist: create it (kubectl get \
                     fargateprofiles lists those that do) or change spec.profile; no pods are \
                     started until then"
                ),
            )),
            ProfileCheck::NotSelecting { profile, namespace } => Some((
                reason::PROFILE_DOES_NOT_SELECT_NAMESPACE,
                format!(
                    "FargateProfile {profile:?} does not select namespace {namespace:?}, so its \
                     webhook would refuse the pods: add a selector for the namespace to the \
                     profile or change spec.profile"
                ),
            )),
        }
    }
}

/// Everything the status is computed from, besides the function itself.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub deployment: Option<&'a Deployment>,
    pub profile: ProfileCheck,
    /// One line per invalid schedule (see [`crate::schedule::validate`]).
    pub schedule_problems: &'a [String],
    /// Why the function's name cannot be used, if it cannot.
    pub name_problem: Option<&'a str>,
    /// What keeps the pods from serving (unschedulable, image pull, crash loop, refused by
    /// admission), when no instance is ready.
    pub pod_problems: &'a [String],
    /// The base URL of the activator.
    pub activator_url: &'a str,
    /// Why hosts of `triggers.http.hosts` are not routed to the function (see
    /// [`crate::api::routes::refusals_among`]).
    pub host_refusals: &'a [Refusal],
}

/// Why a Deployment cannot create its pods (quota, admission), from its ReplicaFailure
/// condition.
pub fn replica_failure(deployment: &Deployment) -> Option<String> {
    deployment
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "the Deployment cannot create pods".into())
        })
}

/// The status the reconciler writes over `previous` (whose conditions keep their transition
/// times while they hold): everything but what the autoscaler and the meter own.
pub fn compute(
    function: &ServerlessFunction,
    previous: &ServerlessFunctionStatus,
    observed: &Observed<'_>,
    now: Time,
) -> ServerlessFunctionStatus {
    let generation = function.metadata.generation;
    let namespace = function.namespace().unwrap_or_default();
    let instances = observed.deployment.map(Instances::of);
    let mut conditions = previous.conditions.clone();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        conditions::set(
            &mut conditions,
            condition(type_, status, reason, message, generation, now.clone()),
        );
    };

    match (&observed.profile, observed.profile.problem()) {
        (_, Some((reason, message))) => set(PROFILE_FOUND, false, reason, message),
        (ProfileCheck::Found(profile), None) => set(
            PROFILE_FOUND,
            true,
            "Found",
            format!("FargateProfile {profile:?} takes the function's pods"),
        ),
        (_, None) => set(
            PROFILE_FOUND,
            true,
            "NotRequested",
            "the function sets no profile".into(),
        ),
    }

    let schedules = function.spec.triggers.schedules.len();
    if observed.schedule_problems.is_empty() {
        set(
            SCHEDULES_VALID,
            true,
            if schedules == 0 {
                "NoSchedules"
            } else {
                "Valid"
            },
            format!("{schedules} schedule(s)"),
        );
    } else {
        set(
            SCHEDULES_VALID,
            false,
            reason::INVALID_SCHEDULE,
            observed.schedule_problems.join("; "),
        );
    }

    let (accepted, hosts_reason, message) = hosts_accepted(function, observed.host_refusals);
    set(HOSTS_ACCEPTED, accepted, hosts_reason, message);

    match instances {
        Some(instances) if instances.desired == 0 => set(
            SCALED_TO_ZERO,
            true,
            "Idle",
            "no instances; the next request wakes the function".into(),
        ),
        Some(instances) => set(
            SCALED_TO_ZERO,
            false,
            "Running",
            format!("{} instance(s) wanted", instances.desired),
        ),
        None => set(
            SCALED_TO_ZERO,
            false,
            reason::DEPLOYMENT_MISSING,
            "the function has no Deployment yet".into(),
        ),
    }

    let was_ready = conditions::is_true(&previous.conditions, READY);
    let (ready, ready_reason, message) = readiness(observed, instances, was_ready);
    set(READY, ready, ready_reason, message);

    ServerlessFunctionStatus {
        url: Some(function_url(
            observed.activator_url,
            &namespace,
            &function.name_any(),
        )),
        replicas: Some(instances.map_or(0, |i| i.existing)),
        ready_replicas: Some(instances.map_or(0, |i| i.ready)),
        conditions,
        // Written by the autoscaler, from what the activators report.
        last_request_time: None,
        queued_events: None,
        triggers: vec![],
        oldest_queued_event: None,
        // Written by the meter.
        usage: None,
        observed_generation: generation,
    }
}

/// The HostsAccepted condition. A refused host leaves the function Ready: it is still served
/// by path and by its own host name.
fn hosts_accepted(
    function: &ServerlessFunction,
    refusals: &[Refusal],
) -> (bool, &'static str, String) {
    let http = &function.spec.triggers.http;
    if refusals.is_empty() {
        return match (http.enabled, http.hosts.len()) {
            (false, _) => (
                true,
                "NoHosts",
                "the function takes no HTTP requests (triggers.http.enabled is false)".into(),
            ),
            (true, 0) => (true, "NoHosts", "the function claims no host".into()),
            (true, hosts) => (
                true,
                "Accepted",
                format!("{hosts} host(s) routed to the function"),
            ),
        };
    }
    let reason = if refusals.iter().any(Refusal::is_reserved) {
        reason::HOST_RESERVED
    } else {
        reason::HOST_CLAIMED
    };
    let listed: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    let message = format!(
        "{}; the activator ignores these claims: remove them from triggers.http.hosts or \
         choose another host or path",
        listed.join("; ")
    );
    (false, reason, truncate(&message, 1024))
}

fn readiness(
    observed: &Observed<'_>,
    instances: Option<Instances>,
    was_ready: bool,
) -> (bool, &'static str, String) {
    if let Some(problem) = observed.name_problem {
        return (false, reason::INVALID_NAME, problem.to_string());
    }
    if let Some((reason, message)) = observed.profile.problem() {
        return (false, reason, message);
    }
    if !observed.schedule_problems.is_empty() {
        return (
            false,
            reason::INVALID_SCHEDULE,
            observed.schedule_problems.join("; "),
        );
    }
    let Some(instances) = instances else {
        return (
            false,
            reason::DEPLOYMENT_MISSING,
            "the function's Deployment is being created".into(),
        );
    };
    if instances.ready > 0 {
        return (
            true,
            reason::SERVING,
            format!(
                "{} of {} instance(s) ready",
                instances.ready, instances.desired
            ),
        );
    }
    if instances.desired == 0 {
        return (
            true,
            reason::SCALED_TO_ZERO,
            "scaled to zero; the next request wakes the function".into(),
        );
    }
    if !observed.pod_problems.is_empty() {
        return (
            false,
            reason::PODS_FAILING,
            truncate(&observed.pod_problems.join("; "), 1024),
        );
    }
    if was_ready {
        (
            true,
            reason::WAKING,
            "waking from zero; requests are held until an instance is ready".into(),
        )
    } else {
        (
            false,
            reason::STARTING,
            format!("0 of {} instance(s) ready yet", instances.desired),
        )
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::is_true;

    fn function(yaml: &str) -> ServerlessFunction {
        serde_yaml::from_str(yaml).expect("a test function")
    }

    const FUNCTION: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: thumbnail, namespace: media, uid: u1, generation: 3}
spec:
  image: registry.example/thumbnail:1.0
  triggers:
    schedules: [{name: nightly, cron: "0 3 * * *"}]
"#;

    fn deployment(desired: i32, existing: i32, ready: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "thumbnail", "namespace": "media"},
            "spec": {
                "replicas": desired,
                "selector": {"matchLabels": {"fargo.dev/function": "thumbnail"}},
                "template": {}
            },
            "status": {"replicas": existing, "readyReplicas": ready}
        }))
        .expect("a test deployment")
    }

    /// The status computed over the function's own.
    fn compute_of(
        f: &ServerlessFunction,
        observed: &Observed<'_>,
        now: Time,
    ) -> ServerlessFunctionStatus {
        compute(f, &f.status.clone().unwrap_or_default(), observed, now)
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn observed<'a>(deployment: Option<&'a Deployment>) -> Observed<'a> {
        Observed {
            deployment,
            profile: ProfileCheck::NotRequested,
            schedule_problems: &[],
            name_problem: None,
            pod_problems: &[],
            activator_url: "http://fargo-activator.fargo-system.svc",
            host_refusals: &[],
        }
    }

    fn ready_condition(status: &ServerlessFunctionStatus) -> (String, String) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("a Ready condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_serving_function_is_ready_and_reports_its_instances() {
        let f = function(FUNCTION);
        let d = deployment(3, 3, 2);
        let status = compute_of(&f, &observed(Some(&d)), now());
        assert_eq!(ready_condition(&status), ("True".into(), "Serving".into()));
        assert_eq!(status.replicas, Some(3));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status.url.as_deref(),
            Some("http://fargo-activator.fargo-system.svc/media/thumbnail/")
        );
        assert!(!is_true(&status.conditions, SCALED_TO_ZERO));
        assert!(is_true(&status.conditions, SCHEDULES_VALID));
        assert!(is_true(&status.conditions, PROFILE_FOUND));
        assert_eq!(status.last_request_time, None, "the autoscaler owns it");
    }

    #[test]
    fn a_function_scaled_to_zero_is_ready() {
        let f = function(FUNCTION);
        let d = deployment(0, 0, 0);
        let status = compute_of(&f, &observed(Some(&d)), now());
        assert_eq!(
            ready_condition(&status),
            ("True".into(), "ScaledToZero".into())
        );
        assert!(is_true(&status.conditions, SCALED_TO_ZERO));
    }

    #[test]
    fn first_instances_starting_are_not_ready_yet() {
        let f = function(FUNCTION);
        let d = deployment(1, 1, 0);
        let status = compute_of(&f, &observed(Some(&d)), now());
        assert_eq!(
            ready_condition(&status),
            ("False".into(), "Starting".into())
        );
    }

    #[test]
    fn waking_from_zero_stays_ready() {
        let mut f = function(FUNCTION);
        let d0 = deployment(0, 0, 0);
        f.status = Some(compute_of(&f, &observed(Some(&d0)), now()));
        let d1 = deployment(1, 1, 0);
        let status = compute_of(&f, &observed(Some(&d1)), now());
        assert_eq!(ready_condition(&status), ("True".into(), "Waking".into()));
    }

    #[test]
    fn failing_pods_make_the_function_not_ready_with_their_reason() {
        let mut f = function(FUNCTION);
        let d0 = deployment(0, 0, 0);
        f.status = Some(compute_of(&f, &observed(Some(&d0)), now()));
        let d1 = deployment(1, 1, 0);
        let problems = ["pod thumbnail-abc, container function: ImagePullBackOff".to_string()];
        let status = compute_of(
            &f,
            &Observed {
                pod_problems: &problems,
                ..observed(Some(&d1))
            },
            now(),
        );
        assert_eq!(
            ready_condition(&status),
            ("False".into(), "PodsFailing".into())
        );
        let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert!(ready.message.contains("ImagePullBackOff"));
    }

    #[test]
    fn a_missing_profile_is_reported_on_ready_and_profile_found() {
        let f = function(FUNCTION);
        let status = compute_of(
            &f,
            &Observed {
                profile: ProfileCheck::Missing("payments".into()),
                ..observed(None)
            },
            now(),
        );
        assert_eq!(
            ready_condition(&status),
            ("False".into(), "ProfileNotFound".into())
        );
        let found = status
            .conditions
            .iter()
            .find(|c| c.type_ == PROFILE_FOUND)
            .unwrap();
        assert_eq!(found.status, "False");
        assert!(found.message.contains("\"payments\" does not exist"));
        assert!(!ProfileCheck::Missing("payments".into()).admits_pods());
    }

    #[test]
    fn a_profile_that_does_not_select_the_namespace_is_reported() {
        let f = function(FUNCTION);
        let d = deployment(1, 1, 1);
        let status = compute_of(
            &f,
            &Observed {
                profile: ProfileCheck::NotSelecting {
                    profile: "payments".into(),
                    namespace: "media".into(),
                },
                ..observed(Some(&d))
            },
            now(),
        );
        assert_eq!(
            ready_condition(&status),
            ("False".into(), "ProfileDoesNotSelectNamespace".into())
        );
    }

    #[test]
    fn an_invalid_schedule_is_reported_with_its_name() {
        let f = function(FUNCTION);
        let d = deployment(1, 1, 1);
        let problems = ["schedule \"nightly\": cron \"0 3 * *\": expected 5 fields".to_string()];
        let status = compute_of(
            &f,
            &Observed {
                schedule_problems: &problems,
                ..observed(Some(&d))
            },
            now(),
        );
        assert_eq!(
            ready_condition(&status),
            ("False".into(), "InvalidSchedule".into())
        );
        let valid = status
            .conditions
            .iter()
            .find(|c| c.type_ == SCHEDULES_VALID)
            .unwrap();
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "InvalidSchedule")
        );
        assert!(valid.message.contains("nightly"));
    }

    #[test]
    fn recomputing_an_unchanged_function_gives_the_same_status() {
        let mut f = function(FUNCTION);
        let d = deployment(2, 2, 2);
        let first = compute_of(&f, &observed(Some(&d)), now());
        f.status = Some(first.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap());
        assert_eq!(compute_of(&f, &observed(Some(&d)), later), first);
    }

    #[test]
    fn replica_failures_are_read_from_the_deployment() {
        let mut d = deployment(1, 0, 0);
        d.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(serde_json::json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": "admission webhook denied the request"
            }))
            .unwrap(),
        ]);
        assert_eq!(
            replica_failure(&d).as_deref(),
            Some("admission webhook denied the request")
        );
        assert_eq!(replica_failure(&deployment(1, 1, 1)), None);
    }

    fn hosts_condition(status: &ServerlessFunctionStatus) -> (String, String, String) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == HOSTS_ACCEPTED)
            .expect("a HostsAccepted condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn hosts_no_function_may_claim_are_reported_without_making_the_function_unready() {
        use crate::api::routes::{ActivatorNames, refusals_among};
        let thief = function(
            r#"
metadata: {name: thief, namespace: evil, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  image: x
  triggers: {http: {hosts: [fargo-activator.fargo-system.svc], path: /}}
"#,
        );
        let names = ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local");
        let refusals = refusals_among(&thief, [&thief], &names);
        let d = deployment(0, 0, 0);
        let status = compute_of(
            &thief,
            &Observed {
                host_refusals: &refusals,
                ..observed(Some(&d))
            },
            now(),
        );
        let (accepted, reason, message) = hosts_condition(&status);
        assert_eq!(
            (accepted.as_str(), reason.as_str()),
            ("False", "HostReserved")
        );
        assert!(
            message
                .contains("\"fargo-activator.fargo-system.svc\" is a name of the fargo activator"),
            "{message}"
        );
        assert_eq!(
            ready_condition(&status),
            ("True".into(), "ScaledToZero".into())
        );
    }

    #[test]
    fn a_host_claimed_first_by_another_function_names_the_holder() {
        use crate::api::routes::{ActivatorNames, refusals_among};
        let holder = function(
            r#"
metadata: {name: shop, namespace: team-a, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {image: x, triggers: {http: {hosts: [shop.example.com]}}}
"#,
        );
        let late = function(
            r#"
metadata: {name: shop, namespace: team-b, creationTimestamp: "2026-01-01T00:00:05Z"}
spec: {image: x, triggers: {http: {hosts: [shop.example.com]}}}
"#,
        );
        let names = ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local");
        let all = [&holder, &late];
        let d = deployment(0, 0, 0);
        let status_of = |function: &ServerlessFunction| {
            let refusals = refusals_among(function, all, &names);
            compute_of(
                function,
                &Observed {
                    host_refusals: &refusals,
                    ..observed(Some(&d))
                },
                now(),
            )
        };
        let (accepted, reason, message) = hosts_condition(&status_of(&late));
        assert_eq!(
            (accepted.as_str(), reason.as_str()),
            ("False", "HostClaimed")
        );
        assert!(
            message.contains("held by function team-a/shop"),
            "{message}"
        );
        let (accepted, reason, _) = hosts_condition(&status_of(&holder));
        assert_eq!((accepted.as_str(), reason.as_str()), ("True", "Accepted"));
        let (accepted, reason, _) = hosts_condition(&status_of(&function(FUNCTION)));
        assert_eq!((accepted.as_str(), reason.as_str()), ("True", "NoHosts"));
    }
}
