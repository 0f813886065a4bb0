//! Kubernetes quantities and the Fargate size a pod is rounded up to.
//!
//! Checked:
//! - a quantity read as CPU and as memory is the same number: millicores, rounded up, are a
//!   thousand times the bytes, rounded up, and both refuse the same texts;
//! - a decimal suffix (`k`, `m`, `G`, …) means what the matching exponent (`e3`, `e-3`, `e9`, …)
//!   means;
//! - whole numbers written as quantities (`n`, `nm`, `nKi`) read back exactly, or are refused as
//!   too large exactly when they are;
//! - every quantity fargo writes (`cpu_quantity`, `memory_quantity`) reads back as written, and
//!   the sizes it prints for people (`Need`, the capacity annotation) are rounded up, never down;
//! - the Fargate size is the first menu entry covering the need, and a pod is never sized below
//!   any request, limit or pod-level amount it sets, nor the sum of its app containers' asks.

#![no_main]

use fargo::api::profile::FargateProfile;
use fargo::profile::{
    Capacity, Need, SizingError, fargate_capacity, fargate_menu, pod_need, size_for,
};
use fargo::quantity::{QuantityError, parse_bytes, parse_millicpu};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const GIB: u64 = 1 << 30;

const QUANTITIES: [&str; 12] = [
    "500m", "1", "1.5", "0.25", "512Mi", "1Gi", "1.5Gi", "129e6", "1e-3", "100Ei", "-1", "0",
];

/// Decimal SI suffixes and the exponent each stands for.
const SUFFIXES: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Known(u8),
    Any(&'a str),
}

impl<'a> Text<'a> {
    fn pick(&self) -> &'a str {
        match self {
            Text::Known(index) => QUANTITIES[usize::from(*index) % QUANTITIES.len()],
            Text::Any(text) => text,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Resources<'a> {
    cpu_request: Option<Text<'a>>,
    memory_request: Option<Text<'a>>,
    cpu_limit: Option<Text<'a>>,
    memory_limit: Option<Text<'a>>,
}

#[derive(Arbitrary, Debug)]
struct Container<'a> {
    resources: Resources<'a>,
    /// An init container; a sidecar when it also restarts always.
    init: bool,
    sidecar: bool,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    quantity: Text<'a>,
    number: u64,
    need: (u64, u64),
    containers: Vec<Container<'a>>,
    pod_level: Option<Resources<'a>>,
    overhead: Option<Text<'a>>,
}

fuzz_target!(|input: Input<'_>| {
    check_quantity(input.quantity.pick());
    check_whole_numbers(input.number);
    let (millicpu, memory_bytes) = input.need;
    check_written_quantities(Capacity {
        millicpu,
        memory_bytes,
    });
    check_capacity(Need {
        millicpu,
        memory_bytes,
    });
    check_pod(&input);
});

fn check_quantity(text: &str) {
    let quantity = Quantity(text.to_string());
    let (cpu, bytes) = (parse_millicpu(&quantity), parse_bytes(&quantity));
    match (&cpu, &bytes) {
        (Ok(millicpu), Ok(bytes)) => assert_eq!(millicpu.div_ceil(1000), *bytes, "{text:?}"),
        // A thousand times the bytes may not fit where the bytes do.
        (Err(QuantityError::TooLarge(_)), Ok(_)) => {}
        (Err(cpu), Err(bytes)) => assert_eq!(cpu, bytes, "{text:?}"),
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            panic!("{text:?} reads as {cpu:?} millicores but {bytes:?} bytes")
        }
    }

    // For a plain number, each decimal suffix against its exponent, and against CPU.
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    if number_len != text.len() {
        return;
    }
    for (suffix, exponent) in SUFFIXES {
        let with_suffix = parse_bytes(&Quantity(format!("{text}{suffix}")));
        let with_exponent = parse_bytes(&Quantity(format!("{text}e{exponent}")));
        assert_eq!(
            with_suffix.map_err(kind),
            with_exponent.map_err(kind),
            "{text:?} with {suffix:?} and e{exponent}"
        );
    }
    assert_eq!(
        cpu.map_err(kind),
        parse_bytes(&Quantity(format!("{text}k"))).map_err(kind),
        "{text:?} in millicores and {text:?}k in bytes"
    );
}

