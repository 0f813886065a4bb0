//! The CRDs against the real API server of the local cluster: they install, accept the
//! examples, refuse invalid objects with messages that say what to fix, and document themselves.

mod common;

use std::process::Command;

use common::namespaces::with_temp_ns;
use common::wait::eventually;
use common::yaml::{apply_yaml, create_yaml_dry_run, delete_yaml, parse_objects};
use common::{client, install_crds};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;

#[tokio::test]
async fn crds_install_and_become_established() {
    let client = client().await;
    install_crds(&client).await;
}

#[tokio::test]
async fn every_example_is_accepted_by_server_side_apply() {
    let client = client().await;
    install_crds(&client).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let yaml_in = |dir: &std::path::Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        files
    };
    // The top-level examples first: they create the namespaces the per-language ones use.
    let mut files = yaml_in(dir.as_ref());
    let mut languages: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    languages.sort();
    for language in languages {
        files.extend(yaml_in(&language));
    }
    assert!(
        files.len() >= 6,
        "examples/ holds at least the two DESIGN.md examples and one function per language"
    );
    // Namespaces the examples create must exist before their objects, so apply for real
    // (namespace first) rather than as a dry run; the examples are idempotent.
    let mut applied = vec![];
    let mut refused = None;
    for file in files {
        let yaml = std::fs::read_to_string(&file).expect("readable example");
        let result = apply_yaml(&client, &yaml, false).await;
        applied.push(yaml);
        if let Err(error) = result {
            refused = Some(format!("{} was refused: {error}", file.display()));
            break;
        }
    }
    // Nothing stays behind for the test binaries that run next: their controllers would
    // reconcile the examples (the profile's namespaces, the functions' schedules).
    for yaml in applied.iter().rev() {
        delete_yaml(&client, yaml)
            .await
            .unwrap_or_else(|e| panic!("deleting an example: {e}"));
    }
    // Gone before the next run applies them again into a namespace still terminating.
    let namespaces: Vec<String> = applied
        .iter()
        .flat_map(|yaml| parse_objects(yaml))
        .filter(|object| object.types.as_ref().is_some_and(|t| t.kind == "Namespace"))
        .map(|object| object.name_any())
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    eventually(120, "the examples' namespaces to be gone", || async {
        for name in &namespaces {
            api.get_opt(name).await.ok()?.is_none().then_some(())?;
        }
        Some(())
    })
    .await;
    if let Some(refused) = refused {
        panic!("{refused}");
    }
}

const VALID_PROFILE: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: NAME}
spec:
  selectors: [{namespace: "team-*", labels: {tier: backend}}]
"#;

const VALID_FUNCTION: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: NAME, namespace: TEST_NS}
spec:
  image: registry.example/echo:1
"#;

const VALID_HANDLER: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: hello, namespace: TEST_NS}
spec:
  runtime: python3.11
  handler: app.handler
  code: {inline: {app.py: "def handler(event, context):\n    return event\n"}}
  layers: [{configMap: {name: shared-libs}}, {s3: {bucket: layers, key: numpy.zip}}]
  ephemeralStorage: 1Gi
  serviceAccountName: hello-role
  imagePullPolicy: IfNotPresent
"#;

