//! A real S3 server for tests: versitygw (built by `tests/cluster/build.sh versitygw` into
//! `$FARGO_CACHE/bin/versitygw-<version>/` on first use) serving a scratch directory, with one
//! bucket, and presigned requests to fill it ([`S3Client`]). Started with a [`Notify`], it sends
//! bucket notifications, as it does run in the cluster by [`S3Pod`].
//!
//! What versitygw 1.8.0 sends, to a webhook (POST, `Content-Type: application/json;
//! charset=utf-8`, no retry) and to NATS alike (one core NATS message, no headers): first, when
//! it starts, `{"Bucket":"Test-Bucket","Event":"s3:TestEvent","Service":"S3","Time":"…"}` (it
//! exits when that cannot be sent); then one `{"Records":[…]}` of one record per object event,
//! `eventName` `s3:ObjectCreated:Put`, `:Copy`, `:CompleteMultipartUpload`,
//! `s3:ObjectRemoved:Delete`, `s3:ObjectRemoved:DeleteObjects` (one message per key of a
//! DeleteObjects, which is no AWS name), `s3:ObjectTagging:Put`, …; `s3.object.key` is the key
//! itself, not URL-encoded as AWS S3 sends it; `s3.object.size` is 0 but for PutObject. Each
//! event is sent on a goroutine of its own, so two quick ones may arrive out of order.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{CreateBucket, DeleteObject, GetObject, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

pub const ACCESS_KEY: &str = "fargotest";
pub const SECRET_KEY: &str = "fargotest-secret";
pub const BUCKET: &str = "code";

/// The versitygw binary of the pinned version, built on first use.
pub fn versitygw() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let versions = std::fs::read_to_string(root.join("tests/cluster/versions.env")).unwrap();
    let version = versions
        .lines()
        .find_map(|line| line.strip_prefix("VERSITYGW_VERSION="))
        .expect("tests/cluster/versions.env pins VERSITYGW_VERSION");
    let cache = std::env::var_os("FARGO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/fargo"));
    let dir = cache.join(format!("bin/versitygw-{version}"));
    if !dir.join(".done").exists() {
        // One build at a time: the tests of this file run in parallel.
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.join(".done").exists() {
            let status = Command::new(root.join("tests/cluster/build.sh"))
                .arg("versitygw")
                .env("FARGO_CACHE", &cache)
                .status()
                .expect("running tests/cluster/build.sh");
            assert!(
                status.success(),
                "tests/cluster/build.sh versitygw failed ({status}): building versitygw \
                 {version} needs Go and the Go module proxy (GOPROXY); see its output above"
            );
        }
    }
    dir.join("versitygw")
}

/// A directory removed when the test ends.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("s3-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where versitygw sends bucket notifications (it takes one destination).
pub enum Notify {
    /// POSTs each event to this URL, e.g. the activator's
    /// `http://HOST/_fargo/storage/events?token=TOKEN`.
    Webhook(String),
    /// Publishes each event to this NATS server (`nats://HOST:PORT`) on `subject`.
    Nats { url: String, subject: String },
}

impl Notify {
    /// versitygw's flags, which come before the backend's name.
    fn args(&self) -> Vec<&str> {
        match self {
            Notify::Webhook(url) => vec!["--event-webhook-url", url],
            Notify::Nats { url, subject } => {
                vec!["--event-nats-url", url, "--event-nats-topic", subject]
            }
        }
    }
}

/// versitygw serving `<scratch>/s3`, stopped when dropped.
pub struct S3Server {
    /// `None` when the server lives for the process.
    child: Option<Child>,
    /// Where this machine reaches it.
    pub endpoint: String,
    /// Requests with its root keys, [`ACCESS_KEY`] and [`SECRET_KEY`].
    pub client: S3Client,
}

