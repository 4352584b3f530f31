//! `shoal daemon`: one node of a Shoal cluster.
//!
//! Start-up, in order: take the state directory's lock (one daemon per state dir), load or make
//! the node's identity, bind the local Unix socket (root only), serve the local gRPC API, and
//! wait for SIGTERM/SIGINT. Shutdown cancels one token that every part of the daemon watches, so
//! nothing is left half-running; the socket file is removed on the way out.
//!
//! ```text
//!  shoal CLI --unix socket--> api::DaemonApi (version, info, cluster lifecycle)
//!                            control API (cluster-wide objects; managers only)
//! ```

pub mod addr;
mod api;
mod cluster;
mod engine;
mod identity;
mod local;
mod lock;
mod network;
mod socket;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::logging::{self, LogFormat};

pub use api::version_response;
pub use engine::EXIT_CODE_KEY;

/// How long in-flight calls (such as followed log streams) may hold up shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Flags of `shoal daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Where the node keeps its identity, certificates, Raft log and images.
    #[arg(long, env = "SHOAL_STATE_DIR", default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,

    /// Unix socket of the local API (mode 0600, root only).
    #[arg(long, default_value = "/run/shoal/shoal.sock")]
    pub socket: PathBuf,

    /// Address for cluster traffic (managers' Raft and API, workers' sessions): IP[:PORT] or an
    /// interface name. Used once the node is in a cluster.
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: String,

    /// Address other nodes use to reach this one: IP[:PORT] or an interface name. Defaults to the
    /// listen address, or the address of the default route's interface when that is 0.0.0.0.
    #[arg(long)]
    pub advertise_addr: Option<String>,

    /// Cgroup (in every hierarchy) under which containers' cgroups are made.
    #[arg(long, default_value = "shoal")]
    pub cgroup_parent: String,

    /// Log line format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Subnet of the node-local bridge (shoal0) that bridged containers and tasks get addresses
    /// from; the bridge takes the first address. Must not overlap the host's networks.
    #[arg(long, default_value = shoal_overlay::DEFAULT_SUBNET)]
    pub bridge_subnet: shoal_overlay::Subnet,
}

/// Runs the daemon until a termination signal arrives.
pub async fn run(args: DaemonArgs) -> Result<()> {
    logging::init(args.log_format);
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "shoal daemon must run as root: it creates namespaces, mounts, cgroups and network \
             interfaces. Start it with `sudo shoal daemon` (or `systemctl start shoal`)"
        );
    }
    let listen_addr = addr::resolve(&args.listen_addr, "--listen-addr")?;
    let advertise_addr = match &args.advertise_addr {
        Some(a) => Some(addr::resolve(a, "--advertise-addr")?),
        None => None,
    };

    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create state directory {}", args.state_dir.display()))?;
    let _lock = lock::StateLock::acquire(&args.state_dir)?;
    let identity = identity::NodeIdentity::load_or_create(&args.state_dir)?;
    let listener = socket::bind(&args.socket)?;

    let span = tracing::info_span!("daemon", node = %identity.node_id);
    run_node(args, identity, listener, listen_addr, advertise_addr)
        .instrument(span)
        .await
}

/// Everything after the state dir is locked and the socket bound.
async fn run_node(
    args: DaemonArgs,
    identity: identity::NodeIdentity,
    listener: tokio::net::UnixListener,
    listen_addr: std::net::SocketAddr,
    advertise_addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    info!(
        state_dir = %args.state_dir.display(),
        socket = %args.socket.display(),
        listen_addr = %listen_addr,
        "shoal daemon {} starting",
        env!("CARGO_PKG_VERSION")
    );

    // Containers outlive the daemon: opening the engine re-adopts those still running.
    let engine =
        shoal_worker::engine::LocalEngine::open(shoal_worker::engine::LocalEngineOptions {
            state_dir: args.state_dir.clone(),
            cgroup_parent: args.cgroup_parent.clone(),
            // Our own binary even if it was replaced on disk since we started.
            shim_exe: PathBuf::from("/proc/self/exe"),
            log_max_size: shoal_worker::engine::logs::DEFAULT_MAX_SIZE,
            log_max_files: shoal_worker::engine::logs::DEFAULT_MAX_FILES,
        })
        .await
        .context("cannot open the container engine")?;

    let cancel = CancellationToken::new();
    // One bridge network for the node, made on first use (local containers and tasks share it).
    let bridge = shoal_overlay::LazyBridgeNetworks::new(network::bridge_config(
        &args.state_dir,
        &args.socket,
        args.bridge_subnet,
    ));
    let container_networks = std::sync::Arc::new(network::ContainerNetworks::new(bridge.clone()));
    tokio::spawn({
        let (nets, engine, cancel) = (container_networks.clone(), engine.clone(), cancel.clone());
        async move { nets.run_sweeper(engine, cancel).await }
    });
    let cluster = cluster::Cluster::new(
        cluster::NodeContext {
            state_dir: args.state_dir.clone(),
            listen_addr,
            advertise_addr,
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            networks: bridge,
        },
        identity.node_id.clone(),
        engine.clone(),
    );
    // A member carries on where it was; a failure here is reported but keeps the local API up
    // so the node can still be inspected, or made to leave.
    if let Err(e) = cluster.resume().await {
        tracing::error!(error = %format!("{e:#}"), "cannot rejoin the cluster after restart");
    }
    let api = api::DaemonApi::new(cluster.clone(), engine.clone());
    let server = api::serve(
        api,
        engine::EngineApi::new(engine, container_networks),
        cluster.clone(),
        listener,
        cancel.clone(),
    );
    tokio::pin!(server);

    tokio::select! {
        res = &mut server => {
            res.context("local API server failed")?;
        }
        sig = termination_signal() => {
            info!("received {}, shutting down", sig?);
            cancel.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                warn!("in-flight calls did not finish within {SHUTDOWN_GRACE:?}; closing them");
            }
        }
    }
    cluster.shutdown().await;
    socket::remove(&args.socket);
    info!("shoal daemon stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names the one that came.
async fn termination_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
