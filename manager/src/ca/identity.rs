//! Who a certificate says its holder is: node ID, role and cluster ID.
//!
//! The subject is the only place a role lives, so it is read back with a strict parser: exactly
//! one CN, one OU naming a known role and one O, or the certificate is refused. A lenient parse
//! here would let an odd certificate be taken for something it is not.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use shoal_proto::NodeRole;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

use super::CaError;

/// What a certificate's holder may do; carried in the subject's OU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs tasks; may only talk to the dispatcher.
    Worker,
    /// Holds the Store; may call everything, including Raft.
    Manager,
    /// A remote CLI: may call the Control API, is not a node and serves nothing.
    Admin,
}

impl Role {
    /// The subject OU naming this role.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Worker => "shoal-worker",
            Role::Manager => "shoal-manager",
            Role::Admin => "shoal-admin",
        }
    }

    /// The role an OU names, if any.
    pub fn from_ou(ou: &str) -> Option<Role> {
        [Role::Worker, Role::Manager, Role::Admin]
            .into_iter()
            .find(|r| r.ou() == ou)
    }

    /// The node role in the model; admins are not nodes.
    pub fn node_role(self) -> Option<NodeRole> {
        match self {
            Role::Worker => Some(NodeRole::Worker),
            Role::Manager => Some(NodeRole::Manager),
            Role::Admin => None,
        }
    }
}

impl From<NodeRole> for Role {
    fn from(r: NodeRole) -> Self {
        match r {
            NodeRole::Worker => Role::Worker,
            NodeRole::Manager => Role::Manager,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
            Role::Admin => "admin",
        })
    }
}

/// The verified subject of a node (or admin) certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// Subject CN.
    pub node_id: String,
    /// Subject OU.
    pub role: Role,
    /// Subject O.
    pub cluster_id: String,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of cluster {}",
            self.role, self.node_id, self.cluster_id
        )
    }
}

/// Characters that would make a printed subject (RFC 4514) ambiguous.
const DN_SPECIALS: &[u8] = b",+=\"\\<>;#";

/// Checks that an ID is safe to put in a subject and to print: node and cluster IDs come from
/// the model (base 36), admin certificates carry a free-form name such as `alice@laptop`, so
/// the rule is "short, printable, no spaces, nothing that reads as subject syntax".
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !DN_SPECIALS.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {id:?} must be 1 to 64 printable ASCII characters, without spaces or any \
             of , + = \" \\ < > ; #"
        ))
    }
}

/// A parsed node certificate: identity and validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: NodeIdentity,
    /// Backdated a few minutes at issue, for nodes whose clocks run slightly behind.
    pub not_before: SystemTime,
    /// Renewal aims well before this (see `renewal_delay`); past it, TLS refuses the node.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Reads a node certificate (DER). Does not verify the issuer: TLS or `NodeCredentials`
    /// does that; this only says what the certificate claims.
    pub fn parse(der: &[u8]) -> Result<CertInfo, CaError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| CaError::bad_cert("node certificate", e.to_string()))?;
        let subject = cert.subject();
        let node_id = single(subject, "CN", X509Name::iter_common_name)?;
        let ou = single(subject, "OU", X509Name::iter_organizational_unit)?;
        let cluster_id = single(subject, "O", X509Name::iter_organization)?;
        let role = Role::from_ou(&ou).ok_or_else(|| {
            CaError::bad_cert("node certificate", format!("unknown role OU {ou:?}"))
        })?;
        let validity = cert.validity();
        Ok(CertInfo {
            identity: NodeIdentity {
                node_id,
                role,
                cluster_id,
            },
            not_before: unix_to_system(validity.not_before.timestamp()),
            not_after: unix_to_system(validity.not_after.timestamp()),
        })
    }

    /// Reads the first certificate of a PEM document.
    pub fn from_pem(pem: &str) -> Result<CertInfo, CaError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::pem("node certificate PEM")(e.to_string()))?;
        Self::parse(&der)
    }

    /// The whole span the certificate is valid for.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether `now` lies outside the validity window.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }
}

/// The one value of a subject attribute; zero or several are refused as ambiguous.
fn single<'a, 'b, I>(
    name: &'b X509Name<'a>,
    what: &str,
    iter: impl FnOnce(&'b X509Name<'a>) -> I,
) -> Result<String, CaError>
where
    I: Iterator<Item = &'b x509_parser::x509::AttributeTypeAndValue<'a>>,
    'a: 'b,
{
    let values: Vec<_> = iter(name).collect();
    let [one] = values.as_slice() else {
        return Err(CaError::bad_cert(
            "node certificate",
            format!("expected one subject {what}, found {}", values.len()),
        ));
    };
    let value = one
        .as_str()
        .map_err(|e| CaError::bad_cert("node certificate", format!("subject {what}: {e}")))?;
    check_id(what, value).map_err(|e| CaError::bad_cert("node certificate", e))?;
    Ok(value.to_string())
}

/// X.509 times are seconds since the epoch; ones before it do not occur in our certificates.
pub(crate) fn unix_to_system(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
