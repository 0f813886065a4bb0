//! Who may call: AWS Signature Version 4 ([`crate::sigv4`]) checked against the access keys of
//! one Secret, for the Lambda API (unless `--invoke-auth None`) and for the HTTP requests of
//! functions with `triggers.http.auth: AWS_IAM`, whatever the activator's setting.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::http::request::Parts;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::oneshot;

use super::function_state::FunctionState;
use super::lambda_api::{ApiError, MAX_SYNC_PAYLOAD, read_payload};
use super::storage::StorageTokens;
use crate::sigv4::{self, AccessKeys, Caller, RequestParts};

/// Whether the Lambda API asks for signatures (`fargo activator --invoke-auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InvokeAuth {
    /// Requests must be signed (SigV4, service `lambda`) with a key from the keys Secret.
    #[default]
    #[value(name = "AWS_IAM")]
    AwsIam,
    /// Anyone who reaches the activator may call the Lambda API.
    #[value(name = "None")]
    None,
}

/// Headers of a signature, dropped before a signed request goes to the function: the key id
/// and signature are the caller's business with fargo, not the function's.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

pub struct Authenticator {
    invoke_api: InvokeAuth,
    /// When set, signatures must be for this region.
    region: Option<String>,
    keys: RwLock<Arc<AccessKeys>>,
}

impl Default for Authenticator {
    /// No signatures asked of the Lambda API, and no keys.
    fn default() -> Self {
        Self::new(InvokeAuth::None, None)
    }
}

impl Authenticator {
    pub fn new(invoke_api: InvokeAuth, region: Option<String>) -> Self {
        Self {
            invoke_api,
            region,
            keys: RwLock::new(Arc::new(AccessKeys::empty())),
        }
    }

    pub fn set_keys(&self, keys: AccessKeys) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    fn keys(&self) -> Arc<AccessKeys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn verify(&self, parts: &Parts, payload: &[u8]) -> Result<Caller, ApiError> {
        let request = RequestParts {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
        };
        sigv4::verify(
            &self.keys(),
            &request,
            &sigv4::sha256_hex(payload),
            jiff::Timestamp::now(),
            self.region.as_deref(),
        )
        .map_err(|error| {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::FORBIDDEN);
            ApiError::new(status, error.aws_type(), error.to_string())
        })
    }

    /// The caller of a Lambda API request, or `None` when the API asks for no signature.
    pub fn invoke_api(&self, parts: &Parts, payload: &[u8]) -> Result<Option<Caller>, ApiError> {
        match self.invoke_api {
            InvokeAuth::None => Ok(None),
            InvokeAuth::AwsIam => self.verify(parts, payload).map(Some),
        }
    }

    /// Checks a request to a function with `triggers.http.auth: AWS_IAM`: signed by a key that
    /// may invoke the function's namespace. Returns the body it read (at most the Invoke API's
    /// synchronous limit) and drops the signature's headers.
    pub async fn function_url(
        &self,
        function: &FunctionState,
        parts: &mut Parts,
        body: Incoming,
    ) -> Result<Bytes, ApiError> {
        let payload = read_payload(body, MAX_SYNC_PAYLOAD).await?;
        let caller = self.verify(parts, &payload)?;
        if !caller.may_invoke(function.namespace()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!(
                    "access key {} may not invoke functions of namespace {}",
                    caller.access_key_id,
                    function.namespace()
                ),
            ));
        }
        for name in SIGNATURE_HEADERS {
            parts.headers.remove(HeaderName::from_static(name));
        }
        Ok(payload)
    }
}

/// Keeps `auth`'s keys those of Secret `namespace/name`: none while it does not exist. A key
/// that does not parse is left out and logged (never its secret); the others keep working.
/// `loaded` is sent once the Secret's first listing is installed.
pub async fn watch_keys(
    client: Client,
    namespace: String,
    name: String,
    auth: Arc<Authenticator>,
    loaded: oneshot::Sender<()>,
) {
    watch_secret(
        client,
        namespace,
        name,
        "access keys",
        loaded,
        move |data| {
            let (keys, problems) = AccessKeys::from_secret_data(&data);
            let count = keys.len();
            auth.set_keys(keys);
            (count, problems)
        },
    )
    .await;
}

/// Keeps the storage notification tokens those of Secret `namespace/name`, likewise.
pub async fn watch_storage_tokens(
    client: Client,
    namespace: String,
    name: String,
    tokens: Arc<StorageTokens>,
    loaded: oneshot::Sender<()>,
) {
    watch_secret(
        client,
        namespace,
        name,
        "storage tokens",
        loaded,
        move |data| {
            let (parsed, problems) = StorageTokens::parse(&data);
            let count = parsed.len();
            tokens.set(parsed);
            (count, problems)
        },
    )
    .await;
}

/// Watches one Secret and hands its data to `load` (empty data while it does not exist), which
/// installs the entries it reads and returns how many, and the entries it left out. `loaded` is
/// sent once the first listing is installed: until then, every request that needs an entry
/// would be refused.
async fn watch_secret<F>(
    client: Client,
    namespace: String,
    name: String,
    what: &str,
    loaded: oneshot::Sender<()>,
    load: F,
) where
    F: Fn(BTreeMap<String, Vec<u8>>) -> (usize, Vec<String>),
{
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // Whether a (re)list found the Secret: one deleted while the watch was down is gone too.
    let mut listed = false;
    let mut loaded = Some(loaded);
    let install = |data: BTreeMap<String, Vec<u8>>| {
        let (count, problems) = load(data);
        for problem in problems {
            tracing::warn!(secret = %name, %namespace, %problem, "{what}: entry left out");
        }
        count
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    tracing::warn!(secret = %name, %namespace, "no {what} Secret: requests that need one are refused");
                    install(BTreeMap::new());
                }
                if let Some(loaded) = loaded.take() {
                    let _ = loaded.send(());
                }
            }
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                listed = true;
                let data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key, value.0))
                    .collect();
                let count = install(data);
                tracing::info!(secret = %name, entries = count, "{what} loaded");
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(secret = %name, %namespace, "{what} Secret deleted: requests that need one are refused");
                install(BTreeMap::new());
            }
            Err(error) => tracing::warn!(%error, secret = %name, "watching the {what} Secret"),
        }
    }
}
