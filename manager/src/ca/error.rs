//! Errors of the certificate authority and of node credentials.
//!
//! One enum for the PKI, because the same failures (unreadable PEM, a certificate that is not
//! Shoal's, a key that does not match) surface in init, join, restart and renewal alike, and
//! each message must tell an operator what to do rather than which parser complained.

use std::path::PathBuf;

/// Why a CA, certificate or key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating the {what} failed: {source}; this is a bug, please report it")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error(
        "cannot read the {what}: {detail}; check that it is the PEM file Shoal wrote \
         (a different file or a truncated copy is not accepted)"
    )]
    Pem { what: &'static str, detail: String },

    #[error(
        "the {what} is not a certificate Shoal can use: {detail}; it was not issued by a Shoal \
         CA or is damaged: re-join the node (`shoal cluster join`) to get a fresh one"
    )]
    BadCertificate { what: &'static str, detail: String },

    #[error(
        "the certificate signing request is refused: {detail}; the joining node must send a \
         CSR made by `shoal` (a PEM or DER PKCS#10 request signed by its own key)"
    )]
    BadCsr { detail: String },

    #[error(
        "the {what} key does not belong to its certificate; the stored credentials are \
         inconsistent: restore them from a backup, or re-join the node"
    )]
    KeyMismatch { what: &'static str },

    #[error(
        "the root CA certificate's digest is {actual}, but {expected} was recorded next to it; \
         the stored root CA was altered: restore the Cluster object from a backup"
    )]
    DigestMismatch { expected: String, actual: String },

    #[error("cannot issue a certificate: {detail}")]
    Issue { detail: String },

    #[error("cannot {action} {}: {source}; check the state directory's permissions and free space", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CaError {
    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| CaError::Generate { what, source }
    }

    pub(crate) fn pem(what: &'static str) -> impl FnOnce(String) -> Self {
        move |detail| CaError::Pem { what, detail }
    }

    pub(crate) fn bad_cert(what: &'static str, detail: impl Into<String>) -> Self {
        CaError::BadCertificate {
            what,
            detail: detail.into(),
        }
    }
}