/// One invalid object per validation rule: (what is wrong, the object's spec, a part of the
/// API server's message).
fn invalid_objects() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    // (rule, kind, spec YAML, expected message part)
    vec![
        (
            "no selectors",
            "profile",
            "selectors: []",
            "between 1 and 5 selectors",
        ),
        (
            "six selectors",
            "profile",
            "selectors: [{namespace: a}, {namespace: b}, {namespace: c}, {namespace: d}, {namespace: e}, {namespace: f}]",
            "must have at most 5 items",
        ),
        (
            "empty namespace",
            "profile",
            "selectors: [{namespace: ''}]",
            "selector namespace must not be empty",
        ),
        (
            "namespace not a name",
            "profile",
            "selectors: [{namespace: 'Payments_*'}]",
            "selector namespace must be a namespace name",
        ),
        (
            "invalid label key",
            "profile",
            "selectors: [{namespace: a, labels: {'bad key!': x}}]",
            "selector label keys must be valid label keys",
        ),
        (
            "unknown sizing policy",
            "profile",
            "selectors: [{namespace: a}]\nsizing: {policy: Turbo}",
            r#"supported values: "Fargate", "None""#,
        ),
        (
            "unknown pod security level",
            "profile",
            "selectors: [{namespace: a}]\npodSecurity: Privileged",
            r#"supported values: "Baseline", "Restricted""#,
        ),
        (
            "negative overhead",
            "profile",
            "selectors: [{namespace: a}]\nsizing: {overhead: -1Gi}",
            "sizing.overhead must be a non-negative quantity",
        ),
        (
            "invalid cidr",
            "profile",
            "selectors: [{namespace: a}]\nnetwork: {egress: [{cidr: 10.0.0.0/33}]}",
            "cidr must be a CIDR block",
        ),
        (
            "except outside its cidr",
            "profile",
            "selectors: [{namespace: a}]\nnetwork: {egress: [{cidr: 10.20.0.0/16, except: [10.30.0.0/24]}]}",
            "every except entry must lie inside the rule's cidr",
        ),
        (
            "port out of range",
            "profile",
            "selectors: [{namespace: a}]\nnetwork: {egress: [{cidr: 10.0.0.0/8, ports: [{port: 70000}]}]}",
            "port must be between 1 and 65535",
        ),
        (
            "unknown protocol",
            "profile",
            "selectors: [{namespace: a}]\nnetwork: {egress: [{cidr: 10.0.0.0/8, ports: [{port: 53, protocol: ICMP}]}]}",
            r#"supported values: "TCP", "UDP", "SCTP""#,
        ),
        (
            "egress with cidr and selector",
            "profile",
            "selectors: [{namespace: a}]\nnetwork: {egress: [{cidr: 10.0.0.0/8, podSelector: {}}]}",
            "either cidr or namespaceSelector/podSelector",
        ),
        (
            "empty image",
            "function",
            "image: ''",
            "image must not be empty",
        ),
        (
            "port zero",
            "function",
            "image: x\nport: 0",
            "port must be between 1 and 65535",
        ),
        (
            "too little memory",
            "function",
            "image: x\nmemory: 64Mi",
            "memory must be a quantity between 128Mi and 10Gi",
        ),
        (
            "too much memory",
            "function",
            "image: x\nmemory: 20Gi",
            "memory must be a quantity between 128Mi and 10Gi",
        ),
        (
            "timeout too long",
            "function",
            "image: x\ntimeout: 901s",
            "timeout must be a duration between 1s and 900s",
        ),
        (
            "timeout too short",
            "function",
            "image: x\ntimeout: 500ms",
            "timeout must be a duration between 1s and 900s",
        ),
        (
            "idle timeout too short",
            "function",
            "image: x\nscale: {idleTimeout: 100ms}",
            "scale.idleTimeout must be a duration of at least 1s",
        ),
        (
            "min above max",
            "function",
            "image: x\nscale: {min: 3, max: 2}",
            "scale.min must not exceed scale.max",
        ),
        (
            "initial above max",
            "function",
            "image: x\nscale: {max: 3, initial: 5}",
            "scale.initial must lie between scale.min and scale.max",
        ),
        (
            "negative perInstance",
            "function",
            "image: x\nconcurrency: {perInstance: -1}",
            "concurrency.perInstance must be 0 (unlimited) or more",
        ),
        (
            "target above perInstance",
            "function",
            "image: x\nconcurrency: {perInstance: 10, target: 20}",
            "concurrency.target must not exceed concurrency.perInstance",
        ),
        (
            "duplicate schedule names",
            "function",
            "image: x\ntriggers: {schedules: [{name: a, cron: '* * * * *'}, {name: a, cron: '0 * * * *'}]}",
            "Duplicate value",
        ),
        (
            "upper-case host",
            "function",
            "image: x\ntriggers: {http: {hosts: [Shop.example.com]}}",
            "triggers.http.hosts must be lower-case DNS names",
        ),
        (
            "host with port",
            "function",
            "image: x\ntriggers: {http: {hosts: ['shop.example.com:80']}}",
            "triggers.http.hosts must be lower-case DNS names",
        ),
        (
            "wildcard host",
            "function",
            "image: x\ntriggers: {http: {hosts: ['*.example.com']}}",
            "triggers.http.hosts must be lower-case DNS names",
        ),
        (
            "IP address as host",
            "function",
            "image: x\ntriggers: {http: {hosts: [10.96.0.10]}}",
            "triggers.http.hosts must be DNS names, not IP addresses",
        ),
        (
            "image and runtime",
            "function",
            "image: x\nruntime: python3.11\nhandler: app.handler\ncode: {inline: {app.py: ''}}",
            "set either image (a container image) or runtime with handler and code",
        ),
        (
            "neither image nor runtime",
            "function",
            "port: 8080",
            "set either image (a container image) or runtime with handler and code",
        ),
        (
            "runtime without code",
            "function",
            "runtime: python3.11\nhandler: app.handler",
            "runtime and code go together",
        ),
        (
            "runtime without handler",
            "function",
            "runtime: nodejs20.x\ncode: {inline: {index.mjs: ''}}",
            "handler is required with this runtime",
        ),
        (
            "unknown runtime",
            "function",
            "runtime: python2.7\nhandler: app.handler\ncode: {inline: {app.py: ''}}",
            r#"supported values: "python3.11", "nodejs20.x", "java17", "provided""#,
        ),
        (
            "two code sources",
            "function",
            "runtime: provided\ncode: {inline: {bootstrap: ''}, s3: {bucket: code, key: f.zip}}",
            "code takes exactly one of inline, configMap or s3",
        ),
        (
            "inline file in a directory",
            "function",
            "runtime: python3.11\nhandler: app.handler\ncode: {inline: {../app.py: ''}}",
            "inline file names are plain names",
        ),
        (
            "package without image",
            "function",
            "runtime: python3.11\nhandler: app.handler\ncode: {inline: {app.py: ''}}\npackage: Image",
            "package applies to image functions",
        ),
        (
            "standby with a command",
            "function",
            "image: x\ncommand: [/server]\nscale: {standby: true}",
            "scale.standby applies to image functions that serve HTTP",
        ),
        (
            "standby for handler code",
            "function",
            "runtime: python3.11\nhandler: app.handler\ncode: {inline: {app.py: ''}}\nscale: {standby: true}",
            "scale.standby applies to image functions that serve HTTP",
        ),
        (
            "standby for a Lambda image",
            "function",
            "image: x\npackage: Image\nscale: {standby: true}",
            "scale.standby applies to image functions that serve HTTP",
        ),
        (
            "layers on an image",
            "function",
            "image: x\nlayers: [{inline: {a.py: ''}}]",
            "layers apply to handler code",
        ),
        (
            "tiny ephemeral storage",
            "function",
            "image: x\nephemeralStorage: 100Mi",
            "ephemeralStorage must be a quantity between 512Mi and 10Gi",
        ),
        (
            "bad bucket",
            "function",
            "runtime: provided\ncode: {s3: {bucket: Photos_1, key: f.zip}}",
            "s3.bucket must be an S3 bucket name",
        ),
        (
            "seventeen hosts",
            "function",
            "image: x\ntriggers: {http: {hosts: [a.x, b.x, c.x, d.x, e.x, f.x, g.x, h.x, i.x, j.x, k.x, l.x, m.x, n.x, o.x, p.x, q.x]}}",
            "must have at most 16 items",
        ),
    ]
}

