//! The manager role of a node: its Raft replica, the cluster port (mutual TLS) serving every
//! manager service, and the leader supervision loop. Started at init, at a manager join, at a
//! promotion and on restart; stopped at leave and demotion.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use shoal_manager::Manager;
use shoal_manager::ca::{MANAGER_SERVER_NAME, NodeTls};
use shoal_raft::{NodeConfig, RaftNode, TlsConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct ManagerRole {
    manager: Arc<Manager>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    supervisor: JoinHandle<()>,
}

/// How the Raft replica comes up.
pub enum Bootstrap {
    /// A new one-member cluster (cluster init).
    NewCluster,
    /// Existing data, or an empty replica waiting to be added by the leader (join).
    Existing,
}

impl ManagerRole {
    pub async fn start(
        tls: &NodeTls,
        state_dir: &Path,
        raft_id: u64,
        listen: SocketAddr,
        advertise: SocketAddr,
        bootstrap: Bootstrap,
    ) -> Result<ManagerRole> {
        // Bind first: a busy port is the likeliest failure and must leave nothing started.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {listen} for cluster traffic; is another process using the \
                 port? Choose another with --listen-addr"
                )
            })?;
        let mut config = NodeConfig::new(
            raft_id,
            advertise.to_string(),
            super::state::raft_dir(state_dir),
        );
        // Raft dials peers with this node's certificate and accepts only managers; its server
        // side is the cluster port below, so `server` here is never used to accept.
        config.tls = Some(TlsConfig {
            server: tls.server_config()?,
            client: tls.client_config()?,
            server_name: rustls::pki_types::ServerName::try_from(MANAGER_SERVER_NAME)
                .map_err(|e| anyhow!("bad server name: {e}"))?
                .to_owned(),
        });
        let raft = Arc::new(
            RaftNode::start(config, None)
                .await
                .context("cannot start this manager's Raft replica")?,
        );
        if let Bootstrap::NewCluster = bootstrap {
            raft.initialize(BTreeMap::from([(raft_id, advertise.to_string())]))
                .await
                .context("cannot bootstrap a new Raft cluster")?;
        }
        let manager = Arc::new(Manager::new(raft));
        // A follower forwards `service logs` to the leader, dialing it as this manager.
        let dial_tls = tls.clone();
        manager
            .log_broker()
            .set_dialer(Arc::new(move |addr: String| {
                let tls = dial_tls.clone();
                Box::pin(async move {
                    let connector = tls.connector().map_err(|e| e.to_string())?;
                    super::lifecycle::dial(connector, &addr)
                        .await
                        .map_err(|e| format!("{e:#}"))
                })
            }));
        let cancel = CancellationToken::new();
        let incoming = tls.incoming(listener, cancel.clone())?;
        let routes = manager.cluster_routes();
        let server_cancel = cancel.clone();
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(super::lifecycle::KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(super::lifecycle::KEEPALIVE_TIMEOUT))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, server_cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                warn!(error = %e, "cluster port server stopped");
            }
        });
        let supervisor = {
            let manager = manager.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { manager.run(cancel).await })
        };
        info!(%listen, %advertise, raft_id, "manager role started");
        Ok(ManagerRole {
            manager,
            cancel,
            server,
            supervisor,
        })
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    /// Stops serving and leading, then shuts Raft down (its data stays on disk).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.supervisor.await;
        let _ = self.server.await;
        let raft = self.manager.raft().clone();
        drop(self.manager);
        match Arc::try_unwrap(raft) {
            Ok(raft) => raft.shutdown().await,
            // Someone still holds the replica (an in-flight call): it stops when they finish.
            Err(_) => warn!("Raft replica still in use at shutdown; it stops with its last user"),
        }
        info!("manager role stopped");
    }
}
