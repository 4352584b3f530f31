//! The seam where TLS and fault injection enter the transport.
//!
//! Clients reach peers through a `Dialer` (plain TCP by default; tests inject one that drops or
//! delays connections) and, when a `TlsConfig` is given, a rustls handshake on top; servers
//! accept from a `TcpListener` and do the handshake per connection, off the accept loop, so one
//! slow or hostile client never holds up the others. Every accepted connection carries a
//! `PeerInfo` (address and verified certificate chain) into the request extensions, where the
//! cluster lifecycle's role checks read it. All crypto uses rustls' `ring` provider.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;

use crate::store::BoxFuture;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Client and server TLS settings for the Raft transport (mutual TLS when both verify).
#[derive(Clone)]
pub struct TlsConfig {
    /// What the listening side presents and how it verifies clients.
    pub server: Arc<ServerConfig>,
    /// What the dialing side presents and how it verifies servers.
    pub client: Arc<ClientConfig>,
    /// The name every manager certificate carries (a DNS SAN), checked by the dialing side;
    /// peers are dialed by address, so it cannot be the host name.
    pub server_name: ServerName<'static>,
}

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} PEM: {detail}; check that it is a PEM file of the right kind")]
    Pem { what: &'static str, detail: String },
    #[error("the TLS settings are refused by rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    #[error("{0:?} is not a valid TLS server name (use a DNS name such as shoal-manager)")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// Mutual TLS: both sides present `cert_pem` (with `key_pem`) and accept only peers whose
    /// certificate chains to `ca_pem`; servers must carry `server_name` as a DNS SAN.
    pub fn mutual(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let pem = |what: &'static str| {
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                what,
                detail: e.to_string(),
            }
        };
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(ca.map_err(pem("CA certificate"))?)?;
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("node certificate"))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "node certificate",
                detail: "no certificate found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem("node key"))?;
        let roots = Arc::new(roots);

        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name,
        })
    }
}

/// A byte stream to a peer.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens connections to peers; inject one to drop, delay or partition traffic in tests.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
}

/// Plain TCP with Nagle off (Raft messages are small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// The tonic connector for one peer: dial, then TLS if configured.
#[derive(Clone)]
struct Connector {
    dialer: Arc<dyn Dialer>,
    tls: Option<TlsConfig>,
    addr: Arc<str>,
    timeout: Duration,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let connect = async {
                let stream = this.dialer.dial(&this.addr).await?;
                match &this.tls {
                    None => Ok(stream),
                    Some(tls) => {
                        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                        let stream = connector.connect(tls.server_name.clone(), stream).await?;
                        Ok(Box::new(stream) as Box<dyn Io>)
                    }
                }
            };
            match tokio::time::timeout(this.timeout, connect).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {} took over {:?}", this.addr, this.timeout),
                )),
            }
        })
    }
}

/// A lazily connected gRPC channel to `addr`, dialed through `dialer` and, with `tls`, inside
/// rustls; tonic reconnects it after failures. The daemon and the CLI reach managers this way.
pub fn channel(
    addr: &str,
    tls: Option<TlsConfig>,
    dialer: Arc<dyn Dialer>,
    connect_timeout: Duration,
) -> tonic::transport::Channel {
    let connector = Connector {
        dialer,
        tls,
        addr: addr.into(),
        timeout: connect_timeout,
    };
    // The URI is only a label: the connector decides where to connect.
    tonic::transport::Endpoint::from_static("http://shoal-raft")
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(connector)
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's verified certificate chain (leaf first), when TLS with client auth is on.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection. When its server is killed, reads and writes fail at once, as if the
/// process had died, instead of lingering until peers give up.
pub struct ServerIo {
    stream: Stream,
    info: PeerInfo,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl ServerIo {
    fn check_killed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the Raft server was stopped",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_killed(cx)?;
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_killed(cx)?;
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_killed(cx)?;
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until `cancel` fires, handshaking each in its own task;
/// the stream feeds `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    cancel: CancellationToken,
) -> ReceiverStream<io::Result<ServerIo>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (tcp, remote) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "accepting a Raft connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor, cancel) = (tx.clone(), acceptor.clone(), cancel.clone());
            tokio::spawn(async move {
                let killed = Box::pin(cancel.cancelled_owned());
                let io = match acceptor {
                    None => ServerIo {
                        stream: Stream::Plain(tcp),
                        info: PeerInfo {
                            remote_addr: Some(remote),
                            certificates: None,
                        },
                        killed,
                    },
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let certificates = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .map(|c| Arc::new(c.to_vec()));
                                ServerIo {
                                    stream: Stream::Tls(Box::new(s)),
                                    info: PeerInfo {
                                        remote_addr: Some(remote),
                                        certificates,
                                    },
                                    killed,
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                let _ = tx.send(Ok(io)).await;
            });
        }
        // Dropping the listener here frees the port for a restart.
        drop(listener);
    });
    ReceiverStream::new(rx)
}