impl S3Server {
    /// Starts it on `bind` (loopback for processes of this machine; the node bridge's address for
    /// pods) with bucket [`BUCKET`].
    pub async fn start(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, None, false).await
    }

    /// [`S3Server::start`] for every test of the binary: it lives as long as the process, not
    /// the test thread that starts it.
    pub async fn start_for_the_process(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, None, true).await
    }

    /// [`S3Server::start`], sending a notification of every object event of every bucket to
    /// `notify`, which must be listening already: versitygw sends its test event when it starts,
    /// and exits when it cannot.
    pub async fn start_notifying(scratch: &Scratch, bind: IpAddr, notify: Notify) -> Self {
        Self::start_with(scratch, bind, Some(notify), false).await
    }

    async fn start_with(
        scratch: &Scratch,
        bind: IpAddr,
        notify: Option<Notify>,
        for_the_process: bool,
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log_path = scratch.0.join("versitygw.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(versitygw());
        command
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY])
            .args(["--port", &format!("{bind}:{port}"), "--quiet"])
            .args(notify.as_ref().map(Notify::args).unwrap_or_default())
            .arg("posix")
            .arg(scratch.dir("s3"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl(2) only, between fork and exec: the server ends with the thread that
        // started it, however the test ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = if for_the_process {
            super::processes::spawn_for_the_process(move || {
                command.spawn().expect("starting versitygw")
            });
            None
        } else {
            Some(command.spawn().expect("starting versitygw"))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((bind, port)).is_err() {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                let log = std::fs::read_to_string(&log_path);
                panic!("versitygw exited ({status}): {}", log.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "versitygw did not listen within 30s: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let endpoint = format!("http://{bind}:{port}");
        let server = S3Server {
            child,
            client: S3Client::new(&endpoint, ACCESS_KEY, SECRET_KEY),
            endpoint,
        };
        server.client.create_bucket(BUCKET).await;
        server
    }

    /// Bucket [`BUCKET`].
    pub fn bucket(&self) -> Bucket {
        self.client.bucket(BUCKET)
    }

    /// Puts `body` under `key` in bucket [`BUCKET`].
    pub async fn put(&self, key: &str, body: Vec<u8>) {
        self.client.put_object(BUCKET, key, body).await;
    }
}

/// Presigned requests to an S3 server (path-style, region us-east-1), each asserting that it
/// succeeded. Keys may hold any character: rusty_s3 percent-encodes them in the URL's path.
pub struct S3Client {
    endpoint: url::Url,
    credentials: Credentials,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl S3Client {
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        S3Client {
            endpoint: endpoint.parse().expect("an S3 endpoint URL"),
            credentials: Credentials::new(access_key, secret_key),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_owned(),
            "us-east-1",
        )
        .unwrap_or_else(|e| panic!("bucket {name:?}: {e}"))
    }

    pub async fn create_bucket(&self, name: &str) {
        let bucket = self.bucket(name);
        let url = CreateBucket::new(&bucket, &self.credentials).sign(EXPIRES);
        self.send(hyper::Method::PUT, url, Vec::new()).await;
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let bucket = self.bucket(bucket);
        let url = PutObject::new(&bucket, Some(&self.credentials), key).sign(EXPIRES);
        self.send(hyper::Method::PUT, url, body).await;
    }

    /// The object's bytes, or `None` when the bucket has no such key.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let bucket = self.bucket(bucket);
        let url = GetObject::new(&bucket, Some(&self.credentials), key).sign(EXPIRES);
        let (status, body) = self.request(hyper::Method::GET, &url, Vec::new()).await;
        match status {
            hyper::StatusCode::NOT_FOUND => None,
            status if status.is_success() => Some(body.to_vec()),
            status => panic!("{url}: {status} {body:?}"),
        }
    }

    pub async fn delete(&self, bucket: &str, key: &str) {
        let bucket = self.bucket(bucket);
        let url = DeleteObject::new(&bucket, Some(&self.credentials), key).sign(EXPIRES);
        self.send(hyper::Method::DELETE, url, Vec::new()).await;
    }

    /// Every key of the bucket, in order.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let bucket = self.bucket(bucket);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            // ListObjectsV2, signed here: rusty_s3 has its action only with its `xml` feature.
            // Without `encoding-type=url` the keys come as they are, XML-escaped.
            let mut query = Vec::new();
            if let Some(token) = &token {
                query.push(("continuation-token", String::as_str(token)));
            }
            query.push(("list-type", "2"));
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                bucket.object_url(""),
                self.credentials.key(),
                self.credentials.secret(),
                None,
                bucket.region(),
                EXPIRES.as_secs(),
                query.into_iter(),
                std::iter::empty(),
            );
            let (status, body) = self.request(hyper::Method::GET, &url, Vec::new()).await;
            let body = String::from_utf8_lossy(&body);
            assert!(status.is_success(), "{url}: {status} {body}");
            keys.extend(xml_texts(&body, "Key"));
            let truncated = xml_texts(&body, "IsTruncated") == ["true"];
            token = xml_texts(&body, "NextContinuationToken").pop();
            if !truncated {
                return keys;
            }
            assert!(
                token.is_some(),
                "{url}: truncated without a continuation token: {body}"
            );
        }
    }

    pub async fn send(&self, method: hyper::Method, url: url::Url, body: Vec<u8>) {
        let (status, body) = self.request(method, &url, body).await;
        assert!(status.is_success(), "{url}: {status} {body:?}");
    }

    async fn request(
        &self,
        method: hyper::Method,
        url: &url::Url,
        body: Vec<u8>,
    ) -> (hyper::StatusCode, Bytes) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self
            .http
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// The text of every `<tag>` element of an S3 answer, unescaped.
fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let texts = xml.split(open.as_str()).skip(1).map(|rest| {
        let text = rest.split(close.as_str()).next().unwrap_or_default();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let end = rest[amp..]
                .find(';')
                .map(|i| amp + i)
                .expect("an XML entity ends with ;");
            let entity = &rest[amp + 1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => entity
                    .strip_prefix("#x")
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| entity.strip_prefix('#').map(str::parse))
                    .and_then(Result::ok)
                    .and_then(char::from_u32)
                    .unwrap_or_else(|| panic!("an unknown XML entity &{entity};")),
            };
            out.push(c);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    });
    texts.collect()
}

