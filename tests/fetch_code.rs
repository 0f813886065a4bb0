//! `fargo fetch-code` against a real S3 server, versitygw on a loopback port with a scratch
//! data directory: no Kubernetes. versitygw is built by `tests/cluster/build.sh versitygw`
//! into `$FARGO_CACHE/bin/versitygw-<version>/` when it is not there yet.

use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{CreateBucket, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use zip::write::SimpleFileOptions;

const ACCESS_KEY: &str = "fargotest";
const SECRET_KEY: &str = "fargotest-secret";
const BUCKET: &str = "code";

/// The versitygw binary of the pinned version, built on first use.
fn versitygw() -> PathBuf {
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
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fetch-code-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn dir(&self, name: &str) -> PathBuf {
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
struct S3Server {
    child: Child,
    endpoint: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl S3Server {
    async fn start(scratch: &Scratch) -> Self {
        use std::os::unix::process::CommandExt;
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(scratch.0.join("versitygw.log")).unwrap();
        let mut command = Command::new(versitygw());
        command
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY])
            .args(["--port", &format!("127.0.0.1:{port}"), "--quiet"])
            .arg("posix")
            .arg(scratch.dir("s3"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl(2) only, between fork and exec: the server ends with the test thread
        // that started it, however the test ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("starting versitygw");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(scratch.0.join("versitygw.log"));
                panic!("versitygw exited ({status}): {}", log.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "versitygw did not listen within 30s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        let bucket = server.bucket();
        let url = CreateBucket::new(&bucket, &credentials()).sign(Duration::from_secs(60));
        server.send(hyper::Method::PUT, url, Vec::new()).await;
        server
    }

    fn bucket(&self) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            BUCKET,
            "us-east-1",
        )
        .unwrap()
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        let bucket = self.bucket();
        let url = PutObject::new(&bucket, Some(&credentials()), key).sign(Duration::from_secs(60));
        self.send(hyper::Method::PUT, url, body).await;
    }

    async fn send(&self, method: hyper::Method, url: url::Url, body: Vec<u8>) {
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

    /// Runs `fargo fetch-code` against this server with `args`.
    fn fetch_code(&self, args: &[&str], secret: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fargo"))
            .arg("fetch-code")
            .args(args)
            .env("FARGO_S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY)
}

/// A zip of `(name, content, unix mode)`.
fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, mode) in files {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The one line a failure prints: what the pod's termination message will say.
fn failure_line(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unpacks_code_into_the_task_dir_and_a_layer_into_opt() {
    let scratch = Scratch::new("unpacks");
    let server = S3Server::start(&scratch).await;
    server
        .put(
            "fn/code.zip",
            zip(&[
                (
                    "bootstrap",
                    b"#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
                    0o644,
                ),
                (
                    "handler.py",
                    b"def handler(event, context): return event\n",
                    0o644,
                ),
                ("lib/deep/util.py", b"X = 1\n", 0o4755),
            ]),
        )
        .await;
    server
        .put(
            "layers/deps.zip",
            zip(&[("python/requests/__init__.py", b"# requests\n", 0o644)]),
        )
        .await;
    let (task, opt) = (scratch.dir("task"), scratch.dir("opt"));

    let output = server.fetch_code(
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/fn/code.zip",
            "--opt",
            opt.to_str().unwrap(),
            "--layer",
            "s3://code/layers/deps.zip",
        ],
        SECRET_KEY,
    );

    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(task.join("handler.py")).unwrap(),
        b"def handler(event, context): return event\n"
    );
    assert_eq!(
        std::fs::read(task.join("lib/deep/util.py")).unwrap(),
        b"X = 1\n"
    );
    assert_eq!(mode(&task.join("bootstrap")), 0o755);
    assert_eq!(mode(&task.join("handler.py")), 0o644);
    // Executable, never setuid.
    assert_eq!(mode(&task.join("lib/deep/util.py")), 0o755);
    assert_eq!(
        std::fs::read(opt.join("python/requests/__init__.py")).unwrap(),
        b"# requests\n"
    );
    assert!(!task.join("python").exists());
}

#[tokio::test]
async fn a_missing_key_fails_naming_the_object_and_the_s3_code() {
    let scratch = Scratch::new("missing");
    let server = S3Server::start(&scratch).await;
    let task = scratch.dir("task");

    let output = server.fetch_code(
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/nope.zip",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        "s3://code/nope.zip: 404 NoSuchKey (no object has this key)"
    );
}

#[tokio::test]
async fn refused_credentials_fail_naming_the_variables_to_fix() {
    let scratch = Scratch::new("credentials");
    let server = S3Server::start(&scratch).await;
    server
        .put("code.zip", zip(&[("index.js", b"ok", 0o644)]))
        .await;
    let task = scratch.dir("task");

    let output = server.fetch_code(
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/code.zip",
        ],
        "not-the-secret",
    );

    let line = failure_line(&output);
    assert!(
        line.starts_with("s3://code/code.zip: 403 ") && line.contains("AWS_SECRET_ACCESS_KEY"),
        "{line}"
    );
    assert!(!task.join("index.js").exists());
}

#[tokio::test]
async fn a_zip_slip_archive_is_refused_with_nothing_written_anywhere() {
    let scratch = Scratch::new("slip");
    let server = S3Server::start(&scratch).await;
    server
        .put(
            "evil.zip",
            zip(&[
                ("index.js", b"ok", 0o644),
                ("../../escaped", b"owned", 0o644),
            ]),
        )
        .await;
    let task = scratch.dir("deep/task");

    let output = server.fetch_code(
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/evil.zip",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        format!(
            "s3://code/evil.zip: entry ../../escaped escapes {}",
            task.display()
        )
    );
    assert!(!scratch.0.join("escaped").exists());
    assert!(!scratch.0.join("deep/escaped").exists());
    assert_eq!(std::fs::read_dir(&task).unwrap().count(), 0);
}

#[tokio::test]
async fn a_zip_over_the_download_limit_is_refused() {
    let scratch = Scratch::new("large");
    let server = S3Server::start(&scratch).await;
    server
        .put("big.zip", zip(&[("blob", &[7u8; 4096], 0o644)]))
        .await;
    let task = scratch.dir("task");

    let output = server.fetch_code(
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/big.zip",
            "--max-zip-bytes",
            "100",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        "s3://code/big.zip: the zip is larger than --max-zip-bytes (100 bytes, Lambda's 50 MiB)"
    );
}
