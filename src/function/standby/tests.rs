use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::*;
use crate::caches::{WatchedDeployment, WatchedDeploymentSpec};
use crate::function::runtime_pod::RuntimeSettings;

const HELLO: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: hello, namespace: team-a, uid: 7c1f0d7e-0000-4000-8000-000000000002}
spec:
  image: registry.example/hello:1.0
  args: [--greeting, hi]
  scale: {standby: true}
"#;

const DEPLOYMENT_UID: &str = "d0000000-0000-4000-8000-000000000001";

fn function() -> ServerlessFunction {
    serde_yaml::from_str(HELLO).expect("a test function")
}

/// The ReplicaSet the Deployment controller makes of the function's Deployment, at `revision`
/// with `hash`.
fn replica_set(revision: u64, hash: &str, owner_uid: &str) -> ReplicaSet {
    let deployment = crate::function::deployment(&function(), &RuntimeSettings::default())
        .expect("the function's Deployment");
    let mut template = deployment.spec.expect("a spec").template;
    template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("hello-{hash}")),
            namespace: Some("team-a".into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "hello".into(),
                uid: owner_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            template: Some(template),
            ..ReplicaSetSpec::default()
        }),
        status: None,
    }
}

fn image_of(pod: &Pod) -> &str {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .as_deref()
        .unwrap()
}

#[test]
fn a_standby_pod_is_the_replica_sets_pod_unselected_and_running_the_placeholder() {
    let set = replica_set(3, "6b8f7c9d5", DEPLOYMENT_UID);
    let pod = pod(&function(), &set, "fargo.dev/standby:dev").expect("a standby pod");

    assert_eq!(
        pod.metadata.generate_name.as_deref(),
        Some("hello-standby-")
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("team-a"));
    let labels = pod.labels();
    assert_eq!(labels.get(STANDBY_LABEL).map(String::as_str), Some("hello"));
    // Neither the ReplicaSet nor the Service selects it while it waits.
    assert!(!labels.contains_key(FUNCTION_LABEL));
    assert!(!labels.contains_key(POD_TEMPLATE_HASH_LABEL));
    assert_eq!(image_of(&pod), "fargo.dev/standby:dev");
    assert!(made_from(&pod, "6b8f7c9d5"));
    assert!(!made_from(&pod, "other"));
    assert_eq!(
        pod.annotations().get(IMAGE_ANNOTATION).map(String::as_str),
        Some("registry.example/hello:1.0")
    );
    // Owned by the function, which it goes with, but not controlled: the ReplicaSet adopts it.
    let owners = pod.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "ServerlessFunction");
    assert_eq!(owners[0].uid, "7c1f0d7e-0000-4000-8000-000000000002");
    assert_eq!(owners[0].controller, None);
    // Everything else is the template's: the function's arguments, environment and probe.
    let template = set.spec.as_ref().unwrap().template.as_ref().unwrap();
    let mut expected = template.spec.clone().unwrap();
    expected.containers[0].image = Some("fargo.dev/standby:dev".into());
    assert_eq!(pod.spec.as_ref(), Some(&expected));
}

#[test]
fn waking_gives_the_pod_the_function_image_and_the_replica_sets_labels_once() {
    let set = replica_set(3, "6b8f7c9d5", DEPLOYMENT_UID);
    let standby = pod(&function(), &set, "fargo.dev/standby:dev").unwrap();
    let patch = wake_patch(&standby, "hello").expect("a wake patch");

    let mut woken = serde_json::to_value(&standby).unwrap();
    json_patch::patch(&mut woken, &patch).expect("the patch applies");
    let woken: Pod = serde_json::from_value(woken).unwrap();
    assert_eq!(image_of(&woken), "registry.example/hello:1.0");
    let template_labels = set.spec.as_ref().unwrap().template.as_ref().unwrap();
    let template_labels = template_labels.metadata.as_ref().unwrap().labels.as_ref();
    // The ReplicaSet's selector (the function label and the hash) now matches it.
    assert_eq!(Some(woken.labels()), template_labels);
    assert!(!woken.labels().contains_key(STANDBY_LABEL));

    // A second wake of the same pod fails rather than acting twice.
    let mut again = serde_json::to_value(&woken).unwrap();
    assert!(json_patch::patch(&mut again, &patch).is_err());
}

#[test]
fn only_a_standby_pod_of_the_function_made_by_fargo_is_woken() {
    let set = replica_set(1, "abc", DEPLOYMENT_UID);
    let standby = pod(&function(), &set, "fargo.dev/standby:dev").unwrap();
    assert!(wake_patch(&standby, "other").is_none());

    let mut unannotated = standby.clone();
    unannotated
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(IMAGE_ANNOTATION);
    assert!(wake_patch(&unannotated, "hello").is_none());

    let mut renamed = standby;
    renamed.spec.as_mut().unwrap().containers[0].name = "app".into();
    assert!(wake_patch(&renamed, "hello").is_none());
}

#[test]
fn the_current_replica_set_is_the_deployments_newest() {
    let sets = [
        replica_set(1, "first", DEPLOYMENT_UID),
        replica_set(3, "third", DEPLOYMENT_UID),
        replica_set(9, "someone-elses", "another-deployment"),
        replica_set(2, "second", DEPLOYMENT_UID),
    ];
    let current = current_replica_set(&sets, DEPLOYMENT_UID).expect("a current set");
    assert_eq!(template_hash(current), Some("third"));
    assert!(current_replica_set(&sets, "nobody").is_none());
}

