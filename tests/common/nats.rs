//! A real NATS server for tests: nats-server (built by `tests/cluster/build.sh nats-server` into
//! `$FARGO_CACHE/bin/nats-server-<version>/` on first use) with JetStream on a scratch store. A
//! test can kill it and bring it back on the same port with the same store, as a NATS pod's
//! container dies and restarts with its volume: what JetStream had stored is there again.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::s3::Scratch;

/// The nats-server binary of the pinned version (`NATS_SERVER_VERSION`), built on first use.
pub fn nats_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let versions = std::fs::read_to_string(root.join("tests/cluster/versions.env")).unwrap();
    let version = versions
        .lines()
        .find_map(|line| line.strip_prefix("NATS_SERVER_VERSION="))
        .expect("tests/cluster/versions.env pins NATS_SERVER_VERSION");
    let cache = std::env::var_os("FARGO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/fargo"));
    let dir = cache.join(format!("bin/nats-server-{version}"));
    if !dir.join(".done").exists() {
        // One build at a time: the tests of a binary run in parallel.
        static BUILD: Mutex<()> = Mutex::new(());
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.join(".done").exists() {
            let status = Command::new(root.join("tests/cluster/build.sh"))
                .arg("nats-server")
                .env("FARGO_CACHE", &cache)
                .status()
                .expect("running tests/cluster/build.sh");
            assert!(
                status.success(),
                "tests/cluster/build.sh nats-server failed ({status}): building nats-server \
                 {version} needs Go and the Go module proxy (GOPROXY); see its output above"
            );
        }
    }
    dir.join("nats-server")
}

/// Two ports of `ip` that were free a moment ago (bound together, then released): nats-server
/// cannot report the ports it bound, and a restart needs the same ones.
fn free_ports(ip: IpAddr) -> (u16, u16) {
    let bind = || {
        std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("a free port on {ip}: {e}"))
    };
    let (first, second) = (bind(), bind());
    let port = |listener: &std::net::TcpListener| listener.local_addr().unwrap().port();
    (port(&first), port(&second))
}

/// nats-server with JetStream storing into `<scratch>/nats`, killed when dropped.
pub struct NatsServer {
    client: SocketAddr,
    /// Where its monitoring endpoints answer (`/healthz`, `/jsz`, `/varz`).
    monitor: SocketAddr,
    store: PathBuf,
    log: PathBuf,
    /// Whether the process outlives the test thread that starts it (see `start_for_the_process`).
    for_the_process: bool,
    /// `None` once killed.
    child: Mutex<Option<Child>>,
}

impl NatsServer {
    /// Starts it on `bind`, and returns once JetStream answers. 127.0.0.1 serves processes of
    /// this machine, such as the activators the tests run out of cluster. The real node's
    /// address (`common::node_address`), an address of this machine's bridge to the pods, serves
    /// both those processes and pods, for an activator run in the cluster: pick it then, as the
    /// S3 server of handler functions is started there for the pods that fetch their code.
    pub async fn start(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, false).await
    }

    /// [`NatsServer::start`] for every test of the binary: the server, and the one each
    /// [`NatsServer::restart`] starts, live as long as the process, not the test thread that
    /// starts them.
    pub async fn start_for_the_process(scratch: &Scratch, bind: IpAddr) -> Self {
        Self::start_with(scratch, bind, true).await
    }

    async fn start_with(scratch: &Scratch, bind: IpAddr, for_the_process: bool) -> Self {
        let (client, monitor) = free_ports(bind);
        let server = NatsServer {
            client: SocketAddr::new(bind, client),
            monitor: SocketAddr::new(bind, monitor),
            store: scratch.dir("nats"),
            log: scratch.0.join("nats-server.log"),
            for_the_process,
            child: Mutex::new(None),
        };
        server.spawn();
        server.wait_until_ready().await;
        server
    }

    /// `nats://ip:port`, for `--nats-url`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    /// `http://ip:port` of the monitoring endpoints, e.g. `/jsz?streams=true` to see what
    /// JetStream holds.
    pub fn monitoring_url(&self) -> String {
        format!("http://{}", self.monitor)
    }

    /// SIGKILL, as when a container is killed: no lame-duck mode, no flush beyond what the
    /// store had written. Nothing happens if it is not running.
    pub fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again (killing it first if it still runs) on the same port, with the same store
    /// and server name, and returns once JetStream answers, its streams recovered.
    pub async fn restart(&self) {
        self.kill();
        self.spawn();
        self.wait_until_ready().await;
    }

    fn spawn(&self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let mut command = Command::new(nats_server());
        command
            // The name JetStream's store belongs to stays the same across restarts.
            .args(["--name", "fargo-test-nats"])
            .args(["--addr", &self.client.ip().to_string()])
            .args(["--port", &self.client.port().to_string()])
            .args(["--http_port", &self.monitor.port().to_string()])
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(&self.store)
            .stdout(log.try_clone().expect("a second handle to the log"))
            .stderr(log);
        // SAFETY: prctl(2) only, between fork and exec: the server ends with the thread that
        // started it, however the test ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = if self.for_the_process {
            super::processes::spawn_kept_for_the_process(move || {
                command.spawn().expect("starting nats-server")
            })
        } else {
            command.spawn().expect("starting nats-server")
        };
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// Until the client port accepts and `/healthz?js-enabled-only=true` answers 200, for 30s.
    async fn wait_until_ready(&self) {
        let healthz = format!("{}/healthz?js-enabled-only=true", self.monitoring_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exited() {
                panic!("nats-server exited ({status}):\n{}", self.log_text());
            }
            let last = if std::net::TcpStream::connect(self.client).is_ok() {
                match super::http::http_request("GET", &healthz, None).await {
                    Ok((200, _)) => return,
                    Ok((status, body)) => format!("{healthz}: {status} {body}"),
                    Err(error) => error,
                }
            } else {
                format!("{} does not accept connections", self.client)
            };
            assert!(
                Instant::now() < deadline,
                "nats-server was not ready within 30s ({last}):\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
