//! Fuzz target: cron expressions, time zones, ticks and the fire plan; see `checks/cron.rs`.

#![no_main]

#[path = "../checks/cron.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: checks::Input<'_>| checks::run(&input));
