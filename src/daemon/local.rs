//! Manager services on the local socket. Whether this node is a manager changes at run time
//! (init, join, promotion, leave), so the socket's server routes each call at the moment it
//! arrives: to this node's manager if it has one, else to an answer that says what to do. The
//! socket is root only; the services see its callers as local admins (ca::PeerIdentity::Local).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use shoal_manager::caserver::CaServer;
use shoal_manager::controlapi::ControlApi;
use shoal_manager::logbroker::LogsService;
use shoal_proto::control_server::ControlServer;
use shoal_proto::logs_server::LogsServer;
use shoal_proto::node_ca_server::NodeCaServer;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

use super::cluster::{Cluster, LocalServices};

type Response = http::Response<Body>;

/// A service that exists only while this node is a manager.
pub struct Delegate<S> {
    cluster: Arc<Cluster>,
    make: fn(&LocalServices) -> S,
}

impl<S> Clone for Delegate<S> {
    fn clone(&self) -> Self {
        Delegate {
            cluster: self.cluster.clone(),
            make: self.make,
        }
    }
}

impl<S: NamedService> NamedService for Delegate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Delegate<S>
where
    S: tower::Service<http::Request<Body>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self.cluster.local_services() {
            Some(services) => {
                let mut svc = (self.make)(&services);
                Box::pin(async move { svc.call(req).await })
            }
            None => Box::pin(async { Ok(not_a_manager().into_http()) }),
        }
    }
}

fn not_a_manager() -> Status {
    Status::failed_precondition(
        "this node is not a cluster manager. Run `shoal cluster init` to make it the first \
         manager of a new cluster, or run the command on a manager (worker nodes cannot view \
         or change cluster state)",
    )
}

pub fn control(cluster: Arc<Cluster>) -> Delegate<ControlServer<ControlApi>> {
    Delegate {
        cluster,
        make: |s| ControlServer::new(s.control.clone()),
    }
}

pub fn node_ca(cluster: Arc<Cluster>) -> Delegate<NodeCaServer<CaServer>> {
    Delegate {
        cluster,
        make: |s| NodeCaServer::from_arc(s.ca.clone()),
    }
}

pub fn logs(cluster: Arc<Cluster>) -> Delegate<LogsServer<LogsService>> {
    Delegate {
        cluster,
        make: |s| LogsServer::from_arc(s.logs.clone()),
    }
}
