//! Signing node certificates from certificate signing requests.
//!
//! A node makes its own key and sends only a CSR, so no private key ever crosses the network.
//! From the CSR the CA takes exactly one thing, the public key (after checking the CSR's
//! signature proves the sender holds the private half); subject, role, names and usages are
//! imposed here from what the manager decided (the role comes from the join token), so a
//! joiner asking for `OU=shoal-manager` with a worker token gets a worker certificate.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::identity::{CertInfo, NodeIdentity, Role, check_id};
use super::root::{RootCa, pem_encode, random_serial};
use super::{BACKDATE, CaError, MANAGER_SERVER_NAME, MIN_NODE_CERT_EXPIRY};

/// CSRs are a few hundred bytes; anything far larger is not one of ours.
const MAX_CSR_LEN: usize = 16 * 1024;

/// A parsed CSR whose signature was verified: its sender holds the key.
#[derive(Clone, Debug)]
pub struct Csr {
    public_key: SubjectPublicKeyInfo,
}

impl Csr {
    /// Parses and verifies a PKCS#10 request in DER.
    pub fn from_der(der: &[u8]) -> Result<Csr, CaError> {
        let bad = |detail: String| CaError::BadCsr { detail };
        if der.len() > MAX_CSR_LEN {
            return Err(bad(format!(
                "it is {} bytes, more than the {MAX_CSR_LEN} a CSR needs",
                der.len()
            )));
        }
        let (_, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| bad(format!("it is not a PKCS#10 request ({e})")))?;
        csr.verify_signature().map_err(|e| {
            bad(format!(
                "its signature does not verify ({e}), so it does not prove key possession"
            ))
        })?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| bad(format!("its public key is of an unsupported kind ({e})")))?;
        Ok(Csr { public_key })
    }

    /// Parses and verifies a PEM `CERTIFICATE REQUEST`.
    pub fn from_pem(pem: &str) -> Result<Csr, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            CaError::BadCsr {
                detail: format!("it is not a PEM certificate request ({e})"),
            }
        })?;
        Self::from_der(der.as_ref())
    }
}

/// A freshly signed node certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub info: CertInfo,
}

impl IssuedCert {
    /// The form kept in the Node object (admins are not nodes: role shows as worker there).
    pub fn to_proto(&self) -> shoal_proto::Certificate {
        let role = self
            .info
            .identity
            .role
            .node_role()
            .unwrap_or(shoal_proto::NodeRole::Worker);
        shoal_proto::Certificate {
            certificate_pem: self.cert_pem.clone().into_bytes(),
            role: role as i32,
            cn: self.info.identity.node_id.clone(),
            not_after: Some(self.info.not_after.into()),
        }
    }
}

impl RootCa {
    /// Signs a certificate for `identity` over the CSR's key, valid from `now` for `validity`
    /// (never past the CA's own expiry). Nothing but the key is taken from the CSR.
    pub fn issue(
        &self,
        csr: &Csr,
        identity: &NodeIdentity,
        validity: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let refuse = |detail: String| CaError::Issue { detail };
        check_id("node ID", &identity.node_id).map_err(refuse)?;
        check_id("cluster ID", &identity.cluster_id).map_err(refuse)?;
        // A CA that names its cluster signs only for that cluster.
        match self.cert().cluster_id() {
            Some(own) if own != identity.cluster_id => {
                return Err(refuse(format!(
                    "this CA belongs to cluster {own}, not {}",
                    identity.cluster_id
                )));
            }
            _ => {}
        }
        if validity < MIN_NODE_CERT_EXPIRY {
            return Err(refuse(format!(
                "a certificate lifetime of {validity:?} is below the minimum of {:?}; \
                 set a longer --cert-expiry",
                MIN_NODE_CERT_EXPIRY
            )));
        }
        let not_after = (now + validity).min(self.cert().not_after());
        if not_after <= now {
            return Err(refuse(
                "the root CA has expired; the cluster needs a new CA".to_string(),
            ));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.node_id.as_str());
        dn.push(DnType::OrganizationalUnitName, identity.role.ou());
        dn.push(DnType::OrganizationName, identity.cluster_id.as_str());
        params.distinguished_name = dn;
        // Only managers get the name clients check, so no other certificate can serve as one.
        if identity.role == Role::Manager {
            let name = MANAGER_SERVER_NAME
                .try_into()
                .map_err(|e| refuse(format!("bad server name: {e}")))?;
            params.subject_alt_names = vec![SanType::DnsName(name)];
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Every node is a TLS client; managers also serve (the same cert does both).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;

        let cert = params
            .signed_by(&csr.public_key, self.issuer())
            .map_err(CaError::generate("node certificate"))?;
        let cert_der = cert.der().clone();
        Ok(IssuedCert {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            info: CertInfo::parse(&cert_der)?,
            cert_der,
        })
    }
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::X509Certificate;

    use super::*;
    use crate::ca::NodeKey;
    use crate::ca::test_support::{identity, root_ca};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn dns_names(der: &[u8]) -> Vec<String> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        match cert.subject_alternative_name().unwrap() {
            None => vec![],
            Some(san) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
        }
    }

