use kube::ResourceExt;
use kube::core::{ObjectList, WatchEvent};

use super::*;
use crate::api::ServerlessFunction;

const VALID: &str = r#"{"apiVersion":"fargo.dev/v1alpha1","kind":"ServerlessFunction",
    "metadata":{"name":"thumbnail","namespace":"media","resourceVersion":"7",
        "managedFields":[{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1",
            "fieldsV1":{"f:spec":{"f:image":{}}}}]},
    "spec":{"image":"registry.example/thumbnail:1.0","port":8080,"memory":"256Mi"}}"#;

const INVALID: &str = r#"{"apiVersion":"fargo.dev/v1alpha1","kind":"ServerlessFunction",
    "metadata":{"name":"broken","namespace":"media"},
    "spec":{"image":"registry.example/thumbnail:1.0","port":"eighty"}}"#;

fn one_pass(json: &str) -> DeserializeGuard<ServerlessFunction> {
    serde_json::from_str::<OnePass<ServerlessFunction>>(json)
        .expect("a guard always deserializes")
        .0
}

#[test]
fn a_valid_object_reads_as_kubes_guard_reads_it() {
    let kubes: DeserializeGuard<ServerlessFunction> = serde_json::from_str(VALID).unwrap();
    let read = one_pass(VALID).0.expect("a valid function");
    assert_eq!(read, kubes.0.unwrap());
    assert_eq!(read.spec.port, 8080);
    assert_eq!(read.metadata.managed_fields.as_ref().map(Vec::len), Some(1));
}

#[test]
fn an_invalid_object_keeps_its_metadata_and_says_what_failed() {
    let invalid = one_pass(INVALID)
        .0
        .expect_err("a port that is not a number");
    assert_eq!(invalid.metadata.name.as_deref(), Some("broken"));
    assert_eq!(invalid.metadata.namespace.as_deref(), Some("media"));
    assert!(invalid.error.contains("eighty"), "{}", invalid.error);
    let guard = one_pass(INVALID);
    assert_eq!(guard.meta().name.as_deref(), Some("broken"));
}

#[test]
fn watch_events_and_lists_read_each_object_on_its_own() {
    // As the API server sends them: the event's type first, then its object.
    let event = format!(r#"{{"type":"MODIFIED","object":{INVALID}}}"#);
    match serde_json::from_str::<WatchEvent<OnePass<ServerlessFunction>>>(&event).unwrap() {
        WatchEvent::Modified(object) => assert!(object.0.0.is_err()),
        other => panic!("not a modification: {other:?}"),
    }
    let list = format!(
        r#"{{"apiVersion":"fargo.dev/v1alpha1","kind":"ServerlessFunctionList",
            "metadata":{{"resourceVersion":"9"}},"items":[{VALID},{INVALID}]}}"#
    );
    let list: ObjectList<OnePass<ServerlessFunction>> = serde_json::from_str(&list).unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|o| (o.name_any(), o.0.0.is_ok()))
        .collect();
    assert_eq!(
        names,
        [
            ("thumbnail".to_string(), true),
            ("broken".to_string(), false)
        ]
    );
}

#[test]
fn what_is_not_an_object_is_an_error_of_the_whole_read() {
    assert!(serde_json::from_str::<OnePass<ServerlessFunction>>("{\"metadata\":").is_err());
    assert!(serde_json::from_str::<OnePass<ServerlessFunction>>("[1, 2]").is_err());
}
