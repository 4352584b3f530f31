//! The engine-backed controller: one task, one container, found again by name after a
//! restart. The container carries the task's identity in labels, which is how the executor
//! recognises its containers among all the engine's (and sweeps those of forgotten tasks).
//!
//! Networking: the task's network namespace (node-local bridge, outbound NAT) is attached,
//! under the task ID, just before the container is created, and detached once the container
//! is removed. An adopted container keeps the namespace it already joined.

use std::sync::Arc;
use std::time::Duration;

use shoal_overlay::TaskNetworks;
use shoal_proto::{ContainerRunState, ContainerStatus, Task};
use tracing::{debug, info, warn};

use super::controller::{Controller, ControllerError, Exit};
use super::health::{HealthCheck, Verdict};
use crate::engine::{ContainerConfig, Engine, EngineError};

pub const LABEL_TASK_ID: &str = "shoal.task.id";
pub const LABEL_SERVICE_ID: &str = "shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "shoal.service.name";
pub const LABEL_NODE_ID: &str = "shoal.node.id";

/// `<service>.<slot>.<task-id>`, or `<service>.<node-id>.<task-id>` for a global service's
/// task (slot 0), as Swarm names them.
pub fn container_name(task: &Task) -> String {
    let service = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(task.service_id.as_str());
    if task.slot == 0 {
        format!("{service}.{}.{}", task.node_id, task.id)
    } else {
        format!("{service}.{}.{}", task.slot, task.id)
    }
}

fn failed(what: &str, e: EngineError) -> ControllerError {
    ControllerError::Failed(format!("{what}: {e}"))
}

/// Runs a task as a container of `engine`, in a network namespace from `networks`.
pub struct ContainerController<E: Engine, N: TaskNetworks> {
    engine: Arc<E>,
    networks: Arc<N>,
    task: Task,
    node_id: String,
    name: String,
    health: Option<HealthCheck>,
}

impl<E: Engine, N: TaskNetworks> ContainerController<E, N> {
    pub fn new(engine: Arc<E>, networks: Arc<N>, task: Task, node_id: String) -> Self {
        let name = container_name(&task);
        ContainerController {
            engine,
            networks,
            task,
            node_id,
            name,
            health: None,
        }
    }

    /// The container's name, which is also how it is looked up.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn image(&self) -> String {
        self.task
            .spec
            .as_ref()
            .and_then(|s| s.container.as_ref())
            .map(|c| c.image.clone())
            .unwrap_or_default()
    }

    /// The task's health check, else the image's; None when neither has one (or NONE).
    async fn resolve_health(&mut self) -> Result<(), ControllerError> {
        if self.health.is_some() {
            return Ok(());
        }
        let spec = self
            .task
            .spec
            .as_ref()
            .and_then(|s| s.container.as_ref())
            .and_then(|c| c.healthcheck.clone())
            .filter(|h| !h.test.is_empty());
        let config = match spec {
            Some(h) => Some(h),
            None => match self.engine.inspect_image(&self.image()).await {
                Ok(d) => d.config.and_then(|c| c.healthcheck),
                Err(_) => None,
            },
        };
        self.health = Some(HealthCheck::new(config));
        Ok(())
    }
}

impl<E: Engine, N: TaskNetworks> Controller for ContainerController<E, N> {
    async fn prepare(&mut self) -> Result<(), ControllerError> {
        match self.engine.inspect_container(&self.name).await {
            Ok(_) => {
                debug!(task = %self.task.id, container = %self.name, "container exists; adopted");
                return Ok(());
            }
            Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(failed("inspecting the task's container", e)),
        }
        let image = self.image();
        match self.engine.inspect_image(&image).await {
            Ok(_) => {}
            Err(EngineError::NotFound(_)) => {
                return Err(ControllerError::Failed(format!(
                    "image {image} not found on node {}; import it there with `shoal image import` \
                     (registry pulls are not supported yet)",
                    self.node_id
                )));
            }
            Err(e) => return Err(failed(&format!("resolving image {image}"), e)),
        }
        let spec = self.task.spec.clone().unwrap_or_default();
        let mut container = spec.container.unwrap_or_default();
        let service_name = self
            .task
            .service_annotations
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        for (k, v) in [
            (LABEL_TASK_ID, self.task.id.clone()),
            (LABEL_SERVICE_ID, self.task.service_id.clone()),
            (LABEL_SERVICE_NAME, service_name),
            (LABEL_NODE_ID, self.node_id.clone()),
        ] {
            container.labels.insert(k.to_string(), v);
        }
        let attachment = self.networks.attach(&self.task.id).await.map_err(|e| {
            ControllerError::Failed(format!("attaching the task to the bridge network: {e}"))
        })?;
        // The host's resolvers as a container behind the NAT can reach them.
        if container.dns_config.is_none() {
            container.dns_config =
                tokio::task::spawn_blocking(shoal_overlay::resolv::container_dns_config)
                    .await
                    .ok();
        }
        let config = ContainerConfig {
            name: Some(self.name.clone()),
            spec: container,
            limits: spec.resources.and_then(|r| r.limits).unwrap_or_default(),
            cpu_shares: None,
            network_namespace: Some(attachment.netns_path.display().to_string()),
            auto_remove: false,
        };
        let (id, warnings) = match self.engine.create_container(config).await {
            Ok(created) => created,
            Err(e) => {
                if let Err(e) = self.networks.detach(&self.task.id).await {
                    warn!(task = %self.task.id, error = %e, "cannot detach the task's network");
                }
                return Err(failed("creating the container", e));
            }
        };
        info!(
            task = %self.task.id,
            container = %id,
            address = %attachment.address,
            ?warnings,
            "container created"
        );
        Ok(())
    }

