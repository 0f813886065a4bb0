//! `fargo-standby`: what a function's standby pod runs in place of the function until a request
//! wakes it (`spec.scale.standby`). The pod's sandbox, its network and IP included, is then
//! ready; waking it replaces only this container by the function's image.
//!
//! It listens on no port: the pod's readiness probe fails (the kubelet reports that as
//! `Unhealthy` events of the standby pod), so that the pod is never ready, and no request
//! reaches it, before the function's own container answers. It exits at once on SIGTERM, so
//! that the kubelet starts the function's container without waiting for a grace period.
//! Arguments (the function's own, meant for its image) are ignored.

use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
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
    match runtime.block_on(stand_by()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fargo-standby: installing signal handlers: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn stand_by() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
