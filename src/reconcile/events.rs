//! The one Event publisher of the controller side. Every Event fargo writes goes through
//! [`EventPublisher::publish`]: its note is cut to what the API server takes, and a failure to
//! publish is logged, never dropped silently.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::ReconcileError;

/// The `reportingController` of every Event fargo's controller writes.
pub const REPORTING_CONTROLLER: &str = "fargo-controller";
/// The API server refuses an Event whose note is longer (events.k8s.io/v1).
pub const MAX_NOTE_BYTES: usize = 1024;

/// What one Event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    /// A bounded, CamelCase reason (`Scaled`, `RuntimeClassNotFound`).
    pub reason: String,
    /// What fargo was doing (`Reconcile`, `Scale`, `Schedule`).
    pub action: &'static str,
    pub text: String,
}

impl Note {
    pub fn normal(action: &'static str, reason: &str, text: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason: reason.into(),
            action,
            text: text.into(),
        }
    }

    pub fn warning(action: &'static str, reason: &str, text: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason: reason.into(),
            action,
            text: text.into(),
        }
    }

    /// A Warning for a failure: its reason, and its error chain as the text.
    pub fn failure(action: &'static str, error: &dyn ReconcileError) -> Self {
        Self::warning(action, error.reason(), crate::telemetry::error_chain(error))
    }
}

/// Publishes Events as fargo's controller.
#[derive(Clone)]
pub struct EventPublisher {
    recorder: Recorder,
}

impl EventPublisher {
    /// A publisher reporting as [`REPORTING_CONTROLLER`], instance `identity` (the pod).
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(identity.to_string()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes `note` on `reference`; a failure is logged with what was lost.
    pub async fn publish(&self, reference: &ObjectReference, note: Note) {
        let event = Event {
            type_: note.type_,
            reason: note.reason,
            note: Some(cut_note(&note.text)),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(
                object = reference.name.as_deref().unwrap_or_default(),
                namespace = reference.namespace.as_deref().unwrap_or_default(),
                reason = %event.reason,
                error = %crate::telemetry::error_chain(&error),
                "publishing an Event failed"
            );
        }
    }

    /// [`publish`](Self::publish) without waiting for it: for loops whose tick must not wait on
    /// the API server.
    pub fn publish_in_background(&self, reference: ObjectReference, note: Note) {
        let publisher = self.clone();
        tokio::spawn(async move { publisher.publish(&reference, note).await });
    }
}

/// `text` cut to at most [`MAX_NOTE_BYTES`], on a character boundary, marked with `…` when cut.
pub fn cut_note(text: &str) -> String {
    if text.len() <= MAX_NOTE_BYTES {
        return text.to_string();
    }
    const MARK: &str = "…";
    let mut end = MAX_NOTE_BYTES - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_notes_are_kept_whole() {
        assert_eq!(cut_note("scaled from 1 to 3"), "scaled from 1 to 3");
        let exactly = "x".repeat(MAX_NOTE_BYTES);
        assert_eq!(cut_note(&exactly), exactly);
    }

    #[test]
    fn long_notes_are_cut_to_the_limit_on_a_character_boundary() {
        // Three-byte characters, so that the limit falls inside one.
        let long = "€".repeat(MAX_NOTE_BYTES);
        let cut = cut_note(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{} bytes", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == '€'));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the function's children cannot be built")]
    struct Outer(#[source] std::io::Error);

    impl ReconcileError for Outer {
        fn reason(&self) -> &'static str {
            "InvalidMemory"
        }
    }

    #[test]
    fn a_failure_note_carries_the_reason_and_the_whole_error_chain() {
        let error = Outer(std::io::Error::other(
            "\"lots\" is not a Kubernetes quantity",
        ));
        let note = Note::failure("Reconcile", &error);
        assert_eq!(note.type_, EventType::Warning);
        assert_eq!(note.reason, "InvalidMemory");
        assert_eq!(
            note.text,
            "the function's children cannot be built: \"lots\" is not a Kubernetes quantity"
        );
    }
}
