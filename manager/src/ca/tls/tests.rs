//! Real mutual TLS over loopback: a manager serving a tiny tonic service, and every kind of
//! client the cluster meets (manager, worker, admin, anonymous, joiner, foreign, expired).
//!
//! The test service is the Daemon service: `Version` stands for a manager/admin-only RPC
//! (`require_role`), `Info` for one open to anyone (`peer`), answering who the caller is.
//! Each server counts the calls that reached a handler, to prove refusals happen before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use shoal_proto::daemon_client::DaemonClient;
use shoal_proto::daemon_server::{Daemon, DaemonServer};
use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::node_ca_server::{NodeCa, NodeCaServer};
use shoal_proto::{
    InfoRequest, InfoResponse, IssueNodeCertificateRequest, IssueNodeCertificateResponse,
    VersionRequest, VersionResponse,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

use super::*;
use crate::ca::test_support::{creds, creds_for, identity, root_ca, shared_root_ca};
use crate::ca::{
    CaCert, Csr, DEFAULT_NODE_CERT_EXPIRY, JoinToken, JoinTokens, NodeCredentials, NodeIdentity,
    NodeKey, PeerIdentity, RootCa,
};

#[derive(Clone, Default)]
struct TestDaemon {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Daemon for TestDaemon {
    async fn version(
        &self,
        req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let caller = require_role(&req, &[Role::Manager, Role::Admin])?;
        let version = match caller.node() {
            Some(id) => id.node_id.clone(),
            None => caller.to_string(),
        };
        Ok(Response::new(VersionResponse {
            version,
            ..Default::default()
        }))
    }

    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let who = match peer(&req)? {
            PeerIdentity::Anonymous => "anonymous".to_string(),
            PeerIdentity::Local { .. } => "local".to_string(),
            PeerIdentity::Node(id) => format!("{}/{}", id.role, id.node_id),
        };
        Ok(Response::new(InfoResponse {
            node_id: who,
            ..Default::default()
        }))
    }
}

/// A running manager server; stops when dropped.
struct TestServer {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestServer {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn serve(tls: &NodeTls) -> TestServer {
    serve_with(tls, None, None).await
}

/// Serves the test Daemon, optionally wrapped in a role interceptor, and optionally a CA.
async fn serve_with(
    tls: &NodeTls,
    interceptor: Option<RoleInterceptor>,
    ca: Option<TestCa>,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let incoming = tls.incoming(listener, cancel.clone()).unwrap();
    let svc = TestDaemon::default();
    let calls = svc.calls.clone();
    let shutdown = cancel.clone().cancelled_owned();
    let router = match interceptor {
        None => Server::builder().add_service(DaemonServer::new(svc)),
        Some(i) => Server::builder().add_service(i.wrap(DaemonServer::new(svc))),
    }
    .add_optional_service(ca.map(NodeCaServer::new));
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown));
    TestServer {
        addr,
        calls,
        cancel,
    }
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> Result<DaemonClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(TlsConnector::new(config))
        .await?;
    Ok(DaemonClient::new(channel))
}

async fn who(client: &mut DaemonClient<Channel>) -> Result<String, Status> {
    Ok(client.info(InfoRequest {}).await?.into_inner().node_id)
}

async fn version(client: &mut DaemonClient<Channel>) -> Result<String, Status> {
    Ok(client
        .version(VersionRequest {})
        .await?
        .into_inner()
        .version)
}

/// The whole error chain, where rustls' reasons hide.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" <- ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn manager_tls(ca: &RootCa, node: &str) -> NodeTls {
    NodeTls::new(&creds(ca, node, Role::Manager)).unwrap()
}

#[tokio::test]
async fn manager_certificate_may_call_manager_rpcs() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let client = manager_tls(&ca, "m2");
    let mut c = connect(client.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    assert_eq!(version(&mut c).await.unwrap(), "m2");
    assert_eq!(who(&mut c).await.unwrap(), "manager/m2");
}

