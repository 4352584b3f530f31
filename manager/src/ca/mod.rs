//! The cluster's certificate authority and the mutual TLS every TCP connection uses.
//!
//! Roles are enforced per RPC from a verified certificate, never from what a peer claims, so the
//! whole security model rests on three facts this module keeps true: only the root CA (whose key
//! lives in the managers' Store) signs node certificates; the subject of a certificate (node ID,
//! role, cluster ID) is chosen by the CA from the join token, never copied from the request; and
//! a joining node trusts a manager only if its CA hashes to the digest in the token.
//!
//! ```text
//! init:    RootCa::create -> JoinTokens::generate -> NodeKey::generate + csr -> RootCa::issue
//!          -> NodeCredentials -> CertDir::save
//! join:    JoinToken::parse -> join_client_config(digest) -> TLS to a manager (a CA that does
//!          not hash to the digest is refused before any byte of the request is sent)
//!          -> [manager] JoinTokens::role_for(token) -> RootCa::issue -> [joiner] CertDir::save
//! serve:   NodeTls::incoming -> tonic serve_with_incoming -> ConnInfo -> require_role
//! connect: NodeTls::connector -> Endpoint::connect_with_connector (http:// URIs; TLS is ours)
//! renew:   renewal_delay -> new key + csr -> issue -> CertDir::save -> NodeTls::update
//! ```

pub mod error;
pub mod identity;
pub mod issue;
pub mod node_certs;
pub mod root;
pub mod tls;
pub mod token;

#[cfg(test)]
pub(crate) mod test_support;

use std::time::Duration;

pub use error::CaError;
pub use identity::{CertInfo, NodeIdentity, Role};
pub use issue::{Csr, IssuedCert};
pub use node_certs::{CertDir, NodeCredentials, NodeKey, renewal_delay};
pub use root::{CaCert, CaDigest, RootCa};
pub use tls::{
    ConnInfo, Incoming, NodeTls, PeerIdentity, RoleInterceptor, ServerIo, TlsConnector, TlsError,
    join_client_config, peer, require_role,
};
pub use token::{JoinToken, JoinTokens, TokenError};

/// The DNS name every manager certificate carries and every client checks: managers are dialed
/// by address, so the name cannot be a host name, and workers never get it, so a worker
/// certificate can never pass as a manager's.
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// Node certificate lifetime unless the cluster says otherwise (Swarm's default).
pub const DEFAULT_NODE_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Shortest node certificate lifetime accepted (Swarm's minimum): shorter ones would spend
/// more time renewing than serving.
pub const MIN_NODE_CERT_EXPIRY: Duration = Duration::from_secs(3600);

/// Root CA lifetime (Swarm's): the CA outlives any realistic cluster.
pub const ROOT_CA_EXPIRY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// How far back validity starts, so nodes with slightly slow clocks accept fresh certificates.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);
