//! Certificate renewal: well before expiry (when about a third of the lifetime is left, with
//! seeded jitter so nodes do not renew in lockstep), or at once when the cluster changed this
//! node's role. A renewal that changes the role starts or stops the manager role.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use rand::SeedableRng;
use shoal_manager::ca::{CertDir, NodeCredentials, NodeKey, NodeTls, Role, renewal_delay};
use shoal_proto::node_ca_client::NodeCaClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Cluster;
use super::state::certificates_dir;

/// Wait after a failed renewal before trying again.
const RETRY: Duration = Duration::from_secs(5);

pub async fn run(cluster: Arc<Cluster>, tls: NodeTls, now: Arc<Notify>, cancel: CancellationToken) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let certs = CertDir::new(certificates_dir(&cluster.context().state_dir));
    loop {
        let delay = match certs.load().await {
            Ok(Some(creds)) => renewal_delay(creds.info(), SystemTime::now(), &mut rng),
            _ => RETRY,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = now.notified() => {}
        }
        match renew_once(&cluster, &tls, &certs).await {
            Ok((old, new)) if old != new => cluster.role_changed(&tls, new).await,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %format!("{e:#}"), "certificate renewal failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
                now.notify_one();
            }
        }
    }
}

/// One renewal against any known manager; returns the role before and after.
async fn renew_once(cluster: &Cluster, tls: &NodeTls, certs: &CertDir) -> Result<(Role, Role)> {
    let before = tls.identity().role;
    let key = NodeKey::generate()?;
    let csr_pem = key.csr_pem()?;
    let mut last = anyhow!("no manager is known");
    for addr in cluster.manager_addrs().await {
        let attempt = async {
            let channel = super::lifecycle::dial(tls.connector()?, &addr).await?;
            let resp = NodeCaClient::new(channel)
                .renew_node_certificate(shoal_proto::RenewNodeCertificateRequest {
                    csr_pem: csr_pem.clone().into_bytes(),
                })
                .await
                .map_err(|s| anyhow!("{}", s.message()))?
                .into_inner();
            anyhow::Ok(resp)
        };
        match attempt.await {
            Ok(resp) => {
                let creds = NodeCredentials::new(
                    tls.ca().clone(),
                    &String::from_utf8_lossy(&resp.certificate_pem),
                    key,
                )?;
                certs.save(&creds).await?;
                tls.update(&creds)
                    .context("cannot use the renewed certificate")?;
                let after = creds.identity().role;
                info!(role = %after, until = ?creds.info().not_after, "certificate renewed");
                return Ok((before, after));
            }
            Err(e) => last = e.context(format!("manager {addr}")),
        }
    }
    Err(last)
}
