//! Why a function's pods do not serve, in words a user can act on: shared by the activator (a
//! held request that times out says why) and the function reconciler (the Ready condition says
//! why).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Container states that say a pod will not become ready by itself soon.
const NORMAL_WAITING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

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
            .map(|t| format!(" (last exit code {})", t.exit_code))
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
            "exited with code {}{}",
            terminated.exit_code,
            with_message(terminated.reason.as_deref())
        ));
    }
    None
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
