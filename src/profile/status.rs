//! A profile's status and the Events it deserves, from what the reconciler observed (pure).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, READY, RUNTIME_CLASS_FOUND};
use crate::api::profile::{FargateProfile, FargateProfileStatus, ProfilePhase};
use crate::reconcile::Note;

/// Condition reasons and Event reasons of a profile.
pub mod reason {
    pub const ACTIVE: &str = "Active";
    pub const NOT_REQUESTED: &str = "NotRequested";
    pub const FOUND: &str = "Found";
    pub const RUNTIME_CLASS_NOT_FOUND: &str = "RuntimeClassNotFound";
    pub const NAMESPACES_CHANGED: &str = "NamespacesChanged";
}

/// Whether the profile's `runtimeClassName` exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeClassCheck {
    NotRequested,
    Found(String),
    Missing(String),
}

/// What one reconcile of a profile saw.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Namespaces the profile selects now.
    pub matched: &'a BTreeSet<String>,
    pub runtime_class: RuntimeClassCheck,
}

/// The status to write: conditions (their transition times kept while unchanged), phase,
/// matched namespaces and the generation it describes.
pub fn compute(profile: &FargateProfile, observed: &Observed, now: Time) -> FargateProfileStatus {
    let generation = profile.metadata.generation;
    let mut status = profile.status.clone().unwrap_or_default();
    let (found, found_reason, found_message) = match &observed.runtime_class {
        RuntimeClassCheck::NotRequested => (
            true,
            reason::NOT_REQUESTED,
            "the profile sets no runtimeClassName".to_string(),
        ),
        RuntimeClassCheck::Found(rc) => (true, reason::FOUND, format!("RuntimeClass {rc} exists")),
        RuntimeClassCheck::Missing(rc) => (
            false,
            reason::RUNTIME_CLASS_NOT_FOUND,
            format!(
                "RuntimeClass {rc} does not exist: create it (kubectl get runtimeclass lists those that do) or change spec.runtimeClassName; until then the API server refuses this profile's pods"
            ),
        ),
    };
    conditions::set(
        &mut status.conditions,
        conditions::condition(
            RUNTIME_CLASS_FOUND,
            found,
            found_reason,
            found_message.clone(),
            generation,
            now.clone(),
        ),
    );
    let ready_message = if found {
        format!("selecting {} namespace(s)", observed.matched.len())
    } else {
        found_message
    };
    conditions::set(
        &mut status.conditions,
        conditions::condition(
            READY,
            found,
            if found { reason::ACTIVE } else { found_reason },
            ready_message,
            generation,
            now,
        ),
    );
    status.phase = Some(if found {
        ProfilePhase::Active
    } else {
        ProfilePhase::Failed
    });
    status.matched_namespaces = observed.matched.iter().cloned().collect();
    status.observed_generation = generation;
    // The meter's field (its own field manager): applying a copy would take it over.
    status.usage = None;
    status
}