/// How long a presigned URL holds.
const EXPIRES: Duration = Duration::from_secs(60);

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// versitygw as the local cluster runs it (`tests/cluster/versitygw.sh manifest`, image
/// `fargo.dev/versitygw:dev` from `tests/cluster/images.sh`): Secret `fargo-s3` with keys
/// [`ACCESS_KEY`] and [`SECRET_KEY`] (the Secret `code.s3` reads: no [`s3_secret`] beside it),
/// Deployment and Service `versitygw` in a namespace of the test's, publishing bucket
/// notifications to NATS. Gone with the namespace.
pub struct S3Pod {
    /// `http://<ClusterIP>:7070`, where the pods reach it (the local cluster has no cluster DNS
    /// for `versitygw.<namespace>.svc`).
    pub endpoint: String,
    /// `http://<pod IP>:7070`, where this machine reaches it (its Service's address is the
    /// pods' only).
    pub host_endpoint: String,
    pub access_key: &'static str,
    pub secret_key: &'static str,
    /// Requests with its keys.
    pub client: S3Client,
}

impl S3Pod {
    /// Applies it into `namespace`, publishing notifications to `nats_url` (reachable from the
    /// pod, e.g. a [`super::nats::NatsServer`] on the node's address) on `subject`, and returns
    /// once it serves: versitygw exits, and its pod restarts, until that NATS answers.
    pub async fn start(
        client: &kube::Client,
        namespace: &str,
        nats_url: &str,
        subject: &str,
    ) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(root.join("tests/cluster/versitygw.sh"))
            .arg("manifest")
            .env("FARGO_S3_NAMESPACE", namespace)
            .env("FARGO_S3_NATS_URL", nats_url)
            .env("FARGO_S3_NATS_SUBJECT", subject)
            .env("FARGO_S3_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FARGO_S3_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("FARGO_S3_WEBHOOK_URL")
            .env_remove("FARGO_S3_EVENTS")
            .output()
            .expect("running tests/cluster/versitygw.sh manifest");
        assert!(
            output.status.success(),
            "tests/cluster/versitygw.sh manifest failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let manifest = String::from_utf8(output.stdout).expect("a UTF-8 manifest");
        super::yaml::apply_yaml(client, &manifest, false)
            .await
            .unwrap_or_else(|e| panic!("applying versitygw in {namespace}: {e}"));

        let deployments = kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
            client.clone(),
            namespace,
        );
        let what = format!(
            "versitygw in {namespace} to be available (image fargo.dev/versitygw:dev, from \
             tests/cluster/images.sh; NATS at {nats_url} reachable from the pod)"
        );
        super::wait::eventually(120, &what, || async {
            let deployment = deployments.get("versitygw").await.ok()?;
            let available = deployment.status?.available_replicas.unwrap_or(0);
            (available > 0).then_some(())
        })
        .await;

        let service =
            kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), namespace)
                .get("versitygw")
                .await
                .expect("Service versitygw");
        let ip = service
            .spec
            .and_then(|spec| spec.cluster_ip)
            .expect("Service versitygw has a ClusterIP");
        let endpoint = format!("http://{ip}:7070");
        let pods =
            kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace);
        let selector = kube::api::ListParams::default().labels("app.kubernetes.io/name=versitygw");
        let pod_ip = super::wait::eventually(60, "versitygw's ready pod", || async {
            pods.list(&selector)
                .await
                .ok()?
                .items
                .into_iter()
                .find_map(|pod| {
                    let status = pod.status?;
                    let ready = status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    ready.then_some(status.pod_ip?)
                })
        })
        .await;
        let host_endpoint = format!("http://{pod_ip}:7070");
        S3Pod {
            client: S3Client::new(&host_endpoint, ACCESS_KEY, SECRET_KEY),
            endpoint,
            host_endpoint,
            access_key: ACCESS_KEY,
            secret_key: SECRET_KEY,
        }
    }
}

/// `target/lambda/<zip>`, built by `tests/cluster/lambda-zips.sh` (quick when up to date).
pub fn example_zip(zip: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("tests/cluster/lambda-zips.sh"))
        .status()
        .expect("running tests/cluster/lambda-zips.sh");
    assert!(
        status.success(),
        "tests/cluster/lambda-zips.sh failed ({status}): it builds the Go and Java examples with \
         Go, javac and jars from Maven Central, and photo-resize with wheels from PyPI"
    );
    std::fs::read(root.join("target/lambda").join(zip)).expect("the example's zip")
}

/// The Secret a function's namespace holds for `code.s3`.
pub async fn s3_secret(client: &kube::Client, namespace: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "fargo-s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .expect("creating the S3 Secret");
}
