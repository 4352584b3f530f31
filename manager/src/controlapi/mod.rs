//! The Control API: what `shoal node|service|cluster ...` call, served by every manager.
//!
//! Reads are local (a follower may lag the leader by a few entries, as with Swarm); writes go
//! through the Store, which forwards them to the leader and refuses stale versions. Every
//! refusal says what was wrong and what to do. Callers are authorized before they get here (the
//! local root-only socket, or an admin certificate over TCP).

mod cluster;
mod lookup;
mod nodes;
mod read;
mod services;
mod tasks;
pub mod validate;
mod watch;

#[cfg(test)]
mod tests;

use shoal_proto::control_server::Control;
use shoal_proto::*;
use shoal_raft::{Store, StoreError, View};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

pub use lookup::{resolve_node, resolve_service, resolve_task};
pub use read::Read;

/// The Control API over a Store.
#[derive(Clone)]
pub struct ControlApi {
    store: Store,
}

impl ControlApi {
    pub fn new(store: Store) -> ControlApi {
        ControlApi { store }
    }

    /// A local lookup that, when it finds nothing, catches up with the leader and looks again:
    /// a client that just created an object through another manager (or whose write this
    /// follower has not applied yet) still finds it, while the common case stays local.
    async fn read<T>(&self, lookup: impl Fn(&View<'_>) -> Result<T, Status>) -> Result<T, Status> {
        match self.store.view(&lookup) {
            Err(s) if s.code() == tonic::Code::NotFound => {
                if self.store.read_barrier().await.is_err() {
                    return Err(s); // No leader to catch up with: the local answer stands.
                }
                self.store.view(&lookup)
            }
            found => found,
        }
    }
}

/// A Control API failure inside a Store transaction: a gRPC status, made from Store errors
/// with their own explanation (`Store::update` needs an error type that converts from
/// StoreError, which tonic's Status cannot).
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError(store_status(e))
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        ApiError(s)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.0
    }
}

/// Store errors as statuses: refusals keep the Store's own explanation.
pub fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } | StoreError::NameTaken { .. } => {
            Status::already_exists(e.to_string())
        }
        StoreError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StoreError::NoLeader(_) | StoreError::Shutdown | StoreError::ReadTimeout(_) => {
            Status::unavailable(e.to_string())
        }
        StoreError::Uncertain(_) | StoreError::Raft(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn get_node(
        &self,
        r: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        let node = self.store.view(|v| resolve_node(v, &r.get_ref().node_id))?;
        Ok(Response::new(GetNodeResponse { node: Some(node) }))
    }

    async fn list_nodes(
        &self,
        r: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let filters = r.into_inner().filters.unwrap_or_default();
        let nodes = self.store.view(|v| nodes::list(v, &filters));
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        r: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        let node = nodes::update(&self.store, r.into_inner()).await?;
        Ok(Response::new(UpdateNodeResponse { node: Some(node) }))
    }

    async fn remove_node(
        &self,
        r: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        nodes::remove(&self.store, r.into_inner()).await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn get_service(
        &self,
        r: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let reference = &r.get_ref().service_id;
        let service = self.read(|v| resolve_service(v, reference)).await?;
        Ok(Response::new(GetServiceResponse {
            service: Some(service),
        }))
    }

    async fn list_services(
        &self,
        r: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let filters = r.into_inner().filters.unwrap_or_default();
        let services = self.store.view(|v| services::list(v, &filters));
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn create_service(
        &self,
        r: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        let service = services::create(&self.store, r.into_inner()).await?;
        Ok(Response::new(CreateServiceResponse {
            service: Some(service),
        }))
    }

    async fn update_service(
        &self,
        r: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        let service = services::update(&self.store, r.into_inner()).await?;
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service),
        }))
    }

    async fn remove_service(
        &self,
        r: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        services::remove(&self.store, r.into_inner()).await?;
        Ok(Response::new(RemoveServiceResponse {}))
    }

    async fn get_task(
        &self,
        r: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let reference = &r.get_ref().task_id;
        let task = self.read(|v| resolve_task(v, reference)).await?;
        Ok(Response::new(GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        r: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let filters = r.into_inner().filters.unwrap_or_default();
        let tasks = self.store.view(|v| tasks::list(v, &filters));
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn get_cluster(
        &self,
        _: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        let cluster = cluster::get(&self.store)?;
        Ok(Response::new(GetClusterResponse {
            cluster: Some(cluster::redact(cluster)),
        }))
    }

    async fn update_cluster(
        &self,
        r: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        let cluster = cluster::update(&self.store, r.into_inner()).await?;
        Ok(Response::new(UpdateClusterResponse {
            cluster: Some(cluster::redact(cluster)),
        }))
    }

    async fn watch(
        &self,
        r: Request<WatchRequest>,
    ) -> Result<Response<BoxStream<WatchEvent>>, Status> {
        Ok(Response::new(Box::pin(watch::start(
            &self.store,
            r.into_inner(),
        ))))
    }
}
