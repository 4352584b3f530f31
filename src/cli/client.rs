//! Reaching a daemon: host addresses (`unix://`, a path, `tcp://`) and gRPC channels, with errors
//! that say what is wrong and what to do (start the daemon, use sudo, ...).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Result, bail};
use tonic::transport::{Channel, Endpoint, Uri};

pub const DEFAULT_SOCKET_URL: &str = "unix:///run/shoal/shoal.sock";

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    Tcp(String),
}

impl FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Host, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(
                    "unix:// needs a socket path, e.g. unix:///run/shoal/shoal.sock".into(),
                );
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            if !addr.contains(':') {
                return Err(format!("tcp://{addr} needs a port, e.g. tcp://{addr}:2377"));
            }
            return Ok(Host::Tcp(addr.to_string()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(Host::Unix(PathBuf::from(s)));
        }
        Err(format!(
            "{s:?} is not a daemon address; use unix:///path/to.sock, a socket path, or \
             tcp://HOST:PORT"
        ))
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Opens a channel to the daemon, first checking that it is there so the error can say why not.
pub async fn connect(host: &Host) -> Result<Channel> {
    match host {
        Host::Unix(path) => {
            if let Err(e) = tokio::net::UnixStream::connect(path).await {
                bail!("{}", unreachable_unix(host, &e));
            }
            let path = path.clone();
            // The URI is ignored by the connector; tonic needs one that parses.
            let channel = Endpoint::from_static("http://shoal.local").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }),
            );
            Ok(channel)
        }
        Host::Tcp(addr) => connect_tls(addr).await,
    }
}

/// The --tls-dir flag, set once at start (commands take only the host).
static TLS_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn set_tls_dir(dir: PathBuf) {
    let _ = TLS_DIR.set(dir);
}

fn tls_dir() -> PathBuf {
    TLS_DIR.get().cloned().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".shoal")
    })
}

/// A manager's cluster port, with the admin certificate from the TLS directory.
async fn connect_tls(addr: &str) -> Result<Channel> {
    use anyhow::Context;
    use shoal_manager::ca::{CaCert, NodeCredentials, NodeKey, NodeTls};
    let dir = tls_dir();
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).with_context(|| {
            format!(
                "cannot read {} for tcp://{addr}: a remote CLI needs a client certificate; make \
                 one on a manager with `shoal cluster ca issue-client --out DIR` and pass \
                 --tls-dir DIR (or set SHOAL_CERT_PATH)",
                dir.join(name).display()
            )
        })
    };
    let creds = NodeCredentials::new(
        CaCert::from_pem(&read("ca.pem")?)?,
        &read("cert.pem")?,
        NodeKey::from_pem(&read("key.pem")?)?,
    )?;
    let connector = NodeTls::new(&creds)?.connector()?;
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await
        .with_context(|| format!("cannot connect to the manager at tcp://{addr}"))
}

/// Writes a client certificate set (files readable by their owner only).
pub fn write_client_certs(dir: &std::path::Path, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in [("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)] {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        f.write_all(bytes)?;
    }
    Ok(())
}

fn unreachable_unix(host: &Host, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::NotFound => "the socket does not exist".to_string(),
        ErrorKind::ConnectionRefused => "nothing is listening on the socket".to_string(),
        ErrorKind::PermissionDenied => {
            return format!(
                "cannot connect to the shoal daemon at {host}: permission denied. The socket \
                 is root only; run the command as root (e.g. with sudo)"
            );
        }
        _ => e.to_string(),
    };
    format!(
        "cannot connect to the shoal daemon at {host}: {why}. Is the daemon running? Start it \
         with `shoal daemon` (or `systemctl start shoal`), or point -H/SHOAL_HOST at its socket"
    )
}

/// What to show for a failed call: the daemon's own words, plus a hint when the daemon went away.
pub fn describe_status(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => format!(
            "lost the connection to the shoal daemon ({}); is it still running?",
            status.message()
        ),
        _ => status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_forms() {
        assert_eq!(
            "unix:///run/x.sock".parse::<Host>().unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "/run/x.sock".parse::<Host>().unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://10.0.0.1:2377".parse::<Host>().unwrap(),
            Host::Tcp("10.0.0.1:2377".into())
        );
        assert!(
            "tcp://10.0.0.1"
                .parse::<Host>()
                .unwrap_err()
                .contains("needs a port")
        );
        assert!("bogus".parse::<Host>().unwrap_err().contains("unix:///"));
    }

    #[tokio::test]
    async fn missing_socket_says_start_the_daemon() {
        let host = Host::Unix("/nonexistent/shoal.sock".into());
        let err = connect(&host).await.unwrap_err().to_string();
        assert!(err.contains("socket does not exist"), "{err}");
        assert!(err.contains("shoal daemon"), "{err}");
    }
}
