//! The bridge network, opened on first use: a node that never runs a bridged container or task
//! never gets a bridge, an nft table or IPv4 forwarding switched on. One handle is cloned to
//! every user in the daemon (the local container API, the task executor), so they share one
//! address book.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::bridge::{BridgeConfig, BridgeNetworks};
use crate::error::Result;
use crate::{Attachment, TaskNetworks};

/// A [`BridgeNetworks`] that sets itself up at the first `attach`.
#[derive(Clone)]
pub struct LazyBridgeNetworks {
    inner: Arc<Inner>,
}

struct Inner {
    config: BridgeConfig,
    cell: OnceCell<BridgeNetworks>,
}

impl std::fmt::Debug for LazyBridgeNetworks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBridgeNetworks")
            .field("config", &self.inner.config)
            .field("opened", &self.opened().is_some())
            .finish()
    }
}

impl LazyBridgeNetworks {
    pub fn new(config: BridgeConfig) -> LazyBridgeNetworks {
        LazyBridgeNetworks {
            inner: Arc::new(Inner {
                config,
                cell: OnceCell::new(),
            }),
        }
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// The network, set up now if it was not yet. A failure (nft missing, say) is returned
    /// and the next call tries again.
    pub async fn get(&self) -> Result<&BridgeNetworks> {
        self.inner
            .cell
            .get_or_try_init(|| BridgeNetworks::open(self.inner.config.clone()))
            .await
    }

    /// The network if it is already set up.
    pub fn opened(&self) -> Option<&BridgeNetworks> {
        self.inner.cell.get()
    }

    /// Whether this node has ever attached anything (its address book exists): then the
    /// daemon opens the network at start to reconcile what a restart left behind.
    pub fn was_used(&self) -> bool {
        self.inner.config.ipam_path().exists()
    }
}

impl TaskNetworks for LazyBridgeNetworks {
    async fn attach(&self, task_id: &str) -> Result<Attachment> {
        self.get().await?.attach(task_id).await
    }

    async fn detach(&self, task_id: &str) -> Result<()> {
        // Nothing was ever attached on this node: nothing to detach, and no reason to make a
        // bridge just to find that out.
        if self.opened().is_none() && !self.was_used() {
            crate::names::validate_key(task_id)?;
            return Ok(());
        }
        self.get().await?.detach(task_id).await
    }
}
