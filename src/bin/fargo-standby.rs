//! `fargo-standby`: what a function's standby pod runs in place of the function until a request
//! wakes it (`spec.scale.standby`). The pod's sandbox, its network and IP included, is then
//! ready; waking it replaces only this container by the function's image.
//!
//! It accepts TCP connections on `$PORT` (the function's port, which fargo sets in every
//! function pod) and closes them at once, so that the pod's TCP readiness probe passes without
//! the function answering anything, and it exits at once on SIGTERM, so that the kubelet starts
//! the function's container without waiting for a grace period. Arguments (the function's own,
//! meant for its image) are ignored.

use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The port when `$PORT` is unset or not a port.
const DEFAULT_PORT: u16 = 8080;

fn main() -> ExitCode {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fargo-standby: starting the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stand_by(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fargo-standby: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts and drops connections on `port` until SIGTERM or SIGINT.
async fn stand_by(port: u16) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            accepted = listener.accept() => drop(accepted),
        }
    }
}
