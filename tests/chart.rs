//! The Helm chart and the manifest rendered from it stay in step with the code: the chart's CRDs
//! are the generated ones, `deploy/fargo.yaml` is what the chart renders, and what the chart
//! hard-codes (activator pod labels, webhook configurations, object names) is what the binary
//! expects. Needs helm (`HELM`, or `helm` on PATH — `make integration` puts the local cluster's
//! on PATH), no cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::Role;
use serde::Deserialize;
use serde::de::DeserializeOwned;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The checked-in manifest's documents.
fn deploy_documents() -> Vec<serde_yaml::Value> {
    let text = read(&repo().join("deploy/fargo.yaml"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("deploy/fargo.yaml parses"))
        .filter(|value| !value.is_null())
        .collect()
}

/// The object of `kind` named `name` in deploy/fargo.yaml.
fn deployed<K: DeserializeOwned>(kind: &str, name: &str) -> K {
    let found = deploy_documents().into_iter().find(|doc| {
        doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
    });
    let value = found.unwrap_or_else(|| panic!("deploy/fargo.yaml has no {kind} {name}"));
    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

/// Lines around the first difference, to show what changed.
fn first_difference(expected: &str, actual: &str) -> String {
    let (expected, actual): (Vec<_>, Vec<_>) =
        (expected.lines().collect(), actual.lines().collect());
    let line = expected
        .iter()
        .zip(&actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    format!(
        "first difference at line {}:\n  rendered:   {:?}\n  checked in: {:?}",
        line + 1,
        expected.get(line).copied().unwrap_or("<end of file>"),
        actual.get(line).copied().unwrap_or("<end of file>"),
    )
}

#[test]
fn deploy_manifest_is_what_the_chart_renders() {
    let script = repo().join("deploy/render.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "rendering the chart failed; set HELM to the helm binary or run through `make integration`, \
         which puts helm on PATH:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    let checked_in = std::fs::read_to_string(repo().join("deploy/fargo.yaml")).unwrap_or_default();
    assert!(
        rendered == checked_in,
        "deploy/fargo.yaml is out of date with charts/fargo: run `make chart` and commit the result\n{}",
        first_difference(&rendered, &checked_in)
    );
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let chart_dir = repo().join("charts/fargo/crds");
    let mut in_chart: Vec<String> = std::fs::read_dir(&chart_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", chart_dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    in_chart.sort();
    let generated = fargo::api::crds_yaml().expect("CRDs render");
    let mut names: Vec<String> = generated.iter().map(|(name, _)| name.clone()).collect();
    names.sort();
    assert_eq!(
        in_chart, names,
        "charts/fargo/crds/ holds other files than `fargo crds` writes: run `make chart`"
    );
    for (name, yaml) in generated {
        let chart_copy = read(&chart_dir.join(&name));
        assert!(
            chart_copy == yaml,
            "charts/fargo/crds/{name} is out of date with src/api/: run `make chart` and commit the result"
        );
        let checked_in =
            std::fs::read_to_string(repo().join("crds").join(&name)).unwrap_or_default();
        assert!(
            chart_copy == checked_in,
            "charts/fargo/crds/{name} differs from crds/{name}: run `make crds chart` and commit the result"
        );
    }
}

#[test]
fn activator_pods_carry_the_labels_profile_network_policies_admit() {
    let activator: Deployment = deployed("Deployment", "fargo-activator");
    let labels = activator
        .spec
        .and_then(|spec| spec.template.metadata)
        .and_then(|metadata| metadata.labels)
        .unwrap_or_default();
    for (key, value) in fargo::api::ACTIVATOR_POD_LABELS {
        assert_eq!(
            labels.get(key).map(String::as_str),
            Some(value),
            "activator pods must carry {key}={value} (ACTIVATOR_POD_LABELS): function pods admit \
             traffic only from pods with these labels"
        );
    }
}

#[test]
fn chart_webhook_configurations_are_what_the_controller_applies() {
    let config = fargo::webhook::Config {
        addr: "0.0.0.0:8443".parse().expect("an address"),
        url: None,
        service_namespace: "fargo-system".into(),
        service_name: "fargo-webhook".into(),
        cert_dir: None,
        secret_name: "fargo-webhook-tls".into(),
        register: true,
    };
    // Before a controller replaces it, the scope is that of no profile at all.
    let scope = fargo::webhook::admission_scope(&[], &[]);
    let (mutating, validating) = fargo::webhook::configurations(&config, None, &scope);
    let name = fargo::webhook::CONFIGURATION_NAME;
    let chart_mutating: MutatingWebhookConfiguration =
        deployed("MutatingWebhookConfiguration", name);
    let chart_validating: ValidatingWebhookConfiguration =
        deployed("ValidatingWebhookConfiguration", name);
    let hint = "charts/fargo/templates/webhookconfigurations.yaml must match `configurations()` in \
                src/webhook/mod.rs (without caBundle)";
    assert_eq!(chart_mutating.webhooks, mutating.webhooks, "{hint}");
    assert_eq!(chart_validating.webhooks, validating.webhooks, "{hint}");
}

#[test]
fn controller_role_names_the_lease_the_controller_elects_with() {
    let role: Role = deployed("Role", "fargo-controller");
    let lease_names: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .filter(|rule| rule.resources.iter().flatten().any(|r| r == "leases"))
        .flat_map(|rule| rule.resource_names.unwrap_or_default())
        .collect();
    assert_eq!(
        lease_names,
        [fargo::api::LEASE_NAME],
        "the controller's Role must allow the Lease named by fargo::api::LEASE_NAME"
    );
}

/// The environment variables `fargo <command> --help` says the command reads.
fn environment_of(command: &str) -> Vec<String> {
    help_of(command)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}

/// `(name, value)` of the container's environment; `None` for values from a fieldRef.
fn container_env(deployment: &Deployment) -> Vec<(String, Option<String>)> {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .map(|pod| pod.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .map(|var| (var.name, var.value))
        .collect()
}

/// `fargo <command> --help`.
fn help_of(command: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args([command, "--help"])
        .output()
        .unwrap_or_else(|e| panic!("running fargo {command} --help: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn chart_passes_only_flags_the_commands_take() {
    for (deployment, command) in [
        ("fargo-controller", "controller"),
        ("fargo-activator", "activator"),
    ] {
        let deployment: Deployment = deployed("Deployment", deployment);
        let args = deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .map(|pod| pod.containers[0].args.clone().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(args.first().map(String::as_str), Some(command), "{args:?}");
        let help = help_of(command);
        for flag in args.iter().skip(1).filter_map(|arg| arg.split('=').next()) {
            assert!(
                flag.starts_with("--") && help.contains(&format!("{flag} ")),
                "the chart passes {flag}, which `fargo {command}` does not take"
            );
        }
    }
}

#[test]
fn chart_sets_only_environment_variables_the_commands_read() {
    for (deployment, command) in [
        ("fargo-controller", "controller"),
        ("fargo-activator", "activator"),
    ] {
        let read = environment_of(command);
        assert!(!read.is_empty(), "fargo {command} --help lists no env");
        let set = container_env(&deployed("Deployment", deployment));
        for (name, _) in &set {
            assert!(
                name == "RUST_LOG" || read.contains(name),
                "Deployment {deployment} sets {name}, which `fargo {command}` does not read \
                 (it reads {read:?})"
            );
        }
    }
}

#[test]
fn the_activator_knows_its_own_service_and_domain_as_the_controller_does() {
    let service: Service = deployed("Service", "fargo-activator");
    let activator = container_env(&deployed("Deployment", "fargo-activator"));
    let controller = container_env(&deployed("Deployment", "fargo-controller"));
    let value = |env: &[(String, Option<String>)], name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(
        value(&activator, "FARGO_SERVICE_NAME"),
        Some(service.metadata.name.clone()),
        "the activator must know the name of its Service, which no function may claim"
    );
    assert_eq!(
        value(&activator, "FARGO_NAMESPACE"),
        Some(None),
        "the activator's namespace comes from its pod (a fieldRef)"
    );
    assert_eq!(
        value(&activator, "FARGO_DOMAIN"),
        value(&controller, "FARGO_ACTIVATOR_DOMAIN"),
        "controller and activator must agree on the domain whose names no function may claim"
    );
}
