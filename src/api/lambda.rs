//! What handler functions exchange across fargo's sides: the headers that mark an invocation
//! that is not an HTTP event, the error bodies Lambda's clients expect, and the report of each
//! invocation that the runtime sidecar (`fargo runtime-api`) makes and metering will read.

use serde::{Deserialize, Serialize};

/// Header marking a request whose body is the event itself (the Invoke API's
/// `InvocationType=Event` as the activator sends it); the activator strips it from clients.
pub const INVOKE_HEADER: &str = "x-fargo-invoke";
/// The value of [`INVOKE_HEADER`] for an event invocation.
pub const INVOKE_EVENT: &str = "event";
/// Header Lambda sets on an answer that carries a function's error (`Unhandled`).
/// On a handler function's answer, from its sidecar to the activator: the invocation's billed
/// duration in milliseconds. The activator meters it and removes it.
pub const BILLED_MS_HEADER: &str = "x-fargo-billed-ms";
/// With [`BILLED_MS_HEADER`], on a runtime's first invocation: its init duration in
/// milliseconds.
pub const INIT_MS_HEADER: &str = "x-fargo-init-ms";
pub const FUNCTION_ERROR_HEADER: &str = "x-amz-function-error";

/// An error as Lambda reports it to callers: `{"errorMessage": …, "errorType": …}`. Runtime
/// clients add `stackTrace` in their own shapes (strings in Python, frames in Go), so errors
/// a runtime posted are passed on as it wrote them; this type is for the errors fargo makes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_message: String,
    pub error_type: String,
}

impl ErrorBody {
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> Self {
        Self {
            error_message: error_message.into(),
            error_type: error_type.into(),
        }
    }

    /// The JSON text; an `ErrorBody` always serializes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How one invocation ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The handler returned a result.
    Success,
    /// The handler failed (the runtime posted an error, or a response too large to pass on).
    Error,
    /// The runtime could not start the handler; the invocation never ran.
    InitError,
    /// No answer by the deadline.
    Timeout,
    /// The caller left before a runtime took the invocation.
    Cancelled,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::InitError => "init_error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One invocation, as Lambda's `REPORT` line states it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvocationReport {
    pub namespace: String,
    pub function: String,
    pub request_id: String,
    pub outcome: Outcome,
    /// From the moment a runtime took the invocation to its answer (or the deadline); zero for
    /// invocations no runtime took.
    pub duration_ms: f64,
    /// `duration_ms` rounded up to the millisecond.
    pub billed_duration_ms: u64,
    pub memory_size_mb: u32,
    /// The memory high-water mark the sidecar could read, when it could read one.
    #[serde(default)]
    pub max_memory_used_mb: Option<u64>,
    /// On the first invocation after a runtime started: from its start to its first request
    /// for work.
    #[serde(default)]
    pub init_duration_ms: Option<f64>,
}

/// A duration rounded up to the next whole millisecond, as Lambda bills it.
pub fn billed_ms(duration_ms: f64) -> u64 {
    if duration_ms <= 0.0 {
        0
    } else {
        duration_ms.ceil() as u64
    }
}

/// A fresh request id in the UUID v4 shape Lambda uses.
pub fn request_id() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState has fresh keys seeded from the OS: unique, unpredictable ids without a
    // random number crate.
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = std::collections::hash_map::RandomState::new().hash_one(count);
    let low = std::collections::hash_map::RandomState::new().hash_one(!count);
    let bits = (u128::from(high) << 64 | u128::from(low)) & !(0xf000 << 64) & !(0xc000 << 48);
    uuid_text(bits | (0x4000 << 64) | (0x8000 << 48))
}

/// 128 bits in a UUID's text form, `8-4-4-4-12` hex digits.
pub fn uuid_text(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_use_the_field_names_metering_reads() {
        let report = InvocationReport {
            namespace: "media".into(),
            function: "thumbnail".into(),
            request_id: "8f5c".into(),
            outcome: Outcome::Timeout,
            duration_ms: 3000.5,
            billed_duration_ms: 3001,
            memory_size_mb: 128,
            max_memory_used_mb: Some(42),
            init_duration_ms: None,
        };
        let json = serde_json::to_value(&report).expect("a report serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "namespace": "media", "function": "thumbnail", "requestId": "8f5c",
                "outcome": "timeout", "durationMs": 3000.5, "billedDurationMs": 3001,
                "memorySizeMb": 128, "maxMemoryUsedMb": 42, "initDurationMs": null
            })
        );
        let back: InvocationReport = serde_json::from_value(json).expect("a report deserializes");
        assert_eq!(back, report);
    }

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(billed_ms(12.34), 13);
        assert_eq!(billed_ms(12.0), 12);
        assert_eq!(billed_ms(0.01), 1);
        assert_eq!(billed_ms(0.0), 0);
    }

    #[test]
    fn error_bodies_have_lambdas_field_names() {
        let body = ErrorBody::new(
            "Sandbox.Timedout",
            "media/thumbnail timed out after 3.00 seconds",
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body.to_json()).expect("valid JSON"),
            serde_json::json!({
                "errorMessage": "media/thumbnail timed out after 3.00 seconds",
                "errorType": "Sandbox.Timedout"
            })
        );
    }

    #[test]
    fn request_ids_are_distinct_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
