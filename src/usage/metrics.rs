//! The metered totals as Prometheus counters, read at each scrape from the `status.usage` of the
//! objects in the controller's caches.
//!
//! The counters are the status, not a count of this process: any replica, after any restart,
//! reports the same figures, and they match `fargo usage --output json`. With the registry
//! prefix `fargo` and the sub-registry `usage`:
//!
//! - `fargo_usage_function_{invocations,gb_seconds,inits,init_gb_seconds,provisioned_gb_seconds}_total`
//!   with labels `namespace` and `function`;
//! - `fargo_usage_profile_{pods,vcpu_seconds,gb_seconds}_total` with labels `profile` and
//!   `namespace` (the pods' namespace).
//!
//! Labels are bounded by objects: one series per function, one per namespace under a profile.

use std::sync::{Arc, PoisonError, RwLock};

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::usage::UsageAmounts;
use crate::api::{FargateProfile, ServerlessFunction};
use crate::caches::FunctionStore;

/// Emits the usage counters from the caches it is given. Cheap to clone: clones share the
/// caches, so the one registered before the controller has caches is the one given them.
#[derive(Clone, Debug, Default)]
pub struct UsageCollector {
    stores: Arc<RwLock<Stores>>,
}

#[derive(Debug, Default)]
struct Stores {
    functions: Option<FunctionStore>,
    profiles: Option<Store<FargateProfile>>,
}

impl UsageCollector {
    /// An empty collector, registered on `registry`: give it the sub-registry `usage` of the
    /// `fargo` registry, `UsageCollector::register(registry.sub_registry_with_prefix("usage"))`.
    /// Until it has caches it emits nothing.
    pub fn register(registry: &mut Registry) -> Self {
        let collector = Self::default();
        registry.register_collector(Box::new(collector.clone()));
        collector
    }

    /// The functions whose usage is reported from now on.
    pub fn set_functions(&self, store: FunctionStore) {
        self.write().functions = Some(store);
    }

    /// The profiles whose usage is reported from now on.
    pub fn set_profiles(&self, store: Store<FargateProfile>) {
        self.write().profiles = Some(store);
    }

    // A panic elsewhere while holding the lock leaves two `Option`s, always whole: carry on.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Stores> {
        self.stores.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for UsageCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Snapshots, so that the lock is not held while encoding.
        let (functions, profiles) = {
            let stores = self.stores.read().unwrap_or_else(PoisonError::into_inner);
            (
                stores
                    .functions
                    .as_ref()
                    .map(Store::state)
                    .unwrap_or_default(),
                stores
                    .profiles
                    .as_ref()
                    .map(Store::state)
                    .unwrap_or_default(),
            )
        };
        encode_usage(
            functions.iter().filter_map(|guard| guard.0.as_ref().ok()),
            profiles.iter().map(Arc::as_ref),
            encoder,
        )
    }
}

/// A counter: its name in the `usage` registry, its help, and the amount it reads.
type Counter = (&'static str, &'static str, fn(&UsageAmounts) -> Value);

const FUNCTION_COUNTERS: [Counter; 5] = [
    (
        "function_invocations",
        "Invocations that reached an instance of the function, since metering began",
        |a| Value::Count(a.invocations),
    ),
    (
        "function_gb_seconds",
        "Memory × billed duration of the function's invocations, in GB-seconds",
        |a| Value::Amount(a.gb_seconds),
    ),
    (
        "function_inits",
        "Runtime initializations of the function (handler functions)",
        |a| Value::Count(a.inits),
    ),
    (
        "function_init_gb_seconds",
        "Memory × init duration of the function's runtimes, in GB-seconds",
        |a| Value::Amount(a.init_gb_seconds),
    ),
    (
        "function_provisioned_gb_seconds",
        "Memory × time of the warm instances scale.min keeps, in GB-seconds",
        |a| Value::Amount(a.provisioned_gb_seconds),
    ),
];