/// The kind of error, without the text it names.
fn kind(error: QuantityError) -> &'static str {
    match error {
        QuantityError::Invalid(_) => "invalid",
        QuantityError::Negative(_) => "negative",
        QuantityError::TooLarge(_) => "too large",
    }
}

fn check_whole_numbers(n: u64) {
    let read = |text: String, cpu: bool| {
        let quantity = Quantity(text);
        if cpu {
            parse_millicpu(&quantity)
        } else {
            parse_bytes(&quantity)
        }
    };
    let too_large = |text: String| Err(QuantityError::TooLarge(text));
    assert_eq!(read(n.to_string(), false), Ok(n));
    assert_eq!(read(format!("{n}m"), true), Ok(n));
    assert_eq!(
        read(format!("{n}Ki"), false),
        n.checked_mul(1024)
            .ok_or(())
            .or_else(|()| too_large(format!("{n}Ki")))
    );
    assert_eq!(
        read(n.to_string(), true),
        n.checked_mul(1000)
            .ok_or(())
            .or_else(|()| too_large(n.to_string()))
    );
}

/// What fargo writes reads back exactly; what it prints for people is never below the amount.
fn check_written_quantities(capacity: Capacity) {
    assert_eq!(
        parse_millicpu(&capacity.cpu_quantity()),
        Ok(capacity.millicpu),
        "{:?}",
        capacity.cpu_quantity()
    );
    assert_eq!(
        parse_bytes(&capacity.memory_quantity()),
        Ok(capacity.memory_bytes),
        "{:?}",
        capacity.memory_quantity()
    );

    // "{cpu}vCPU {memory}GB", in GiB.
    let annotation = capacity.annotation();
    let (cpu, memory) = annotation
        .strip_suffix("GB")
        .and_then(|rest| rest.split_once("vCPU "))
        .unwrap_or_else(|| panic!("annotation {annotation:?}"));
    assert_eq!(parse_millicpu(&Quantity(cpu.into())), Ok(capacity.millicpu));
    assert_rounded_up(
        memory,
        capacity.memory_bytes,
        GIB.div_ceil(1000),
        &annotation,
    );

    // "{cpu} vCPU and {memory} GiB".
    let need = Need {
        millicpu: capacity.millicpu,
        memory_bytes: capacity.memory_bytes,
    };
    let printed = need.to_string();
    let (cpu, memory) = printed
        .strip_suffix(" GiB")
        .and_then(|rest| rest.split_once(" vCPU and "))
        .unwrap_or_else(|| panic!("need {printed:?}"));
    assert_eq!(parse_millicpu(&Quantity(cpu.into())), Ok(need.millicpu));
    assert_rounded_up(memory, need.memory_bytes, GIB.div_ceil(100), &printed);
}

/// `gib`, printed GiB, is `bytes` rounded up by at most `step`, the printed precision (and the
/// byte that reading it back rounds up).
fn assert_rounded_up(gib: &str, bytes: u64, step: u64, printed: &str) {
    let read = parse_bytes(&Quantity(format!("{gib}Gi")));
    match read {
        Ok(read) => assert!(
            read >= bytes && read - bytes <= step,
            "{printed:?} for {bytes} bytes"
        ),
        // Past 2^64 bytes: only for amounts within a step of the largest.
        Err(QuantityError::TooLarge(_)) => assert!(bytes > u64::MAX - step, "{printed:?}"),
        Err(error) => panic!("{printed:?} does not read back: {error}"),
    }
}

fn check_capacity(need: Need) {
    let menu = fargate_menu();
    let covers = |c: &Capacity| c.millicpu >= need.millicpu && c.memory_bytes >= need.memory_bytes;
    match fargate_capacity(need) {
        Some(capacity) => {
            let position = menu.iter().position(|c| *c == capacity);
            let position = position.expect("the size is on the menu");
            assert!(covers(&capacity), "{capacity:?} does not cover {need:?}");
            assert!(
                !menu[..position].iter().any(covers),
                "a smaller size than {capacity:?} covers {need:?}"
            );
        }
        None => assert!(!menu.iter().any(covers), "no size for {need:?}"),
    }
}

