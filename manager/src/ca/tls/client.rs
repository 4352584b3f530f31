//! Calling managers: client settings and the tonic connector that dials TCP and TLS.
//!
//! Clients verify a manager by the fixed name `shoal-manager`, which only manager
//! certificates carry: managers are dialed by address, and a worker's certificate (same CA)
//! must never be able to impersonate one. tonic is given `http://` URIs and this connector
//! does the TLS, so tonic's own TLS features stay off and cannot wrap the stream twice.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

use super::current::CurrentCert;
use super::{TlsError, VERSIONS, h2, manager_server_name, no_resumption, provider, root_store};
use crate::ca::root::CaCert;

/// Swarm's manager port, used when a URI names none.
const DEFAULT_PORT: u16 = 2377;
/// How long TCP connect plus handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Trust only the cluster CA; present the current certificate if there is one.
pub(crate) fn client_config(
    ca: &CaCert,
    current: Option<Arc<CurrentCert>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(root_store(ca)?);
    let mut config = match current {
        Some(current) => builder.with_client_cert_resolver(current),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = h2();
    no_resumption(&mut config);
    Ok(Arc::new(config))
}

/// Settings for a node that trusts the CA but has no certificate (yet, or any more): it can
/// reach only the RPCs that allow anonymous callers.
pub fn anonymous_client_config(ca: &CaCert) -> Result<Arc<ClientConfig>, TlsError> {
    client_config(ca, None)
}

/// Dials the URI's host and port and runs the TLS handshake, verifying `shoal-manager`.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    timeout: Duration,
}

impl TlsConnector {
    /// A connector using `config` (from `NodeTls::client_config`, `anonymous_client_config`
    /// or `join_client_config`).
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector {
            config,
            server_name: manager_server_name(),
            timeout: CONNECT_TIMEOUT,
        }
    }

    /// Bounds TCP connect plus handshake (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> TlsConnector {
        self.timeout = timeout;
        self
    }

    /// Connects to `host:port` directly, outside tonic (e.g. a raw probe).
    pub async fn connect(&self, addr: &str) -> io::Result<TlsStream<TcpStream>> {
        let config = self.config.clone();
        let name = self.server_name.clone();
        let addr = addr.to_string();
        let handshake = async move {
            let tcp = TcpStream::connect(&addr).await?;
            // gRPC messages are small and latency-bound.
            tcp.set_nodelay(true)?;
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
        };
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to a manager took over {:?}; check the address and that the \
                     manager is up",
                    self.timeout
                ),
            )),
        }
    }
}

/// `host:port` of a URI; IPv6 hosts lose their brackets for the socket API.
fn authority(uri: &Uri) -> io::Result<String> {
    let host = uri.host().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the address {uri} has no host; use http://HOST:PORT"),
        )
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr = authority(&uri)?;
            this.connect(&addr).await.map(TokioIo::new)
        })
    }
}
