//! Which FargateProfile takes a pod.
//!
//! EKS semantics: a pod matches a profile when its namespace and labels match any one of the
//! profile's selectors, where `*` and `?` are wildcards. When several profiles match, the
//! alphabetically first wins so the choice never depends on watch order. A pod may force a profile
//! with the `fargo.dev/profile` label. What a pod says about itself never exempts it: a pod that
//! names a DaemonSet as its owner (a decoy, or a DaemonSet a tenant created) is matched like any
//! other, so in a profiled namespace it passes the same rules or is refused. Once admitted, a pod
//! keeps the profile it got: see [`relabelling`].

use std::borrow::Borrow;
use std::collections::BTreeMap;

use thiserror::Error;

use crate::api::PROFILE_LABEL;
use crate::api::profile::{FargateProfile, ProfileSelector};

/// Why a pod cannot be admitted under the profile it names with the `fargo.dev/profile` label.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MatchError {
    #[error(
        "the pod's label {PROFILE_LABEL}={profile:?} names a FargateProfile that does not exist; \
         create the profile (kubectl get fargateprofiles lists them) or remove the label"
    )]
    UnknownProfile { profile: String },

    #[error(
        "the pod's label {PROFILE_LABEL}={profile:?} names a FargateProfile that is being \
         deleted; pick another profile or remove the label"
    )]
    ProfileDeleting { profile: String },

    #[error(
        "the pod's label {PROFILE_LABEL}={profile:?} names a FargateProfile that does not select \
         namespace {namespace:?} (its selectors' namespaces: {patterns}); add a selector for this \
         namespace to the profile, or remove the label"
    )]
    NamespaceNotSelected {
        profile: String,
        namespace: String,
        /// The profile's namespace patterns, comma-separated, for the message.
        patterns: String,
    },
}

/// An update that would change a pod's `fargo.dev/profile` label after admission. The label is
/// the record of the profile a pod was admitted under, and the profile's NetworkPolicy selects
/// its pods, and recognises their peers, by it: shedding it takes a pod out of its fence, and
/// claiming it makes a pod that no profile judged a peer of the profile's pods.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Relabelling {
    #[error(
        "the label {PROFILE_LABEL}={profile:?} cannot be added to pod {pod:?}: a pod's \
         FargateProfile is decided when the pod is created, and this pod was not checked against \
         profile {profile:?}; create the pod anew with the label instead"
    )]
    Added { pod: String, profile: String },

    #[error(
        "the label {PROFILE_LABEL}={profile:?} cannot be removed from pod {pod:?}: the pod was \
         admitted under FargateProfile {profile:?}, whose NetworkPolicy fences the pod by this \
         label; create the pod anew to run it outside the profile"
    )]
    Removed { pod: String, profile: String },

    #[error(
        "the label {PROFILE_LABEL} of pod {pod:?} cannot change from {from:?} to {to:?}: the pod \
         was admitted under FargateProfile {from:?}, whose NetworkPolicy fences the pod by this \
         label, and was not checked against profile {to:?}; create the pod anew with the new \
         label instead"
    )]
    Changed {
        pod: String,
        from: String,
        to: String,
    },
}

