//! Trusting a manager on first contact, with nothing but a join token.
//!
//! A joiner does not have the root CA yet; the token carries its sha256. The manager presents
//! [its certificate, root CA], so the verifier looks for the certificate hashing to the token's
//! digest, makes it the only trust anchor, and then verifies the manager's certificate against
//! it as usual (signature, expiry, name `shoal-manager`). Any other CA fails the handshake, so
//! the token and CSR are never sent to an impostor. The root that passed is kept, for the
//! joiner to store as its CA.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use super::{TlsError, VERSIONS, h2, no_resumption, provider};
use crate::ca::root::{CaCert, CaDigest};

/// Verifies a manager against the root CA a join token pins.
#[derive(Debug)]
pub struct JoinVerifier {
    digest: CaDigest,
    provider: Arc<CryptoProvider>,
    verified: Mutex<Option<CaCert>>,
}

impl JoinVerifier {
    /// The root CA a manager presented and that matched the token, once a handshake passed.
    pub fn verified_ca(&self) -> Option<CaCert> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why the manager's CA was refused; reaches the joiner inside the handshake error, which
/// rustls prints with `Debug`, hence a `Debug` that reads like `Display`.
struct CaNotPinned {
    expected: CaDigest,
    presented: Vec<CaDigest>,
}

impl fmt::Display for CaNotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let presented: Vec<String> = self.presented.iter().map(CaDigest::to_hex).collect();
        write!(
            f,
            "the manager's root CA does not match the join token: the token pins CA digest {} \
             but the manager presented [{}]; this is not the cluster the token belongs to (or \
             someone is impersonating it): check the address and the token",
            self.expected,
            presented.join(", ")
        )
    }
}

impl fmt::Debug for CaNotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CaNotPinned {}

impl ServerCertVerifier for JoinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(root) = intermediates
            .iter()
            .find(|c| CaDigest::of(c) == self.digest)
        else {
            let presented = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| CaDigest::of(c))
                .collect();
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(CaNotPinned {
                    expected: self.digest,
                    presented,
                })),
            )));
        };
        // From here on it is ordinary verification with the pinned root as the only anchor.
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| *c != root)
            .cloned()
            .collect();
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("building the verifier: {e}")))?;
        let verified =
            inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)?;
        let ca = CaCert::from_der(root)
            .map_err(|e| rustls::Error::General(format!("the pinned root CA: {e}")))?;
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    /// Handshake signatures are checked as any rustls client would; only trust is custom.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client settings for a joiner: no client certificate, and a manager is trusted only if its
/// root CA hashes to `digest` (the token's). Returns the verifier too, to read the CA it
/// accepted (`JoinVerifier::verified_ca`) after the join RPC.
pub fn join_client_config(
    digest: CaDigest,
) -> Result<(Arc<ClientConfig>, Arc<JoinVerifier>), TlsError> {
    let provider = provider();
    let verifier = Arc::new(JoinVerifier {
        digest,
        provider: provider.clone(),
        verified: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = h2();
    no_resumption(&mut config);
    Ok((Arc::new(config), verifier))
}
