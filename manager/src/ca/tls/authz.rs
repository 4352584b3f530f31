//! Per-RPC authorization from the verified certificate.
//!
//! The handshake already proved the certificate is this cluster CA's; what remains is whether
//! its role may make this call. Handlers ask at their first line (`require_role`), or a whole
//! service is wrapped in a `RoleInterceptor` (e.g. Raft: managers only). The cluster ID is
//! checked again here as defence in depth: a CA shared by mistake must still not let one
//! cluster's nodes into another.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::incoming::{ConnInfo, PeerIdentity};
use crate::ca::identity::{NodeIdentity, Role};
use crate::ca::{CaError, TokenError};

/// The caller of a request, anonymous or not; refuses certificates of another cluster. For
/// RPCs open to joiners (the CA's issuing RPC), which then decide on the token.
pub fn peer<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    let info = request.extensions().get::<ConnInfo>().ok_or_else(|| {
        Status::unauthenticated(
            "the connection carries no TLS identity; the server must accept connections \
             through shoal's TLS listener (a server wiring bug)",
        )
    })?;
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

/// The caller's identity if its certificate has one of `allowed` roles.
/// No certificate: Unauthenticated; wrong role or cluster: PermissionDenied.
pub fn require_role<T>(request: &Request<T>, allowed: &[Role]) -> Result<NodeIdentity, Status> {
    let names = || {
        allowed
            .iter()
            .map(Role::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match peer(request)? {
        PeerIdentity::Anonymous => Err(Status::unauthenticated(format!(
            "this call needs a {} certificate and none was presented; join the cluster first \
             (or use a client certificate from `shoal cluster ca issue-client`)",
            names()
        ))),
        PeerIdentity::Node(id) if allowed.contains(&id.role) => Ok(id),
        PeerIdentity::Node(id) => Err(Status::permission_denied(format!(
            "{} may not make this call: it needs a {} certificate",
            id,
            names()
        ))),
    }
}

/// Applies `require_role` to every call of a service:
/// `RaftTransportServer::with_interceptor(svc, RoleInterceptor::new(&[Role::Manager]))`.
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
