//! The cluster's root CA: the one key that makes a certificate Shoal's.
//!
//! The CA is created once by `cluster init` and then lives only as PEM in the Cluster object
//! (replicated to managers, never sent to workers). Its certificate's sha256 is what join tokens
//! carry, so a joining node can tell the real CA from an impostor with nothing but the token;
//! that digest is therefore recomputed on every load rather than trusted from the Store.

use std::fmt;
use std::time::SystemTime;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::unix_to_system;
use super::token::JoinTokens;
use super::{BACKDATE, CaError, ROOT_CA_EXPIRY};

/// The root CA's common name, as Swarm's "swarm-ca".
const CA_COMMON_NAME: &str = "shoal-root-ca";

/// sha256 of a CA certificate's DER: what a join token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest(pub [u8; 32]);

impl CaDigest {
    /// The digest of a certificate (DER).
    pub fn of(der: &[u8]) -> CaDigest {
        CaDigest(Sha256::digest(der).into())
    }

    /// Lower-case hex, as stored in `RootCa.ca_cert_digest`.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<CaDigest> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(CaDigest(out))
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaDigest({})", self.to_hex())
    }
}

/// The root CA's certificate alone: what every node (worker or manager) trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCert {
    der: CertificateDer<'static>,
    pem: String,
    digest: CaDigest,
    cluster_id: Option<String>,
    not_after: SystemTime,
}

impl CaCert {
    /// Reads a CA certificate (DER), refusing one that is not a CA.
    pub fn from_der(der: &[u8]) -> Result<CaCert, CaError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| CaError::bad_cert("root CA certificate", e.to_string()))?;
        if !cert.is_ca() {
            return Err(CaError::bad_cert(
                "root CA certificate",
                "it is not a CA certificate (no CA basic constraint)",
            ));
        }
        // The cluster ID rides in the O; a CA without one simply does not pin clusters.
        let cluster_id = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_string);
        let not_after = unix_to_system(cert.validity().not_after.timestamp());
        let der = CertificateDer::from(der.to_vec());
        let pem = pem_encode("CERTIFICATE", &der);
        Ok(CaCert {
            digest: CaDigest::of(&der),
            der,
            pem,
            cluster_id,
            not_after,
        })
    }

    /// Reads the first certificate of a PEM document.
    pub fn from_pem(pem: &str) -> Result<CaCert, CaError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::pem("root CA certificate PEM")(e.to_string()))?;
        Self::from_der(&der)
    }

    /// DER, as rustls trust stores take it.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// PEM, as nodes store it and the Cluster object holds it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// What join tokens carry.
    pub fn digest(&self) -> CaDigest {
        self.digest
    }

    /// The cluster this CA was made for (its subject O), if it says.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// No node certificate is issued past this moment.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// The root CA with its signing key: lives only on managers.
