//! The Fargate CPU/memory menu and the size a pod is rounded up to.
//!
//! As on EKS, a Fargate pod does not get what it asks for but the smallest entry of a fixed menu
//! that covers it, and it gets that exactly (requests = limits, Guaranteed QoS). The pod's need is
//! what Kubernetes itself would schedule it by — the larger of its biggest init step and its
//! running containers — plus a memory overhead for the pod's own agents.
//!
//! Amounts are integers throughout: CPU in millicores, memory in bytes, parsed exactly and
//! rounded up by [`crate::quantity`], so a pod is never sized below what it asked for.

use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::api::profile::{FargateProfile, SizingPolicy};
use crate::quantity::{QuantityError, parse_bytes, parse_millicpu};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Why a pod cannot be given a Fargate size.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SizingError {
    #[error("{field} of container {container:?} cannot be read: {source}")]
    ContainerQuantity {
        /// Path of the quantity, e.g. `spec.containers[0].resources.requests.cpu`.
        field: String,
        container: String,
        source: QuantityError,
    },

    #[error("{field} of the pod cannot be read: {source}")]
    PodQuantity {
        /// Path of the quantity, e.g. `spec.resources.requests.memory`.
        field: String,
        source: QuantityError,
    },

    #[error(
        "FargateProfile {profile:?} has an unusable spec.sizing.overhead: {source}; fix the \
         profile's overhead (for example 256Mi)"
    )]
    Overhead {
        profile: String,
        source: QuantityError,
    },

    #[error(
        "the pod needs {need} (with the {overhead} memory overhead of FargateProfile \
         {profile:?}), more than the largest Fargate size, {largest}; lower the containers' \
         requests and limits, or set spec.sizing.policy to None on the profile"
    )]
    TooLarge {
        profile: String,
        need: Need,
        overhead: String,
        largest: Capacity,
    },
}

/// What a pod needs: CPU in millicores and memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub millicpu: u64,
    pub memory_bytes: u64,
}

impl Need {
    fn max(self, other: Need) -> Need {
        Need {
            millicpu: self.millicpu.max(other.millicpu),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }

    fn plus(self, other: Need) -> Need {
        Need {
            millicpu: self.millicpu.saturating_add(other.millicpu),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// Printed for people, rounded up: `"2.5 vCPU and 8.25 GiB"`.
impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vCPU and {} GiB",
            decimal(self.millicpu, 1000, 3),
            decimal(self.memory_bytes, GIB, 2)
        )
    }
}

/// One entry of the Fargate menu: what a Fargate pod is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capacity {
    pub millicpu: u64,
    pub memory_bytes: u64,
}

impl Capacity {
    /// The value of the `fargo.dev/capacity-provisioned` annotation, in the format EKS writes to
    /// `CapacityProvisioned` (`"0.25vCPU 0.5GB"`, `"2vCPU 9GB"`): EKS says GB but means GiB.
    pub fn annotation(&self) -> String {
        format!(
            "{}vCPU {}GB",
            decimal(self.millicpu, 1000, 3),
            decimal(self.memory_bytes, GIB, 3)
        )
    }

    /// The CPU as a Kubernetes quantity: whole cores as `"2"`, otherwise millicores (`"250m"`).
    pub fn cpu_quantity(&self) -> Quantity {
        Quantity(if self.millicpu.is_multiple_of(1000) {
            (self.millicpu / 1000).to_string()
        } else {
            format!("{}m", self.millicpu)
        })
    }

    /// The memory as a Kubernetes quantity in the largest exact binary unit (`"9Gi"`, `"512Mi"`).
    pub fn memory_quantity(&self) -> Quantity {
        let bytes = self.memory_bytes;
        Quantity(if bytes.is_multiple_of(GIB) {
            format!("{}Gi", bytes / GIB)
        } else if bytes.is_multiple_of(MIB) {
            format!("{}Mi", bytes / MIB)
        } else {
            bytes.to_string()
        })
    }

