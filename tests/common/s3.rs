//! A real S3 server for tests: versitygw (built by `tests/cluster/build.sh versitygw` into
//! `$FARGO_CACHE/bin/versitygw-<version>/` on first use) serving a scratch directory, with one
//! bucket, and presigned requests to fill it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{CreateBucket, PutObject};
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

/// versitygw serving `<scratch>/s3`, stopped when dropped.
pub struct S3Server {
    /// `None` when the server lives for the process.
    child: Option<Child>,
    /// Where this machine reaches it.
    pub endpoint: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl S3Server {
    /// Starts it on `bind` (loopback for processes of this machine; the node bridge's address for
    /// pods) with bucket [`BUCKET`].
    pub async fn start(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, false).await
    }

    /// [`S3Server::start`] for every test of the binary: it lives as long as the process, not
    /// the test thread that starts it.
    pub async fn start_for_the_process(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, true).await
    }

    async fn start_with(scratch: &Scratch, bind: IpAddr, for_the_process: bool) -> Self {
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
        let server = S3Server {
            child,
            endpoint: format!("http://{bind}:{port}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        let bucket = server.bucket();
        let url = CreateBucket::new(&bucket, &credentials()).sign(Duration::from_secs(60));
        server.send(hyper::Method::PUT, url, Vec::new()).await;
        server
    }

    pub fn bucket(&self) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            BUCKET,
            "us-east-1",
        )
        .unwrap()
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) {
        let bucket = self.bucket();
        let url = PutObject::new(&bucket, Some(&credentials()), key).sign(Duration::from_secs(60));
        self.send(hyper::Method::PUT, url, body).await;
    }

    pub async fn send(&self, method: hyper::Method, url: url::Url, body: Vec<u8>) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.http.request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(status.is_success(), "{url}: {status} {body:?}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY)
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