    async fn start(&mut self) -> Result<ContainerStatus, ControllerError> {
        let d = self
            .engine
            .inspect_container(&self.name)
            .await
            .map_err(|e| failed("inspecting the task's container", e))?;
        let state = d.state.unwrap_or_default();
        // Only a container that never ran is started: one that runs or ran is adopted as is.
        if state.status() == ContainerRunState::Created {
            // On a task of its own: the executor may drop this future (a shutdown arriving
            // during the health wait), and an engine start must not be cut short.
            let (engine, id) = (self.engine.clone(), d.id.clone());
            tokio::spawn(async move { engine.start_container(&id).await })
                .await
                .map_err(|e| ControllerError::Failed(format!("starting the container: {e}")))?
                .map_err(|e| match e {
                    EngineError::StartFailed { message, .. } => ControllerError::Failed(message),
                    e => failed("starting the container", e),
                })?;
            info!(task = %self.task.id, container = %d.id, "container started");
        }
        self.resolve_health().await?;
        if let Some(h) = self.health.as_mut().filter(|h| h.enabled()) {
            // Swarm's way: a task with a health check is RUNNING only once healthy.
            let engine = self.engine.clone();
            let id = d.id.clone();
            let wait = engine.wait_container(&d.id);
            tokio::select! {
                biased;
                exit = wait => {
                    let exit = exit.map_err(|e| failed("waiting for the container", e))?;
                    return Err(ControllerError::Failed(format!(
                        "container exited ({}) before its health check passed",
                        exit.exit_code
                    )));
                }
                v = h.until_verdict(engine.as_ref(), &id) => {
                    if let Verdict::Unhealthy(out) = v {
                        return Err(ControllerError::Unhealthy(out));
                    }
                }
            }
        }
        let pid = match self.engine.inspect_container(&d.id).await {
            Ok(d) => d.state.map(|s| s.pid).unwrap_or(0),
            Err(_) => 0,
        };
        Ok(ContainerStatus {
            container_id: d.id,
            pid: i32::try_from(pid).unwrap_or(0),
            ..Default::default()
        })
    }

    async fn wait(&mut self) -> Result<Exit, ControllerError> {
        let d = self
            .engine
            .inspect_container(&self.name)
            .await
            .map_err(|e| failed("finding the task's container", e))?;
        self.resolve_health().await?;
        let engine = self.engine.clone();
        let wait = engine.wait_container(&d.id);
        let health = async {
            match self.health.as_mut().filter(|h| h.enabled()) {
                Some(h) => loop {
                    if let Verdict::Unhealthy(out) = h.until_verdict(engine.as_ref(), &d.id).await {
                        return out;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            exit = wait => {
                let exit = exit.map_err(|e| failed("waiting for the container", e))?;
                Ok(Exit { exit_code: exit.exit_code, oom_killed: exit.oom_killed, error: exit.error })
            }
            out = health => Err(ControllerError::Unhealthy(out)),
        }
    }

    async fn shutdown(&mut self, grace: Duration) -> Result<(), ControllerError> {
        match self.engine.stop_container(&self.name, Some(grace)).await {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            // Stopping a container that is not running is no error.
            Err(EngineError::Conflict(_)) => Ok(()),
            Err(e) => Err(failed("stopping the container", e)),
        }
    }

    async fn terminate(&mut self) -> Result<(), ControllerError> {
        match self.engine.kill_container(&self.name, "KILL").await {
            Ok(()) | Err(EngineError::NotFound(_)) | Err(EngineError::Conflict(_)) => Ok(()),
            Err(e) => Err(failed("killing the container", e)),
        }
    }

    async fn remove(&mut self) -> Result<(), ControllerError> {
        match self.engine.remove_container(&self.name, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(failed("removing the container", e)),
        }
        self.networks
            .detach(&self.task.id)
            .await
            .map_err(|e| ControllerError::Failed(format!("detaching the task's network: {e}")))
    }
}
