//! The node-local gRPC API on the Unix socket: `Daemon` (version, info, cluster lifecycle),
//! plus the manager services (`Control`, `NodeCa`) when this node is a manager.

use std::sync::Arc;

use anyhow::Result;
use shoal_proto::daemon_server::{Daemon, DaemonServer};
use shoal_proto::{
    ClusterInfoRequest, ClusterInfoResponse, ClusterInitRequest, ClusterInitResponse,
    ClusterJoinRequest, ClusterJoinResponse, ClusterLeaveRequest, ClusterLeaveResponse,
    InfoRequest, InfoResponse, Platform, VersionRequest, VersionResponse,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::cluster::Cluster;

pub struct DaemonApi {
    cluster: Arc<Cluster>,
    engine: shoal_worker::engine::LocalEngine,
}

impl DaemonApi {
    pub fn new(cluster: Arc<Cluster>, engine: shoal_worker::engine::LocalEngine) -> DaemonApi {
        DaemonApi { cluster, engine }
    }
}

/// Serves the local API on `listener` until `cancel` fires.
pub async fn serve(
    api: DaemonApi,
    engine: super::engine::EngineApi,
    cluster: Arc<Cluster>,
    listener: UnixListener,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(DaemonServer::new(api))
        .add_service(shoal_proto::engine_server::EngineServer::new(engine))
        .add_service(super::local::control(cluster.clone()))
        .add_service(super::local::logs(cluster.clone()))
        .add_service(super::local::node_ca(cluster))
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
        let ctx = self.cluster.context();
        Ok(Response::new(InfoResponse {
            node_id: self.cluster.node_id(),
            membership: Some(self.cluster.membership().await),
            state_dir: ctx.state_dir.display().to_string(),
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
            engine: Some({
                use shoal_worker::engine::Engine;
                self.engine.summary().await.map_err(super::engine::status)?
            }),
            listen_addr: ctx.listen_addr.to_string(),
            advertise_addr: ctx
                .advertise_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn cluster_init(
        &self,
        r: Request<ClusterInitRequest>,
    ) -> Result<Response<ClusterInitResponse>, Status> {
        Ok(Response::new(self.cluster.init(r.into_inner()).await?))
    }

    async fn cluster_join(
        &self,
        r: Request<ClusterJoinRequest>,
    ) -> Result<Response<ClusterJoinResponse>, Status> {
        Ok(Response::new(self.cluster.join(r.into_inner()).await?))
    }

    async fn cluster_leave(
        &self,
        r: Request<ClusterLeaveRequest>,
    ) -> Result<Response<ClusterLeaveResponse>, Status> {
        self.cluster.leave(r.into_inner().force).await?;
        Ok(Response::new(ClusterLeaveResponse {}))
    }

    async fn cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        Ok(Response::new(self.cluster.info().await?))
    }
}
