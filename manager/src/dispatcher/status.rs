//! Task status from workers, batched into the Store: one transaction per burst instead of one
//! per update, so a hundred tasks starting at once cost a handful of Raft entries.
//!
//! Rules applied to each update: the task must exist and be assigned to the reporting node (a
//! node cannot touch another's tasks), and states never move backwards.

use std::time::Duration;

use shoal_proto::{Task, TaskStatusUpdate};
use shoal_raft::{Store, StoreError};
use tokio::sync::mpsc;
use tracing::debug;

/// Longest wait for more updates before committing a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
const MAX_BATCH: usize = 1024;

/// The sessions' end: hands updates to the loop.
pub(super) struct StatusBatcher {
    tx: mpsc::Sender<(String, TaskStatusUpdate)>,
}

pub(super) struct BatcherLoop {
    store: Store,
    rx: mpsc::Receiver<(String, TaskStatusUpdate)>,
}

impl StatusBatcher {
    pub(super) fn new(store: Store) -> (StatusBatcher, BatcherLoop) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        (StatusBatcher { tx }, BatcherLoop { store, rx })
    }

    pub(super) async fn submit(&self, node_id: String, update: TaskStatusUpdate) {
        // Fails only once the loop has stopped (leadership lost); the agent resends to the next.
        let _ = self.tx.send((node_id, update)).await;
    }
}

impl BatcherLoop {
    pub(super) async fn run(mut self) -> Result<(), StoreError> {
        let mut batch = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(u)) => batch.push(u),
                    _ => break,
                }
            }
            apply(&self.store, &batch).await?;
            batch.clear();
        }
        Ok(())
    }
}

/// Commits one batch, retrying on conflicts with concurrent writers (the orchestrator).
pub(super) async fn apply(
    store: &Store,
    batch: &[(String, TaskStatusUpdate)],
) -> Result<(), StoreError> {
    loop {
        let result = store
            .update(|tx| {
                for (node_id, update) in batch {
                    let Some(mut task) = tx.get::<Task>(&update.task_id) else {
                        debug!(task = %update.task_id, "status for a task that no longer exists");
                        continue;
                    };
                    if &task.node_id != node_id {
                        debug!(task = %task.id, node = %node_id, "status from a node the task is not on");
                        continue;
                    }
                    let Some(status) = &update.status else {
                        continue;
                    };
                    let current = task.status.as_ref().map(|s| s.state).unwrap_or_default();
                    if status.state < current || task.status.as_ref() == Some(status) {
                        continue;
                    }
                    task.status = Some(status.clone());
                    tx.update(task)?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{TaskState, TaskStatus};

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            node_id: node.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn update(id: &str, state: TaskState) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                message: format!("{state:?}"),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn updates_apply_forward_only_and_only_from_the_tasks_node() {
        let store = Store::in_memory();
        store
            .update(|tx| {
                tx.create(task("t1", "n1", TaskState::Assigned))?;
                tx.create(task("t2", "n2", TaskState::Assigned))?;
                tx.create(task("t3", "n1", TaskState::Running))?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        apply(
            &store,
            &[
                ("n1".into(), update("t1", TaskState::Running)),
                ("n1".into(), update("t2", TaskState::Running)), // not n1's task
                ("n1".into(), update("t3", TaskState::Starting)), // backwards
                ("n1".into(), update("gone", TaskState::Running)),
            ],
        )
        .await
        .unwrap();
        let state = |id| store.get::<Task>(id).unwrap().status.unwrap().state;
        assert_eq!(state("t1"), TaskState::Running as i32);
        assert_eq!(state("t2"), TaskState::Assigned as i32);
        assert_eq!(state("t3"), TaskState::Running as i32);
    }
}
