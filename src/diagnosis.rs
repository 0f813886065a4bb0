//! Why a function's pods do not serve, in words a user can act on: shared by the activator (a
//! held request that times out says why) and the function reconciler (the Ready condition says
//! why).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Container states that say a pod will not become ready by itself soon.
const NORMAL_WAITING: [&str; 2] = ["ContainerCreating", "PodInitializing"];
/// Waiting reasons after which a pod serves nothing until someone fixes the function (its
/// image, its code, its configuration): requests waiting for it are answered at once.
const BROKEN_WAITING: [&str; 8] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// The most of a container's termination message (the tail of its log, for runtimes) a
/// problem quotes.
const LAST_WORDS_CHARS: usize = 600;

/// The problems of these pods when every one of them is broken (see [`BROKEN_WAITING`]): no
/// request should wait for them. `None` while any pod may still become ready.
pub fn all_broken(pods: &[Pod]) -> Option<Vec<String>> {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    let broken = |pod: &&Pod| {
        let Some(status) = pod.status.as_ref() else {
            return false;
        };
        status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .any(|container| {
                container
                    .state
                    .as_ref()
                    .and_then(|state| state.waiting.as_ref())
                    .and_then(|waiting| waiting.reason.as_deref())
                    .is_some_and(|reason| BROKEN_WAITING.contains(&reason))
            })
    };
    if live.is_empty() || !live.iter().all(broken) {
        return None;
    }
    Some(pod_problems(pods))
}

/// What keeps each of these pods from serving, one line per problem; empty when they are just
/// starting.
pub fn pod_problems(pods: &[Pod]) -> Vec<String> {
    let mut problems = vec![];
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or("(unnamed)");
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        for condition in status.conditions.iter().flatten() {
            if condition.type_ == "PodScheduled" && condition.status == "False" {
                problems.push(format!(
                    "pod {name} is not scheduled: {}{}",
                    condition.reason.as_deref().unwrap_or("Unschedulable"),
                    with_message(condition.message.as_deref()),
                ));
            }
        }
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            if let Some(problem) = container_problem(container) {
                problems.push(format!(
                    "pod {name}, container {}: {problem}",
                    container.name
                ));
            }
        }
    }
    problems
}

fn container_problem(container: &ContainerStatus) -> Option<String> {
    let state = container.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if reason.is_empty() || NORMAL_WAITING.contains(&reason) {
            return None;
        }
        let last_exit = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                format!(
                    " (last exit code {}{})",
                    t.exit_code,
                    with_message(last_words(t.message.as_deref()).as_deref())
                )
            })
            .unwrap_or_default();
        return Some(format!(
            "{reason}{}{last_exit}",
            with_message(waiting.message.as_deref())
        ));
    }
    if let Some(terminated) = &state.terminated
        && terminated.exit_code != 0
    {
        return Some(format!(
            "exited with code {}{}{}",
            terminated.exit_code,
            with_message(terminated.reason.as_deref()),
            with_message(last_words(terminated.message.as_deref()).as_deref())
        ));
    }
    None
}

/// The end of a termination message (for a runtime, the tail of its log: its error), on one
/// line, at most [`LAST_WORDS_CHARS`] characters.
fn last_words(message: Option<&str>) -> Option<String> {
    let lines: Vec<&str> = message?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let mut text = lines.join(" | ");
    if text.is_empty() {
        return None;
    }
    let chars = text.chars().count();
    if chars > LAST_WORDS_CHARS {
        text = format!(
            "…{}",
            text.chars()
                .skip(chars - LAST_WORDS_CHARS)
                .collect::<String>()
        );
    }
    Some(text)
}

fn with_message(message: Option<&str>) -> String {
    match message {
        Some(message) if !message.is_empty() => format!(": {message}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    #[test]
    fn image_pull_failures_are_reported_with_their_message() {
        let pods = [pod(r#"
metadata: {name: thumbnail-abc}
status:
  containerStatuses:
    - name: function
      image: registry.example/thumbnail:1.0
      imageID: ""
      ready: false
      restartCount: 0
      state:
        waiting: {reason: ImagePullBackOff, message: 'Back-off pulling image "registry.example/thumbnail:1.0"'}
"#)];
        assert_eq!(
            pod_problems(&pods),
            vec![
                "pod thumbnail-abc, container function: ImagePullBackOff: Back-off pulling image \"registry.example/thumbnail:1.0\""
                    .to_string()
            ]
        );
    }

    #[test]
    fn crash_loops_report_the_last_exit_code() {
        let pods = [pod(r#"
metadata: {name: thumbnail-abc}
status:
  containerStatuses:
    - name: function
      image: x
      imageID: ""
      ready: false
      restartCount: 4
      state:
        waiting: {reason: CrashLoopBackOff}
      lastState:
        terminated: {exitCode: 3}
"#)];
        assert_eq!(
            pod_problems(&pods),
            vec!["pod thumbnail-abc, container function: CrashLoopBackOff (last exit code 3)"]
        );
    }

    #[test]
    fn a_runtime_that_fails_to_start_is_reported_with_the_end_of_its_log() {
        let pods = [pod(r#"
metadata: {name: hello-abc}
status:
  containerStatuses:
    - name: function
      image: x
      imageID: ""
      ready: false
      restartCount: 2
      state:
        waiting: {reason: CrashLoopBackOff}
      lastState:
        terminated:
          exitCode: 1
          message: "START\n[ERROR] Runtime.ImportModuleError: Unable to import module 'app'\n\n"
"#)];
        let problems = all_broken(&pods).expect("a crash loop is broken");
        assert_eq!(
            problems,
            vec![
                "pod hello-abc, container function: CrashLoopBackOff (last exit code 1: START | \
                 [ERROR] Runtime.ImportModuleError: Unable to import module 'app')"
            ]
        );
        let long = "x".repeat(2000);
        let words = last_words(Some(&long)).unwrap();
        assert_eq!(words.chars().count(), LAST_WORDS_CHARS + 1);
        assert!(words.starts_with('…'));
    }

    #[test]
    fn pods_are_broken_only_when_every_live_one_is() {
        let crashing = pod(r#"
metadata: {name: a}
status:
  containerStatuses:
    - {name: function, image: x, imageID: "", ready: false, restartCount: 3, state: {waiting: {reason: CrashLoopBackOff}}}
"#);
        let starting = pod(r#"
metadata: {name: b}
status:
  containerStatuses:
    - {name: function, image: x, imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}
"#);
        let mut leaving = starting.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(all_broken(&[crashing.clone(), starting]).is_none());
        assert!(all_broken(&[crashing.clone(), leaving]).is_some());
        assert!(all_broken(&[]).is_none(), "no pod yet: it is being created");
    }

    #[test]
    fn unschedulable_pods_are_reported() {
        let pods = [pod(r#"
metadata: {name: thumbnail-abc}
status:
  conditions:
    - {type: PodScheduled, status: "False", reason: Unschedulable, message: "0/1 nodes are available"}
"#)];
        assert_eq!(
            pod_problems(&pods),
            vec!["pod thumbnail-abc is not scheduled: Unschedulable: 0/1 nodes are available"]
        );
    }

    #[test]
    fn starting_and_terminating_pods_are_not_problems() {
        let pods = [
            pod(r#"
metadata: {name: starting}
status:
  containerStatuses:
    - {name: function, image: x, imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}
"#),
            pod(r#"
metadata: {name: leaving, deletionTimestamp: "2026-01-01T00:00:00Z"}
status:
  containerStatuses:
    - {name: function, image: x, imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ErrImageNeverPull}}}
"#),
        ];
        assert!(pod_problems(&pods).is_empty());
    }
}