/// `resources` as a container's `resources`, and the amounts among them that read.
fn resources(resources: &Resources<'_>) -> (Value, Vec<Need>) {
    let mut json = Map::new();
    let mut amounts = vec![];
    for (kind, cpu, memory) in [
        (
            "requests",
            &resources.cpu_request,
            &resources.memory_request,
        ),
        ("limits", &resources.cpu_limit, &resources.memory_limit),
    ] {
        let mut list = Map::new();
        let mut amount = Need::default();
        if let Some(cpu) = cpu {
            list.insert("cpu".into(), cpu.pick().into());
            amount.millicpu = parse_millicpu(&Quantity(cpu.pick().into())).unwrap_or(0);
        }
        if let Some(memory) = memory {
            list.insert("memory".into(), memory.pick().into());
            amount.memory_bytes = parse_bytes(&Quantity(memory.pick().into())).unwrap_or(0);
        }
        json.insert(kind.into(), list.into());
        amounts.push(amount);
    }
    (json.into(), amounts)
}

fn check_pod(input: &Input<'_>) {
    let mut containers = vec![];
    let mut init_containers = vec![];
    // Every amount the pod sets, and the asks of its app containers and sidecars.
    let mut amounts = vec![];
    let mut running = Need::default();
    for (index, container) in input.containers.iter().take(6).enumerate() {
        let (json, asks) = resources(&container.resources);
        let mut json = json!({"name": format!("c{index}"), "image": "app", "resources": json});
        let [request, limit] = [asks[0], asks[1]];
        let set = |request: u64, limit: u64, field: &Option<Text<'_>>| {
            if field.is_some() { request } else { limit }
        };
        let ask = Need {
            millicpu: set(
                request.millicpu,
                limit.millicpu,
                &container.resources.cpu_request,
            ),
            memory_bytes: set(
                request.memory_bytes,
                limit.memory_bytes,
                &container.resources.memory_request,
            ),
        };
        if container.init {
            if container.sidecar {
                json["restartPolicy"] = "Always".into();
                running = add(running, ask);
            }
            init_containers.push(json);
            amounts.push(ask);
        } else {
            containers.push(json);
            running = add(running, ask);
            amounts.extend([request, limit]);
        }
    }
    let mut spec = json!({"containers": containers, "initContainers": init_containers});
    if let Some(pod_level) = &input.pod_level {
        let (json, asks) = resources(pod_level);
        spec["resources"] = json;
        amounts.extend(asks);
    }
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("a pod");
    let mut sizing = json!({});
    if let Some(overhead) = &input.overhead {
        sizing["overhead"] = overhead.pick().into();
    }
    let profile: FargateProfile = serde_json::from_value(json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "FargateProfile",
        "metadata": {"name": "team"},
        "spec": {"selectors": [{"namespace": "team-*"}], "sizing": sizing},
    }))
    .expect("a profile");

    let need = match pod_need(pod.spec.as_ref().expect("a spec")) {
        Ok(need) => need,
        Err(error) => {
            assert!(
                matches!(
                    size_for(&profile, &pod),
                    Err(SizingError::ContainerQuantity { .. } | SizingError::PodQuantity { .. })
                        | Err(SizingError::Overhead { .. })
                ),
                "{error}"
            );
            return;
        }
    };
    for amount in amounts.iter().chain([&running]) {
        assert!(
            need.millicpu >= amount.millicpu && need.memory_bytes >= amount.memory_bytes,
            "the need {need:?} is below {amount:?}"
        );
    }
    let Ok(overhead) = parse_bytes(&profile.spec.sizing.overhead) else {
        assert!(matches!(
            size_for(&profile, &pod),
            Err(SizingError::Overhead { .. })
        ));
        return;
    };
    let with_overhead = Need {
        millicpu: need.millicpu,
        memory_bytes: need.memory_bytes.saturating_add(overhead),
    };
    match size_for(&profile, &pod) {
        Ok(Some(capacity)) => assert_eq!(Some(capacity), fargate_capacity(with_overhead)),
        Ok(None) => panic!("a profile with sizing left a pod unsized"),
        Err(SizingError::TooLarge { need, .. }) => {
            assert_eq!(need, with_overhead);
            assert_eq!(fargate_capacity(need), None);
        }
        Err(error) => panic!("{error} for a pod whose need reads"),
    }
}

fn add(a: Need, b: Need) -> Need {
    Need {
        millicpu: a.millicpu.saturating_add(b.millicpu),
        memory_bytes: a.memory_bytes.saturating_add(b.memory_bytes),
    }
}
