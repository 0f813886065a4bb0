//! Namespaces for the tests. A test gets its own from [`with_temp_namespaces`] (or
//! [`with_temp_ns`] for one): labelled [`TEST_LABEL`] with the test's name, and deleted when the
//! test ends however it ends, after printing what they held if it failed. Namespaces that are no
//! one test's (fargo-system, which the out-of-cluster controllers share; the benchmarks') come
//! from [`ensure_namespace`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

use super::report::namespace_report;

/// Labels every namespace a test makes, with the test's name as the value: a namespace left
/// behind (a test run killed before its cleanup) says which test made it.
pub const TEST_LABEL: &str = "fargo.dev/test";

/// A fresh namespace name, unique within this test run.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:x}-{}",
        std::process::id() % 0xfff,
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `test` with a new, uniquely named namespace; see [`with_temp_namespaces`].
pub async fn with_temp_ns<F, Fut>(client: &Client, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    with_temp_namespaces(client, |client, namespaces| async move {
        let namespace = namespaces.create_unique("fargo-test").await;
        test(client, namespace).await;
    })
    .await;
}

/// Runs `test`, which makes its namespaces through the [`TempNamespaces`] it is given, then
/// deletes every one of them, also when `test` panics; if it did, first prints what they hold
/// (pods, events, fargo's objects), then resumes the panic.
pub async fn with_temp_namespaces<F, Fut>(client: &Client, test: F)
where
    F: FnOnce(Client, TempNamespaces) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespaces = TempNamespaces {
        client: client.clone(),
        test: std::thread::current().name().unwrap_or_default().into(),
        created: Arc::default(),
    };
    let outcome = AssertUnwindSafe(test(client.clone(), namespaces.clone()))
        .catch_unwind()
        .await;
    let created = namespaces.created();
    if outcome.is_err() && !created.is_empty() {
        eprintln!(
            "---- namespaces of the failed test {} ----\n{}",
            namespaces.test,
            namespace_report(client, &created).await
        );
    }
    let api: Api<Namespace> = Api::all(client.clone());
    for name in &created {
        if let Err(error) = api.delete(name, &DeleteParams::background()).await {
            eprintln!("deleting namespace {name}: {error}");
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The namespaces one test has made so far, given to it by [`with_temp_namespaces`], which
/// deletes them all when the test ends.
#[derive(Clone)]
pub struct TempNamespaces {
    client: Client,
    /// libtest runs each test on a thread named after it.
    test: String,
    created: Arc<Mutex<Vec<String>>>,
}

impl TempNamespaces {
    /// Creates a namespace with a fresh name that starts with `prefix`, and returns the name.
    pub async fn create_unique(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.create(&name).await;
        name
    }

    /// Creates namespace `name`, which the test chose (e.g. for a profile to select it by name)
    /// and must have made unique, e.g. from [`unique_name`]. It can come at any point of the
    /// test, e.g. after a profile that should pick it up.
    pub async fn create(&self, name: &str) {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some([(TEST_LABEL.to_string(), self.label_value())].into());
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.into());
    }

    fn created(&self) -> Vec<String> {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The test's name as a label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and
    /// ending with a letter or digit.
    fn label_value(&self) -> String {
        let value: String = self
            .test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '.'
                }
            })
            .take(63)
            .collect();
        let value = value.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if value.is_empty() {
            "unnamed".into()
        } else {
            value.into()
        }
    }
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating namespace {name}: {error}"),
    }
}
