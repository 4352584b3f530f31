//! Test material made on the fly: clusters, CAs and node credentials.
//!
//! Everything is generated per test (no fixtures on disk), so tests never depend on a
//! certificate that silently expires.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::{Csr, DEFAULT_NODE_CERT_EXPIRY, NodeCredentials, NodeIdentity, NodeKey, Role, RootCa};

/// A cluster's CA.
pub(crate) fn root_ca(cluster_id: &str) -> RootCa {
    RootCa::create(cluster_id, SystemTime::now()).unwrap()
}

/// A CA whose subject names no cluster, so it will sign for any cluster ID: the only way to
/// get two clusters' certificates from one CA, which the cluster-ID check must still refuse.
pub(crate) fn shared_root_ca() -> RootCa {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shared-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    RootCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
}

pub(crate) fn identity(node_id: &str, role: Role, cluster_id: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: node_id.into(),
        role,
        cluster_id: cluster_id.into(),
    }
}

/// Credentials for `node_id` with `role` in the CA's cluster, valid from now.
pub(crate) fn creds(ca: &RootCa, node_id: &str, role: Role) -> NodeCredentials {
    let cluster = ca.cert().cluster_id().unwrap_or("shared").to_string();
    creds_for(
        ca,
        &identity(node_id, role, &cluster),
        SystemTime::now(),
        DEFAULT_NODE_CERT_EXPIRY,
    )
}

/// Credentials issued at `now` for `validity`, the node making its own key and CSR.
pub(crate) fn creds_for(
    ca: &RootCa,
    id: &NodeIdentity,
    now: SystemTime,
    validity: Duration,
) -> NodeCredentials {
    let key = NodeKey::generate().unwrap();
    let csr = Csr::from_pem(&key.csr_pem().unwrap()).unwrap();
    let cert = ca.issue(&csr, id, validity, now).unwrap();
    NodeCredentials::new(ca.cert().clone(), &cert.cert_pem, key).unwrap()
}
