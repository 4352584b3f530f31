//! A node's own side of the PKI: its key, its CSR, its stored credentials and their renewal.
//!
//! Everything here runs on the node (worker, manager or admin CLI), never on the CA: the key is
//! made and kept locally. Credentials are checked whenever they are assembled (the certificate
//! must be signed by the CA and match the key), so a damaged or swapped file is caught at
//! start-up with a clear message instead of as a mysterious handshake failure later.
//! The certificate and key share one file so that a renewal replaces both in one rename.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{CertInfo, NodeIdentity};
use super::root::{CaCert, pem_encode};
use super::{CaError, IssuedCert};

/// The CA certificate the node trusts.
const CA_FILE: &str = "ca.crt";
/// The node's certificate followed by its private key.
const NODE_FILE: &str = "node.pem";

/// A node's private key (ECDSA P-256), which never leaves the node.
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(<private>)")
    }
}

impl NodeKey {
    /// A fresh key, made on the node that will use it: at join and at every renewal, so a
    /// leaked old key stops mattering once its certificate expires.
    pub fn generate() -> Result<NodeKey, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CaError::generate("node key"))?;
        Ok(NodeKey { key })
    }

    /// Reads the first private key in a PEM document (other sections are skipped).
    pub fn from_pem(pem: &str) -> Result<NodeKey, CaError> {
        Ok(NodeKey {
            key: key_from_pem("node key PEM", pem)?,
        })
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR (PEM) over this key. Its subject is a placeholder: the CA imposes the real one.
    pub fn csr_pem(&self) -> Result<String, CaError> {
        self.csr()?.pem().map_err(CaError::generate("CSR PEM"))
    }

    /// The same CSR in DER, for RPCs that carry bytes.
    pub fn csr_der(&self) -> Result<Vec<u8>, CaError> {
        Ok(self.csr()?.der().to_vec())
    }

    fn csr(&self) -> Result<rcgen::CertificateSigningRequest, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shoal-node");
        params.distinguished_name = dn;
        params
            .serialize_request(&self.key)
            .map_err(CaError::generate("certificate signing request"))
    }

    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    fn spki_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

/// A node's complete TLS identity: the CA it trusts, its certificate and its key, consistent.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    ca: CaCert,
    cert: IssuedCert,
    key: Arc<NodeKey>,
}

impl NodeCredentials {
    /// Assembles credentials, checking that `ca` signed the certificate and that `key` is its
    /// key. Expiry is not checked: an expired certificate still says who the node was.
    pub fn new(ca: CaCert, cert_pem: &str, key: NodeKey) -> Result<NodeCredentials, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::pem("node certificate PEM")(e.to_string()))?;
        let info = CertInfo::parse(&cert_der)?;
        let (_, parsed) = X509Certificate::from_der(&cert_der)
            .map_err(|e| CaError::bad_cert("node certificate", e.to_string()))?;
        let (_, ca_parsed) = X509Certificate::from_der(ca.der())
            .map_err(|e| CaError::bad_cert("root CA certificate", e.to_string()))?;
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .map_err(|_| {
                CaError::bad_cert(
                    "node certificate",
                    format!("it was not signed by the cluster's root CA {}", ca.digest()),
                )
            })?;
        if parsed.public_key().raw != key.spki_der().as_slice() {
            return Err(CaError::KeyMismatch { what: "node" });
        }
        Ok(NodeCredentials {
            ca,
            cert: IssuedCert {
                cert_pem: pem_encode("CERTIFICATE", &cert_der),
                cert_der,
                info,
            },
            key: Arc::new(key),
        })
    }

    /// The root CA this node trusts (and checks managers against).
    pub fn ca(&self) -> &CaCert {
        &self.ca
    }

    /// The node certificate, with its parsed identity and validity.
    pub fn cert(&self) -> &IssuedCert {
        &self.cert
    }

    /// Identity and validity, e.g. for `renewal_delay` and `cluster info`.
    pub fn info(&self) -> &CertInfo {
        &self.cert.info
    }

    /// Who the certificate says this node is.
    pub fn identity(&self) -> &NodeIdentity {
        &self.cert.info.identity
    }

    /// The private key; it never leaves the node.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }
}

/// Where a node keeps its credentials: a directory of 0600 files, written atomically.
#[derive(Clone, Debug)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// Credentials under `dir` (created 0700 on first save), e.g. `<state dir>/certificates`.
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir { dir: dir.into() }
    }

    /// The directory, for messages.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes the credentials, replacing any previous ones. A crash leaves either the old or the
    /// new certificate-and-key pair, never a mix.
    pub async fn save(&self, creds: &NodeCredentials) -> Result<(), CaError> {
        let dir = self.dir.clone();
        let ca = creds.ca.pem().to_string();
        let node = format!("{}{}", creds.cert.cert_pem, creds.key.to_pem());
        blocking(move || {
            create_private_dir(&dir)?;
            write_atomic(&dir.join(CA_FILE), ca.as_bytes())?;
            write_atomic(&dir.join(NODE_FILE), node.as_bytes())?;
            sync_dir(&dir)
        })
        .await
    }

    /// Reads the stored credentials; `None` when the node has never joined a cluster.
    pub async fn load(&self) -> Result<Option<NodeCredentials>, CaError> {
        let dir = self.dir.clone();
        let files = blocking(move || {
            let Some(node) = read_optional(&dir.join(NODE_FILE))? else {
                return Ok(None);
            };
            let ca_path = dir.join(CA_FILE);
            match read_optional(&ca_path)? {
                Some(ca) => Ok(Some((ca, node))),
                None => Err(CaError::Io {
                    action: "read",
                    path: ca_path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the node certificate is there but the CA certificate is missing",
                    ),
                }),
            }
        })
        .await?;
        let Some((ca, node)) = files else {
            return Ok(None);
        };
        let ca = CaCert::from_pem(&ca)?;
        let key = NodeKey::from_pem(&node)?;
        NodeCredentials::new(ca, &node, key).map(Some)
    }
}

