//! Lambda's per-invocation log lines (`START`, `END`, `REPORT`) and the memory figure of
//! `REPORT`.

use std::io::Write;
use std::time::Duration;

use crate::api::lambda::InvocationReport;

/// `START RequestId: <id> Version: $LATEST`.
pub fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: $LATEST")
}

/// `<time> <id> Task timed out after 3.00 seconds`, as Lambda logs a timeout.
pub fn timeout_line(request_id: &str, timeout: Duration) -> String {
    format!(
        "{} {request_id} Task timed out after {:.2} seconds",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        timeout.as_secs_f64()
    )
}

/// `END` and `REPORT` of a finished invocation, tab-separated as Lambda writes them.
pub fn end_lines(report: &InvocationReport) -> String {
    let mut text = format!(
        "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {duration:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {size} MB",
        id = report.request_id,
        duration = report.duration_ms,
        billed = report.billed_duration_ms,
        size = report.memory_size_mb,
    );
    if let Some(used) = report.max_memory_used_mb {
        text.push_str(&format!("\tMax Memory Used: {used} MB"));
    }
    if let Some(init) = report.init_duration_ms {
        text.push_str(&format!("\tInit Duration: {init:.2} ms"));
    }
    text
}

/// Writes lines to stdout, where Lambda's runtime lines go (the sidecar's own logs are on
/// stderr).
pub fn print(lines: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{lines}");
    let _ = out.flush();
}

/// The highest memory use of the function, in MiB (Lambda's "MB").
///
/// fargo's pods share one process namespace, so the sidecar sees the runtime's processes: their
/// peak resident sizes (`VmHWM`), summed, are the function's use (the first process is the pod's
/// `pause`, the sidecar is left out). Outside such a pod (a test running the sidecar by hand)
/// the sidecar's cgroup high-water mark is the closest figure — `memory.peak` (cgroup v2) or
/// `memory.max_usage_in_bytes` (v1) — and failing that its own `VmHWM`, a lower bound. `None`
/// only when not even that can be read.
pub fn max_memory_used_mb() -> Option<u64> {
    const MIB: u64 = 1024 * 1024;
    if let Some(kib) = shared_namespace_peak_kib() {
        return Some(kib.div_ceil(1024));
    }
    let cgroup = [
        "/sys/fs/cgroup/memory.peak",
        "/sys/fs/cgroup/memory/memory.max_usage_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    if let Some(bytes) = cgroup {
        return Some(bytes.div_ceil(MIB));
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status).map(|kib| kib.div_ceil(1024))
}

/// The summed `VmHWM` of the pod's other processes, when the sidecar shares the pod's process
/// namespace (process 1 is the sandbox's `pause`).
fn shared_namespace_peak_kib() -> Option<u64> {
    if std::fs::read_to_string("/proc/1/comm").ok()?.trim() != "pause" {
        return None;
    }
    let own = std::process::id().to_string();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if pid == "1" || pid == own || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
            total += vm_hwm_kib(&status).unwrap_or(0);
        }
    }
    Some(total)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::lambda::Outcome;

    fn report(init: Option<f64>) -> InvocationReport {
        InvocationReport {
            namespace: "media".into(),
            function: "thumbnail".into(),
            request_id: "c0ffee".into(),
            outcome: Outcome::Success,
            duration_ms: 12.344,
            billed_duration_ms: 13,
            memory_size_mb: 128,
            max_memory_used_mb: Some(37),
            init_duration_ms: init,
        }
    }

    #[test]
    fn report_lines_read_as_lambdas() {
        assert_eq!(
            start_line("c0ffee"),
            "START RequestId: c0ffee Version: $LATEST"
        );
        assert_eq!(
            end_lines(&report(None)),
            "END RequestId: c0ffee\nREPORT RequestId: c0ffee\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 37 MB"
        );
    }

    #[test]
    fn the_first_invocation_of_a_runtime_reports_its_init_duration() {
        assert!(
            end_lines(&report(Some(250.456)))
                .ends_with("\tMax Memory Used: 37 MB\tInit Duration: 250.46 ms")
        );
    }

    #[test]
    fn a_timeout_is_logged_with_lambdas_words() {
        assert!(
            timeout_line("c0ffee", Duration::from_millis(3000))
                .ends_with(" c0ffee Task timed out after 3.00 seconds")
        );
    }

    #[test]
    fn the_process_peak_is_read_from_proc_status() {
        let status = "Name:\tfargo\nVmPeak:\t  10000 kB\nVmHWM:\t    8192 kB\nVmRSS:\t 4096 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(8192));
        assert_eq!(vm_hwm_kib("Name:\tfargo\n"), None);
        assert!(
            max_memory_used_mb().is_some(),
            "Linux has /proc/self/status"
        );
    }
}