fn object_yaml(kind: &str, spec: &str, namespace: &str) -> String {
    let header = match kind {
        "profile" => {
            "apiVersion: fargo.dev/v1alpha1\nkind: FargateProfile\nmetadata: {name: invalid}\n"
        }
        "function" => {
            "apiVersion: fargo.dev/v1alpha1\nkind: ServerlessFunction\nmetadata: {name: invalid, namespace: TEST_NS}\n"
        }
        other => panic!("unknown kind {other}"),
    };
    let indented: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    format!("{header}spec:\n{indented}").replace("TEST_NS", namespace)
}

#[tokio::test]
async fn invalid_objects_are_refused_with_a_message_that_says_what_to_fix() {
    let client = client().await;
    install_crds(&client).await;
    with_temp_ns(&client, |client, ns| async move {
        // The valid forms of both objects pass, so each refusal below is the rule's doing.
        apply_yaml(&client, &VALID_PROFILE.replace("NAME", "valid"), true)
            .await
            .expect("a valid profile is accepted");
        apply_yaml(
            &client,
            &VALID_FUNCTION
                .replace("NAME", "valid")
                .replace("TEST_NS", &ns),
            true,
        )
        .await
        .expect("a valid function is accepted");
        apply_yaml(&client, &VALID_HANDLER.replace("TEST_NS", &ns), true)
            .await
            .expect("a valid handler function is accepted");

        let cases = invalid_objects();
        assert!(cases.len() >= 14);
        let mut failures = vec![];
        for (rule, kind, spec, expected) in cases {
            let yaml = object_yaml(kind, spec, &ns);
            // POST, as `kubectl create` does: the refusals are those of validation, not of
            // server-side apply's merge.
            match create_yaml_dry_run(&client, &yaml).await {
                Ok(()) => failures.push(format!("{rule}: accepted\n{yaml}")),
                Err(kube::Error::Api(status))
                    if status.code == 422 && status.message.contains(expected) => {}
                Err(other) => failures.push(format!(
                    "{rule}: expected 422 with {expected:?}, got {other}"
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    })
    .await;
}

#[tokio::test]
async fn defaults_are_filled_in_by_the_api_server() {
    let client = client().await;
    install_crds(&client).await;
    with_temp_ns(&client, |client, ns| async move {
        let yaml = VALID_FUNCTION
            .replace("NAME", "defaults")
            .replace("TEST_NS", &ns);
        apply_yaml(&client, &yaml, false).await.expect("applied");
        let functions: kube::Api<fargo::api::ServerlessFunction> =
            kube::Api::namespaced(client, &ns);
        let function = functions.get("defaults").await.expect("stored");
        assert_eq!(function.spec.port, 8080);
        assert_eq!(function.spec.memory.0, "128Mi");
        assert_eq!(
            function.spec.timeout,
            "60s".parse::<kube::core::Duration>().unwrap()
        );
        assert_eq!(function.spec.scale.min, 0);
        assert!(function.spec.triggers.http.enabled);
    })
    .await;
}

#[tokio::test]
async fn kubectl_explain_prints_the_field_docs() {
    let client = client().await;
    install_crds(&client).await;
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    // The API server publishes a new CRD's OpenAPI a moment after it is Established.
    let mut last = String::new();
    for _ in 0..30 {
        let output = Command::new(&kubectl)
            .args(["explain", "fn.spec.scale"])
            .output()
            .unwrap_or_else(|e| panic!("running {kubectl}: {e}"));
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() && last.contains("idleTimeout") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    for expected in [
        "Bounds of the autoscaler",
        "idleTimeout",
        "Time without requests after which the function scales to zero",
        "max",
        "Most instances; unset means no limit",
    ] {
        assert!(
            last.contains(expected),
            "`kubectl explain fn.spec.scale` lacks {expected:?}:\n{last}"
        );
    }
}
