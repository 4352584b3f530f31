//! The manager's TLS server settings.
//!
//! Client authentication is optional on purpose: a node that is joining has no certificate yet
//! and must still reach the CA's issuing RPC with its token. A client that does present a
//! certificate must chain to this cluster's root, or the handshake fails; what an
//! unauthenticated or authenticated caller may then do is decided per RPC (see `authz`).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};

use super::current::CurrentCert;
use super::{TlsError, VERSIONS, h2, provider, root_store};
use crate::ca::root::CaCert;

/// See the module doc: optional, CA-verified client certificates; presented chain from
/// `current`.
pub(crate) fn server_config(
    ca: &CaCert,
    current: Arc<CurrentCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier {
            ca: ca.digest().to_hex(),
            detail: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(current);
    config.alpn_protocols = h2();
    // No session resumption: a resumed session keeps the identity of the certificate it
    // started with, so a renewed, demoted or expired certificate would go unnoticed.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