    #[test]
    fn ca_ignores_the_subject_and_names_the_csr_asks_for() {
        let ca = root_ca("c1");
        // A joiner with a worker token asking to be a manager of another cluster.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![MANAGER_SERVER_NAME.to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "the-leader");
        dn.push(DnType::OrganizationalUnitName, Role::Manager.ou());
        dn.push(DnType::OrganizationName, "other-cluster");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let csr = Csr::from_pem(&params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();

        let now = SystemTime::now();
        let issued = ca
            .issue(&csr, &identity("n1", Role::Worker, "c1"), 90 * DAY, now)
            .unwrap();
        assert_eq!(issued.info.identity, identity("n1", Role::Worker, "c1"));
        assert!(
            dns_names(&issued.cert_der).is_empty(),
            "no manager name for a worker"
        );
        let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(!ku.key_cert_sign() && ku.digital_signature());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(!eku.code_signing && eku.server_auth && eku.client_auth);
        // The requester's key is what got certified.
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
    }

    #[test]
    fn manager_certificates_carry_the_server_name_and_both_usages() {
        let ca = root_ca("c1");
        let key = NodeKey::generate().unwrap();
        let csr = Csr::from_der(&key.csr_der().unwrap()).unwrap();
        let now = SystemTime::now();
        let issued = ca
            .issue(&csr, &identity("m1", Role::Manager, "c1"), 90 * DAY, now)
            .unwrap();
        assert_eq!(dns_names(&issued.cert_der), vec![MANAGER_SERVER_NAME]);
        let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert_eq!(issued.info.lifetime(), 90 * DAY + BACKDATE);
        assert!(!issued.info.is_expired_at(now));
        assert!(issued.info.is_expired_at(now + 91 * DAY));
        let proto = issued.to_proto();
        assert_eq!(proto.cn, "m1");
        assert_eq!(proto.role, shoal_proto::NodeRole::Manager as i32);
    }

    #[test]
    fn validity_has_a_minimum_and_stops_at_the_ca_expiry() {
        let ca = root_ca("c1");
        let csr = Csr::from_pem(&NodeKey::generate().unwrap().csr_pem().unwrap()).unwrap();
        let id = identity("n1", Role::Worker, "c1");
        let now = SystemTime::now();
        let err = ca
            .issue(&csr, &id, Duration::from_secs(60), now)
            .unwrap_err();
        assert!(err.to_string().contains("below the minimum"), "{err}");
        let issued = ca.issue(&csr, &id, 100 * 365 * DAY, now).unwrap();
        assert_eq!(issued.info.not_after, ca.cert().not_after());
    }

    #[test]
    fn ca_refuses_identities_of_another_cluster_and_bad_ids() {
        let ca = root_ca("c1");
        let csr = Csr::from_pem(&NodeKey::generate().unwrap().csr_pem().unwrap()).unwrap();
        let now = SystemTime::now();
        let err = ca
            .issue(&csr, &identity("n1", Role::Worker, "c2"), 90 * DAY, now)
            .unwrap_err();
        assert!(
            err.to_string().contains("belongs to cluster c1, not c2"),
            "{err}"
        );
        let err = ca
            .issue(
                &csr,
                &identity("n1,OU=x", Role::Worker, "c1"),
                90 * DAY,
                now,
            )
            .unwrap_err();
        assert!(err.to_string().contains("node ID"), "{err}");
    }

    #[test]
    fn admin_certificates_carry_a_free_form_name() {
        let ca = root_ca("c1");
        let csr = Csr::from_pem(&NodeKey::generate().unwrap().csr_pem().unwrap()).unwrap();
        let id = identity("alice@laptop", Role::Admin, "c1");
        let issued = ca.issue(&csr, &id, 30 * DAY, SystemTime::now()).unwrap();
        assert_eq!(issued.info.identity, id);
        assert!(dns_names(&issued.cert_der).is_empty(), "admins never serve");
    }

    #[test]
    fn bad_csrs_are_refused_with_the_reason() {
        let err = Csr::from_pem("hello").unwrap_err();
        assert!(
            err.to_string().contains("not a PEM certificate request"),
            "{err}"
        );
        let err = Csr::from_der(b"\x30\x03\x02\x01\x00").unwrap_err();
        assert!(err.to_string().contains("not a PKCS#10 request"), "{err}");
        let err = Csr::from_der(&vec![0u8; MAX_CSR_LEN + 1]).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");

        // Flip a bit in the signature: the CSR no longer proves possession of the key.
        let mut der = NodeKey::generate().unwrap().csr_der().unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let err = Csr::from_der(&der).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }
}
