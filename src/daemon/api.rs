//! The node-local gRPC API on the Unix socket: `Daemon` (version, info, cluster lifecycle) and
//! the cluster-wide `Control` API, which answers only once the node is a manager.

use std::path::PathBuf;

use anyhow::Result;
use shoal_proto::control_server::{Control, ControlServer};
use shoal_proto::daemon_server::{Daemon, DaemonServer};
use shoal_proto::{
    ClusterMembership, EngineSummary, InfoRequest, InfoResponse, Platform, VersionRequest,
    VersionResponse,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// What the local API needs to know about its node.
#[derive(Debug, Clone)]
pub struct DaemonContext {
    pub node_id: String,
    pub state_dir: PathBuf,
    pub listen_addr: String,
    pub advertise_addr: String,
}

pub struct DaemonApi {
    ctx: DaemonContext,
    engine: Option<shoal_worker::engine::LocalEngine>,
}

impl DaemonApi {
    pub fn new(ctx: DaemonContext) -> DaemonApi {
        DaemonApi { ctx, engine: None }
    }

    /// The container engine whose figures `info` reports.
    pub fn with_engine(mut self, engine: shoal_worker::engine::LocalEngine) -> DaemonApi {
        self.engine = Some(engine);
        self
    }
}

/// Serves the local API on `listener` until `cancel` fires.
pub async fn serve(
    api: DaemonApi,
    engine: super::engine::EngineApi,
    listener: UnixListener,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(DaemonServer::new(api))
        .add_service(shoal_proto::engine_server::EngineServer::new(engine))
        .add_service(ControlServer::with_interceptor(NotAManager, not_a_manager))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), cancel.cancelled_owned())
        .await
}

/// The daemon's version as the API reports it.
pub fn version_response() -> VersionResponse {
    VersionResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("SHOAL_GIT_COMMIT").unwrap_or("").to_string(),
        api_version: shoal_proto::API_VERSION,
        os: std::env::consts::OS.to_string(),
        arch: shoal_worker::host::go_arch(std::env::consts::ARCH).to_string(),
    }
}

#[tonic::async_trait]
impl Daemon for DaemonApi {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(version_response()))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        // Reading /proc and /sys is quick but blocking: keep it off the async threads.
        let host = tokio::task::spawn_blocking(shoal_worker::host::HostInfo::detect)
            .await
            .map_err(|e| Status::internal(format!("host detection failed: {e}")))?;
        Ok(Response::new(InfoResponse {
            node_id: self.ctx.node_id.clone(),
            membership: Some(ClusterMembership::default()),
            state_dir: self.ctx.state_dir.display().to_string(),
            hostname: host.hostname,
            kernel_version: host.kernel_version,
            operating_system: host.operating_system,
            platform: Some(Platform {
                os: std::env::consts::OS.to_string(),
                architecture: host.architecture,
            }),
            ncpu: host.ncpu,
            memory_bytes: host.memory_bytes,
            cgroup_mode: host.cgroup_mode.as_str().to_string(),
            engine: Some(match &self.engine {
                Some(e) => {
                    use shoal_worker::engine::Engine;
                    e.summary().await.map_err(super::engine::status)?
                }
                None => EngineSummary::default(),
            }),
            listen_addr: self.ctx.listen_addr.clone(),
            advertise_addr: self.ctx.advertise_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

/// The Control API of a node that is not (yet) a manager. Its calls never reach it: the
/// interceptor below answers each one with what to do instead.
struct NotAManager;

#[tonic::async_trait]
impl Control for NotAManager {}

fn not_a_manager(_: Request<()>) -> Result<Request<()>, Status> {
    Err(Status::failed_precondition(
        "this node is not a cluster manager. Run `shoal cluster init` to make it the first \
         manager of a new cluster, or run the command on a manager",
    ))
}
