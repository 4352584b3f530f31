//! The command line: clap definitions, and one module per command group.
//!
//! Every command but `daemon` and `completion` is a gRPC client of a daemon, reached through
//! `-H/--host` (default: the local Unix socket). Output follows the Docker CLI's shape so a
//! Swarm user finds the columns and words they expect.

mod client;
mod cluster;
mod completion;
mod container;
mod image;
mod info;
mod node;
mod output;
mod service;
mod units;
mod version;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use client::Host;

/// Shoal: run containerized services across a cluster of Linux machines.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, propagate_version = true)]
pub struct Cli {
    /// Daemon to talk to: unix:///path/to.sock, a socket path, or tcp://HOST:PORT.
    #[arg(
        short = 'H',
        long = "host",
        env = "SHOAL_HOST",
        global = true,
        default_value = client::DEFAULT_SOCKET_URL
    )]
    pub host: Host,

    /// Directory with ca.pem, cert.pem and key.pem for tcp:// hosts (from
    /// `shoal cluster ca issue-client`).
    #[arg(long, env = "SHOAL_CERT_PATH", global = true, value_name = "DIR")]
    pub tls_dir: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the local API, the container engine and, in a cluster, manager or worker.
    Daemon(crate::daemon::DaemonArgs),
    /// Show the client's and the daemon's versions.
    Version(version::VersionArgs),
    /// Show what the daemon knows about this node.
    Info(info::InfoArgs),
    /// Create, join and leave a cluster; join tokens, settings and the CA.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Manage the cluster's nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Print a shell completion script (bash, zsh or fish).
    Completion(completion::CompletionArgs),
    /// Manage images on this node: import, ls, inspect, rm.
    Image(image::ImageArgs),
    /// Manage containers on this node: run, ps, stop, kill, rm, logs, inspect, wait.
    Container(container::ContainerArgs),
}

/// Runs one command; the exit code is the command's own (e.g. a container's exit status).
pub async fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(dir) = &cli.tls_dir {
        client::set_tls_dir(dir.clone());
    }
    match cli.command {
        Command::Daemon(args) => crate::daemon::run(args).await?,
        Command::Version(args) => version::run(&cli.host, args).await?,
        Command::Info(args) => info::run(&cli.host, args).await?,
        Command::Cluster(cmd) => cluster::run(&cli.host, cmd).await?,
        Command::Node(cmd) => node::run(&cli.host, cmd).await?,
        Command::Service(cmd) => service::run(&cli.host, cmd).await?,
        Command::Completion(args) => completion::run(args),
        Command::Image(args) => image::run(&cli.host, args).await?,
        Command::Container(args) => return container::run(&cli.host, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Formats an error chain for people: a gRPC status shows only its message (what the daemon
/// said), other errors their context chain joined by ": ".
pub fn render_error(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        return client::describe_status(status);
    }
    format!("{err:#}")
}
