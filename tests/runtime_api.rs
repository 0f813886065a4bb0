//! `fargo-runtime-api` (the sidecar as pods run it) with AWS's real runtime interface clients
//! as local processes, no Kubernetes: Python's awslambdaric (from PyPI, at the version in
//! tests/cluster/versions.env) and a Go handler built with aws-lambda-go (tests/runtime/go-handler).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const PYTHON_HANDLER: &str = r#"
import time

def handler(event, context):
    path = event.get("rawPath")
    if path == "/fail":
        raise ValueError("the python handler refused")
    if path == "/sleep":
        time.sleep(30)
    if path == "/shaped":
        return {"statusCode": 201, "headers": {"x-handler": "python"},
                "cookies": ["a=1", "b=2; Max-Age=60"], "body": "made by python"}
    return {"event": event, "arn": context.invoked_function_arn}
"#;

#[test]
fn python_handler_receives_function_url_events_and_shapes_responses() {
    let sidecar = Sidecar::start(30_000);
    let _runtime = sidecar.python("app.handler");
    sidecar.wait_ready();

    let get = sidecar.request(
        "GET /photos/cat?size=small&tag=a&tag=b HTTP/1.1\r\nHost: thumbnail.media.fargo.local\r\n\
         X-Forwarded-For: 203.0.113.9\r\nCookie: session=abc; theme=dark\r\nX-Custom: one\r\n\
         User-Agent: fargo-test\r\n",
        b"",
    );
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.header("content-type"), Some("application/json"));
    let answer = get.json();
    let event = &answer["event"];
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/photos/cat");
    assert_eq!(event["rawQueryString"], "size=small&tag=a&tag=b");
    assert_eq!(
        event["queryStringParameters"],
        json!({"size": "small", "tag": "a,b"})
    );
    assert_eq!(event["cookies"], json!(["session=abc", "theme=dark"]));
    assert_eq!(event["headers"]["x-custom"], "one");
    assert_eq!(event["isBase64Encoded"], false);
    let context = &event["requestContext"];
    assert_eq!(context["accountId"], "media");
    assert_eq!(context["domainName"], "thumbnail.media.fargo.local");
    assert_eq!(context["domainPrefix"], "thumbnail");
    assert_eq!(context["stage"], "$default");
    assert_eq!(context["http"]["method"], "GET");
    assert_eq!(context["http"]["sourceIp"], "203.0.113.9");
    assert_eq!(context["http"]["userAgent"], "fargo-test");
    assert_eq!(
        Some(context["requestId"].as_str().expect("a request id")),
        get.header("x-amzn-requestid")
    );
    assert_eq!(
        answer["arn"],
        "arn:aws:lambda:local:media:function:thumbnail"
    );

    let binary = [0u8, 159, 146, 150, 255];
    let post = sidecar.request(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n",
        &binary,
    );
    let event = &post.json()["event"];
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], "AJ+Slv8=");

    let shaped = sidecar.request("GET /shaped HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(shaped.status, 201);
    assert_eq!(shaped.header("x-handler"), Some("python"));
    assert_eq!(shaped.all("set-cookie"), ["a=1", "b=2; Max-Age=60"]);
    assert_eq!(shaped.body, b"made by python");

    let failed = sidecar.request("GET /fail HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(failed.status, 502);
    assert_eq!(failed.header("x-amz-function-error"), Some("Unhandled"));
    let error = failed.json();
    assert_eq!(error["errorType"], "ValueError");
    assert_eq!(error["errorMessage"], "the python handler refused");
    assert!(error["stackTrace"].is_array(), "{error}");

    let tick = sidecar.request(
        "POST / HTTP/1.1\r\nHost: x\r\nx-fargo-schedule: nightly\r\nContent-Type: application/json\r\n",
        br#"{"tick": 7}"#,
    );
    assert_eq!(tick.status, 200);
    assert_eq!(tick.json()["event"], json!({"tick": 7}));

    let log = sidecar.stdout();
    assert!(log.contains("START RequestId: "), "{log}");
    assert!(log.contains("\tBilled Duration: "), "{log}");
    assert!(log.contains("\tInit Duration: "), "{log}");
    let metrics = sidecar.probe("/metrics").body_text();
    assert!(
        metrics.contains(r#"fargo_runtime_invocations_total{outcome="error"} 1"#),
        "{metrics}"
    );
}

#[test]
fn the_activators_probe_of_a_starting_pod_invokes_nothing() {
    let sidecar = Sidecar::start(30_000);
    let _runtime = sidecar.python("app.handler");
    sidecar.wait_ready();
    let probe = sidecar.request("GET / HTTP/1.1\r\nHost: pod\r\nX-Fargo-Probe: 1\r\n", b"");
    assert_eq!(probe.status, 204, "{probe:?}");
    let call = sidecar.request("GET / HTTP/1.1\r\nHost: pod\r\n", b"");
    assert_eq!(call.status, 200, "{call:?}");
    wait_for(|| sidecar.stdout().contains("REPORT RequestId").then_some(()));
    assert_eq!(
        sidecar.stdout().matches("START RequestId").count(),
        1,
        "only the request was an invocation:\n{}",
        sidecar.stdout()
    );
}

#[test]
fn a_bad_handler_name_answers_with_the_init_error_at_once() {
    let sidecar = Sidecar::start(30_000);
    let _runtime = sidecar.python("app.no_such_handler");
    let ready = wait_for(|| {
        let ready = sidecar.probe("/ready");
        (ready.body_text().contains("failed to initialize")).then_some(ready)
    });
    assert_eq!(ready.status, 503);

    let started = Instant::now();
    let answer = sidecar.request("GET / HTTP/1.1\r\nHost: x\r\n", b"");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held until the timeout"
    );
    assert_eq!(answer.status, 502);
    assert_eq!(answer.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(answer.json()["errorType"], "Runtime.HandlerNotFound");
}

#[test]
fn a_handler_past_its_timeout_gets_504_and_its_runtime_is_not_live_until_restarted() {
    let sidecar = Sidecar::start(1500);
    let mut runtime = sidecar.python("app.handler");
    sidecar.wait_ready();
    assert_eq!(sidecar.probe("/live").status, 200);

    let started = Instant::now();
    let answer = sidecar.request("GET /sleep HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(answer.status, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        answer.json(),
        json!({"errorMessage": "media/thumbnail timed out after 1.50 seconds", "errorType": "Sandbox.Timedout"})
    );
    assert_eq!(sidecar.probe("/live").status, 503);
    assert!(
        sidecar
            .stdout()
            .contains("Task timed out after 1.50 seconds")
    );

    // What kubelet does on the failed liveness probe.
    runtime.stop();
    let _restarted = sidecar.python("app.handler");
    wait_for(|| (sidecar.probe("/live").status == 200).then_some(()));
    sidecar.wait_ready();
    assert_eq!(
        sidecar.request("GET / HTTP/1.1\r\nHost: x\r\n", b"").status,
        200
    );
}

#[test]
fn go_handler_runs_under_aws_lambda_go() {
    let sidecar = Sidecar::start(30_000);
    let _runtime = sidecar.go();
    sidecar.wait_ready();

    let echo = sidecar.request(
        "GET /hello?name=go HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n",
        b"",
    );
    assert_eq!(echo.status, 200, "{echo:?}");
    let event = &echo.json()["event"];
    assert_eq!(event["rawPath"], "/hello");
    assert_eq!(event["queryStringParameters"], json!({"name": "go"}));
    assert_eq!(event["cookies"], json!(["a=1"]));

    let shaped = sidecar.request("GET /shaped HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(shaped.status, 201);
    assert_eq!(shaped.header("x-handler"), Some("go"));
    assert_eq!(shaped.all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(shaped.body, b"made by go");

    let failed = sidecar.request("GET /fail HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(failed.status, 502);
    assert_eq!(failed.header("x-amz-function-error"), Some("Unhandled"));
    let error = failed.json();
    assert_eq!(error["errorType"], "Refusal");
    assert_eq!(error["errorMessage"], "the go handler refused");

    let tick = sidecar.request(
        "POST / HTTP/1.1\r\nHost: x\r\nx-fargo-invoke: event\r\n",
        br#"{"rawPath": "/shaped"}"#,
    );
    assert_eq!(tick.status, 200);
    assert_eq!(
        tick.json()["statusCode"],
        201,
        "a raw invocation's result is passed on as it is"
    );
    assert!(tick.header("x-amz-log-result").is_none(), "no log unasked");

    // The Invoke API's X-Amz-Log-Type: Tail (only raw invocations, which the activator alone
    // sends): the sidecar's lines of the invocation, base64.
    let tailed = sidecar.request(
        "POST / HTTP/1.1\r\nHost: x\r\nx-fargo-invoke: event\r\nx-amz-log-type: Tail\r\n",
        br#"{"rawPath": "/shaped"}"#,
    );
    let id = tailed
        .header("x-amzn-requestid")
        .expect("a request id")
        .to_string();
    let log = base64::engine::general_purpose::STANDARD
        .decode(tailed.header("x-amz-log-result").expect("a log result"))
        .expect("base64");
    let log = String::from_utf8(log).expect("text");
    assert!(
        log.starts_with(&format!("START RequestId: {id} Version: $LATEST\n")),
        "{log}"
    );
    assert!(log.contains(&format!("END RequestId: {id}\n")), "{log}");
    assert!(
        log.contains(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{log}"
    );
    let http = sidecar.request(
        "GET /hello HTTP/1.1\r\nHost: x\r\nx-amz-log-type: Tail\r\n",
        b"",
    );
    assert!(
        http.header("x-amz-log-result").is_none(),
        "HTTP callers get no log"
    );
}

/// A `fargo-runtime-api` process on free ports, stopped with SIGTERM when dropped.
struct Sidecar {
    child: Child,
    ports: [u16; 3],
    dir: PathBuf,
}

impl Sidecar {
    fn start(timeout_ms: u64) -> Self {
        let ports = [free_port(), free_port(), free_port()];
        let dir = tempdir();
        std::fs::write(dir.join("app.py"), PYTHON_HANDLER).expect("writing the handler");
        let log = |name: &str| std::fs::File::create(dir.join(name)).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fargo-runtime-api"))
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--runtime-api", &format!("127.0.0.1:{}", ports[1])])
            .args(["--probe-listen", &format!("127.0.0.1:{}", ports[2])])
            .args(["--function-name", "thumbnail", "--namespace", "media"])
            .args([
                "--memory-mb",
                "128",
                "--timeout-ms",
                &timeout_ms.to_string(),
            ])
            .stdout(log("sidecar.stdout"))
            .stderr(log("sidecar.stderr"))
            .spawn()
            .expect("starting fargo-runtime-api");
        let sidecar = Self { child, ports, dir };
        wait_for(|| TcpStream::connect(("127.0.0.1", sidecar.ports[2])).ok());
        sidecar
    }

    fn python(&self, handler: &str) -> Runtime {
        let ric = awslambdaric();
        let child = Command::new("python3")
            .args(["-m", "awslambdaric", handler])
            .current_dir(&self.dir)
            .env(
                "PYTHONPATH",
                format!("{}:{}", ric.display(), self.dir.display()),
            )
            .env("LAMBDA_TASK_ROOT", &self.dir)
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("127.0.0.1:{}", self.ports[1]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m awslambdaric");
        Runtime(child)
    }

    fn go(&self) -> Runtime {
        let child = Command::new(go_handler())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("127.0.0.1:{}", self.ports[1]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the Go handler");
        Runtime(child)
    }

    fn request(&self, head: &str, body: &[u8]) -> Reply {
        http(self.ports[0], head, body)
    }

    fn probe(&self, path: &str) -> Reply {
        http(
            self.ports[2],
            &format!("GET {path} HTTP/1.1\r\nHost: probe\r\n"),
            b"",
        )
    }

    fn wait_ready(&self) {
        wait_for(|| (self.probe("/ready").status == 200).then_some(()));
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("sidecar.stdout")).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            for log in ["sidecar.stdout", "sidecar.stderr"] {
                let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                eprintln!("---- {log} ----\n{text}");
            }
        }
    }
}

/// A runtime client process, killed when dropped (as kubelet would).
struct Runtime(Child);

impl Runtime {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange on a fresh connection: `head` is the request line and headers, each
/// ending in CRLF; Content-Length and Connection: close are added.
fn http(port: u16, head: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let mut request = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).expect("sending the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not so within 60s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "runtime-api-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    dir
}

/// A pinned version from tests/cluster/versions.env.
fn pinned(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/versions.env");
    let text = std::fs::read_to_string(&path).expect("reading tests/cluster/versions.env");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .map(|version| version.trim().to_string())
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()))
}

/// awslambdaric at its pinned version, installed once under $FARGO_CACHE (default
/// ~/.cache/fargo) and reused.
fn awslambdaric() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let version = pinned("AWSLAMBDARIC_VERSION");
        let cache = std::env::var_os("FARGO_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(&std::env::var_os("HOME").expect("HOME is set")).join(".cache/fargo")
            });
        let dir = cache.join(format!("ric/awslambdaric-{version}"));
        if dir.join("awslambdaric").is_dir() {
            return dir;
        }
        // Installed beside, then renamed: a test binary stopped half-way leaves no partial copy.
        let partial = cache.join(format!(
            "ric/.awslambdaric-{version}-{}",
            std::process::id()
        ));
        let output = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&partial)
            .arg(format!("awslambdaric=={version}"))
            .output()
            .expect("running python3 -m pip");
        assert!(
            output.status.success(),
            "installing awslambdaric=={version} with pip failed (is PyPI reachable?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if std::fs::rename(&partial, &dir).is_err() {
            // Another test process installed it first.
            let _ = std::fs::remove_dir_all(&partial);
        }
        dir
    })
}

/// tests/runtime/go-handler built with aws-lambda-go at its pinned version.
fn go_handler() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime/go-handler");
        let module = std::fs::read_to_string(source.join("go.mod")).expect("reading go.mod");
        let version = pinned("AWS_LAMBDA_GO_VERSION");
        assert!(
            module.contains(&format!("github.com/aws/aws-lambda-go {version}")),
            "tests/runtime/go-handler/go.mod does not require aws-lambda-go {version} (versions.env)"
        );
        let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-handler/bootstrap");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .env("CGO_ENABLED", "0")
            .output()
            .expect("running go build");
        assert!(
            output.status.success(),
            "go build of tests/runtime/go-handler failed (is the Go module proxy reachable?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}
