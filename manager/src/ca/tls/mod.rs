//! Mutual TLS for every TCP connection of the cluster, built on the CA's certificates.
//!
//! `NodeTls` is a node's TLS identity for its whole life: its certificate sits behind a
//! resolver that renewal swaps in place, so every server and client config made from it keeps
//! working (and presents the new certificate on the next handshake) without being rebuilt.
//! Managers serve with client authentication optional, because a joiner calls the CA with only
//! its token; the verified identity of each connection then rides into the request extensions
//! (`ConnInfo`), where handlers demand a role with `require_role`. All crypto uses rustls'
//! `ring` provider.
//!
//! ```text
//! TcpListener -> incoming (TLS accept per connection) -> ServerIo { ConnInfo } -> tonic
//!   -> handler: require_role(&req, &[Role::Manager]) / peer(&req) for anonymous-friendly RPCs
//! Endpoint::connect_with_connector(TlsConnector) -> TCP + TLS (name shoal-manager) -> manager
//! ```

mod authz;
mod client;
mod current;
mod incoming;
mod join_verifier;
mod server;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use authz::{RoleInterceptor, peer, require_role};
pub use client::{TlsConnector, anonymous_client_config};
pub use incoming::{ConnInfo, Incoming, PeerIdentity, ServerIo, incoming};
pub use join_verifier::{JoinVerifier, join_client_config};

use super::identity::{NodeIdentity, Role};
use super::node_certs::NodeCredentials;
use super::root::CaCert;
use super::{CaError, MANAGER_SERVER_NAME};
use current::CurrentCert;

/// Why TLS settings could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS settings were refused by rustls: {0}; this is a bug, please report it")]
    Rustls(#[from] rustls::Error),

    #[error("cannot build the certificate verifier for root CA {ca}: {detail}")]
    Verifier { ca: String, detail: String },

    #[error(
        "this node's certificate is a {role} certificate, and only managers serve the cluster \
         port; promote the node (`shoal node promote`) and wait for its certificate to renew"
    )]
    NotManager { role: Role },

    #[error(
        "the new certificate is for {new}, but this node is {old}; a node keeps its ID and \
         cluster for life: leave the cluster and join again to become another node"
    )]
    IdentityChanged {
        old: NodeIdentity,
        new: NodeIdentity,
    },

    #[error(
        "the new certificate chains to root CA {new}, but this node trusts {old}; root CA \
         rotation is not supported: re-join the node"
    )]
    CaChanged { old: String, new: String },

    #[error(transparent)]
    Ca(#[from] CaError),
}

/// The one crypto provider Shoal uses (ring: no C toolchain needed to build it).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Only TLS 1.3: every peer is a Shoal binary, so there is nothing older to talk to.
pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// gRPC is HTTP/2; say so in ALPN so a stray HTTP/1 client fails at the handshake.
pub(crate) fn h2() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec()]
}

/// Client side of "no session resumption" (see `server::server_config`): every connection
/// presents the certificate the node holds now.
pub(crate) fn no_resumption(config: &mut ClientConfig) {
    config.resumption = rustls::client::Resumption::disabled();
}

/// A trust store holding only the cluster's root CA.
pub(crate) fn root_store(ca: &CaCert) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    Ok(Arc::new(roots))
}

/// A node's TLS identity: the CA it trusts and its current certificate, renewable in place.
#[derive(Clone, Debug)]
pub struct NodeTls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ca: CaCert,
    current: Arc<CurrentCert>,
    identity: RwLock<NodeIdentity>,
}

impl NodeTls {
    /// One per node process, made from the credentials loaded at start-up (or received at
    /// join); clone it freely, clones share the certificate that `update` swaps.
    pub fn new(creds: &NodeCredentials) -> Result<NodeTls, TlsError> {
        Ok(NodeTls {
            inner: Arc::new(Inner {
                ca: creds.ca().clone(),
                current: Arc::new(CurrentCert::new(creds)?),
                identity: RwLock::new(creds.identity().clone()),
            }),
        })
    }

    /// Installs renewed credentials: the next handshake of every config made from this
    /// `NodeTls` presents them. The node ID, cluster and CA must not change; the role may
    /// (promotion and demotion arrive as a renewal).
    pub fn update(&self, creds: &NodeCredentials) -> Result<(), TlsError> {
        let old = self.identity();
        let new = creds.identity();
        if old.node_id != new.node_id || old.cluster_id != new.cluster_id {
            return Err(TlsError::IdentityChanged {
                old,
                new: new.clone(),
            });
        }
        if creds.ca().digest() != self.inner.ca.digest() {
            return Err(TlsError::CaChanged {
                old: self.inner.ca.digest().to_hex(),
                new: creds.ca().digest().to_hex(),
            });
        }
        self.inner.current.set(creds)?;
        *self
            .inner
            .identity
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(())
    }

    /// Who this node currently is.
    pub fn identity(&self) -> NodeIdentity {
        self.inner
            .identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The root CA every config made here trusts.
    pub fn ca(&self) -> &CaCert {
        &self.inner.ca
    }

    /// The manager's server settings: presents [node cert, root CA], asks for a client
    /// certificate and verifies it against the root CA when one is sent.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let role = self.identity().role;
        if role != Role::Manager {
            return Err(TlsError::NotManager { role });
        }
        server::server_config(&self.inner.ca, self.inner.current.clone())
    }

    /// Settings for calling managers: presents this node's certificate, accepts only a
    /// manager certificate of this cluster's CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        client::client_config(&self.inner.ca, Some(self.inner.current.clone()))
    }

    /// The accepted-connection stream for `tonic::transport::Server::serve_with_incoming`.
    pub fn incoming(
        &self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<Incoming, TlsError> {
        Ok(incoming(
            listener,
            self.server_config()?,
            self.identity().cluster_id.into(),
            cancel,
        ))
    }

    /// The connector for `tonic::transport::Endpoint::connect_with_connector`.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector::new(self.client_config()?))
    }
}

/// The name clients verify on managers, as rustls wants it.
pub(crate) fn manager_server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from(MANAGER_SERVER_NAME)
        .expect("shoal-manager is a valid DNS name")
}
