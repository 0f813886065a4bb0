//! `fargo` processes run out of cluster by the tests, their logs, and their ports.

/// Logs of the fargo processes this test binary started.
static FARGO_LOGS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Prints the end of every fargo log of this test binary, so that a failure shows what the
/// controller and activators were doing.
pub fn print_fargo_logs() {
    const LINES: usize = 40;
    let logs = FARGO_LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        eprintln!("---- last {} lines of {} ----", tail.len(), path.display());
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// Runs the `fargo` binary built by this `cargo test` (or `cargo bench`) with `args`, its log in
/// `log_name` beside the test binaries rather than in the test output.
pub(super) fn spawn_fargo(args: &[String], log_name: &str) -> std::process::Child {
    spawn_fargo_from(env!("CARGO_BIN_EXE_fargo").as_ref(), args, log_name)
}

/// [`spawn_fargo`] with another build of `fargo`.
pub(super) fn spawn_fargo_from(
    binary: &std::path::Path,
    args: &[String],
    log_name: &str,
) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(binary);
    command.args(args).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
    );
    // SAFETY: prctl(2) only, between fork and exec: the process gets SIGTERM when the thread
    // that started it ends, so no test run leaves one behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(log_name);
    let mut logs = FARGO_LOGS.lock().unwrap_or_else(|e| e.into_inner());
    if !logs.contains(&log_path) {
        logs.push(log_path.clone());
    }
    drop(logs);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
    command
        .stderr(log.try_clone().expect("a second handle to the log"))
        .stdout(log);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", binary.display(), args[0]))
}

/// A TCP port of 127.0.0.1 that was free a moment ago (bound, then released), for a process
/// that cannot report the port it bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// A `fargo` process that is stopped (SIGTERM, then waited for) when dropped.
pub struct FargoProcess {
    child: std::process::Child,
}

impl FargoProcess {
    pub fn new(child: std::process::Child) -> Self {
        Self { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM, as Kubernetes does, and waits for it to exit.
    pub fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child process, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// Kills it at once (SIGKILL), as a node or an OOM kill would: no draining.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FargoProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts `spawn` on a thread that lives as long as the test process, so that the child (which
/// gets SIGTERM when the thread that started it ends) outlives each test's runtime.
pub(super) fn spawn_for_the_process(spawn: impl FnOnce() -> std::process::Child + Send + 'static) {
    let (started, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = spawn();
        let _ = started.send(());
        let _ = child.wait();
    });
    wait.recv().expect("the process thread started");
}

/// [`spawn_for_the_process`] for a child its caller keeps, to kill it and wait for it: the thread
/// that started it only lives on, so that the child gets SIGTERM only when the process ends.
pub(super) fn spawn_kept_for_the_process(
    spawn: impl FnOnce() -> std::process::Child + Send + 'static,
) -> std::process::Child {
    let (started, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = started.send(spawn());
        loop {
            std::thread::park();
        }
    });
    wait.recv().expect("the process thread started")
}