const PROFILE_COUNTERS: [Counter; 3] = [
    (
        "profile_pods",
        "Pods of the namespace that started under the profile, since metering began",
        |a| Value::Count(a.pods),
    ),
    (
        "profile_vcpu_seconds",
        "Provisioned vCPUs × billed time of the namespace's pods under the profile",
        |a| Value::Amount(a.vcpu_seconds),
    ),
    (
        "profile_gb_seconds",
        "Provisioned memory × billed time of the namespace's pods under the profile, in GB-seconds",
        |a| Value::Amount(a.gb_seconds),
    ),
];

#[derive(Clone, Copy)]
enum Value {
    Count(u64),
    Amount(f64),
}

/// Encodes the usage counters of `functions` and `profiles`: one family per amount, one series
/// per function and per namespace under a profile. Objects without usage have no series.
pub fn encode_usage<'a>(
    functions: impl IntoIterator<Item = &'a ServerlessFunction>,
    profiles: impl IntoIterator<Item = &'a FargateProfile>,
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let functions: Vec<_> = functions
        .into_iter()
        .filter_map(|function| {
            let usage = function.status.as_ref()?.usage.as_ref()?;
            let namespace = function.metadata.namespace.as_deref()?;
            let name = function.metadata.name.as_deref()?;
            Some((
                [("namespace", namespace), ("function", name)],
                &usage.history.total,
            ))
        })
        .collect();
    let profiles: Vec<_> = profiles
        .into_iter()
        .filter_map(|profile| {
            let usage = profile.status.as_ref()?.usage.as_ref()?;
            let name = profile.metadata.name.as_deref()?;
            Some((name, usage))
        })
        .flat_map(|(name, usage)| {
            usage.namespaces.iter().map(move |account| {
                (
                    [("profile", name), ("namespace", account.namespace.as_str())],
                    &account.history.total,
                )
            })
        })
        .collect();

    for (name, help, value) in FUNCTION_COUNTERS {
        encode_family(&mut encoder, name, help, &functions, value)?;
    }
    for (name, help, value) in PROFILE_COUNTERS {
        encode_family(&mut encoder, name, help, &profiles, value)?;
    }
    Ok(())
}

fn encode_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, &UsageAmounts)],
    value: fn(&UsageAmounts) -> Value,
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, amounts) in series {
        let mut metric = family.encode_family(labels)?;
        match value(amounts) {
            Value::Count(count) => encode_counter(&mut metric, count)?,
            // A counter never goes negative or NaN; a status edited by hand could.
            Value::Amount(amount) if amount.is_finite() && amount >= 0.0 => {
                encode_counter(&mut metric, amount)?
            }
            Value::Amount(_) => {}
        }
    }
    Ok(())
}