#[tokio::test]
async fn worker_certificate_is_refused_by_require_role() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let worker = NodeTls::new(&creds(&ca, "w1", Role::Worker)).unwrap();
    let mut c = connect(worker.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    // The handshake passes (same CA) and open RPCs see the worker for what it is...
    assert_eq!(who(&mut c).await.unwrap(), "worker/w1");
    // ...but a manager-only RPC says exactly who was refused and what is needed.
    let err = version(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("worker w1"), "{err}");
    assert!(err.message().contains("manager or admin"), "{err}");
}

#[tokio::test]
async fn admin_certificate_may_call_control_rpcs() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let admin = NodeTls::new(&creds(&ca, "cli1", Role::Admin)).unwrap();
    let mut c = connect(admin.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    assert_eq!(version(&mut c).await.unwrap(), "cli1");
    // An admin certificate can never serve: it is not a manager's.
    assert!(matches!(
        admin.server_config(),
        Err(TlsError::NotManager { role: Role::Admin })
    ));
}

#[tokio::test]
async fn anonymous_client_reaches_only_open_rpcs() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let config = anonymous_client_config(ca.cert()).unwrap();
    let mut c = connect(config, server.addr).await.unwrap();
    assert_eq!(who(&mut c).await.unwrap(), "anonymous");
    let err = version(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("none was presented"), "{err}");
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let foreign_ca = root_ca("c2");
    let foreign = creds(&foreign_ca, "m9", Role::Manager);

    // A client that trusts our CA but presents the other CA's certificate: the server's
    // client verifier refuses it, so nothing reaches a handler.
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_root_certificates(root_store(ca.cert()).unwrap())
        .with_client_auth_cert(
            vec![foreign.cert().cert_der.clone()],
            foreign.key().private_key_der(),
        )
        .unwrap();
    let mut config = config;
    config.alpn_protocols = h2();
    // TLS 1.3 reports a refused client certificate after the client's last flight, so the
    // failure shows on the first call (or already at connect).
    let outcome = match connect(Arc::new(config), server.addr).await {
        Err(e) => Err(chain(&e)),
        Ok(mut c) => who(&mut c).await.map_err(|s| chain(&s)),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(server.calls(), 0);

    // The other direction: our node refuses a manager of the other CA.
    let foreign_server = serve(&NodeTls::new(&foreign).unwrap()).await;
    let ours = manager_tls(&ca, "m2");
    let err = connect(ours.client_config().unwrap(), foreign_server.addr)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("UnknownIssuer") || chain(&err).contains("unknown issuer"),
        "{}",
        chain(&err)
    );
    assert_eq!(foreign_server.calls(), 0);
}

#[tokio::test]
async fn certificate_of_another_cluster_is_refused_by_require_role() {
    // One CA signing for two clusters (a misconfiguration): the handshake passes, the
    // cluster check in authz does not.
    let ca = shared_root_ca();
    let now = SystemTime::now();
    let server_creds = creds_for(
        &ca,
        &identity("m1", Role::Manager, "a"),
        now,
        DEFAULT_NODE_CERT_EXPIRY,
    );
    let client_creds = creds_for(
        &ca,
        &identity("m2", Role::Manager, "b"),
        now,
        DEFAULT_NODE_CERT_EXPIRY,
    );
    let server = serve(&NodeTls::new(&server_creds).unwrap()).await;
    let client = NodeTls::new(&client_creds).unwrap();
    let mut c = connect(client.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    for err in [
        version(&mut c).await.unwrap_err(),
        who(&mut c).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(err.message().contains("belongs to cluster b"), "{err}");
    }
}

#[tokio::test]
async fn joiner_with_the_right_digest_connects_and_learns_the_ca() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let token = crate::ca::JoinToken::generate(ca.cert().digest());
    let parsed = crate::ca::JoinToken::parse(&token.to_string()).unwrap();
    let (config, verifier) = join_client_config(parsed.ca_digest()).unwrap();
    assert_eq!(verifier.verified_ca(), None);
    let mut c = connect(config, server.addr).await.unwrap();
    assert_eq!(who(&mut c).await.unwrap(), "anonymous");
    assert_eq!(verifier.verified_ca().as_ref(), Some(ca.cert()));
}

