//! Fakes for the executor's tests: a scripted controller for the state machine and an
//! in-memory engine for the executor and the container controller.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_overlay::{Attachment, NetworkError, TaskNetworks};
use shoal_proto::{
    Annotations, ContainerDetails, ContainerExit, ContainerRunState, ContainerSpec, ContainerState,
    ContainerStatus, ContainerSummary, EngineSummary, HealthConfig, ImageConfig, ImageDetails,
    ImageImportResponse, ImageRemoveResponse, ImageSummary, LogEntry, Task, TaskSpec, TaskState,
    TaskStatus,
};
use tokio::sync::{mpsc, watch};

use super::controller::{Controller, ControllerError, Exit};
use crate::engine::{
    ContainerConfig, Engine, EngineError, ExecOptions, ExecOutput, ImportOptions, LogOptions,
    Result,
};

/// A replicated task of service "web" (slot 1) on node "n1", image "busybox".
pub fn task(id: &str, desired: TaskState) -> Task {
    let mut t = Task {
        id: id.to_string(),
        service_id: "svc1".into(),
        slot: 1,
        node_id: "n1".into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(TaskStatus::default()),
        ..Default::default()
    };
    t.set_desired_state(desired);
    t.status.as_mut().unwrap().set_state(TaskState::Assigned);
    t
}

/// Records calls; succeeds unless told otherwise.
#[derive(Default)]
pub struct FakeController {
    pub calls: Vec<String>,
    pub prepare_err: Option<String>,
    pub start_err: Option<String>,
    pub wait_err: Option<ControllerError>,
    pub exit: Exit,
}

impl Controller for FakeController {
    async fn prepare(&mut self) -> std::result::Result<(), ControllerError> {
        self.calls.push("prepare".into());
        self.prepare_err
            .clone()
            .map_or(Ok(()), |e| Err(ControllerError::Failed(e)))
    }
    async fn start(&mut self) -> std::result::Result<ContainerStatus, ControllerError> {
        self.calls.push("start".into());
        if let Some(e) = self.start_err.clone() {
            return Err(ControllerError::Failed(e));
        }
        Ok(ContainerStatus {
            container_id: "c-t1".into(),
            pid: 42,
            ..Default::default()
        })
    }
    async fn wait(&mut self) -> std::result::Result<Exit, ControllerError> {
        self.calls.push("wait".into());
        match self.wait_err.clone() {
            Some(e) => Err(e),
            None => Ok(self.exit.clone()),
        }
    }
    async fn shutdown(&mut self, grace: Duration) -> std::result::Result<(), ControllerError> {
        self.calls.push(format!("shutdown {}s", grace.as_secs()));
        Ok(())
    }
    async fn terminate(&mut self) -> std::result::Result<(), ControllerError> {
        self.calls.push("terminate".into());
        Ok(())
    }
    async fn remove(&mut self) -> std::result::Result<(), ControllerError> {
        self.calls.push("remove".into());
        Ok(())
    }
}

pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    pub spec: ContainerSpec,
    pub status: ContainerRunState,
    pub starts: u32,
    pub netns: Option<String>,
    exit: watch::Sender<Option<ContainerExit>>,
}

/// An engine in memory: images by name (with an optional health check), containers that
/// run until told to exit (`exit`) or stopped, and exec answering `exec_exit_code`. It carries
/// the fake networks the executor under test is given.
#[derive(Default)]
pub struct FakeEngine {
    pub state: Mutex<FakeState>,
    pub networks: Arc<FakeNetworks>,
}

/// Attachments by task ID, with the namespace path they hand out.
#[derive(Default)]
pub struct FakeNetworks {
    pub attached: Mutex<HashMap<String, String>>,
}

impl FakeNetworks {
    pub fn attached(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }
}

impl TaskNetworks for FakeNetworks {
    async fn attach(&self, task_id: &str) -> std::result::Result<Attachment, NetworkError> {
        let n = {
            let mut a = self.attached.lock().unwrap();
            let n = a.len() + 2;
            a.entry(task_id.to_string())
                .or_insert_with(|| format!("10.0.0.{n}/24"))
                .clone()
        };
        Ok(Attachment {
            netns_path: PathBuf::from(format!("/run/netns/{task_id}")),
            address: n,
            gateway: "10.0.0.1".into(),
        })
    }
    async fn detach(&self, task_id: &str) -> std::result::Result<(), NetworkError> {
        self.attached.lock().unwrap().remove(task_id);
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeState {
    pub images: HashMap<String, Option<HealthConfig>>,
    pub containers: Vec<FakeContainer>,
    pub next_id: u32,
    pub exec_exit_code: i32,
    pub execs: u32,
}

impl FakeEngine {
    pub fn with_image(name: &str, health: Option<HealthConfig>) -> FakeEngine {
        let e = FakeEngine::default();
        e.state
            .lock()
            .unwrap()
            .images
            .insert(name.to_string(), health);
        e
    }

    /// Makes a running container end with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut s = self.state.lock().unwrap();
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.name == name || c.id == name)
            .expect("no such container");
        c.status = ContainerRunState::Exited;
        c.exit.send_replace(Some(ContainerExit {
            exit_code: code,
            ..Default::default()
        }));
    }

