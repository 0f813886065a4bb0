//! `fargo-runtime-api`: the sidecar of handler functions alone — what `fargo runtime-api` does,
//! in a binary that links nothing else. It runs in every function pod, so its size and resident
//! memory are the function's overhead.
//!
//! `fargo-runtime-api` serves; `fargo-runtime-api --wait-for ADDR` waits until ADDR accepts
//! connections and exits (the pod's `postStart` hook).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use fargo::runtime::cli::{RuntimeApiArgs, wait_for};
use fargo::telemetry;

/// The Runtime API sidecar of a fargo handler function.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FARGO_LOG_JSON")]
    log_json: bool,

    /// Only wait until ADDR accepts TCP connections (at most 10 s), then exit.
    #[arg(long, value_name = "ADDR")]
    wait_for: Option<SocketAddr>,

    #[command(flatten)]
    args: RuntimeApiArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One runtime at a time: one thread serves it.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("starting the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        if let Some(addr) = cli.wait_for {
            return wait_for(addr, std::time::Duration::from_secs(10))
                .await
                .map_err(|error| telemetry::error_chain(&error));
        }
        telemetry::init_logging(cli.log_json);
        let shutdown = telemetry::shutdown_on_signal()
            .map_err(|error| format!("installing signal handlers: {error}"))?;
        fargo::runtime::run(cli.args.into_config(), shutdown)
            .await
            .map_err(|error| telemetry::error_chain(&error))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fargo-runtime-api: {message}");
            ExitCode::FAILURE
        }
    }
}