#[tokio::test]
async fn joiner_with_a_wrong_digest_is_refused_before_any_request() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let other = root_ca("c2");
    let (config, verifier) = join_client_config(other.cert().digest()).unwrap();
    let err = connect(config, server.addr).await.unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("does not match the join token"), "{msg}");
    assert!(msg.contains(&other.cert().digest().to_hex()), "{msg}");
    // The channel never came up, so no request (token, CSR) was ever written.
    assert_eq!(server.calls(), 0);
    assert_eq!(verifier.verified_ca(), None);
}

#[tokio::test]
async fn joiner_refuses_a_worker_posing_as_manager_with_the_right_ca() {
    // A worker of the right cluster presents [its cert, root CA]: the digest matches, but the
    // certificate lacks the manager name, so the joiner still refuses.
    let ca = root_ca("c1");
    let worker = creds(&ca, "w1", Role::Worker);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![worker.cert().cert_der.clone(), ca.cert().der().clone()],
            worker.key().private_key_der(),
        )
        .unwrap();
    config.alpn_protocols = h2();
    let cancel = CancellationToken::new();
    let incoming = incoming(listener, Arc::new(config), "c1".into(), cancel.clone());
    tokio::spawn(
        Server::builder()
            .add_service(DaemonServer::new(TestDaemon::default()))
            .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned()),
    );
    let (config, _) = join_client_config(ca.cert().digest()).unwrap();
    let err = connect(config, addr).await.unwrap_err();
    assert!(
        chain(&err).contains("not valid for name \"shoal-manager\""),
        "{}",
        chain(&err)
    );
    // Nor does a full member accept it.
    let member = manager_tls(&ca, "m2");
    let err = connect(member.client_config().unwrap(), addr)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("not valid for name \"shoal-manager\""),
        "{}",
        chain(&err)
    );
    cancel.cancel();
}

