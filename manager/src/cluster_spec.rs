//! Cluster settings: Swarm's defaults, and validation of what users change with
//! `shoal cluster init|update`, so a bad value is refused before it reaches the Store.

use std::time::Duration;

use shoal_proto::{
    Annotations, CaConfig, ClusterSpec, DispatcherConfig, OrchestrationConfig, RaftConfig,
};

/// Swarm's defaults.
pub const DEFAULT_TASK_HISTORY: u64 = 5;
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
pub use crate::ca::{
    DEFAULT_NODE_CERT_EXPIRY as DEFAULT_CERT_EXPIRY, MIN_NODE_CERT_EXPIRY as MIN_CERT_EXPIRY,
};
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// A cluster spec with every default filled in.
pub fn default_spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        orchestration: Some(OrchestrationConfig {
            task_history_retention_limit: DEFAULT_TASK_HISTORY,
        }),
        raft: Some(RaftConfig {
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            ..Default::default()
        }),
        dispatcher: Some(DispatcherConfig {
            heartbeat_period: Some(DEFAULT_HEARTBEAT.into()),
        }),
        ca: Some(CaConfig {
            node_cert_expiry: Some(DEFAULT_CERT_EXPIRY.into()),
        }),
    }
}

/// The node certificate lifetime a spec asks for.
pub fn cert_expiry(spec: Option<&ClusterSpec>) -> Duration {
    spec.and_then(|s| s.ca.as_ref()?.node_cert_expiry)
        .map(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_CERT_EXPIRY)
}

/// Why a spec cannot be used, naming the setting and the accepted range.
pub fn validate(spec: &ClusterSpec) -> Result<(), String> {
    if let Some(expiry) = spec.ca.as_ref().and_then(|c| c.node_cert_expiry)
        && expiry.to_std() < MIN_CERT_EXPIRY
    {
        return Err(format!(
            "--cert-expiry {:?} is too short; use at least 1h (default 2160h = 90 days)",
            expiry.to_std()
        ));
    }
    if let Some(hb) = spec.dispatcher.as_ref().and_then(|d| d.heartbeat_period)
        && hb.to_std() < MIN_HEARTBEAT
    {
        return Err(format!(
            "--dispatcher-heartbeat {:?} is too short; use at least 100ms (default 5s)",
            hb.to_std()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_swarms_and_valid() {
        let spec = default_spec("default");
        assert_eq!(cert_expiry(Some(&spec)), DEFAULT_CERT_EXPIRY);
        assert!(validate(&spec).is_ok());
    }

    #[test]
    fn too_short_values_are_refused_by_name() {
        let mut spec = default_spec("x");
        spec.ca = Some(CaConfig {
            node_cert_expiry: Some(Duration::from_secs(60).into()),
        });
        assert!(validate(&spec).unwrap_err().contains("--cert-expiry"));
        let mut spec = default_spec("x");
        spec.dispatcher = Some(DispatcherConfig {
            heartbeat_period: Some(Duration::from_millis(10).into()),
        });
        assert!(
            validate(&spec)
                .unwrap_err()
                .contains("--dispatcher-heartbeat")
        );
    }
}
