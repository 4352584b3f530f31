//! The certificate a node presents right now, swappable while connections come and go.
//!
//! rustls asks a resolver for the certificate on every handshake, so putting the node's key
//! behind one makes renewal a pointer swap: no config, listener or channel is rebuilt, and
//! connections already open keep the certificate they were made with until they close.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, pki_types::CertificateDer};

use super::{TlsError, provider};
use crate::ca::identity::Role;
use crate::ca::node_certs::NodeCredentials;

#[derive(Debug)]
pub(crate) struct CurrentCert {
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    key: Arc<CertifiedKey>,
    role: Role,
}

impl CurrentCert {
    pub(crate) fn new(creds: &NodeCredentials) -> Result<CurrentCert, TlsError> {
        Ok(CurrentCert {
            state: RwLock::new(State::of(creds)?),
        })
    }

    /// Presents `creds` from the next handshake on.
    pub(crate) fn set(&self, creds: &NodeCredentials) -> Result<(), TlsError> {
        let state = State::of(creds)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(())
    }

    /// A snapshot: the handshake in progress keeps what it got even if `set` runs meanwhile.
    fn get(&self) -> (Arc<CertifiedKey>, Role) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        (s.key.clone(), s.role)
    }
}

impl State {
    fn of(creds: &NodeCredentials) -> Result<State, TlsError> {
        // The chain ends with the root so a joiner can check it against its token's digest.
        let chain: Vec<CertificateDer<'static>> =
            vec![creds.cert().cert_der.clone(), creds.ca().der().clone()];
        let key = CertifiedKey::from_der(chain, creds.key().private_key_der(), &provider())?;
        Ok(State {
            key: Arc::new(key),
            role: creds.identity().role,
        })
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (key, role) = self.get();
        // A node demoted since its server started stops serving as a manager.
        if role != Role::Manager {
            tracing::warn!(
                "refusing a TLS client: this node's certificate is no longer a manager's"
            );
            return None;
        }
        Some(key)
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get().0)
    }

    /// Always: a node with a `NodeTls` has a certificate (anonymous clients use another config).
    fn has_certs(&self) -> bool {
        true
    }
}
