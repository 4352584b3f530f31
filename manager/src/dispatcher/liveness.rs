//! Node liveness: a deadline per node, pushed by each heartbeat; a node whose deadline passes
//! is marked DOWN in the Store, so the orchestrator moves its tasks elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::{Node, node_status};
use shoal_raft::{Store, StoreError};
use tokio::time::Instant;
use tracing::info;

pub(super) struct Liveness {
    grace: Duration,
    deadlines: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    pub(super) fn new(grace: Duration) -> Liveness {
        Liveness {
            grace,
            deadlines: Mutex::new(HashMap::new()),
        }
    }

    /// The node showed a sign of life now. True if it had been given up on (its deadline had
    /// passed, so it may have been marked DOWN) and must be marked READY again.
    pub(super) fn beat(&self, node_id: &str) -> bool {
        let deadline = Instant::now() + self.grace;
        self.deadlines
            .lock()
            .unwrap()
            .insert(node_id.to_string(), deadline)
            .is_none()
    }

    fn take_expired(&self, now: Instant) -> Vec<String> {
        let mut deadlines = self.deadlines.lock().unwrap();
        let expired: Vec<String> = deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            deadlines.remove(id);
        }
        expired
    }

    fn is_alive(&self, node_id: &str) -> bool {
        self.deadlines.lock().unwrap().contains_key(node_id)
    }

    /// Marks expired nodes DOWN until the dispatcher stops.
    pub(super) async fn run(&self, store: Store) -> Result<(), StoreError> {
        // Checking a few times per grace period bounds the lateness of a DOWN to a fraction of it.
        let tick = (self.grace / 6).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(tick).await;
            let expired = self.take_expired(Instant::now());
            if expired.is_empty() {
                continue;
            }
            self.mark_down(&store, &expired).await?;
        }
    }

    async fn mark_down(&self, store: &Store, expired: &[String]) -> Result<(), StoreError> {
        loop {
            let result = store
                .update(|tx| {
                    let mut marked = Vec::new();
                    for id in expired {
                        // A node that came back since its deadline passed stays up.
                        if self.is_alive(id) {
                            continue;
                        }
                        let Some(mut node) = tx.get::<Node>(id) else {
                            continue;
                        };
                        let status = node.status.get_or_insert_with(Default::default);
                        if status.state == node_status::State::Down as i32 {
                            continue;
                        }
                        status.state = node_status::State::Down as i32;
                        status.message = "heartbeat failure".to_string();
                        tx.update(node)?;
                        marked.push(id.clone());
                    }
                    Ok::<_, StoreError>(marked)
                })
                .await;
            match result {
                Ok(c) => {
                    for id in c.value {
                        info!(node = %id, "node is down: no heartbeat within the grace period");
                    }
                    return Ok(());
                }
                // A concurrent write (e.g. the node re-registering): look again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_expire_after_the_grace_period() {
        let l = Liveness::new(Duration::from_secs(15));
        assert!(l.beat("a"), "a first beat revives");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(l.beat("b"));
        assert!(!l.beat("b"), "a beat within the deadline does not");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(l.take_expired(Instant::now()), vec!["a".to_string()]);
        assert!(l.is_alive("b"));
        assert!(!l.is_alive("a"));
        assert!(l.beat("a"), "a beat after expiry revives");
    }
}
