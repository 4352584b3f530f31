//! What can go wrong while wiring a task into the node's network, said so that an operator knows
//! what to change: the subnet, the key, the host's firewall, or a missing tool.

use std::path::PathBuf;

/// Errors of node-local networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration cannot work (bad subnet, bridge name, directories).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),

    /// A task ID or container key that cannot name a namespace file.
    #[error(
        "invalid attachment key {key:?}: {reason}; use 1 to 128 letters, digits, '_', '.' or \
         '-', starting with a letter or digit"
    )]
    InvalidKey { key: String, reason: &'static str },

    /// Every address of the subnet is taken.
    #[error(
        "no free address in subnet {subnet} ({in_use} in use); remove unused containers or \
         tasks, or give the daemon a larger --bridge-subnet"
    )]
    Exhausted { subnet: String, in_use: usize },

    /// The host already has something that contradicts our setup (an address, a route).
    #[error("{0}")]
    Conflict(String),

    /// A netlink request failed.
    #[error("cannot {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A file or namespace operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// nft (or iptables) refused our rules or is missing.
    #[error("firewall: {0}")]
    Firewall(String),
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// Maps an io::Error on `path` into [`NetworkError::Io`], for `map_err`.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.into();
    move |source| NetworkError::Io { what, path, source }
}

/// Maps an rtnetlink error into [`NetworkError::Netlink`], keeping the errno when there is one.
pub(crate) fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |e| NetworkError::Netlink {
        what,
        source: match e {
            rtnetlink::Error::NetlinkError(m) => m.to_io(),
            other => std::io::Error::other(other.to_string()),
        },
    }
}

/// The errno of a netlink failure, if the kernel sent one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