pub struct RootCa {
    cert: CaCert,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for RootCa {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// A new self-signed root CA (ECDSA P-256) for `cluster_id`, valid from `now` for
    /// `ROOT_CA_EXPIRY`.
    pub fn create(cluster_id: &str, now: SystemTime) -> Result<RootCa, CaError> {
        super::identity::check_id("cluster ID", cluster_id)
            .map_err(|detail| CaError::Issue { detail })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CaError::generate("root CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        // Path length 0: the CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_CA_EXPIRY).into();
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(CaError::generate("root CA certificate"))?;
        Ok(RootCa {
            cert: CaCert::from_der(cert.der())?,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEMs, checking that the key belongs to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, CaError> {
        let cert = CaCert::from_pem(cert_pem)?;
        let key = super::node_certs::key_from_pem("root CA key PEM", key_pem)?;
        let (_, parsed) = X509Certificate::from_der(cert.der())
            .map_err(|e| CaError::bad_cert("root CA certificate", e.to_string()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::KeyMismatch { what: "root CA" });
        }
        let issuer = Issuer::from_ca_cert_der(cert.der(), key)
            .map_err(|e| CaError::bad_cert("root CA certificate", e.to_string()))?;
        Ok(RootCa { cert, issuer })
    }

    /// Loads the CA kept in the Cluster object, checking the recorded digest.
    pub fn from_proto(root: &shoal_proto::RootCa) -> Result<RootCa, CaError> {
        let text = |what: &'static str, b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|e| CaError::pem(what)(e.to_string()))
        };
        let ca = RootCa::from_pem(
            &text("root CA certificate PEM", &root.ca_cert_pem)?,
            &text("root CA key PEM", &root.ca_key_pem)?,
        )?;
        let actual = ca.cert.digest.to_hex();
        if !root.ca_cert_digest.eq_ignore_ascii_case(&actual) {
            return Err(CaError::DigestMismatch {
                expected: root.ca_cert_digest.clone(),
                actual,
            });
        }
        Ok(ca)
    }

    /// The Cluster object's form: certificate, key, digest and the given join tokens.
    pub fn to_proto(&self, tokens: &JoinTokens) -> shoal_proto::RootCa {
        shoal_proto::RootCa {
            ca_cert_pem: self.cert.pem.clone().into_bytes(),
            ca_key_pem: self.key_pem().into_bytes(),
            ca_cert_digest: self.cert.digest.to_hex(),
            join_tokens: Some(tokens.to_proto()),
        }
    }

    /// The public half, which every node receives.
    pub fn cert(&self) -> &CaCert {
        &self.cert
    }

    /// The signing key, PKCS#8 PEM. Goes only into the managers' Store.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// What rcgen signs with (subject and key identifier of the CA, and its key).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// A random positive 128-bit serial: unique without any state to keep.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Top bit clear keeps the DER INTEGER positive without padding; never zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from(bytes.to_vec())
}

/// PEM text for one DER object, with Unix line endings.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::test_support::root_ca;

    #[test]
    fn root_ca_is_a_20_year_p256_ca_whose_digest_is_sha256_of_its_der() {
        let now = SystemTime::now();
        let ca = RootCa::create("c1", now).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.cert().der()).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.subject(), cert.issuer(), "self-signed");
        assert_eq!(ca.cert().cluster_id(), Some("c1"));
        let years =
            ca.cert().not_after().duration_since(now).unwrap().as_secs() / (365 * 24 * 3600);
        assert_eq!(years, 19, "just under 20 years from now");
        // ecPublicKey with the prime256v1 curve.
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        let digest = ca.cert().digest();
        assert_eq!(digest, CaDigest(Sha256::digest(ca.cert().der()).into()));
        assert_eq!(CaDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(CaDigest::from_hex("xyz"), None);
        // The key never shows in Debug output.
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn root_ca_round_trips_through_the_cluster_object() {
        let ca = root_ca("c1");
        let tokens = JoinTokens::generate(ca.cert().digest());
        let stored = ca.to_proto(&tokens);
        assert_eq!(stored.ca_cert_digest, ca.cert().digest().to_hex());
        let back = RootCa::from_proto(&stored).unwrap();
        assert_eq!(back.cert(), ca.cert());
        assert_eq!(back.key_pem(), ca.key_pem());
        assert_eq!(
            JoinTokens::from_proto(stored.join_tokens.as_ref().unwrap()).unwrap(),
            tokens
        );
    }

    #[test]
    fn tampered_root_ca_is_refused() {
        let ca = root_ca("c1");
        let other = root_ca("c2");
        let tokens = JoinTokens::generate(ca.cert().digest());

        let mut wrong_digest = ca.to_proto(&tokens);
        wrong_digest.ca_cert_digest = other.cert().digest().to_hex();
        let err = RootCa::from_proto(&wrong_digest).unwrap_err();
        assert!(matches!(err, CaError::DigestMismatch { .. }), "{err}");

        let err = RootCa::from_pem(ca.cert().pem(), &other.key_pem()).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

        let err = RootCa::from_pem("not a pem", &ca.key_pem()).unwrap_err();
        assert!(err.to_string().contains("root CA certificate PEM"), "{err}");
    }

    #[test]
    fn a_node_certificate_is_not_accepted_as_a_ca() {
        let ca = root_ca("c1");
        let node = crate::ca::test_support::creds(&ca, "n1", crate::ca::Role::Worker);
        let err = CaCert::from_pem(&node.cert().cert_pem).unwrap_err();
        assert!(err.to_string().contains("not a CA certificate"), "{err}");
    }
}