/// A function's Deployment as its watch reads it.
fn deployment(function: &str, wanted: i32, has: Option<i32>) -> WatchedDeployment {
    let mut cached = WatchedDeployment {
        metadata: ObjectMeta {
            name: Some(function.into()),
            namespace: Some("team-a".into()),
            labels: Some(BTreeMap::from([(
                FUNCTION_LABEL.to_string(),
                function.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(WatchedDeploymentSpec {
            replicas: Some(wanted),
        }),
        status: has.map(|replicas| DeploymentStatus {
            replicas: Some(replicas),
            ..DeploymentStatus::default()
        }),
        ..WatchedDeployment::default()
    };
    crate::caches::trim_deployment(&mut cached);
    cached
}

#[test]
fn a_deployment_leaves_zero_while_it_asks_for_replicas_and_has_none() {
    let key = Some(("team-a".to_string(), "hello".to_string()));
    let apply =
        |wanted, has| leaving_zero(&watcher::Event::Apply(deployment("hello", wanted, has)));
    assert_eq!(apply(1, None), key);
    assert_eq!(apply(2, Some(0)), key);
    // Seen when the controller starts, too.
    let listed = watcher::Event::InitApply(deployment("hello", 1, Some(0)));
    assert_eq!(leaving_zero(&listed), key);
    // At zero, or with pods already: nothing to wake.
    assert_eq!(apply(0, Some(0)), None);
    assert_eq!(apply(0, Some(1)), None);
    assert_eq!(apply(3, Some(1)), None);
    let gone = watcher::Event::Delete(deployment("hello", 1, None));
    assert_eq!(leaving_zero(&gone), None);
    let mut unlabelled = deployment("hello", 1, None);
    unlabelled.function = None;
    assert_eq!(leaving_zero(&watcher::Event::Apply(unlabelled)), None);
}

#[test]
fn the_wake_patch_is_json_patch_text_the_api_server_takes() {
    let set = replica_set(1, "abc", DEPLOYMENT_UID);
    let standby = pod(&function(), &set, "fargo.dev/standby:dev").unwrap();
    let patch = serde_json::to_value(wake_patch(&standby, "hello").unwrap()).unwrap();
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/labels/fargo.dev~1standby-of",
            "/spec/containers/0/name",
            "/metadata/labels/fargo.dev~1standby-of",
            "/metadata/labels/fargo.dev~1function",
            "/metadata/labels/pod-template-hash",
            "/spec/containers/0/image",
        ]
    );
    assert_eq!(patch[0]["op"], Value::from("test"));
}

fn profiles(yaml: &str) -> Vec<Arc<FargateProfile>> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Arc::new(FargateProfile::deserialize(document).expect("a test profile")))
        .collect()
}

/// One profile taking team-a's pods labelled tier=web, and one taking hello's pods by the
/// function label.
const PROFILES: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: web}
spec:
  selectors:
    - namespace: team-a
      labels: {tier: web}
---
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: by-function}
spec:
  selectors:
    - namespace: team-a
      labels: {fargo.dev/function: hello}
"#;

#[test]
fn a_standby_pod_is_made_only_when_the_profiles_take_it_as_the_functions_pods() {
    let set = replica_set(1, "abc", DEPLOYMENT_UID);
    let standby = pod(&function(), &set, "fargo.dev/standby:dev").unwrap();
    let woken = woken_labels(&standby, "hello").expect("woken labels");
    assert_eq!(
        Some(&woken),
        set.spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
    );
    // No profile, or one selecting neither: both alike.
    assert!(profiles_agree("team-a", standby.labels(), &woken, &[]));
    let web = profiles(PROFILES).into_iter().take(1).collect::<Vec<_>>();
    assert!(profiles_agree("team-a", standby.labels(), &woken, &web));
    // A profile that selects the function's pods by their function label would not take the
    // standby pod: it would wake as a pod that escaped its profile.
    assert!(!profiles_agree(
        "team-a",
        standby.labels(),
        &woken,
        &profiles(PROFILES)
    ));
    assert!(profiles_agree(
        "team-b",
        standby.labels(),
        &woken,
        &profiles(PROFILES)
    ));
}

#[test]
fn a_standby_pod_wakes_only_under_the_profile_it_was_admitted_with() {
    let set = replica_set(1, "abc", DEPLOYMENT_UID);
    let mut standby = pod(&function(), &set, "fargo.dev/standby:dev").unwrap();
    // Admitted with no profile, no profile taking its woken form: it may wake.
    assert!(may_wake(&standby, "hello", &[]));
    // A profile taking the function's pods appeared since: the woken pod would escape it.
    assert!(!may_wake(&standby, "hello", &profiles(PROFILES)));
    // Admitted as a Fargate pod of `web`, and `web` still takes it: it may wake, not under
    // another profile or none.
    let labels = standby.metadata.labels.as_mut().unwrap();
    labels.insert("tier".into(), "web".into());
    labels.insert(PROFILE_LABEL.into(), "web".into());
    let web = profiles(PROFILES).into_iter().take(1).collect::<Vec<_>>();
    assert!(may_wake(&standby, "hello", &web));
    assert!(!may_wake(&standby, "hello", &[]));
    assert!(!may_wake(&standby, "other", &web));
}