fn encode_counter(
    metric: &mut prometheus_client::encoding::MetricEncoder,
    value: impl EncodeCounterValue,
) -> Result<(), std::fmt::Error> {
    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::DeserializeGuard;
    use kube::runtime::{reflector, watcher};

    use super::*;
    use crate::api::usage::{FunctionUsage, NamespaceUsage, ProfileUsage, UsageHistory};
    use crate::api::{FargateProfileStatus, ServerlessFunctionStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn history(amounts: UsageAmounts) -> UsageHistory {
        let mut history = UsageHistory::default();
        history.add(at("2026-11-28T10:00:00Z"), &amounts);
        history
    }

    fn function(namespace: &str, name: &str, amounts: Option<UsageAmounts>) -> ServerlessFunction {
        let spec = serde_json::from_value(serde_json::json!({"image": "example.com/app:1"}))
            .expect("a function spec");
        let mut function = ServerlessFunction::new(name, spec);
        function.metadata.namespace = Some(namespace.to_string());
        function.status = Some(ServerlessFunctionStatus {
            usage: amounts.map(|amounts| FunctionUsage {
                since: Time(at("2026-11-01T00:00:00Z")),
                updated: Time(at("2026-11-28T10:00:00Z")),
                history: history(amounts),
                activators: vec![],
            }),
            ..Default::default()
        });
        function
    }

    fn profile(name: &str, namespaces: &[(&str, UsageAmounts)]) -> FargateProfile {
        let spec = serde_json::from_value(serde_json::json!({"selectors": [{"namespace": "*"}]}))
            .expect("a profile spec");
        let mut profile = FargateProfile::new(name, spec);
        let mut total = UsageAmounts::default();
        namespaces
            .iter()
            .for_each(|(_, amounts)| total.add(amounts));
        profile.status = Some(FargateProfileStatus {
            usage: Some(ProfileUsage {
                since: Time(at("2026-11-01T00:00:00Z")),
                updated: Time(at("2026-11-28T10:00:00Z")),
                total,
                namespaces: namespaces
                    .iter()
                    .map(|(namespace, amounts)| NamespaceUsage {
                        namespace: namespace.to_string(),
                        history: history(*amounts),
                    })
                    .collect(),
            }),
            ..Default::default()
        });
        profile
    }

    /// A collector over plain objects, to encode [`encode_usage`] through a registry.
    #[derive(Debug)]
    struct Plain(Vec<ServerlessFunction>, Vec<FargateProfile>);

    impl Collector for Plain {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_usage(&self.0, &self.1, encoder)
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
        text
    }

    fn sample() -> (Vec<ServerlessFunction>, Vec<FargateProfile>) {
        let functions = vec![
            function(
                "media",
                "thumbnail",
                Some(UsageAmounts {
                    invocations: 12,
                    gb_seconds: 1.5,
                    inits: 1,
                    init_gb_seconds: 0.25,
                    provisioned_gb_seconds: 60.0,
                    ..Default::default()
                }),
            ),
            function("media", "idle", None),
        ];
        let pods = UsageAmounts {
            pods: 3,
            vcpu_seconds: 180.0,
            gb_seconds: 360.0,
            ..Default::default()
        };
        (functions, vec![profile("batch", &[("media", pods)])])
    }

    #[test]
    fn counters_carry_the_status_totals_under_fargo_usage() {
        let (functions, profiles) = sample();
        let mut registry = Registry::with_prefix("fargo");
        registry
            .sub_registry_with_prefix("usage")
            .register_collector(Box::new(Plain(functions, profiles)));
        let text = encode(&registry);
        let function = r#"{namespace="media",function="thumbnail"}"#;
        let profile = r#"{profile="batch",namespace="media"}"#;
        for line in [
            format!("fargo_usage_function_invocations_total{function} 12"),
            format!("fargo_usage_function_gb_seconds_total{function} 1.5"),
            format!("fargo_usage_function_inits_total{function} 1"),
            format!("fargo_usage_function_init_gb_seconds_total{function} 0.25"),
            format!("fargo_usage_function_provisioned_gb_seconds_total{function} 60.0"),
            format!("fargo_usage_profile_pods_total{profile} 3"),
            format!("fargo_usage_profile_vcpu_seconds_total{profile} 180.0"),
            format!("fargo_usage_profile_gb_seconds_total{profile} 360.0"),
            "# TYPE fargo_usage_function_invocations counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("idle"), "no series without usage:\n{text}");
    }

    #[test]
    fn nothing_is_emitted_before_the_collector_has_caches() {
        let mut registry = Registry::with_prefix("fargo");
        UsageCollector::register(registry.sub_registry_with_prefix("usage"));
        assert!(!encode(&registry).contains("fargo_usage"));
    }

    #[test]
    fn the_registered_collector_reads_the_stores_given_later() {
        let mut registry = Registry::with_prefix("fargo");
        let collector = UsageCollector::register(registry.sub_registry_with_prefix("usage"));
        let (functions, profiles) = sample();
        let (function_store, mut function_writer) =
            reflector::store::<DeserializeGuard<ServerlessFunction>>();
        let (profile_store, mut profile_writer) = reflector::store::<FargateProfile>();
        for function in functions {
            function_writer
                .apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(function))));
        }
        for profile in profiles {
            profile_writer.apply_watcher_event(&watcher::Event::Apply(profile));
        }
        collector.clone().set_functions(function_store);
        collector.set_profiles(profile_store);
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"fargo_usage_function_invocations_total{namespace="media",function="thumbnail"} 12"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"fargo_usage_profile_pods_total{profile="batch",namespace="media"} 3"#),
            "{text}"
        );
    }
}
