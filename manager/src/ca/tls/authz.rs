//! Per-RPC authorization from the verified certificate.
//!
//! The handshake already proved the certificate is this cluster CA's; what remains is whether
//! its role may make this call. Handlers ask at their first line (`require_role`), or a whole
//! service is wrapped in a `RoleInterceptor` (e.g. Raft: managers only). The cluster ID is
//! checked again here as defence in depth: a CA shared by mistake must still not let one
//! cluster's nodes into another.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::incoming::{ConnInfo, PeerIdentity};
use crate::ca::identity::Role;
use crate::ca::{CaError, TokenError};

/// The caller of a request: anonymous, local or a node; refuses certificates of another
/// cluster. For RPCs open to joiners (the CA's issuing RPC), which then decide on the token.
pub fn peer<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    let Some(info) = request.extensions().get::<ConnInfo>() else {
        // Not from the TLS listener: the daemon's Unix socket, or a wiring mistake.
        return match request.extensions().get::<UdsConnectInfo>() {
            Some(uds) => Ok(PeerIdentity::Local {
                uid: uds.peer_cred.map(|c| c.uid()),
            }),
            None => Err(Status::unauthenticated(
                "the connection carries no TLS identity; the server must accept TCP \
                 connections through shoal's TLS listener (a server wiring bug)",
            )),
        };
    };
    match &info.peer {
        PeerIdentity::Node(id) if id.cluster_id != *info.local_cluster_id => {
            Err(Status::permission_denied(format!(
                "the client certificate belongs to cluster {}, but this is cluster {}; use a \
                 certificate issued by this cluster",
                id.cluster_id, info.local_cluster_id
            )))
        }
        peer => Ok(peer.clone()),
    }
}

/// The caller if its certificate has one of `allowed` roles (never `Anonymous`); the local
/// Unix-socket caller counts as an admin. No certificate: Unauthenticated; wrong role or
/// cluster: PermissionDenied. `PeerIdentity::node()` gives the certificate's identity.
pub fn require_role<T>(request: &Request<T>, allowed: &[Role]) -> Result<PeerIdentity, Status> {
    let names = || {
        allowed
            .iter()
            .map(Role::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let caller = peer(request)?;
    let role = match &caller {
        PeerIdentity::Anonymous => {
            return Err(Status::unauthenticated(format!(
                "this call needs a {} certificate and none was presented; join the cluster \
                 first (or use a client certificate from `shoal cluster ca issue-client`)",
                names()
            )));
        }
        PeerIdentity::Local { .. } => Role::Admin,
        PeerIdentity::Node(id) => id.role,
    };
    if allowed.contains(&role) {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!(
            "{caller} may not make this call: it needs a {} certificate",
            names()
        )))
    }
}

/// Applies `require_role` to every call of a service, e.g. Raft (managers only):
/// `RoleInterceptor::new(&[Role::Manager]).wrap(raft_node.transport_service())`.
#[derive(Clone, Debug)]
pub struct RoleInterceptor {
    allowed: Arc<[Role]>,
}

impl RoleInterceptor {
    pub fn new(allowed: &[Role]) -> RoleInterceptor {
        RoleInterceptor {
            allowed: allowed.into(),
        }
    }

    /// Guards an already built tonic server (one whose inner service is out of reach, such
    /// as shoal-raft's `transport_service()`); the result goes to `Router::add_service`.
    pub fn wrap<S>(self, service: S) -> InterceptedService<S, RoleInterceptor> {
        InterceptedService::new(service, self)
    }
}

impl Interceptor for RoleInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        require_role(&request, &self.allowed)?;
        Ok(request)
    }
}

/// Token problems as RPC errors: a malformed token is the caller's typo, the others are
/// refusals. The messages already say what to do, so they pass through unchanged.
impl From<TokenError> for Status {
    fn from(e: TokenError) -> Status {
        match e {
            TokenError::Malformed { .. } => Status::invalid_argument(e.to_string()),
            TokenError::WrongCluster { .. } | TokenError::InvalidSecret => {
                Status::permission_denied(e.to_string())
            }
        }
    }
}

/// CA problems as RPC errors: a bad CSR or request is the caller's, anything else (a broken
/// stored CA, IO) is the manager's and logged there.
impl From<CaError> for Status {
    fn from(e: CaError) -> Status {
        match e {
            CaError::BadCsr { .. } | CaError::Pem { .. } => Status::invalid_argument(e.to_string()),
            CaError::Issue { .. } => Status::failed_precondition(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }
}
