use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fargo::telemetry;
use prometheus_client::registry::Registry;

/// fargo: Fargate profiles and serverless functions for any Kubernetes cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FARGO_LOG_JSON", global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the reconcilers, the autoscaler and the schedule trigger (leader-elected), and serve
    /// the admission webhook.
    Controller(ControllerArgs),
    /// Run the HTTP gateway in front of every function.
    Activator(ActivatorArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Directory to write `<crd name>.yaml` files into; stdout when absent.
        #[arg(long, env = "FARGO_CRDS_DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct ControllerArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "FARGO_HEALTH_ADDR", default_value = "0.0.0.0:9090")]
    health_addr: SocketAddr,
}

#[derive(clap::Args, Debug)]
struct ActivatorArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "FARGO_HEALTH_ADDR", default_value = "0.0.0.0:9091")]
    health_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Controller(args) => {
            telemetry::init_logging(cli.log_json);
            run_component("controller", args.health_addr).await
        }
        Command::Activator(args) => {
            telemetry::init_logging(cli.log_json);
            run_component("activator", args.health_addr).await
        }
    }
}

fn print_crds(out_dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let files = fargo::api::crds_yaml().context("rendering the CRDs")?;
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}

async fn run_component(name: &str, health_addr: SocketAddr) -> anyhow::Result<()> {
    let shutdown = telemetry::shutdown_on_signal().context("installing signal handlers")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster config)")?;
    let version = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    tracing::info!(component = name, apiserver = %version.git_version, "connected");

    let registry = Arc::new(Registry::with_prefix("fargo"));
    let readiness = telemetry::Readiness::default();
    readiness.set(true);
    telemetry::serve(
        health_addr,
        telemetry::health_router(registry, readiness),
        shutdown,
    )
    .await
    .with_context(|| format!("serving health on {health_addr}"))?;
    tracing::info!(component = name, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
