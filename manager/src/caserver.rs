//! The NodeCa service: certificates for joining nodes (proved by a join token), renewals (with
//! the role the cluster now wants the node to have) and remote-CLI client certificates.
//!
//! The CA key is read from the Cluster object at each call, so every manager can sign and a
//! rotated token stops working at once (the read is linearizable).

use std::time::SystemTime;

use shoal_proto::node_ca_server::NodeCa;
use shoal_proto::{
    Annotations, Cluster, IssueClientCertificateRequest, IssueClientCertificateResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, Node, NodeAvailability, NodeRole,
    NodeSpec, NodeStatus, RenewNodeCertificateRequest, RenewNodeCertificateResponse, node_status,
};
use shoal_raft::Store;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::ca::{Csr, JoinToken, JoinTokens, NodeIdentity, Role, RootCa, peer, require_role};
use crate::cluster_spec::cert_expiry;
use crate::controlapi::{ApiError, store_status};

pub struct CaServer {
    store: Store,
}

impl CaServer {
    pub fn new(store: Store) -> CaServer {
        CaServer { store }
    }

    /// The cluster and its CA as of now (linearizable: sees the latest token rotation).
    async fn cluster(&self) -> Result<(Cluster, RootCa), Status> {
        let cluster = self
            .store
            .linearizable(|v| v.list::<Cluster>().into_iter().next())
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::unavailable("this manager holds no cluster yet"))?;
        let root = cluster
            .root_ca
            .as_ref()
            .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
        let ca = RootCa::from_proto(root)
            .map_err(|e| Status::internal(format!("the cluster's root CA is unusable: {e}")))?;
        Ok((cluster, ca))
    }
}

fn csr_of(pem: &[u8]) -> Result<Csr, Status> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| Status::invalid_argument("the certificate request is not PEM text"))?;
    Csr::from_pem(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl NodeCa for CaServer {
    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        // Anonymous callers are expected here; a certificate of another cluster is not.
        peer(&request)?;
        let req = request.into_inner();
        let token = JoinToken::parse(&req.token)
            .map_err(|e| Status::invalid_argument(format!("invalid join token: {e}")))?;
        let (cluster, ca) = self.cluster().await?;
        let tokens = JoinTokens::from_proto(
            cluster
                .root_ca
                .as_ref()
                .and_then(|r| r.join_tokens.as_ref())
                .ok_or_else(|| Status::internal("the cluster has no join tokens"))?,
        )
        .map_err(|e| Status::internal(format!("the cluster's join tokens are damaged: {e}")))?;
        let role = tokens
            .role_for(&token)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let node_role = role.node_role().unwrap_or(NodeRole::Worker);
        let csr = csr_of(&req.csr_pem)?;
        let expiry = cert_expiry(cluster.spec.as_ref());

        // Keep the node's own ID unless it is malformed or already taken.
        let proposed = req.node_id.clone();
        let committed = self
            .store
            .update(|tx| {
                let node_id = if shoal_proto::ids::is_valid_id(&proposed)
                    && tx.get::<Node>(&proposed).is_none()
                {
                    proposed.clone()
                } else {
                    shoal_proto::ids::new_id()
                };
                let identity = NodeIdentity {
                    node_id: node_id.clone(),
                    role,
                    cluster_id: cluster.id.clone(),
                };
                let issued = ca
                    .issue(&csr, &identity, expiry, SystemTime::now())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                tx.create(Node {
                    id: node_id,
                    spec: Some(NodeSpec {
                        annotations: Some(Annotations::default()),
                        desired_role: node_role as i32,
                        availability: NodeAvailability::Active as i32,
                    }),
                    description: req.description.clone(),
                    status: Some(NodeStatus {
                        state: node_status::State::Unknown as i32,
                        message: "joined; waiting for its session".into(),
                        addr: req.advertise_addr.clone(),
                    }),
                    role: node_role as i32,
                    certificate: Some(issued.to_proto()),
                    ..Default::default()
                })?;
                Ok::<_, ApiError>(issued)
            })
            .await?;
        let issued = committed.value;
        let node_id = issued.info.identity.node_id.clone();
        info!(node = %node_id, %role, "issued a certificate to a joining node");
        let managers = self
            .store
            .view(|v| crate::dispatcher::manager_peers(&v.list::<Node>()));
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            cluster_id: cluster.id,
            role: node_role as i32,
            certificate_pem: issued.cert_pem.into_bytes(),
            root_ca_pem: ca.cert().pem().as_bytes().to_vec(),
            managers,
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<RenewNodeCertificateResponse>, Status> {
        let caller = require_role(&request, &[Role::Worker, Role::Manager])?
            .node()
            .cloned()
            .ok_or_else(|| {
                Status::invalid_argument("renewal is for nodes, over their own TLS connection")
            })?;
        let csr = csr_of(&request.get_ref().csr_pem)?;
        let (cluster, ca) = self.cluster().await?;
        let expiry = cert_expiry(cluster.spec.as_ref());
        let committed = self
            .store
            .update(|tx| {
                let Some(mut node) = tx.get::<Node>(&caller.node_id) else {
                    return Err(ApiError(Status::permission_denied(format!(
                        "node {} was removed from the cluster; join it again",
                        caller.node_id
                    ))));
                };
                // The role the cluster has settled on (the role controller changes it only
                // once Raft membership allows), not what the caller holds.
                let role = NodeRole::try_from(node.role).unwrap_or_default();
                let identity = NodeIdentity {
                    node_id: node.id.clone(),
                    role: Role::from(role),
                    cluster_id: cluster.id.clone(),
                };
                let issued = ca
                    .issue(&csr, &identity, expiry, SystemTime::now())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                node.certificate = Some(issued.to_proto());
                tx.update(node)?;
                Ok::<_, ApiError>((role, issued))
            })
            .await?;
        let (role, issued) = committed.value;
        Ok(Response::new(RenewNodeCertificateResponse {
            role: role as i32,
            certificate_pem: issued.cert_pem.into_bytes(),
        }))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<IssueClientCertificateRequest>,
    ) -> Result<Response<IssueClientCertificateResponse>, Status> {
        require_role(&request, &[Role::Manager, Role::Admin])?;
        let req = request.into_inner();
        let csr = csr_of(&req.csr_pem)?;
        let (cluster, ca) = self.cluster().await?;
        let name = if req.name.is_empty() {
            format!("admin-{}", &shoal_proto::ids::new_id()[..8])
        } else {
            req.name
        };
        let expiry = req
            .expiry
            .map(|d| d.to_std())
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| cert_expiry(cluster.spec.as_ref()));
        let identity = NodeIdentity {
            node_id: name,
            role: Role::Admin,
            cluster_id: cluster.id.clone(),
        };
        let issued = ca
            .issue(&csr, &identity, expiry, SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(IssueClientCertificateResponse {
            certificate_pem: issued.cert_pem.into_bytes(),
            root_ca_pem: ca.cert().pem().as_bytes().to_vec(),
        }))
    }
}