    fn covers(&self, need: Need) -> bool {
        self.millicpu >= need.millicpu && self.memory_bytes >= need.memory_bytes
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.annotation())
    }
}

/// The Fargate menu, smallest first (by CPU, then memory).
static MENU: LazyLock<Vec<Capacity>> = LazyLock::new(|| {
    let entry = |millicpu, memory_bytes| Capacity {
        millicpu,
        memory_bytes,
    };
    let mut menu: Vec<Capacity> = [512 * MIB, GIB, 2 * GIB]
        .into_iter()
        .map(|memory| entry(250, memory))
        .collect();
    // (millicores, first GiB, last GiB, step GiB)
    for (millicpu, first, last, step) in [
        (500, 1, 4, 1),
        (1000, 2, 8, 1),
        (2000, 4, 16, 1),
        (4000, 8, 30, 1),
        (8000, 16, 60, 4),
        (16000, 32, 120, 8),
    ] {
        menu.extend(
            (first..=last)
                .step_by(step)
                .map(|gib| entry(millicpu, gib * GIB)),
        );
    }
    menu
});

/// Every size a Fargate pod can have, smallest first (by CPU, then memory).
pub fn fargate_menu() -> &'static [Capacity] {
    &MENU
}

/// The smallest menu entry covering `need` in both CPU and memory; `None` when nothing does.
pub fn fargate_capacity(need: Need) -> Option<Capacity> {
    fargate_menu()
        .iter()
        .copied()
        .find(|entry| entry.covers(need))
}

/// The size a profile gives a pod: `Ok(None)` when the profile leaves sizing to the pod.
pub fn size_for(profile: &FargateProfile, pod: &Pod) -> Result<Option<Capacity>, SizingError> {
    if profile.spec.sizing.policy == SizingPolicy::None {
        return Ok(None);
    }
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    let overhead = &profile.spec.sizing.overhead;
    let overhead_bytes = parse_bytes(overhead).map_err(|source| SizingError::Overhead {
        profile: profile_name.clone(),
        source,
    })?;
    let need = match &pod.spec {
        Some(spec) => pod_need(spec)?,
        None => Need::default(),
    }
    .plus(Need {
        millicpu: 0,
        memory_bytes: overhead_bytes,
    });
    fargate_capacity(need)
        .map(Some)
        .ok_or_else(|| SizingError::TooLarge {
            profile: profile_name,
            need,
            overhead: overhead.0.clone(),
            largest: *fargate_menu().last().expect("the menu is not empty"),
        })
}

/// What a pod needs before overhead, as Kubernetes accounts for it.
///
/// Per resource: the larger of the init phase (the biggest init container, plus the sidecars —
/// init containers with `restartPolicy: Always` — started before it) and the running phase (all
/// app containers plus all sidecars). A container's request counts, or its limit when it has no
/// request (the API server defaults the one to the other). The need also covers any app
/// container's limit, because the API server refuses a pod-level limit below a container's, and
/// any pod-level resources the pod already sets. A pod asking for nothing needs nothing.
pub fn pod_need(spec: &PodSpec) -> Result<Need, SizingError> {
    let mut sidecars = Need::default();
    let mut init_phase = Need::default();
    for (index, container) in spec.init_containers.iter().flatten().enumerate() {
        let asks = container_asks(container, &format!("spec.initContainers[{index}]"))?;
        if container.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.plus(asks);
            init_phase = init_phase.max(sidecars);
        } else {
            init_phase = init_phase.max(sidecars.plus(asks));
        }
    }

    let mut running = sidecars;
    let mut largest_limit = Need::default();
    for (index, container) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{index}]");
        running = running.plus(container_asks(container, &path)?);
        largest_limit = largest_limit.max(container_limits(container, &path)?);
    }

    let pod_level = match &spec.resources {
        Some(resources) => pod_level_asks(resources)?,
        None => Need::default(),
    };
    Ok(init_phase.max(running).max(largest_limit).max(pod_level))
}