/// How an update of pod `pod` from labels `old` to `new` changes its `fargo.dev/profile`
/// label, if it does. A label with an empty value counts as present.
pub fn relabelling(
    pod: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Option<Relabelling> {
    let pod = pod.to_string();
    match (old.get(PROFILE_LABEL), new.get(PROFILE_LABEL)) {
        (None, None) => None,
        (Some(from), Some(to)) if from == to => None,
        (None, Some(profile)) => Some(Relabelling::Added {
            pod,
            profile: profile.clone(),
        }),
        (Some(profile), None) => Some(Relabelling::Removed {
            pod,
            profile: profile.clone(),
        }),
        (Some(from), Some(to)) => Some(Relabelling::Changed {
            pod,
            from: from.clone(),
            to: to.clone(),
        }),
    }
}

/// The outcome of matching a pod against the profiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Match<'a> {
    /// No profile takes the pod (or it is a DaemonSet pod): admit it untouched.
    None,
    /// The pod becomes a Fargate pod of this profile.
    Profile(&'a FargateProfile),
}

impl<'a> Match<'a> {
    /// The matched profile, if any.
    pub fn profile(self) -> Option<&'a FargateProfile> {
        match self {
            Match::None => None,
            Match::Profile(profile) => Some(profile),
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (including none)
/// and `?` exactly one character; every other character matches itself.
///
/// Iterative with a single backtrack point (the last `*` seen), so the cost is at most
/// `pattern.len() * text.len()` steps and usually linear — no recursion to blow up on `a*a*a*…`.
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // After a `*`: where the pattern resumes, and how much text the `*` has swallowed so far.
    let mut backtrack: Option<(usize, usize)> = None;

    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                p += 1;
                backtrack = Some((p, t));
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                // Let the last `*` swallow one more character and retry from there.
                Some((resume, swallowed_to)) => {
                    p = resume;
                    t = swallowed_to + 1;
                    backtrack = Some((resume, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

impl ProfileSelector {
    /// Whether this selector takes a pod in `namespace` with `labels`: the namespace matches the
    /// pattern and the pod carries every selector label with a matching value.
    pub fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.selects_namespace(namespace)
            && self.labels.iter().all(|(key, pattern)| {
                labels
                    .get(key)
                    .is_some_and(|value| wildcard_matches(pattern, value))
            })
    }

    /// Whether the selector's namespace pattern matches `namespace`, whatever the labels.
    pub fn selects_namespace(&self, namespace: &str) -> bool {
        wildcard_matches(&self.namespace, namespace)
    }
}

/// Whether any of the profile's selectors matches `namespace` by its namespace pattern; the
/// controller labels such namespaces so the webhook sees their pods.
pub fn namespace_is_selected(profile: &FargateProfile, namespace: &str) -> bool {
    profile
        .spec
        .selectors
        .iter()
        .any(|selector| selector.selects_namespace(namespace))
}

/// Decides which profile, if any, takes a pod being created in `namespace`.
///
/// - A pod labelled `fargo.dev/profile: NAME` gets that profile, provided it exists, is not being
///   deleted and selects the namespace; the selector labels need not match (the user asked for
///   it explicitly). Otherwise the pod is refused with a [`MatchError`] rather than silently run
///   without the isolation its owner asked for.
/// - Otherwise the alphabetically first profile with a selector matching namespace and labels
///   wins. Profiles being deleted take no new pods.
///
/// `profiles` may be owned profiles or the `Arc`s a reflector store hands out.
pub fn match_pod<'a, P: Borrow<FargateProfile>>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    profiles: &'a [P],
) -> Result<Match<'a>, MatchError> {
    if let Some(forced) = labels.get(PROFILE_LABEL) {
        let profile = profiles
            .iter()
            .map(as_profile)
            .find(|profile| name(profile) == forced)
            .ok_or_else(|| MatchError::UnknownProfile {
                profile: forced.clone(),
            })?;
        if is_deleting(profile) {
            return Err(MatchError::ProfileDeleting {
                profile: forced.clone(),
            });
        }
        if !namespace_is_selected(profile, namespace) {
            return Err(MatchError::NamespaceNotSelected {
                profile: forced.clone(),
                namespace: namespace.to_string(),
                patterns: profile
                    .spec
                    .selectors
                    .iter()
                    .map(|selector| format!("{:?}", selector.namespace))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        return Ok(Match::Profile(profile));
    }

    let first = profiles
        .iter()
        .map(as_profile)
        .filter(|profile| !is_deleting(profile))
        .filter(|profile| {
            profile
                .spec
                .selectors
                .iter()
                .any(|selector| selector.matches(namespace, labels))
        })
        .min_by(|a, b| name(a).cmp(name(b)));
    Ok(first.map_or(Match::None, Match::Profile))
}

fn as_profile<P: Borrow<FargateProfile>>(profile: &P) -> &FargateProfile {
    profile.borrow()
}

fn name(profile: &FargateProfile) -> &str {
    profile.metadata.name.as_deref().unwrap_or_default()
}

fn is_deleting(profile: &FargateProfile) -> bool {
    profile.metadata.deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn profiles(yaml: &str) -> Vec<FargateProfile> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|doc| FargateProfile::deserialize(doc).expect("valid profile fixture"))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const PAYMENTS_AND_BATCH: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments}
spec:
  selectors:
    - namespace: payments-*
      labels: {tier: backend}
---
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: batch}
spec:
  selectors:
    - namespace: jobs
    - namespace: payments-?
      labels: {tier: "back*"}
"#;

    #[test]
    fn wildcard_star_matches_any_run() {
        assert!(wildcard_matches("payments-*", "payments-eu"));
        assert!(wildcard_matches("payments-*", "payments-"));
        assert!(wildcard_matches("*", ""));
        assert!(wildcard_matches("*", "anything"));
        assert!(wildcard_matches("a*b*c", "a-b-c"));
        assert!(wildcard_matches("a*b*c", "abc"));
        assert!(wildcard_matches("*-prod", "eu-west-prod"));
        assert!(!wildcard_matches("payments-*", "payment-eu"));
        assert!(!wildcard_matches("a*b*c", "a-b-d"));
    }

    #[test]
    fn wildcard_question_mark_matches_exactly_one_char() {
        assert!(wildcard_matches("team-?", "team-a"));
        assert!(!wildcard_matches("team-?", "team-"));
        assert!(!wildcard_matches("team-?", "team-ab"));
        assert!(wildcard_matches("??", "ab"));
        assert!(wildcard_matches("?*", "a"));
        assert!(!wildcard_matches("?*", ""));
    }

    #[test]
    fn wildcard_without_metacharacters_is_an_exact_comparison() {
        assert!(wildcard_matches("default", "default"));
        assert!(!wildcard_matches("default", "default2"));
        assert!(!wildcard_matches("default", "defaul"));
        assert!(wildcard_matches("", ""));
        assert!(!wildcard_matches("", "x"));
    }

    #[test]
    fn wildcard_backtracks_past_false_starts() {
        assert!(wildcard_matches("*ab", "aab"));
        assert!(wildcard_matches("*a?c", "abcabaxc"));
        assert!(!wildcard_matches("*a?c", "abcabxc"));
        assert!(wildcard_matches("x*yz", "xyyyz"));
        assert!(!wildcard_matches("x*yz", "xyyyzq"));
    }

    #[test]
    fn wildcard_stays_fast_on_pathological_patterns() {
        let pattern = "a*".repeat(60) + "b";
        let text = "a".repeat(5000);
        assert!(!wildcard_matches(&pattern, &text));
        assert!(wildcard_matches(&pattern, &(text + "b")));
    }

    #[test]
    fn selector_needs_every_label_present_and_matching() {
        let selector = ProfileSelector {
            namespace: "payments-*".into(),
            labels: labels(&[("tier", "back*"), ("team", "?")]),
        };
        let ok = labels(&[("tier", "backend"), ("team", "a"), ("extra", "x")]);
        assert!(selector.matches("payments-eu", &ok));
        assert!(!selector.matches("web", &ok));
        assert!(!selector.matches("payments-eu", &labels(&[("tier", "backend")])));
        assert!(!selector.matches(
            "payments-eu",
            &labels(&[("tier", "frontend"), ("team", "a")])
        ));
    }

    #[test]
    fn selector_without_labels_takes_every_pod_of_the_namespace() {
        let selector = ProfileSelector {
            namespace: "jobs".into(),
            labels: BTreeMap::new(),
        };
        assert!(selector.matches("jobs", &BTreeMap::new()));
        assert!(!selector.matches("jobs-2", &BTreeMap::new()));
    }

    #[test]
    fn the_profile_label_may_not_be_added_removed_or_changed() {
        let none = labels(&[("app", "api")]);
        let payments = labels(&[("app", "api"), (PROFILE_LABEL, "payments")]);
        let batch = labels(&[("app", "api"), (PROFILE_LABEL, "batch")]);
        let blank = labels(&[("app", "api"), (PROFILE_LABEL, "")]);
        assert_eq!(
            relabelling("api", &none, &payments),
            Some(Relabelling::Added {
                pod: "api".into(),
                profile: "payments".into()
            })
        );
        assert_eq!(
            relabelling("api", &payments, &none),
            Some(Relabelling::Removed {
                pod: "api".into(),
                profile: "payments".into()
            })
        );
        assert_eq!(
            relabelling("api", &payments, &batch),
            Some(Relabelling::Changed {
                pod: "api".into(),
                from: "payments".into(),
                to: "batch".into()
            })
        );
        // An empty value is still the label: it stops the profile's policy selecting the pod.
        assert!(matches!(
            relabelling("api", &payments, &blank),
            Some(Relabelling::Changed { .. })
        ));
        assert!(matches!(
            relabelling("api", &none, &blank),
            Some(Relabelling::Added { .. })
        ));
    }

    #[test]
    fn updates_that_keep_the_profile_label_are_no_relabelling() {
        let payments = labels(&[("app", "api"), (PROFILE_LABEL, "payments")]);
        let relabelled_app = labels(&[("app", "web"), ("team", "a"), (PROFILE_LABEL, "payments")]);
        assert_eq!(relabelling("api", &payments, &relabelled_app), None);
        assert_eq!(
            relabelling("api", &labels(&[("app", "api")]), &labels(&[])),
            None
        );
    }

    #[test]
    fn pod_matching_no_selector_gets_no_profile() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let found = match_pod("web", &labels(&[("tier", "backend")]), &all).unwrap();
        assert_eq!(found, Match::None);
    }

    #[test]
    fn pod_matching_one_profile_gets_it() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let found = match_pod("payments-eu", &labels(&[("tier", "backend")]), &all).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("payments")
        );
    }

    #[test]
    fn several_matching_profiles_pick_the_alphabetically_first() {
        let all = profiles(PAYMENTS_AND_BATCH);
        // Both `payments` (payments-*) and `batch` (payments-?) take this pod.
        let found = match_pod("payments-1", &labels(&[("tier", "backend")]), &all).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("batch")
        );
    }

    #[test]
    fn forced_profile_wins_without_its_labels_matching() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let forced = labels(&[(PROFILE_LABEL, "payments")]);
        let found = match_pod("payments-eu", &forced, &all).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("payments")
        );
        // Would otherwise go to `batch`, the alphabetically first match.
        let forced = labels(&[(PROFILE_LABEL, "payments"), ("tier", "backend")]);
        let found = match_pod("payments-1", &forced, &all).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("payments")
        );
    }

    #[test]
    fn forced_unknown_profile_is_an_error_that_says_how_to_fix_it() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let forced = labels(&[(PROFILE_LABEL, "nope")]);
        let err = match_pod("payments-eu", &forced, &all).unwrap_err();
        assert_eq!(
            err,
            MatchError::UnknownProfile {
                profile: "nope".into()
            }
        );
        let message = err.to_string();
        assert!(message.contains("fargo.dev/profile=\"nope\""), "{message}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains("remove the label"), "{message}");
    }

    #[test]
    fn forced_profile_must_select_the_namespace() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let forced = labels(&[(PROFILE_LABEL, "payments")]);
        let err = match_pod("web", &forced, &all).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the pod's label fargo.dev/profile=\"payments\" names a FargateProfile that does not \
             select namespace \"web\" (its selectors' namespaces: \"payments-*\"); add a selector \
             for this namespace to the profile, or remove the label"
        );
    }

    #[test]
    fn profiles_being_deleted_take_no_new_pods() {
        let mut all = profiles(PAYMENTS_AND_BATCH);
        for profile in &mut all {
            if profile.metadata.name.as_deref() == Some("batch") {
                profile.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
                );
            }
        }
        let found = match_pod("payments-1", &labels(&[("tier", "backend")]), &all).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("payments")
        );
        let forced = labels(&[(PROFILE_LABEL, "batch")]);
        assert_eq!(
            match_pod("jobs", &forced, &all),
            Err(MatchError::ProfileDeleting {
                profile: "batch".into()
            })
        );
    }

    #[test]
    fn profiles_from_a_reflector_store_match_too() {
        let shared: Vec<std::sync::Arc<FargateProfile>> = profiles(PAYMENTS_AND_BATCH)
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        let found = match_pod("jobs", &BTreeMap::new(), &shared).unwrap();
        assert_eq!(
            found.profile().and_then(|p| p.metadata.name.as_deref()),
            Some("batch")
        );
    }

    #[test]
    fn namespace_is_selected_by_any_selector_pattern() {
        let all = profiles(PAYMENTS_AND_BATCH);
        let batch = &all[1];
        assert!(namespace_is_selected(batch, "jobs"));
        assert!(namespace_is_selected(batch, "payments-1"));
        assert!(!namespace_is_selected(batch, "payments-eu"));
        assert!(!namespace_is_selected(batch, "default"));
    }
}