#[tokio::test]
async fn expired_certificates_are_refused_both_ways() {
    let ca = root_ca("c1");
    let long_ago = SystemTime::now() - Duration::from_secs(200 * 24 * 3600);
    let expired = |node: &str, role| {
        creds_for(
            &ca,
            &identity(node, role, "c1"),
            long_ago,
            DEFAULT_NODE_CERT_EXPIRY,
        )
    };

    // An expired client certificate.
    let server = serve(&manager_tls(&ca, "m1")).await;
    let old_client = NodeTls::new(&expired("m2", Role::Manager)).unwrap();
    let outcome = match connect(old_client.client_config().unwrap(), server.addr).await {
        Err(e) => Err(chain(&e)),
        Ok(mut c) => who(&mut c).await.map_err(|s| chain(&s)),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(server.calls(), 0);

    // An expired manager certificate.
    let old_server = serve(&NodeTls::new(&expired("m3", Role::Manager)).unwrap()).await;
    let client = manager_tls(&ca, "m4");
    let err = connect(client.client_config().unwrap(), old_server.addr)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("certificate expired"),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn renewal_swaps_the_presented_certificate_in_place() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    let node = NodeTls::new(&creds(&ca, "n1", Role::Worker)).unwrap();
    let config = node.client_config().unwrap();
    let mut c = connect(config.clone(), server.addr).await.unwrap();
    assert_eq!(
        version(&mut c).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Promotion arrives as a renewal: same node, manager certificate. The config made
    // before presents it on its next handshake.
    node.update(&creds(&ca, "n1", Role::Manager)).unwrap();
    assert_eq!(node.identity().role, Role::Manager);
    let mut c = connect(config, server.addr).await.unwrap();
    assert_eq!(version(&mut c).await.unwrap(), "n1");

    // A certificate for another node, cluster or CA is not a renewal.
    let err = node.update(&creds(&ca, "n2", Role::Manager)).unwrap_err();
    assert!(matches!(err, TlsError::IdentityChanged { .. }), "{err}");
    let other_ca = shared_root_ca();
    let same_name = creds_for(
        &other_ca,
        &identity("n1", Role::Manager, "c1"),
        SystemTime::now(),
        DEFAULT_NODE_CERT_EXPIRY,
    );
    let err = node.update(&same_name).unwrap_err();
    assert!(matches!(err, TlsError::CaChanged { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_client_does_not_block_other_connections() {
    let ca = root_ca("c1");
    let server = serve(&manager_tls(&ca, "m1")).await;
    // Several connections that never finish (or never start) their handshake...
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        stalled.push(s);
    }
    stalled.push(TcpStream::connect(server.addr).await.unwrap());
    // ...while a real client is served at once (well within the handshake timeout).
    let client = manager_tls(&ca, "m2");
    let call = async {
        let mut c = connect(client.client_config().unwrap(), server.addr)
            .await
            .unwrap();
        version(&mut c).await.unwrap()
    };
    let got = tokio::time::timeout(Duration::from_secs(5), call).await;
    assert_eq!(got.as_deref().ok(), Some("m2"));
    drop(stalled);
}

#[tokio::test]
async fn role_interceptor_guards_a_whole_service() {
    let ca = root_ca("c1");
    let server = serve_with(
        &manager_tls(&ca, "m1"),
        Some(RoleInterceptor::new(&[Role::Manager])),
        None,
    )
    .await;
    let worker = NodeTls::new(&creds(&ca, "w1", Role::Worker)).unwrap();
    let mut c = connect(worker.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    // Even the open RPC is closed to workers now, and the handler never runs.
    let err = who(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(server.calls(), 0);
    let manager = manager_tls(&ca, "m2");
    let mut c = connect(manager.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    assert_eq!(who(&mut c).await.unwrap(), "manager/m2");
}

#[tokio::test]
async fn worker_node_cannot_build_a_server() {
    let ca = root_ca("c1");
    let worker: NodeCredentials = creds(&ca, "w1", Role::Worker);
    let tls = NodeTls::new(&worker).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(err) = tls.incoming(listener, CancellationToken::new()) else {
        panic!("a worker certificate must not serve");
    };
    assert!(err.to_string().contains("only managers serve"), "{err}");
}

/// The CA's issuing RPC as a manager would serve it: open to anonymous callers, the token
/// decides the role, the CSR gives only the key.
struct TestCa {
    ca: Arc<RootCa>,
    tokens: JoinTokens,
}

#[tonic::async_trait]
impl NodeCa for TestCa {
    async fn issue_node_certificate(
        &self,
        req: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        // Anyone may ask (a joiner has no certificate), but not a node of another cluster.
        peer(&req)?;
        let req = req.into_inner();
        let role = self.tokens.role_for(&JoinToken::parse(&req.token)?)?;
        let csr_pem = String::from_utf8(req.csr_pem)
            .map_err(|_| Status::invalid_argument("the CSR is not PEM text"))?;
        let cluster_id = self.ca.cert().cluster_id().unwrap_or_default().to_string();
        let id = NodeIdentity {
            node_id: req.node_id,
            role,
            cluster_id: cluster_id.clone(),
        };
        let cert = self.ca.issue(
            &Csr::from_pem(&csr_pem)?,
            &id,
            DEFAULT_NODE_CERT_EXPIRY,
            SystemTime::now(),
        )?;
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id: id.node_id,
            cluster_id,
            role: role.node_role().unwrap_or_default() as i32,
            certificate_pem: cert.cert_pem.into_bytes(),
            root_ca_pem: self.ca.cert().pem().as_bytes().to_vec(),
            managers: vec![],
        }))
    }
}

/// What `cluster join` does, up to holding credentials: returns them or the refusal.
async fn join(addr: SocketAddr, token: &str, node_id: &str) -> Result<NodeCredentials, Status> {
    let token = JoinToken::parse(token)?;
    let (config, verifier) = join_client_config(token.ca_digest()).unwrap();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(TlsConnector::new(config))
        .await
        .map_err(|e| Status::unavailable(chain(&e)))?;
    let key = NodeKey::generate().unwrap();
    let reply = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.to_string(),
            csr_pem: key.csr_pem().unwrap().into_bytes(),
            node_id: node_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    // Trust the CA the handshake pinned; the reply's copy must be the same one.
    let ca = verifier.verified_ca().expect("the handshake pinned the CA");
    assert_eq!(
        CaCert::from_pem(std::str::from_utf8(&reply.root_ca_pem).unwrap()).unwrap(),
        ca
    );
    let cert_pem = String::from_utf8(reply.certificate_pem).unwrap();
    Ok(NodeCredentials::new(ca, &cert_pem, key).unwrap())
}

#[tokio::test]
async fn join_flow_gives_the_role_of_the_token_and_a_working_identity() {
    let ca = Arc::new(root_ca("c1"));
    let tokens = JoinTokens::generate(ca.cert().digest());
    let test_ca = TestCa {
        ca: ca.clone(),
        tokens: tokens.clone(),
    };
    let server = serve_with(&manager_tls(&ca, "m1"), None, Some(test_ca)).await;

    // A worker joins with the worker token and can then call in as itself.
    let creds = join(server.addr, &tokens.worker.to_string(), "w1")
        .await
        .unwrap();
    assert_eq!(creds.identity(), &identity("w1", Role::Worker, "c1"));
    let tls = NodeTls::new(&creds).unwrap();
    let mut c = connect(tls.client_config().unwrap(), server.addr)
        .await
        .unwrap();
    assert_eq!(who(&mut c).await.unwrap(), "worker/w1");
    assert_eq!(
        version(&mut c).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // The manager token makes a manager, which can serve.
    let creds = join(server.addr, &tokens.manager.to_string(), "m2")
        .await
        .unwrap();
    assert_eq!(creds.identity().role, Role::Manager);
    assert!(NodeTls::new(&creds).unwrap().server_config().is_ok());

    // A rotated (old) secret and a malformed token are refused with what to do.
    let old = tokens.worker.rotate();
    let err = join(server.addr, &old.to_string(), "w2").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("rotated"), "{err}");
    let err = join(server.addr, "SHOAL-1-nope", "w3").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("SHOAL-1-<50 base-36"), "{err}");
}

#[tokio::test]
async fn local_unix_socket_caller_acts_as_admin() {
    // The daemon's Unix socket: no TLS, the socket's permissions authenticate.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let cancel = CancellationToken::new();
    let guarded = RoleInterceptor::new(&[Role::Manager]).wrap(NodeCaServer::new(TestCa {
        ca: Arc::new(root_ca("c1")),
        tokens: JoinTokens::generate(root_ca("c1").cert().digest()),
    }));
    tokio::spawn(
        Server::builder()
            .add_service(DaemonServer::new(TestDaemon::default()))
            .add_service(guarded)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                cancel.clone().cancelled_owned(),
            ),
    );
    let channel = Endpoint::from_static("http://local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap();
    let mut c = DaemonClient::new(channel.clone());
    assert_eq!(who(&mut c).await.unwrap(), "local");
    let version = version(&mut c).await.unwrap();
    assert!(version.starts_with("the local CLI"), "{version}");
    // Admin rights only: a managers-only service stays closed.
    let err = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("the local CLI"), "{err}");
    cancel.cancel();
}
