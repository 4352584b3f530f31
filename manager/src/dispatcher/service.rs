//! The Dispatcher gRPC service, served by every manager: the leader runs sessions, the others
//! answer with the leader's address so agents move there.

use shoal_proto::dispatcher_server::Dispatcher as DispatcherRpc;
use shoal_proto::{AgentMessage, DispatcherMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use shoal_proto::LEADER_ADDR_METADATA;

use super::Dispatcher;
use crate::ca::{Role, require_role};

/// The gRPC face of a Dispatcher. The caller is the node its verified certificate names,
/// never what the peer says about itself.
pub struct DispatcherService {
    dispatcher: Dispatcher,
}

impl DispatcherService {
    pub fn new(dispatcher: Dispatcher) -> DispatcherService {
        DispatcherService { dispatcher }
    }
}

#[tonic::async_trait]
impl DispatcherRpc for DispatcherService {
    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<BoxStream<DispatcherMessage>>, Status> {
        let node_id = require_role(&request, &[Role::Worker, Role::Manager])?
            .node()
            .map(|id| id.node_id.clone())
            .ok_or_else(|| Status::permission_denied("sessions are for nodes"))?;
        let active = self.dispatcher.inner.active.borrow().clone();
        let Some(active) = active else {
            return Err(not_leader(&self.dispatcher.inner.leader_addr.borrow()));
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(active.serve(node_id, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// "Go to the leader", with its address in metadata when known.
fn not_leader(leader_addr: &str) -> Status {
    let mut status = Status::unavailable(if leader_addr.is_empty() {
        "this manager is not the leader and no leader is known yet; retry shortly".to_string()
    } else {
        format!("this manager is not the leader; the leader is at {leader_addr}")
    });
    if let Ok(v) = leader_addr.parse() {
        status.metadata_mut().insert(LEADER_ADDR_METADATA, v);
    }
    status
}
