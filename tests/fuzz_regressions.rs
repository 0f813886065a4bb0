//! Every input kept in `fuzz/regressions/<target>/` once failed a fuzz target; each is replayed
//! here through the same checks as the target, so that `make unit` keeps them fixed without
//! nightly Rust or libFuzzer.

#[path = "../fuzz/checks/cron.rs"]
mod cron;

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

/// The inputs kept for `target`, by file name.
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs
}

/// `bytes` as the fuzz target's closure receives them from libfuzzer-sys.
fn decoded<'a, T: Arbitrary<'a>>(name: &str, bytes: &'a [u8]) -> T {
    T::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn schedules_that_once_failed_the_cron_fuzz_target_pass_its_checks() {
    for (name, bytes) in regressions("cron") {
        let input: cron::Input<'_> = decoded(&name, &bytes);
        eprintln!("{name}: {input:?}");
        cron::run(&input);
    }
}