/// How long to wait before renewing: the renewal point falls at a random moment between half
/// and two thirds of the lifetime, so renewal always starts with at least a third left and
/// nodes that joined together do not all renew together. Zero when the point has passed.
pub fn renewal_delay(info: &CertInfo, now: SystemTime, rng: &mut impl Rng) -> Duration {
    let lifetime = info.lifetime().as_secs_f64();
    let fraction = rng.random_range(0.5..=2.0 / 3.0);
    let renew_at = info.not_before + Duration::from_secs_f64(lifetime * fraction);
    renew_at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The first private key of a PEM document, whatever else the document holds.
pub(crate) fn key_from_pem(what: &'static str, pem: &str) -> Result<KeyPair, CaError> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CaError::pem(what)(e.to_string()))?;
    KeyPair::try_from(&der).map_err(|e| CaError::pem(what)(e.to_string()))
}

/// Runs file IO off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaError> + Send + 'static,
) -> Result<T, CaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_path_buf();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create the directory", dir))
}

/// Temp file (0600) in the same directory, fsync, rename over the target.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("flush", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err("replace", path))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes the renames durable.
fn sync_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("flush the directory", dir))
}

fn read_optional(path: &Path) -> Result<Option<String>, CaError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::ca::Role;
    use crate::ca::test_support::{creds, root_ca};

    #[tokio::test]
    async fn credentials_round_trip_through_a_private_cert_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path().join("certs"));
        assert!(dir.load().await.unwrap().is_none(), "nothing stored yet");

        let ca = root_ca("c1");
        let saved = creds(&ca, "n1", Role::Worker);
        dir.save(&saved).await.unwrap();
        let loaded = dir.load().await.unwrap().unwrap();
        assert_eq!(loaded.identity(), saved.identity());
        assert_eq!(loaded.cert(), saved.cert());
        assert_eq!(loaded.ca(), saved.ca());
        assert_eq!(loaded.key().to_pem(), saved.key().to_pem());

        // Renewal overwrites atomically and leaves no temp files behind.
        let renewed = creds(&ca, "n1", Role::Manager);
        dir.save(&renewed).await.unwrap();
        assert_eq!(
            dir.load().await.unwrap().unwrap().identity().role,
            Role::Manager
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![CA_FILE, NODE_FILE]);
        for name in names {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn damaged_or_mismatched_credentials_are_refused_at_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        let ca = root_ca("c1");
        dir.save(&creds(&ca, "n1", Role::Worker)).await.unwrap();

        // A different CA certificate next to the node certificate.
        let other = root_ca("c2");
        std::fs::write(tmp.path().join(CA_FILE), other.cert().pem()).unwrap();
        let err = dir.load().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("not signed by the cluster's root CA"),
            "{err}"
        );

        // The CA file gone.
        std::fs::remove_file(tmp.path().join(CA_FILE)).unwrap();
        let err = dir.load().await.unwrap_err();
        assert!(
            err.to_string().contains("CA certificate is missing"),
            "{err}"
        );
    }

    #[test]
    fn credentials_need_the_matching_key() {
        let ca = root_ca("c1");
        let c = creds(&ca, "n1", Role::Worker);
        let err = NodeCredentials::new(
            ca.cert().clone(),
            &c.cert().cert_pem,
            NodeKey::generate().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
        // The identity parses back from the PEM alone.
        assert_eq!(
            CertInfo::from_pem(&c.cert().cert_pem).unwrap().identity,
            *c.identity()
        );
    }

    #[test]
    fn renewal_starts_between_half_and_two_thirds_of_the_lifetime() {
        let ca = root_ca("c1");
        let info = creds(&ca, "n1", Role::Worker).info().clone();
        let life = info.lifetime();
        let mut delays = Vec::new();
        for seed in 0..50 {
            let d = renewal_delay(&info, info.not_before, &mut StdRng::seed_from_u64(seed));
            assert!(
                d >= life / 2 && d <= life * 2 / 3 + Duration::from_secs(1),
                "{d:?}"
            );
            delays.push(d);
        }
        // Seeded: the same seed gives the same moment; different seeds spread out.
        let again = renewal_delay(&info, info.not_before, &mut StdRng::seed_from_u64(0));
        assert_eq!(again, delays[0]);
        assert!(delays.iter().any(|d| *d != delays[0]));
        // Past the renewal point (or expired): renew now.
        let late = renewal_delay(&info, info.not_after, &mut StdRng::seed_from_u64(1));
        assert_eq!(late, Duration::ZERO);
    }
}
