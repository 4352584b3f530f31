//! The executor: turns the tasks a manager assigns to this node into containers and reports
//! how they fare, on the model of SwarmKit's agent/exec.
//!
//! ```text
//!  Assignments ──> Executor (one per membership) ──> task worker per task ──> step() loop
//!                    │ full set: sweep containers      │ owns a Controller (ContainerController
//!                    │ of tasks no longer assigned      │ over the Engine: create, start, wait,
//!                    └─ TaskStatusUpdate <─────────────┘ health checks, stop, remove)
//! ```
//!
//! The lifecycle lives in one pure function, [`step`], that advances a task by exactly one
//! state per call, so that every transition is reported and a restarted daemon resumes from
//! whatever state the manager last heard: each controller operation is idempotent (an existing
//! container is adopted, a started one is not started again). Controllers are a trait so the
//! state machine is tested with a fake; [`ContainerController`] is generic over the engine so
//! the executor is tested with a fake engine.

mod container;
mod controller;
mod health;
mod manager;
mod step;
#[cfg(test)]
mod testing;

pub use container::{
    ContainerController, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID,
    container_name,
};
pub use controller::{Controller, ControllerError, Exit};
pub use health::{HealthCheck, Verdict};
pub use manager::Executor;
pub use step::{DEFAULT_STOP_GRACE, step, stop_grace};