/// The Events of one reconcile: the namespaces the profile took or let go since the status it
/// had, and a missing RuntimeClass (said on every reconcile while it is missing).
pub fn events(previous: &FargateProfileStatus, observed: &Observed) -> Vec<Note> {
    let mut notes = vec![];
    let before: BTreeSet<&String> = previous.matched_namespaces.iter().collect();
    let now: BTreeSet<&String> = observed.matched.iter().collect();
    if before != now {
        let added: Vec<&str> = now.difference(&before).map(|s| s.as_str()).collect();
        let removed: Vec<&str> = before.difference(&now).map(|s| s.as_str()).collect();
        let mut parts = vec![];
        if !added.is_empty() {
            parts.push(format!("now selects {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("no longer selects {}", removed.join(", ")));
        }
        notes.push(Note::normal(
            "Reconcile",
            reason::NAMESPACES_CHANGED,
            parts.join("; "),
        ));
    }
    if let RuntimeClassCheck::Missing(rc) = &observed.runtime_class {
        notes.push(Note::warning(
            "Reconcile",
            reason::RUNTIME_CLASS_NOT_FOUND,
            format!("RuntimeClass {rc} does not exist"),
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::EventType;

    fn profile(yaml: &str) -> FargateProfile {
        serde_yaml::from_str(yaml).expect("test profile parses")
    }

    fn payments() -> FargateProfile {
        profile(
            r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments, generation: 3}
spec:
  selectors: [{namespace: payments-*}]
  runtimeClassName: gvisor
"#,
        )
    }

    fn at(text: &str) -> Time {
        Time(text.parse().expect("a timestamp"))
    }

    fn namespaces(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn condition<'a>(
        status: &'a FargateProfileStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn an_existing_runtime_class_makes_the_profile_active_and_ready() {
        let matched = namespaces(&["payments-eu", "payments-us"]);
        let observed = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Found("gvisor".into()),
        };
        let status = compute(&payments(), &observed, at("2026-11-28T12:00:00Z"));
        assert_eq!(status.phase, Some(ProfilePhase::Active));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status.matched_namespaces,
            vec!["payments-eu", "payments-us"]
        );
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Active")
        );
        assert_eq!(ready.message, "selecting 2 namespace(s)");
        assert_eq!(ready.observed_generation, Some(3));
        let found = condition(&status, RUNTIME_CLASS_FOUND);
        assert_eq!(
            (found.status.as_str(), found.reason.as_str()),
            ("True", "Found")
        );
    }

    #[test]
    fn a_missing_runtime_class_fails_the_profile_and_says_how_to_fix_it() {
        let matched = namespaces(&["payments-eu"]);
        let observed = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Missing("gvisor".into()),
        };
        let status = compute(&payments(), &observed, at("2026-11-28T12:00:00Z"));
        assert_eq!(status.phase, Some(ProfilePhase::Failed));
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RuntimeClassNotFound")
        );
        assert!(ready.message.contains("create it"), "{}", ready.message);
        assert!(ready.message.contains("spec.runtimeClassName"));
        let notes = events(&FargateProfileStatus::default(), &observed);
        assert!(notes.iter().any(|n| n.type_ == EventType::Warning
            && n.reason == "RuntimeClassNotFound"
            && n.text == "RuntimeClass gvisor does not exist"));
    }

    #[test]
    fn a_profile_without_runtime_class_is_ready() {
        let matched = namespaces(&[]);
        let observed = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::NotRequested,
        };
        let status = compute(&payments(), &observed, at("2026-11-28T12:00:00Z"));
        assert_eq!(status.phase, Some(ProfilePhase::Active));
        assert_eq!(
            condition(&status, RUNTIME_CLASS_FOUND).reason,
            "NotRequested"
        );
        assert_eq!(
            condition(&status, READY).message,
            "selecting 0 namespace(s)"
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let matched = namespaces(&["payments-eu"]);
        let found = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Found("gvisor".into()),
        };
        let mut profile = payments();
        profile.status = Some(compute(&profile, &found, at("2026-11-28T12:00:00Z")));
        let again = compute(&profile, &found, at("2026-11-28T12:05:00Z"));
        assert_eq!(
            condition(&again, READY).last_transition_time,
            at("2026-11-28T12:00:00Z")
        );
        let missing = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Missing("gvisor".into()),
        };
        let failed = compute(&profile, &missing, at("2026-11-28T12:10:00Z"));
        assert_eq!(
            condition(&failed, READY).last_transition_time,
            at("2026-11-28T12:10:00Z")
        );
    }

    #[test]
    fn namespaces_taken_and_let_go_are_one_event() {
        let previous = FargateProfileStatus {
            matched_namespaces: vec!["payments-eu".into(), "payments-old".into()],
            ..Default::default()
        };
        let matched = namespaces(&["payments-eu", "payments-us"]);
        let observed = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Found("gvisor".into()),
        };
        assert_eq!(
            events(&previous, &observed),
            vec![Note::normal(
                "Reconcile",
                "NamespacesChanged",
                "now selects payments-us; no longer selects payments-old"
            )]
        );
    }

    #[test]
    fn nothing_changed_is_no_event() {
        let previous = FargateProfileStatus {
            matched_namespaces: vec!["payments-eu".into()],
            ..Default::default()
        };
        let matched = namespaces(&["payments-eu"]);
        let observed = Observed {
            matched: &matched,
            runtime_class: RuntimeClassCheck::Found("gvisor".into()),
        };
        assert!(events(&previous, &observed).is_empty());
    }
}
