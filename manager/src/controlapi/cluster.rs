//! The Cluster object: its settings and join tokens. The CA key it holds never leaves the
//! managers' Store through this API.

use shoal_proto::{Cluster, UpdateClusterRequest};
use shoal_raft::Store;
use tonic::Status;

use super::ApiError;
use crate::ca::{CaDigest, JoinToken};

pub(super) fn get(store: &Store) -> Result<Cluster, Status> {
    store
        .list::<Cluster>()
        .into_iter()
        .next()
        .ok_or_else(|| Status::failed_precondition("this manager holds no cluster yet"))
}

/// The cluster as the API shows it: without the CA's private key.
pub(super) fn redact(mut cluster: Cluster) -> Cluster {
    if let Some(root) = cluster.root_ca.as_mut() {
        root.ca_key_pem.clear();
    }
    cluster
}

pub(super) async fn update(store: &Store, req: UpdateClusterRequest) -> Result<Cluster, Status> {
    let committed = store
        .update(|tx| {
            let Some(mut cluster) = tx.list::<Cluster>().into_iter().next() else {
                return Err(ApiError(Status::failed_precondition(
                    "this manager holds no cluster yet",
                )));
            };
            let version = cluster.meta.as_ref().map(|m| m.version).unwrap_or_default();
            if req.cluster_version != 0 && req.cluster_version != version {
                return Err(ApiError(Status::aborted(format!(
                    "the cluster changed since you read it (version {} is now {version}); read \
                     it again and retry",
                    req.cluster_version
                ))));
            }
            if let Some(spec) = &req.spec {
                crate::cluster_spec::validate(spec).map_err(Status::invalid_argument)?;
                cluster.spec = Some(spec.clone());
            }
            let root = cluster.root_ca.get_or_insert_with(Default::default);
            let digest = CaDigest::from_hex(&root.ca_cert_digest).ok_or_else(|| {
                Status::internal("the cluster's CA digest is damaged; tokens cannot be rotated")
            })?;
            let tokens = root.join_tokens.get_or_insert_with(Default::default);
            // Rotation replaces the secret: joined nodes keep their certificates, new joins
            // need the new token.
            if req.rotate_worker_token {
                tokens.worker = JoinToken::generate(digest).to_string();
            }
            if req.rotate_manager_token {
                tokens.manager = JoinToken::generate(digest).to_string();
            }
            let id = cluster.id.clone();
            tx.update(cluster)?;
            Ok::<_, ApiError>(id)
        })
        .await?;
    committed
        .get::<Cluster>(&committed.value)
        .ok_or_else(|| Status::internal("updated cluster missing from the commit"))
}
