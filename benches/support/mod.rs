//! What the benchmarks share beside tests/common: percentiles and the runtime they run on.

// Each benchmark compiles this module and uses part of it.
#![allow(dead_code)]

use std::time::Duration;

/// The `p` quantile (0.0–1.0) of samples sorted in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Prints the count, p50 and p99 of `samples` after `what`, which is padded to `label_width`
/// so that a benchmark's lines form columns; returns p50 and p99.
pub fn report(what: &str, label_width: usize, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{what:<label_width$} n={:<6} p50={:>10.1?} p99={:>10.1?}",
        samples.len(),
        p50,
        p99
    );
    (p50, p99)
}

/// A process's resident set, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs a benchmark's body on a Tokio runtime.
pub fn run(benchmark: impl std::future::Future<Output = ()>) {
    tokio::runtime::Runtime::new()
        .expect("a Tokio runtime")
        .block_on(benchmark);
}

/// CPU time the process has used so far, summed over its threads (nanosecond schedstat).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Of [`cpu_time`], the part spent in the kernel (its system calls, the network stack): the
/// process's `stime`, in `/proc`'s clock ticks (USER_HZ, which Linux fixes at 100 a second).
pub fn kernel_time(pid: u32) -> Duration {
    const TICKS_PER_SECOND: u64 = 100;
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command's closing parenthesis start at the third, `state`:
            // `stime` is the fifteenth.
            let (_, fields) = stat.rsplit_once(')')?;
            fields.split_whitespace().nth(12)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The API server's own metrics, in the Prometheus text format.
pub async fn api_server_metrics(client: &kube::Client) -> String {
    let request = hyper::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    client
        .request_text(request)
        .await
        .expect("the API server's metrics")
}

/// The process of this machine whose command is `comm` (and, given a pod uid, that runs in that
/// pod's cgroup): the node is this machine, so its pods' processes are visible here.
pub fn process_named(comm: &str, pod_uid: Option<&str>) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if name.trim() != comm {
                return None;
            }
            if let Some(uid) = pod_uid {
                let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
                let underscored = uid.replace('-', "_");
                if !(cgroup.contains(uid) || cgroup.contains(&underscored)) {
                    return None;
                }
            }
            Some(pid)
        })
}
