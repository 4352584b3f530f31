//! Accepting TLS connections for tonic, one handshake per task.
//!
//! The accept loop only accepts; each handshake runs in its own task under a timeout, so a
//! slow, silent or hostile client never delays anyone else. A connection reaches tonic only
//! once its handshake succeeded, carrying a `ConnInfo` with the peer's verified identity,
//! parsed once here rather than in every handler.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::ca::identity::{CertInfo, NodeIdentity};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; beyond this, accepting waits (back-pressure, not failure).
const MAX_HANDSHAKES: usize = 512;

/// Who called: a node (or admin) of the cluster, someone without a certificate (a joiner),
/// or the local CLI on the daemon's Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    Anonymous,
    /// The Unix socket's caller; the socket's permissions (root only) are its authentication,
    /// as with Docker's socket, and it acts with admin rights.
    Local {
        uid: Option<u32>,
    },
    Node(NodeIdentity),
}

impl PeerIdentity {
    /// The certificate identity, for callers that have one.
    pub fn node(&self) -> Option<&NodeIdentity> {
        match self {
            PeerIdentity::Node(id) => Some(id),
            _ => None,
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Anonymous => f.write_str("an anonymous caller"),
            PeerIdentity::Local { uid: Some(uid) } => write!(f, "the local CLI (uid {uid})"),
            PeerIdentity::Local { uid: None } => f.write_str("the local CLI"),
            PeerIdentity::Node(id) => id.fmt(f),
        }
    }
}

/// What tonic puts in every request's extensions for connections from `incoming`.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote_addr: SocketAddr,
    /// From the verified client certificate, if one was presented.
    pub peer: PeerIdentity,
    /// The serving node's cluster, against which peers are checked.
    pub local_cluster_id: Arc<str>,
}

/// An accepted, handshaken connection.
pub struct ServerIo {
    stream: TlsStream<TcpStream>,
    info: ConnInfo,
}

impl Connected for ServerIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The stream of handshaken connections; ends when `cancel` fires.
pub struct Incoming {
    inner: ReceiverStream<io::Result<ServerIo>>,
}

impl Stream for Incoming {
    type Item = io::Result<ServerIo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Accepts on `listener` until `cancel` fires; feed the result to
/// `tonic::transport::Server::serve_with_incoming`. `cluster_id` is the serving node's.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    cluster_id: Arc<str>,
    cancel: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, remote) = tokio::select! {
                _ = cancel.cancelled() => break,
                // tonic stopped listening: nothing left to accept for.
                _ = tx.closed() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "accepting a TCP connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor, cluster_id) = (tx.clone(), acceptor.clone(), cluster_id.clone());
            tokio::spawn(async move {
                let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                let stream = match result {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let Some(peer) = peer_of(&stream, remote) else {
                    return;
                };
                let info = ConnInfo {
                    remote_addr: remote,
                    peer,
                    local_cluster_id: cluster_id,
                };
                let _ = tx.send(Ok(ServerIo { stream, info })).await;
            });
        }
        // Dropping the listener frees the port for a restart.
        drop(listener);
    });
    Incoming {
        inner: ReceiverStream::new(rx),
    }
}

/// The identity in the client's (already verified) certificate; `None` drops the connection.
fn peer_of(stream: &TlsStream<TcpStream>, remote: SocketAddr) -> Option<PeerIdentity> {
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Some(PeerIdentity::Anonymous);
    };
    match CertInfo::parse(leaf) {
        Ok(info) => Some(PeerIdentity::Node(info.identity)),
        Err(e) => {
            // Signed by our CA yet unreadable: refuse rather than guess a role.
            tracing::warn!(%remote, error = %e, "dropping a connection with an unreadable certificate");
            None
        }
    }
}
