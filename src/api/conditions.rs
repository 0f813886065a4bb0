//! Status conditions shared by both resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The resource does what its spec asks (for a function: it can serve requests).
pub const READY: &str = "Ready";
/// A profile's `runtimeClassName` names an existing RuntimeClass.
pub const RUNTIME_CLASS_FOUND: &str = "RuntimeClassFound";
/// A function has no pods because it has been idle.
pub const SCALED_TO_ZERO: &str = "ScaledToZero";
/// A function's schedules parse (cron and time zone).
pub const SCHEDULES_VALID: &str = "SchedulesValid";
/// A function's `profile` names an existing FargateProfile.
pub const PROFILE_FOUND: &str = "ProfileFound";
/// Every host in a function's `triggers.http.hosts` is routed to it: none is one of the
/// activator's own names, and no function claimed it first.
pub const HOSTS_ACCEPTED: &str = "HostsAccepted";

/// Builds a condition; `status` is `"True"` or `"False"`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Replaces the condition of the same type in `conditions`, keeping its `lastTransitionTime`
/// when the status did not change, as `meta.SetStatusCondition` does.
pub fn set(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let last_transition_time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time,
                ..new
            };
        }
        None => conditions.push(new),
    }
}

/// Whether `conditions` holds `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn set_keeps_transition_time_while_status_is_unchanged() {
        let mut conditions = vec![];
        set(
            &mut conditions,
            condition(READY, true, "Ok", "", Some(1), at(10)),
        );
        set(
            &mut conditions,
            condition(READY, true, "Ok", "again", Some(2), at(20)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "again");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set(
            &mut conditions,
            condition(READY, false, "Broken", "", Some(3), at(30)),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert!(!is_true(&conditions, READY));
    }
}