    /// (name, status, starts) of every container, by name.
    pub fn containers(&self) -> Vec<(String, ContainerRunState, u32)> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<_> = s
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.status, c.starts))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn netns(&self, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.netns.clone())
    }

    pub fn labels(&self, name: &str) -> HashMap<String, String> {
        let s = self.state.lock().unwrap();
        s.containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.labels.clone())
            .unwrap_or_default()
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut FakeContainer) -> Result<T>) -> Result<T> {
        let mut s = self.state.lock().unwrap();
        match s.containers.iter_mut().find(|c| c.id == id || c.name == id) {
            Some(c) => f(c),
            None => Err(EngineError::NotFound(format!("no such container: {id}"))),
        }
    }
}

fn unsupported<T>() -> Result<T> {
    Err(EngineError::Internal("not in the fake engine".into()))
}

impl Engine for FakeEngine {
    async fn import_image(&self, _: PathBuf, _: ImportOptions) -> Result<ImageImportResponse> {
        unsupported()
    }
    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        unsupported()
    }
    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails> {
        let s = self.state.lock().unwrap();
        match s.images.get(reference) {
            Some(h) => Ok(ImageDetails {
                id: format!("sha256:{reference}"),
                config: Some(ImageConfig {
                    healthcheck: h.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            None => Err(EngineError::NotFound(format!("no such image: {reference}"))),
        }
    }
    async fn remove_image(&self, _: &str, _: bool) -> Result<ImageRemoveResponse> {
        unsupported()
    }
    async fn create_container(&self, config: ContainerConfig) -> Result<(String, Vec<String>)> {
        let mut s = self.state.lock().unwrap();
        let name = config.name.unwrap_or_default();
        if s.containers.iter().any(|c| c.name == name) {
            return Err(EngineError::Conflict(format!("name {name} is taken")));
        }
        s.next_id += 1;
        let id = format!("c{}", s.next_id);
        s.containers.push(FakeContainer {
            id: id.clone(),
            name,
            labels: config.spec.labels.clone(),
            spec: config.spec,
            status: ContainerRunState::Created,
            starts: 0,
            netns: config.network_namespace,
            exit: watch::channel(None).0,
        });
        Ok((id, Vec::new()))
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        self.with(id, |c| {
            c.status = ContainerRunState::Running;
            c.starts += 1;
            c.exit.send_replace(None);
            Ok(())
        })
    }
    async fn stop_container(&self, id: &str, _: Option<Duration>) -> Result<()> {
        self.with(id, |c| {
            if c.status == ContainerRunState::Running {
                c.status = ContainerRunState::Exited;
                c.exit.send_replace(Some(ContainerExit {
                    exit_code: 143,
                    ..Default::default()
                }));
            }
            Ok(())
        })
    }
    async fn kill_container(&self, id: &str, _: &str) -> Result<()> {
        self.stop_container(id, None).await
    }
    async fn wait_container(&self, id: &str) -> Result<ContainerExit> {
        let mut rx = self.with(id, |c| Ok(c.exit.subscribe()))?;
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| EngineError::NotFound(format!("container {id} was removed")))?;
        Ok(exit.clone().unwrap())
    }
    async fn remove_container(&self, id: &str, _: bool) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let before = s.containers.len();
        s.containers.retain(|c| c.id != id && c.name != id);
        if s.containers.len() == before {
            return Err(EngineError::NotFound(format!("no such container: {id}")));
        }
        Ok(())
    }
    async fn list_containers(&self, _: bool) -> Result<Vec<ContainerSummary>> {
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .iter()
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                status: c.status as i32,
                ..Default::default()
            })
            .collect())
    }
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        self.with(id, |c| {
            Ok(ContainerDetails {
                id: c.id.clone(),
                name: c.name.clone(),
                spec: Some(c.spec.clone()),
                state: Some(ContainerState {
                    status: c.status as i32,
                    pid: if c.status == ContainerRunState::Running {
                        100
                    } else {
                        0
                    },
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
    }
    async fn container_logs(
        &self,
        _: &str,
        _: LogOptions,
    ) -> Result<mpsc::Receiver<Result<LogEntry>>> {
        unsupported()
    }
    async fn exec(&self, id: &str, _: ExecOptions) -> Result<ExecOutput> {
        self.with(id, |c| {
            if c.status != ContainerRunState::Running {
                return Err(EngineError::Conflict("not running".into()));
            }
            Ok(())
        })?;
        let mut s = self.state.lock().unwrap();
        s.execs += 1;
        Ok(ExecOutput {
            exit_code: s.exec_exit_code,
            stdout: if s.exec_exit_code == 0 {
                b"ok\n".to_vec()
            } else {
                b"connection refused\n".to_vec()
            },
            ..Default::default()
        })
    }
    async fn summary(&self) -> Result<EngineSummary> {
        unsupported()
    }
}