/// A container's requests, falling back to its limits resource by resource.
fn container_asks(container: &Container, path: &str) -> Result<Need, SizingError> {
    let read = |kind: &str, resource: &str, quantity: &Quantity| {
        read_quantity(resource, quantity).map_err(|source| SizingError::ContainerQuantity {
            field: format!("{path}.resources.{kind}.{resource}"),
            container: container.name.clone(),
            source,
        })
    };
    let resources = container.resources.as_ref();
    let mut need = Need::default();
    for (resource, amount) in [
        ("cpu", &mut need.millicpu),
        ("memory", &mut need.memory_bytes),
    ] {
        *amount = match (
            lookup(resources.and_then(|r| r.requests.as_ref()), resource),
            lookup(resources.and_then(|r| r.limits.as_ref()), resource),
        ) {
            (Some(request), _) => read("requests", resource, request)?,
            (None, Some(limit)) => read("limits", resource, limit)?,
            (None, None) => 0,
        };
    }
    Ok(need)
}

/// A container's limits (zero where it sets none).
fn container_limits(container: &Container, path: &str) -> Result<Need, SizingError> {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let mut need = Need::default();
    for (resource, amount) in [
        ("cpu", &mut need.millicpu),
        ("memory", &mut need.memory_bytes),
    ] {
        if let Some(limit) = lookup(limits, resource) {
            *amount = read_quantity(resource, limit).map_err(|source| {
                SizingError::ContainerQuantity {
                    field: format!("{path}.resources.limits.{resource}"),
                    container: container.name.clone(),
                    source,
                }
            })?;
        }
    }
    Ok(need)
}

/// Pod-level resources the pod already sets: the larger of request and limit per resource.
fn pod_level_asks(resources: &ResourceRequirements) -> Result<Need, SizingError> {
    let mut need = Need::default();
    for (kind, list) in [
        ("requests", resources.requests.as_ref()),
        ("limits", resources.limits.as_ref()),
    ] {
        for (resource, amount) in [
            ("cpu", &mut need.millicpu),
            ("memory", &mut need.memory_bytes),
        ] {
            if let Some(quantity) = lookup(list, resource) {
                let value = read_quantity(resource, quantity).map_err(|source| {
                    SizingError::PodQuantity {
                        field: format!("spec.resources.{kind}.{resource}"),
                        source,
                    }
                })?;
                *amount = (*amount).max(value);
            }
        }
    }
    Ok(need)
}

fn lookup<'a>(
    list: Option<&'a std::collections::BTreeMap<String, Quantity>>,
    resource: &str,
) -> Option<&'a Quantity> {
    list.and_then(|list| list.get(resource))
}

fn read_quantity(resource: &str, quantity: &Quantity) -> Result<u64, QuantityError> {
    if resource == "cpu" {
        parse_millicpu(quantity)
    } else {
        parse_bytes(quantity)
    }
}

/// `value / unit` as a decimal with at most `places` decimals, rounded up, trailing zeros dropped.
fn decimal(value: u64, unit: u64, places: u32) -> String {
    let scale = 10u128.pow(places);
    let scaled = (u128::from(value) * scale).div_ceil(u128::from(unit));
    let (whole, fraction) = (scaled / scale, scaled % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = places as usize);
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    fn capacity(millicpu: u64, memory_bytes: u64) -> Capacity {
        Capacity {
            millicpu,
            memory_bytes,
        }
    }

    fn need(millicpu: u64, memory_bytes: u64) -> Need {
        Need {
            millicpu,
            memory_bytes,
        }
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("valid pod fixture")
    }

    fn profile(yaml: &str) -> FargateProfile {
        serde_yaml::from_str(yaml).expect("valid profile fixture")
    }

    const DEFAULT_PROFILE: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments}
spec:
  selectors: [{namespace: payments}]
"#;

    #[test]
    fn menu_lists_every_fargate_size_smallest_first() {
        let menu = fargate_menu();
        let gib = |g: u64| g * GIB;
        let row = |cpu: u64| -> Vec<u64> {
            menu.iter()
                .filter(|e| e.millicpu == cpu)
                .map(|e| e.memory_bytes)
                .collect()
        };
        assert_eq!(row(250), vec![512 * MIB, gib(1), gib(2)]);
        assert_eq!(row(500), (1..=4).map(gib).collect::<Vec<_>>());
        assert_eq!(row(1000), (2..=8).map(gib).collect::<Vec<_>>());
        assert_eq!(row(2000), (4..=16).map(gib).collect::<Vec<_>>());
        assert_eq!(row(4000), (8..=30).map(gib).collect::<Vec<_>>());
        assert_eq!(row(8000), (16..=60).step_by(4).map(gib).collect::<Vec<_>>());
        assert_eq!(
            row(16000),
            (32..=120).step_by(8).map(gib).collect::<Vec<_>>()
        );
        assert_eq!(menu.len(), 3 + 4 + 7 + 13 + 23 + 12 + 12);
        assert!(menu.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn every_menu_entry_is_chosen_for_a_need_exactly_equal_to_it() {
        for entry in fargate_menu() {
            assert_eq!(
                fargate_capacity(need(entry.millicpu, entry.memory_bytes)),
                Some(*entry),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_need_just_above_an_entry_moves_to_the_next_fitting_entry() {
        let menu = fargate_menu();
        for (index, entry) in menu.iter().enumerate() {
            let more_memory = need(entry.millicpu, entry.memory_bytes + 1);
            let expected = menu[index + 1..]
                .iter()
                .find(|e| e.millicpu >= entry.millicpu && e.memory_bytes > entry.memory_bytes)
                .copied();
            assert_eq!(
                fargate_capacity(more_memory),
                expected,
                "memory above {entry}"
            );

            let more_cpu = need(entry.millicpu + 1, entry.memory_bytes);
            let expected = menu
                .iter()
                .find(|e| e.millicpu > entry.millicpu && e.memory_bytes >= entry.memory_bytes)
                .copied();
            assert_eq!(fargate_capacity(more_cpu), expected, "CPU above {entry}");
        }
    }

    #[test]
    fn needs_between_rows_round_to_the_next_row_that_fits_both() {
        // 2 GiB fits 0.25 vCPU but 3 GiB does not: the next row with 3 GiB is 0.5 vCPU.
        assert_eq!(
            fargate_capacity(need(100, 3 * GIB)),
            Some(capacity(500, 3 * GIB))
        );
        // 1 vCPU rows stop at 8 GiB.
        assert_eq!(
            fargate_capacity(need(1000, 9 * GIB)),
            Some(capacity(2000, 9 * GIB))
        );
        // 4 vCPU rows stop at 30 GiB; 8 vCPU has 4 GiB steps from 16.
        assert_eq!(
            fargate_capacity(need(4000, 31 * GIB)),
            Some(capacity(8000, 32 * GIB))
        );
        // 2 vCPU, 2 GiB: the 2 vCPU row starts at 4 GiB.
        assert_eq!(
            fargate_capacity(need(2000, 2 * GIB)),
            Some(capacity(2000, 4 * GIB))
        );
        assert_eq!(fargate_capacity(need(0, 0)), Some(capacity(250, 512 * MIB)));
        assert_eq!(fargate_capacity(need(16001, 0)), None);
        assert_eq!(fargate_capacity(need(0, 120 * GIB + 1)), None);
    }

    #[test]
    fn design_example_one_vcpu_eight_gib_becomes_two_vcpu_nine_gib() {
        let pod = pod(r#"
spec:
  containers:
    - name: app
      image: app
      resources: {requests: {cpu: "1", memory: 8Gi}}
"#);
        let size = size_for(&profile(DEFAULT_PROFILE), &pod).unwrap();
        assert_eq!(size, Some(capacity(2000, 9 * GIB)));
        assert_eq!(size.map(|c| c.annotation()).as_deref(), Some("2vCPU 9GB"));
    }

    #[test]
    fn pod_without_requests_gets_the_smallest_size() {
        let pod = pod(r#"
spec:
  containers: [{name: app, image: app}]
"#);
        let size = size_for(&profile(DEFAULT_PROFILE), &pod).unwrap();
        assert_eq!(size, Some(capacity(250, 512 * MIB)));
    }

    #[test]
    fn overhead_alone_can_size_a_pod_without_requests() {
        let profile = profile(
            r#"
metadata: {name: roomy}
spec:
  selectors: [{namespace: "*"}]
  sizing: {overhead: 1Gi}
"#,
        );
        let pod = pod("spec: {containers: [{name: app, image: app}]}");
        assert_eq!(size_for(&profile, &pod).unwrap(), Some(capacity(250, GIB)));
    }

    #[test]
    fn app_containers_are_summed() {
        let spec = pod(r#"
spec:
  containers:
    - {name: a, resources: {requests: {cpu: 300m, memory: 1Gi}}}
    - {name: b, resources: {requests: {cpu: 300m, memory: 1536Mi}}}
"#)
        .spec
        .unwrap();
        assert_eq!(pod_need(&spec), Ok(need(600, 2560 * MIB)));
        assert_eq!(
            fargate_capacity(need(600, 2560 * MIB + 256 * MIB)),
            Some(capacity(1000, 3 * GIB))
        );
    }

    #[test]
    fn largest_init_container_counts_when_it_exceeds_the_app_containers() {
        let spec = pod(r#"
spec:
  initContainers:
    - {name: migrate, resources: {requests: {cpu: "2", memory: 512Mi}}}
    - {name: warm, resources: {requests: {cpu: 500m, memory: 6Gi}}}
  containers:
    - {name: a, resources: {requests: {cpu: "1", memory: 1Gi}}}
    - {name: b, resources: {requests: {cpu: "1", memory: 1Gi}}}
"#)
        .spec
        .unwrap();
        // CPU: max(2, 1 + 1) = 2; memory: max(6Gi, 2Gi) = 6Gi.
        assert_eq!(pod_need(&spec), Ok(need(2000, 6 * GIB)));
    }

    #[test]
    fn sidecar_init_containers_run_alongside_the_app_containers() {
        let spec = pod(r#"
spec:
  initContainers:
    - {name: proxy, restartPolicy: Always, resources: {requests: {cpu: 250m, memory: 256Mi}}}
    - {name: migrate, resources: {requests: {cpu: "1", memory: 1Gi}}}
  containers:
    - {name: app, resources: {requests: {cpu: 500m, memory: 512Mi}}}
"#)
        .spec
        .unwrap();
        // Init phase: proxy + migrate = 1250m / 1280Mi; running: proxy + app = 750m / 768Mi.
        assert_eq!(pod_need(&spec), Ok(need(1250, 1280 * MIB)));
    }

    #[test]
    fn limits_count_for_containers_without_requests() {
        let spec = pod(r#"
spec:
  containers:
    - {name: a, resources: {limits: {cpu: "1", memory: 2Gi}}}
    - {name: b, resources: {requests: {memory: 1Gi}, limits: {cpu: 500m, memory: 1Gi}}}
"#)
        .spec
        .unwrap();
        assert_eq!(pod_need(&spec), Ok(need(1500, 3 * GIB)));
    }

    #[test]
    fn the_size_covers_every_app_container_limit() {
        // The API server refuses a pod-level limit below any container's limit.
        let spec = pod(r#"
spec:
  containers:
    - {name: a, resources: {requests: {cpu: 250m, memory: 256Mi}, limits: {cpu: "3", memory: 4Gi}}}
"#)
        .spec
        .unwrap();
        assert_eq!(pod_need(&spec), Ok(need(3000, 4 * GIB)));
    }

    #[test]
    fn existing_pod_level_resources_are_covered() {
        let spec = pod(r#"
spec:
  resources: {requests: {cpu: "2"}, limits: {memory: 3Gi}}
  containers: [{name: a}]
"#)
        .spec
        .unwrap();
        assert_eq!(pod_need(&spec), Ok(need(2000, 3 * GIB)));
    }

    #[test]
    fn a_pod_beyond_the_largest_size_is_refused_with_its_need_and_the_maximum() {
        let pod = pod(r#"
spec:
  containers:
    - {name: a, resources: {requests: {cpu: "12", memory: 100Gi}}}
    - {name: b, resources: {requests: {cpu: "5", memory: 20Gi}}}
"#);
        let err = size_for(&profile(DEFAULT_PROFILE), &pod).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the pod needs 17 vCPU and 120.25 GiB (with the 256Mi memory overhead of \
             FargateProfile \"payments\"), more than the largest Fargate size, 16vCPU 120GB; \
             lower the containers' requests and limits, or set spec.sizing.policy to None on the \
             profile"
        );
    }

    #[test]
    fn a_garbage_quantity_is_refused_with_its_field_and_container() {
        let pod = pod(r#"
spec:
  containers:
    - {name: ok, resources: {requests: {cpu: 100m}}}
    - {name: app, resources: {requests: {cpu: lots}}}
"#);
        let err = size_for(&profile(DEFAULT_PROFILE), &pod).unwrap_err();
        assert_eq!(
            err,
            SizingError::ContainerQuantity {
                field: "spec.containers[1].resources.requests.cpu".into(),
                container: "app".into(),
                source: QuantityError::Invalid("lots".into()),
            }
        );
        assert!(err.to_string().starts_with(
            "spec.containers[1].resources.requests.cpu of container \"app\" cannot be read: \
             \"lots\" is not a Kubernetes quantity"
        ));
    }

    #[test]
    fn sizing_policy_none_leaves_the_pod_unsized() {
        let profile = profile(
            r#"
metadata: {name: free}
spec:
  selectors: [{namespace: "*"}]
  sizing: {policy: None}
"#,
        );
        let pod = pod(r#"
spec:
  containers: [{name: a, resources: {requests: {cpu: "64"}}}]
"#);
        assert_eq!(size_for(&profile, &pod), Ok(None));
    }

    #[test]
    fn capacity_is_written_as_eks_annotation_and_kubernetes_quantities() {
        let cases = [
            (capacity(250, 512 * MIB), "0.25vCPU 0.5GB", "250m", "512Mi"),
            (capacity(500, GIB), "0.5vCPU 1GB", "500m", "1Gi"),
            (capacity(2000, 9 * GIB), "2vCPU 9GB", "2", "9Gi"),
            (capacity(16000, 120 * GIB), "16vCPU 120GB", "16", "120Gi"),
            (capacity(1000, 1536 * MIB), "1vCPU 1.5GB", "1", "1536Mi"),
            (capacity(1, 1000), "0.001vCPU 0.001GB", "1m", "1000"),
        ];
        for (capacity, annotation, cpu, memory) in cases {
            assert_eq!(capacity.annotation(), annotation);
            assert_eq!(capacity.cpu_quantity(), q(cpu));
            assert_eq!(capacity.memory_quantity(), q(memory));
        }
    }

    #[test]
    fn capacity_quantities_parse_back_to_the_same_amounts() {
        for entry in fargate_menu() {
            assert_eq!(parse_millicpu(&entry.cpu_quantity()), Ok(entry.millicpu));
            assert_eq!(
                parse_bytes(&entry.memory_quantity()),
                Ok(entry.memory_bytes)
            );
        }
    }
}
